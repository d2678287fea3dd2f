"""The sequential decision mode: look at the experiment after 2, 3, 4 and 6 seeds, stop as soon as
the evidence is clear, at a false-WINNER rate fixed in advance.

The fixed protocol always spends 3 or 5 experiment seeds and calls WINNER only past 2 baseline σ.
Here the experiment is judged at planned looks (counts of experiment seeds) by a studentised t,
so the noise level σ cancels and the error rate holds whatever σ is:

* **WINNER** when t reaches the look's efficacy bound;
* **LOSER** when t falls to the look's LOSER bound, which lies inside the futility region: it
  names a stop, it never causes one;
* **NEUTRAL** when t falls below the look's futility bound (binding: the calibration assumes the
  stop is obeyed, which is what lets the efficacy bounds be lower), or at the last look. After a
  futility stop NEUTRAL means "no improvement of min_effect in sight", not "no harm": a change
  that hurts by 2σ is stopped after 2 seeds and called LOSER only about half the time;
* **CONTINUE** otherwise: run the next look's seeds and decide again.

Bounds are set on the normal scale and converted to each look's t distribution, so a bound means
the same one-sided p-value at every look whatever its degrees of freedom. The efficacy bound has
Pocock's shape (the same nominal p at every look): at the few seeds a training experiment can
afford, an early stop must be possible at the second look already, and O'Brien-Fleming's shape
all but rules that out (its first bound is near t = 11). Its level is calibrated by simulating
the statistic under no effect, so that P(false WINNER) ≤ α with the futility stops obeyed; the
LOSER bounds are calibrated the same way so that P(false LOSER) ≤ α as well. The
futility bound at look k is ``min_effect·sqrt(I_k) − futility_margin`` on the normal scale
(I_k: the look's information, 1 / Var of the estimated difference in σ² units): stop once the
statistic lies ``futility_margin`` below what an effect of ``min_effect`` gives on average.

Seeds: the experiment's seeds are the baseline's (42, 137, 256, 512, 1024), then 2048, 4096, ...,
2**31 (26 seeds in all, every one below 2**32). A look with n experiment seeds needs the
first max(5, n) baseline seeds: the 5-seed baseline is measured first as in the fixed protocol,
and it grows with the experiment beyond 5 so that every experiment seed has its baseline pair.

Pure functions and frozen records; the design and its calibration are in ``sequential_design``,
the session runs the seeds and stores the decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping, Protocol

from .._lazy import LazyModule
from ..names import SEEDS, ProtocolError
from .sequential_design import Design, at_level

# scipy.special alone (the t and normal quantiles) imports in a third of the time of scipy.stats.
special = LazyModule("scipy.special")

CONFIDENCE = 0.95

NAIVE_ESTIMATE_NOTE = (
    "naive estimate and t-interval of this look, as if the number of seeds had been fixed in "
    "advance: stopping early for WINNER exaggerates the improvement, and the interval does not "
    "account for the looks"
)


class Decision(str, Enum):
    WINNER = "WINNER"
    LOSER = "LOSER"
    NEUTRAL = "NEUTRAL"
    CONTINUE = "CONTINUE"


@dataclass(frozen=True)
class LookDecision:
    """The outcome of one look; ``look_index`` is the look where it was decided."""

    decision: Decision
    look_index: int
    n_baseline: int
    n_experiment: int
    statistic: float
    df: float
    boundary: float  # the bound that decided it (for CONTINUE: the WINNER bound not reached)
    winner_bound: float
    loser_bound: float
    futility_bound: float
    alpha: float  # the level these bounds were calibrated for (below the design's in a family)
    estimate: float  # experiment mean − baseline mean (negative: lower loss), naive
    interval: tuple[float, float]  # naive 95% t-interval of that difference
    estimate_note: str
    reason: str
    next_seeds: tuple[tuple[int, ...], tuple[int, ...]] | None  # (baseline, experiment) for the next look
    equivalent: bool = False  # stopped early as equivalent within a margin (``EquivalenceStop``)


class EquivalenceStop(Protocol):
    """A margin's test at a look (``sequential_equivalence.LookEquivalence``): does it stop as EQUIVALENT?"""

    def at(self, baseline: Mapping[int, float], experiment: Mapping[int, float]) -> bool:
        """True when the look's runs put Δ within the margin at the test's per-look level."""

    def describe(self) -> str:
        """The test and its level, for the stop's reason."""


# ------------------------------------------------------------------ seeds
def seeds_for_look(design: Design, look_index: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(baseline seeds, experiment seeds) that look ``look_index`` (0-based) needs."""
    if not 0 <= look_index < len(design.looks):
        raise ProtocolError(f"look {look_index} does not exist; this design has looks 0 to {len(design.looks) - 1} "
                            f"at {list(design.looks)} experiment seeds")
    return SEEDS[: design.baseline_looks[look_index]], SEEDS[: design.looks[look_index]]


def completed_look(design: Design, baseline_seeds: Iterable[int], experiment_seeds: Iterable[int]) -> int | None:
    """The last look whose seeds have all run, or None before the first: where a resumed session
    decides again (``decide`` replays the looks before it)."""
    have_b, have_e = set(baseline_seeds), set(experiment_seeds)
    done = None
    for look in range(len(design.looks)):
        needed_b, needed_e = seeds_for_look(design, look)
        if not (have_b.issuperset(needed_b) and have_e.issuperset(needed_e)):
            break
        done = look
    return done


# ------------------------------------------------------------------ the statistic
def _mean_var(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def look_statistic(design: Design, look_index: int, baseline: Mapping[int, float],
                   experiment: Mapping[int, float]) -> tuple[float, float, float, tuple[float, float]]:
    """(t, df, experiment − baseline mean, naive 95% interval) on exactly this look's seeds.

    t > 0 means the experiment's val_loss is lower. Plain Python on purpose: a look has at most
    26 seeds, and the vectorised simulation is a separate implementation the tests compare to it.
    """
    b_seeds, e_seeds = seeds_for_look(design, look_index)
    missing_b = [s for s in b_seeds if s not in baseline]
    missing_e = [s for s in e_seeds if s not in experiment]
    if missing_b or missing_e:
        parts = [f"baseline seed(s) {missing_b}"] * bool(missing_b) + [f"experiment seed(s) {missing_e}"] * bool(missing_e)
        raise ProtocolError(f"look {look_index + 1} ({len(e_seeds)} experiment seeds) is missing "
                            f"{' and '.join(parts)}; run them before deciding this look")
    if design.paired:
        diffs = [float(experiment[s]) - float(baseline[s]) for s in e_seeds]
        n = len(diffs)
        mean, var = _mean_var(diffs)
        se = math.sqrt(var / n)
        df = float(n - 1)
    else:
        b = [float(baseline[s]) for s in b_seeds]
        e = [float(experiment[s]) for s in e_seeds]
        mb, vb = _mean_var(b)
        me, ve = _mean_var(e)
        mean = me - mb
        a1, a2 = vb / len(b), ve / len(e)
        se = math.sqrt(a1 + a2)
        denom = (a1 * a1 / (len(b) - 1) if a1 else 0.0) + (a2 * a2 / (len(e) - 1) if a2 else 0.0)
        df = (a1 + a2) ** 2 / denom if denom > 0 else float(len(b) + len(e) - 2)
    if se > 0:
        t = -mean / se
        half = float(special.stdtrit(df, 1 - (1 - CONFIDENCE) / 2)) * se
    else:
        # Every run (or every paired difference) identical: no noise left to measure against.
        t = 0.0 if mean == 0 else math.copysign(math.inf, -mean)
        half = 0.0
    return t, df, mean, (mean - half, mean + half)


def _judge(design: Design, look_index: int, t: float) -> tuple[Decision, float, str]:
    win, lose, fut = (design.winner_bounds[look_index], design.loser_bounds[look_index],
                      design.futility_bounds[look_index])
    last = look_index == len(design.looks) - 1
    where = f"look {look_index + 1} of {len(design.looks)}"
    if t >= win:
        return Decision.WINNER, win, f"{where}: t = {t:.2f} reached the WINNER bound {win:.2f}"
    if t <= lose:
        return Decision.LOSER, lose, f"{where}: t = {t:.2f} reached the LOSER bound {lose:.2f}"
    if last:
        return Decision.NEUTRAL, win, (f"{where} (the last): t = {t:.2f} lies between the LOSER bound "
                                       f"{lose:.2f} and the WINNER bound {win:.2f}")
    if t < fut:
        return Decision.NEUTRAL, fut, (f"{where}: t = {t:.2f} fell below the futility bound {fut:.2f}: an "
                                       f"improvement of {design.min_effect:g}σ or more is unlikely to show")
    return Decision.CONTINUE, win, (f"{where}: t = {t:.2f} lies between the futility bound {fut:.2f} and the "
                                    f"WINNER bound {win:.2f}; run the next look's seeds")


def _decide_one(design: Design, look_index: int, baseline: Mapping[int, float],
                experiment: Mapping[int, float], level_design: Design | None = None,
                statistic: tuple[float, float, float, tuple[float, float]] | None = None,
                equivalence: EquivalenceStop | None = None) -> LookDecision:
    bounds = level_design or design
    t, df, estimate, interval = statistic or look_statistic(design, look_index, baseline, experiment)
    decision, boundary, reason = _judge(bounds, look_index, t)
    equivalent = False
    if decision is Decision.CONTINUE and equivalence is not None:
        b_seeds, e_seeds = seeds_for_look(design, look_index)
        if equivalence.at({s: baseline[s] for s in b_seeds}, {s: experiment[s] for s in e_seeds}):
            decision, equivalent = Decision.NEUTRAL, True
            boundary = bounds.futility_bounds[look_index]
            reason = (f"look {look_index + 1} of {len(design.looks)}: t = {t:.2f} crossed no bound, and Δ lies within "
                      f"the margin by {equivalence.describe()}: stopped as equivalent")
    nxt = seeds_for_look(design, look_index + 1) if decision is Decision.CONTINUE else None
    return LookDecision(
        decision=decision, look_index=look_index, n_baseline=design.baseline_looks[look_index],
        n_experiment=design.looks[look_index], statistic=t, df=df, boundary=boundary,
        winner_bound=bounds.winner_bounds[look_index], loser_bound=bounds.loser_bounds[look_index],
        futility_bound=bounds.futility_bounds[look_index], alpha=bounds.alpha, estimate=estimate,
        interval=interval, estimate_note=NAIVE_ESTIMATE_NOTE, reason=reason, next_seeds=nxt, equivalent=equivalent,
    )


def decide(design: Design, look_index: int, baseline: Mapping[int, float],
           experiment: Mapping[int, float], equivalence: EquivalenceStop | None = None) -> LookDecision:
    """The decision at look ``look_index`` (0-based), val_loss by seed; lower is better.

    Earlier looks are replayed on their own seeds first, so the answer is the design's whatever
    order the caller asks in: a session resumed from stored runs gets the decision of the look
    where the experiment stopped, never a later one. Seeds beyond this look's are ignored. With
    ``equivalence`` (a margin) a look that crosses no bound may stop as equivalent.
    """
    if not 0 <= look_index < len(design.looks):
        seeds_for_look(design, look_index)  # raises with the valid range
    for look in range(look_index + 1):
        result = _decide_one(design, look, baseline, experiment, equivalence=equivalence)
        if result.decision is not Decision.CONTINUE:
            return result
    return result


def decide_family(design: Design, look_index: int, baseline: Mapping[int, float],
                  experiments: Mapping[str, Mapping[int, float]],
                  equivalence: EquivalenceStop | None = None) -> dict[str, LookDecision]:
    """Decisions for several experiments against one baseline, family-wise false WINNER ≤ α.

    A group-sequential Holm step-down: at each look, the experiments still running are taken in
    order of their statistic, the strongest first, and the next is tested against the bounds
    calibrated for α / (K − R), R being the WINNERs so far (in this look or earlier); a look stops
    stepping at the first that does not cross. Each α/j design has the same futility bounds, so
    the binding futility stops are the same at every level. LOSER and NEUTRAL use the current
    level's bounds; only the false-WINNER rate is controlled over the family. Looks are replayed
    from the first, as in ``decide``. An equivalence stop (``equivalence``) ends an experiment as a
    futility stop does: the family and its levels stay as they are.
    """
    if not experiments:
        return {}
    if not 0 <= look_index < len(design.looks):
        seeds_for_look(design, look_index)
    k = len(experiments)
    levels = {j: (design if j == 1 else at_level(design, design.alpha / j)) for j in range(1, k + 1)}
    done: dict[str, LookDecision] = {}
    winners = 0
    for look in range(look_index + 1):
        active = [name for name in experiments if name not in done]
        if not active:
            break
        stats = {name: look_statistic(design, look, baseline, experiments[name]) for name in active}
        for name in sorted(active, key=lambda a: (-stats[a][0], a)):
            if stats[name][0] < levels[k - winners].winner_bounds[look]:
                break
            done[name] = _decide_one(design, look, baseline, experiments[name], levels[k - winners], stats[name])
            winners += 1
        for name in active:
            if name not in done:
                result = _decide_one(design, look, baseline, experiments[name], levels[k - winners], stats[name],
                                     equivalence)
                if result.decision is not Decision.CONTINUE or look == look_index:
                    done[name] = result
    return {name: done[name] for name in experiments}
