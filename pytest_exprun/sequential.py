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

Pure functions and frozen records; the session runs the seeds and stores the decisions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Mapping

import numpy as np

from ._lazy import LazyModule
from .protocol import ProtocolError

# scipy.special alone (the t and normal quantiles) imports in a third of the time of scipy.stats.
special = LazyModule("scipy.special")

#: The fixed protocol's seeds first, then powers of two: deterministic, documented, and below
#: 2**32 so that every seed is accepted by numpy's legacy seeding as well as by torch.
SEEDS: tuple[int, ...] = (42, 137, 256, 512, 1024) + tuple(2**k for k in range(11, 32))
MAX_SEEDS = len(SEEDS)

DEFAULT_ALPHA = 0.03
DEFAULT_MIN_EFFECT = 1.0
#: Chosen by simulation (see docs/sequential.md): with Welch's t, Pocock-shaped bounds and a
#: futility margin of 0.3 these looks give 80% WINNER at a true 2σ with 2.4 experiment seeds on
#: average under no effect and 3.6 at 2σ; (2, 3, 5) and (2, 3, 4, 5) fall short of 78% at 2σ,
#: (2, 4, 6) spends more seeds for the same power, (2, 3, 5, 7) does as well with a higher cap.
DEFAULT_LOOKS: tuple[int, ...] = (2, 3, 4, 6)
#: Looks used when only a cap on seeds is given: these below the cap, then the cap itself.
LOOK_LADDER: tuple[int, ...] = (2, 3, 4, 6, 8, 12, 16, 24)
DEFAULT_FUTILITY_MARGIN = 0.3
#: Pocock (0) rather than O'Brien-Fleming (0.5): see the module's docstring.
DEFAULT_EFFICACY_SHAPE = 0.0
MIN_BASELINE_SEEDS = 5
CALIBRATION_TRIALS = 400_000
CALIBRATION_SEED = 20261202
RATE_TRIALS = 200_000
RATE_SEED = 17
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
class Design:
    """A sequential design, planned before any experiment seed runs; bounds are in t units.

    ``statistic`` at a look is (baseline mean − experiment mean) / its standard error, so a
    positive value means a lower val_loss with the change.
    """

    alpha: float
    min_effect: float
    looks: tuple[int, ...]
    max_seeds: int
    paired: bool
    baseline_looks: tuple[int, ...]  # baseline seeds each look needs: max(min_baseline_seeds, n)
    winner_bounds: tuple[float, ...]  # t ≥ bound: WINNER
    loser_bounds: tuple[float, ...]  # t ≤ bound: LOSER
    futility_bounds: tuple[float, ...]  # t < bound: NEUTRAL (binding); the last equals the WINNER bound
    nominal_p: tuple[float, ...]  # one-sided p-value each WINNER bound corresponds to
    loser_nominal_p: tuple[float, ...]  # the same for the LOSER bounds (lower tail)
    design_df: tuple[float, ...]  # degrees of freedom the bounds were converted with (equal σ)
    futility_margin: float
    efficacy_shape: float
    min_baseline_seeds: int
    calibration_trials: int
    calibration_seed: int

    @property
    def method(self) -> str:
        return "paired t" if self.paired else "Welch's t"


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


# ------------------------------------------------------------------ design
def _z_to_t(z: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """The t value with the same one-sided p-value as normal deviate ``z``."""
    return -special.stdtrit(df, special.ndtr(-np.asarray(z, dtype=float)))  # upper tail: exact far out


def _upper_p(z: np.ndarray | float) -> np.ndarray:
    return special.ndtr(-np.asarray(z, dtype=float))


def _information(n: int, m: int, paired: bool) -> float:
    """1 / Var(estimated difference) in σ² units, without any pairing benefit (r = 0)."""
    return n / 2.0 if paired else 1.0 / (1.0 / n + 1.0 / m)


def _design_df(n: int, m: int, paired: bool) -> float:
    """The statistic's degrees of freedom when both groups share one σ (Welch–Satterthwaite)."""
    if paired:
        return float(n - 1)
    v = 1.0 / n + 1.0 / m
    return v * v / (1.0 / (n * n * (n - 1)) + 1.0 / (m * m * (m - 1)))


def _resolve_looks(looks: tuple[int, ...] | None, max_seeds: int | None) -> tuple[tuple[int, ...], int]:
    if looks is None:
        if max_seeds is None:
            chosen = DEFAULT_LOOKS
        else:
            if max_seeds < 2:
                raise ProtocolError(f"max_seeds must be at least 2 (the first look needs 2 seeds), got {max_seeds}")
            chosen = tuple(n for n in LOOK_LADDER if n < max_seeds) + (max_seeds,)
    else:
        chosen = tuple(int(n) for n in looks)
    if not chosen:
        raise ProtocolError("looks is empty; give experiment-seed counts such as 2,3,4,6")
    if chosen[0] < 2:
        raise ProtocolError(f"the first look needs at least 2 experiment seeds (a t needs a variance), got {chosen[0]}")
    if any(b <= a for a, b in zip(chosen, chosen[1:])):
        raise ProtocolError(f"looks must be strictly increasing seed counts, got {list(chosen)}")
    cap = chosen[-1] if max_seeds is None else int(max_seeds)
    if chosen[-1] > cap:
        raise ProtocolError(f"the last look ({chosen[-1]} seeds) exceeds max_seeds={cap}; "
                            f"raise max_seeds or drop the looks above it")
    if cap > MAX_SEEDS:
        raise ProtocolError(f"at most {MAX_SEEDS} seeds are defined (42 … 2**31), got max_seeds={cap}")
    return chosen, cap


@functools.lru_cache(maxsize=8)
def _null_statistics(looks: tuple[int, ...], baseline_looks: tuple[int, ...], paired: bool, trials: int,
                     seed: int) -> np.ndarray:
    """The simulated null statistics, shared by every level of one design (the step-down's α/j)."""
    stats, _ = _simulate_statistics(looks, baseline_looks, paired, 0.0, 0.0, trials, np.random.default_rng(seed))
    stats.setflags(write=False)
    return stats


@functools.lru_cache(maxsize=64)
def _calibrate(alpha: float, min_effect: float, looks: tuple[int, ...], baseline_looks: tuple[int, ...],
               paired: bool, futility_margin: float, shape: float, trials: int, seed: int) -> tuple[float, ...]:
    """Efficacy constants (C, L): P(WINNER | no effect) ≤ α and P(LOSER | no effect) ≤ α.

    On the normal scale the WINNER bound at look k is C·w_k (w_k = (I_K / I_k)^shape) and the
    futility bound does not depend on C, so which simulated null experiments reach which look is
    fixed, and the share of WINNERs falls as C grows: bisection on C. The LOSER bound −L·w_k lies
    inside the futility region, so it only names some of the stops LOSER and changes neither the
    WINNERs nor the seeds: L is found the same way on the statistic where each null experiment
    stopped. The level aimed at is α less two Monte Carlo standard errors of the calibration.
    """
    info = np.array([_information(n, m, paired) for n, m in zip(looks, baseline_looks)])
    df = np.array([_design_df(n, m, paired) for n, m in zip(looks, baseline_looks)])
    weights = (info[-1] / info) ** shape
    z_futility = min_effect * np.sqrt(info) - futility_margin
    t_futility = _z_to_t(z_futility, df)
    stats = _null_statistics(looks, baseline_looks, paired, trials, seed)
    reached = []  # the statistic of the null experiments that get to each look
    alive = np.ones(trials, dtype=bool)
    for look in range(len(looks)):
        reached.append(np.where(alive, stats[:, look], -np.inf))
        alive &= stats[:, look] >= t_futility[look]
    target = alpha - 2.0 * math.sqrt(alpha * (1.0 - alpha) / trials)

    def winners(c: float) -> float:
        bounds = _z_to_t(c * weights, df)
        won = np.zeros(trials, dtype=bool)
        for look, column in enumerate(reached):
            won |= column >= bounds[look]
        return float(won.mean())

    c = _bisect(winners, target)
    win_t = _z_to_t(c * weights, df)
    k = len(looks)
    stop = np.full(trials, k - 1)
    alive = np.ones(trials, dtype=bool)
    for look in range(k - 1):
        ended = alive & ((stats[:, look] >= win_t[look]) | (stats[:, look] < t_futility[look]))
        stop[ended] = look
        alive &= ~ended
    at_stop = stats[np.arange(trials), stop]

    def losers(ell: float) -> float:
        bounds = _loser_t(ell, weights, df, t_futility)
        return float(np.mean(at_stop <= bounds[stop]))

    return (c, _bisect(losers, target), *weights.tolist(), *z_futility.tolist(), *df.tolist())


def _loser_t(ell: float, weights: np.ndarray, df: np.ndarray, t_futility: np.ndarray) -> np.ndarray:
    """LOSER bounds in t units, kept inside the futility region so that a LOSER is always a stop."""
    bounds = _z_to_t(-ell * weights, df)
    bounds[:-1] = np.minimum(bounds[:-1], t_futility[:-1])
    return bounds


def _bisect(rate: Callable[[float], float], target: float) -> float:
    """The smallest constant (to 1e-7) at which a rate that falls with it is at most ``target``."""
    low, high = 0.0, 12.0
    while high - low > 1e-7:
        mid = (low + high) / 2.0
        low, high = (mid, high) if rate(mid) > target else (low, mid)
    return high


def make_design(alpha: float = DEFAULT_ALPHA, min_effect: float = DEFAULT_MIN_EFFECT,
                looks: tuple[int, ...] | None = None, max_seeds: int | None = None, paired: bool = False,
                *, futility_margin: float = DEFAULT_FUTILITY_MARGIN, efficacy_shape: float = DEFAULT_EFFICACY_SHAPE,
                min_baseline_seeds: int = MIN_BASELINE_SEEDS, calibration_trials: int = CALIBRATION_TRIALS,
                calibration_seed: int = CALIBRATION_SEED) -> Design:
    """A calibrated design: P(false WINNER) ≤ ``alpha`` whatever σ, futility stops obeyed.

    ``paired`` defaults to False: with no seed-to-seed correlation a paired t on 2 to 4 pairs has
    1 to 3 degrees of freedom and cannot stop early, while Welch's t against the whole 5-seed
    baseline can; Welch still gains (and only grows more conservative) when pairs do correlate.
    Choose ``paired=True`` when the pairs are known to correlate strongly (r ≳ 0.5). Calibration
    takes about half a second and is cached per distinct design.
    """
    if not 0.0 < alpha < 0.5:
        raise ProtocolError(f"alpha is the false-WINNER rate and must lie in (0, 0.5), got {alpha}")
    if not (math.isfinite(min_effect) and min_effect > 0.0):
        raise ProtocolError(f"min_effect is in baseline σ and must be positive, got {min_effect}")
    if min_baseline_seeds < 2:
        raise ProtocolError(f"the baseline needs at least 2 seeds for its variance, got {min_baseline_seeds}")
    chosen, cap = _resolve_looks(looks, max_seeds)
    baseline_looks = tuple(max(min_baseline_seeds, n) for n in chosen)
    if baseline_looks[-1] > MAX_SEEDS:
        raise ProtocolError(f"at most {MAX_SEEDS} baseline seeds are defined, the design needs {baseline_looks[-1]}")
    k = len(chosen)
    values = _calibrate(float(alpha), float(min_effect), chosen, baseline_looks, bool(paired), float(futility_margin),
                        float(efficacy_shape), int(calibration_trials), int(calibration_seed))
    c, ell = values[0], values[1]
    weights, z_fut, df = (np.asarray(values[2 + i * k:2 + (i + 1) * k]) for i in range(3))
    z_win = c * weights
    winner = [float(x) for x in _z_to_t(z_win, df)]
    t_fut = _z_to_t(z_fut, df)
    loser = [float(x) for x in _loser_t(ell, weights, df, t_fut)]
    futility = [min(float(f), w) for f, w in zip(t_fut, winner)]
    futility[-1] = winner[-1]
    return Design(
        alpha=float(alpha), min_effect=float(min_effect), looks=chosen, max_seeds=cap, paired=bool(paired),
        baseline_looks=baseline_looks, winner_bounds=tuple(winner), loser_bounds=tuple(loser),
        futility_bounds=tuple(futility), nominal_p=tuple(float(_upper_p(z)) for z in z_win),
        loser_nominal_p=tuple(float(special.stdtr(d, b)) for d, b in zip(df, loser)),
        design_df=tuple(float(d) for d in df), futility_margin=float(futility_margin),
        efficacy_shape=float(efficacy_shape), min_baseline_seeds=int(min_baseline_seeds),
        calibration_trials=int(calibration_trials), calibration_seed=int(calibration_seed),
    )


def _at_level(design: Design, alpha: float) -> Design:
    """The same design calibrated for another level (the step-down rule's α/j)."""
    return make_design(alpha, design.min_effect, design.looks, design.max_seeds, design.paired,
                       futility_margin=design.futility_margin, efficacy_shape=design.efficacy_shape,
                       min_baseline_seeds=design.min_baseline_seeds, calibration_trials=design.calibration_trials,
                       calibration_seed=design.calibration_seed)


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
                statistic: tuple[float, float, float, tuple[float, float]] | None = None) -> LookDecision:
    bounds = level_design or design
    t, df, estimate, interval = statistic or look_statistic(design, look_index, baseline, experiment)
    decision, boundary, reason = _judge(bounds, look_index, t)
    nxt = seeds_for_look(design, look_index + 1) if decision is Decision.CONTINUE else None
    return LookDecision(
        decision=decision, look_index=look_index, n_baseline=design.baseline_looks[look_index],
        n_experiment=design.looks[look_index], statistic=t, df=df, boundary=boundary,
        winner_bound=bounds.winner_bounds[look_index], loser_bound=bounds.loser_bounds[look_index],
        futility_bound=bounds.futility_bounds[look_index], alpha=bounds.alpha, estimate=estimate,
        interval=interval, estimate_note=NAIVE_ESTIMATE_NOTE, reason=reason, next_seeds=nxt,
    )


def decide(design: Design, look_index: int, baseline: Mapping[int, float],
           experiment: Mapping[int, float]) -> LookDecision:
    """The decision at look ``look_index`` (0-based), val_loss by seed; lower is better.

    Earlier looks are replayed on their own seeds first, so the answer is the design's whatever
    order the caller asks in: a session resumed from stored runs gets the decision of the look
    where the experiment stopped, never a later one. Seeds beyond this look's are ignored.
    """
    if not 0 <= look_index < len(design.looks):
        seeds_for_look(design, look_index)  # raises with the valid range
    for look in range(look_index + 1):
        result = _decide_one(design, look, baseline, experiment)
        if result.decision is not Decision.CONTINUE:
            return result
    return result


def decide_family(design: Design, look_index: int, baseline: Mapping[int, float],
                  experiments: Mapping[str, Mapping[int, float]]) -> dict[str, LookDecision]:
    """Decisions for several experiments against one baseline, family-wise false WINNER ≤ α.

    A group-sequential Holm step-down: at each look, the experiments still running are taken in
    order of their statistic, the strongest first, and the next is tested against the bounds
    calibrated for α / (K − R), R being the WINNERs so far (in this look or earlier); a look stops
    stepping at the first that does not cross. Each α/j design has the same futility bounds, so
    the binding futility stops are the same at every level. LOSER and NEUTRAL use the current
    level's bounds; only the false-WINNER rate is controlled over the family. Looks are replayed
    from the first, as in ``decide``.
    """
    if not experiments:
        return {}
    if not 0 <= look_index < len(design.looks):
        seeds_for_look(design, look_index)
    k = len(experiments)
    levels = {j: (design if j == 1 else _at_level(design, design.alpha / j)) for j in range(1, k + 1)}
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
                result = _decide_one(design, look, baseline, experiments[name], levels[k - winners], stats[name])
                if result.decision is not Decision.CONTINUE or look == look_index:
                    done[name] = result
    return {name: done[name] for name in experiments}


# ------------------------------------------------------------------ simulation
def _simulate_statistics(looks: tuple[int, ...], baseline_looks: tuple[int, ...], paired: bool, effect: float,
                         correlation: float, trials: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, baseline mean − experiment mean) at every look of ``trials`` simulated
    experiments (σ = 1), each of shape (trials, looks).

    Seed i of the experiment correlates ``correlation`` with seed i of the baseline; the
    experiment's mean is ``effect`` lower (positive effect: improvement).
    """
    n_max, m_max = looks[-1], baseline_looks[-1]
    base = rng.standard_normal((trials, m_max))
    own = rng.standard_normal((trials, n_max))
    exp = correlation * base[:, :n_max] + math.sqrt(1.0 - correlation**2) * own - effect
    out = np.empty((trials, len(looks)))
    gain = np.empty((trials, len(looks)))
    if paired:
        diff = base[:, :n_max] - exp
        d1, d2 = np.cumsum(diff, axis=1), np.cumsum(diff * diff, axis=1)
        for k, n in enumerate(looks):
            mean, var = _moments(d1[:, n - 1], d2[:, n - 1], n)
            gain[:, k] = mean
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, k] = mean / np.sqrt(var / n)
        return out, gain
    b1, b2 = np.cumsum(base, axis=1), np.cumsum(base * base, axis=1)
    e1, e2 = np.cumsum(exp, axis=1), np.cumsum(exp * exp, axis=1)
    for k, (n, m) in enumerate(zip(looks, baseline_looks)):
        mb, vb = _moments(b1[:, m - 1], b2[:, m - 1], m)
        me, ve = _moments(e1[:, n - 1], e2[:, n - 1], n)
        gain[:, k] = mb - me
        out[:, k] = gain[:, k] / np.sqrt(vb / m + ve / n)
    return out, gain


def _moments(total: np.ndarray, squares: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample variance from running sums (values are O(1) here, so no cancellation)."""
    mean = total / n
    return mean, np.maximum(squares - n * mean * mean, 0.0) / (n - 1)
