"""Equivalence with a margin: is the change's effect on val_loss too small to matter?

NEUTRAL alone cannot tell "no effect worth having" from "not enough evidence", yet the two call
for opposite actions (drop the idea, or run more seeds). With a margin M the two one-sided tests
(TOST) answer the first: H0⁻: Δ ≤ −M and H0⁺: Δ ≥ +M are each rejected at level α, so Δ lies in
(−M, +M); equivalently, the (1 − 2α) t-interval of Δ lies inside (−M, +M). Δ is the experiment's
mean val_loss minus the baseline's (negative: lower loss), with Welch's standard error or the
paired one, as the rule in use analyses.

The margin is given in val_loss units (``0.01``) or in baseline σ (``0.5sigma``). A margin in σ
is not simply turned into units with the measured s_b, which is itself noisy: ``tost_sigma``
tests it exactly, and ``bench/bench_program.py`` simulates both at a true Δ of exactly ±M
(``docs/program.md``).

Pure: numbers in, a frozen record out; nothing here knows about pytest or files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from .._lazy import LazyModule

special = LazyModule("scipy.special")

DEFAULT_ALPHA = 0.05
#: The power an INCONCLUSIVE experiment's suggested seeds aim for.
SETTLE_POWER = 0.8

_MARGIN = re.compile(r"^\s*([^\s]+?)\s*(sigma|σ)?\s*$", re.IGNORECASE)


class MarginError(ValueError):
    """A margin that cannot be used; the message says what to write instead."""


class Unit(str, Enum):
    METRIC = "metric"  # val_loss units
    SIGMA = "sigma"  # multiples of the baseline's sample std


@dataclass(frozen=True)
class Margin:
    """The equivalence margin M as given: a positive value and its unit."""

    value: float
    unit: Unit

    def in_metric_units(self, baseline_std: float) -> float:
        """M in val_loss units: as given, or ``value`` times the measured baseline σ."""
        if self.unit is Unit.METRIC:
            return self.value
        if not (math.isfinite(baseline_std) and baseline_std > 0.0):
            raise MarginError(f"a margin of {self.describe()} needs a baseline σ above 0, got {baseline_std}; "
                              "give the margin in val_loss units instead (e.g. --exprun-margin=0.01)")
        return self.value * baseline_std

    def describe(self) -> str:
        return f"{self.value:g}σ" if self.unit is Unit.SIGMA else f"{self.value:g}"


def parse_margin(text: str, what: str = "--exprun-margin") -> Margin:
    """``0.01`` (val_loss units) or ``0.5sigma`` (baseline σ; ``0.5 sigma`` and ``0.5σ`` read the same).

    Refused in one line: empty, ``sigma`` without a number, zero, negative, nan, infinite, or any
    other suffix (``5%``, ``0.5s``): a margin the rule would silently misread is worse than none.
    """
    match = _MARGIN.match(text)
    number = match.group(1) if match else ""
    if not match or not number or number.lower() in {"sigma", "σ"}:
        raise MarginError(f"{what} needs a positive number in val_loss units (0.01) or in baseline sigma "
                          f"(0.5sigma), got {text!r}")
    try:
        value = float(number)
    except ValueError:
        raise MarginError(f"{what} must be a number in val_loss units (0.01) or baseline sigma (0.5sigma), "
                          f"got {text!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise MarginError(f"{what} must be a positive finite number (0.01 or 0.5sigma), got {text!r}")
    return Margin(value, Unit.SIGMA if match.group(2) else Unit.METRIC)


@dataclass(frozen=True)
class Equivalence:
    """The two one-sided tests of Δ against (−margin, +margin), at level ``alpha`` each.

    ``p_lower`` tests H0: Δ ≤ −margin, ``p_upper`` H0: Δ ≥ +margin; ``p_value`` is the larger,
    and ``equivalent`` is ``p_value < alpha``. For the Welch and paired tests that is the same as
    ``interval`` (the (1 − 2α) t-interval of Δ) lying inside (−margin, +margin); for a margin in
    baseline σ (``tost_sigma``) the p-values decide and the interval is only reported.
    """

    method: str  # "Welch", "paired" or "noncentral t on the baseline σ"
    margin: float  # in val_loss units
    alpha: float
    estimate: float  # experiment mean − baseline mean
    standard_error: float
    df: float
    p_lower: float
    p_upper: float
    interval: tuple[float, float]

    @property
    def p_value(self) -> float:
        return max(self.p_lower, self.p_upper)

    @property
    def equivalent(self) -> bool:
        return self.p_value < self.alpha

    @property
    def confidence(self) -> float:
        return 1.0 - 2.0 * self.alpha


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def _check(margin: float, alpha: float) -> None:
    if not (math.isfinite(margin) and margin > 0.0):
        raise MarginError(f"the equivalence margin must be a positive number of val_loss units, got {margin}")
    if not 0.0 < alpha < 0.5:
        raise MarginError(f"the equivalence test's alpha must lie in (0, 0.5), got {alpha}")


def _tost(method: str, estimate: float, se: float, df: float, margin: float, alpha: float) -> Equivalence:
    if se > 0.0:
        p_lower = float(special.stdtr(df, -(estimate + margin) / se))  # P(T ≥ (Δ + M)/se)
        p_upper = float(special.stdtr(df, (estimate - margin) / se))  # P(T ≤ (Δ − M)/se)
        half = float(special.stdtrit(df, 1.0 - alpha)) * se
    else:
        # No spread at all: Δ is known exactly, and lies inside the margin or not.
        p_lower = 0.0 if estimate > -margin else 1.0
        p_upper = 0.0 if estimate < margin else 1.0
        half = 0.0
    return Equivalence(method, margin, alpha, estimate, se, df, p_lower, p_upper, (estimate - half, estimate + half))


def tost_welch(baseline: Sequence[float], experiment: Sequence[float], margin: float,
               alpha: float = DEFAULT_ALPHA) -> Equivalence:
    """TOST with Welch's standard error and Welch–Satterthwaite degrees of freedom."""
    _check(margin, alpha)
    if len(baseline) < 2 or len(experiment) < 2:
        raise MarginError(f"the equivalence test needs at least 2 runs per group, got {len(baseline)} baseline "
                          f"and {len(experiment)} experiment runs")
    mb, vb = _mean_var([float(v) for v in baseline])
    me, ve = _mean_var([float(v) for v in experiment])
    a1, a2 = vb / len(baseline), ve / len(experiment)
    se = math.sqrt(a1 + a2)
    denom = (a1 * a1 / (len(baseline) - 1) if a1 else 0.0) + (a2 * a2 / (len(experiment) - 1) if a2 else 0.0)
    df = (a1 + a2) ** 2 / denom if denom > 0 else float(len(baseline) + len(experiment) - 2)
    return _tost("Welch", me - mb, se, df, margin, alpha)


def tost_paired(baseline: Mapping[int, float], experiment: Mapping[int, float], margin: float,
                alpha: float = DEFAULT_ALPHA) -> Equivalence:
    """TOST on the seed-by-seed differences (experiment − baseline) of the seeds both groups ran."""
    _check(margin, alpha)
    shared = sorted(set(baseline) & set(experiment))
    if len(shared) < 2:
        raise MarginError(f"the paired equivalence test needs at least 2 seeds run by both groups, got {len(shared)}")
    diffs = [float(experiment[s]) - float(baseline[s]) for s in shared]
    mean, var = _mean_var(diffs)
    return _tost("paired", mean, math.sqrt(var / len(diffs)), float(len(diffs) - 1), margin, alpha)


def tost_sigma(baseline: Sequence[float], experiment: Sequence[float], sigmas: float,
               alpha: float = DEFAULT_ALPHA) -> Equivalence:
    """TOST against a margin of ``sigmas`` baseline σ, exact although σ is only estimated.

    Reading ``0.5sigma`` as 0.5·s_b and running the plain TOST is not a level-α test: s_b is noisy,
    and a large s_b widens the margin just when the noise is large (simulated: 5.8% at a true 2σ
    and 9.1% at 3σ for a nominal 5%, ``docs/program.md``). Instead, with both groups sharing σ, Δ̂ / (c·s_b), where
    c = sqrt(1/n_b + 1/n_e), is noncentral t with n_b − 1 degrees of freedom and noncentrality
    (Δ/σ) / c, because the baseline's mean and its s_b are independent: each one-sided p-value is
    read at the boundary Δ = ±sigmas·σ. ``margin`` and ``interval`` are stated in val_loss units
    at the measured s_b, for the report; the decision is the p-values'.
    """
    _check(sigmas, alpha)
    if len(baseline) < 2 or len(experiment) < 2:
        raise MarginError(f"the equivalence test needs at least 2 runs per group, got {len(baseline)} baseline "
                          f"and {len(experiment)} experiment runs")
    mb, vb = _mean_var([float(v) for v in baseline])
    me = math.fsum(float(v) for v in experiment) / len(experiment)
    s_b = math.sqrt(vb)
    if s_b <= 0.0:
        raise MarginError(f"a margin of {sigmas:g}sigma needs a baseline σ above 0, got 0; give the margin in val_loss "
                          "units instead (e.g. --exprun-margin=0.01)")
    c = math.sqrt(1.0 / len(baseline) + 1.0 / len(experiment))
    df = float(len(baseline) - 1)
    estimate, se = me - mb, c * s_b
    t = estimate / se
    p_lower = 1.0 - float(special.nctdtr(df, -sigmas / c, t))  # H0: Δ ≤ −kσ
    p_upper = float(special.nctdtr(df, sigmas / c, t))  # H0: Δ ≥ +kσ
    half = float(special.stdtrit(df, 1.0 - alpha)) * se
    return Equivalence("noncentral t on the baseline σ", sigmas * s_b, alpha, estimate, se, df,
                       min(max(p_lower, 0.0), 1.0), min(max(p_upper, 0.0), 1.0), (estimate - half, estimate + half))


def tost(margin: Margin, baseline: Mapping[int, float], experiment: Mapping[int, float], paired: bool = False,
         alpha: float = DEFAULT_ALPHA) -> Equivalence:
    """The equivalence test the analysis calls for: Welch or paired in val_loss units; a margin in
    baseline σ always takes ``tost_sigma`` (its scale is the baseline's alone, so pairing cannot enter)."""
    if margin.unit is Unit.SIGMA:
        return tost_sigma(list(baseline.values()), list(experiment.values()), margin.value, alpha)
    if paired:
        return tost_paired(baseline, experiment, margin.value, alpha)
    return tost_welch(list(baseline.values()), list(experiment.values()), margin.value, alpha)


# ------------------------------------------------------------------ the verdict with a margin
class MarginVerdict(str, Enum):
    WINNER = "WINNER"
    LOSER = "LOSER"
    EQUIVALENT = "EQUIVALENT"
    INCONCLUSIVE = "INCONCLUSIVE"


def margin_verdict(rule_verdict: str, equivalence: Equivalence) -> MarginVerdict:
    """WINNER and LOSER as the rule in use decided; its NEUTRAL split by the TOST.

    ``rule_verdict`` is the rule's final word, ``protocol.Verdict`` or ``sequential.Decision``
    (both are str enums): a CONTINUE is not a verdict and is refused.
    """
    word = str(getattr(rule_verdict, "value", rule_verdict))
    if word == "WINNER":
        return MarginVerdict.WINNER
    if word == "LOSER":
        return MarginVerdict.LOSER
    if word != "NEUTRAL":
        raise ValueError(f"a margin verdict needs the rule's final verdict (WINNER, NEUTRAL or LOSER), got {word!r}")
    return MarginVerdict.EQUIVALENT if equivalence.equivalent else MarginVerdict.INCONCLUSIVE


def passes(verdict: MarginVerdict, accept_neutral: bool) -> bool:
    """``--exprun-accept=neutral`` passes what NEUTRAL would have: EQUIVALENT too, never INCONCLUSIVE."""
    return verdict is MarginVerdict.WINNER or (accept_neutral and verdict is MarginVerdict.EQUIVALENT)


# ------------------------------------------------------------------ what would settle it
@dataclass(frozen=True)
class Settle:
    """How many more experiment seeds give the TOST ``power`` at the observed Δ, if any number can.

    ``reachable`` is False when the baseline's own noise alone keeps the interval wider than the
    margin allows (then more baseline seeds, or a wider margin, are needed), or when the observed
    |Δ| is already at or past the margin (more seeds would only confirm that it is not equivalent).
    """

    more_seeds: int
    total_seeds: int
    power: float
    reachable: bool
    reason: str


def tost_power(estimate: float, margin: float, se: float, df: float, alpha: float = DEFAULT_ALPHA) -> float:
    """P(TOST equivalent) when the true Δ is ``estimate`` and the true standard error ``se``.

    The test uses an estimated standard error ŝ (ŝ²/se² ~ χ²_df / df, the Welch–Satterthwaite
    approximation) independent of Δ̂ ~ N(Δ, se²): it is equivalent when |Δ̂| + t·ŝ < M. The
    expectation over ŝ is a Gauss–Laguerre sum, so the figure is deterministic.
    """
    if se <= 0.0:
        return 1.0 if abs(estimate) < margin else 0.0
    t = float(special.stdtrit(df, 1.0 - alpha))
    nodes, weights = special.roots_genlaguerre(64, df / 2.0 - 1.0)
    s_hat = se * np.sqrt(2.0 * nodes / df)
    inside = special.ndtr((margin - estimate - t * s_hat) / se) - special.ndtr((-margin - estimate + t * s_hat) / se)
    power = float(np.sum(weights * np.maximum(inside, 0.0)) / math.gamma(df / 2.0))
    return min(1.0, max(0.0, power))


def seeds_to_settle(estimate: float, margin: float, baseline_std: float, n_baseline: int, experiment_std: float,
                    n_experiment: int, alpha: float = DEFAULT_ALPHA, power: float = SETTLE_POWER,
                    max_seeds: int = 26, paired: bool = False) -> Settle:
    """The fewest more experiment seeds after which the TOST reaches ``power`` at Δ = ``estimate``.

    Unpaired: se² = s_b²/n_b + s_e²/n_e with the baseline as measured; paired: se² = s_d²/n with
    ``experiment_std`` the std of the differences (each new seed then needs its baseline run too).
    A plan from noisy estimates, stated as such: it names where to look, not a promise.
    """
    if n_experiment >= max_seeds:
        return Settle(0, n_experiment, 0.0, False,
                      f"the experiment already has {n_experiment} seeds, the most this plan considers ({max_seeds})")
    if abs(estimate) >= margin:
        return Settle(0, n_experiment, 0.0, False,
                      f"the observed Δ {estimate:+.4g} is at or past the margin ±{margin:.4g}: more seeds would "
                      "most likely confirm it is not equivalent, not settle it as EQUIVALENT")

    def se(n: int) -> tuple[float, float]:
        if paired:
            return experiment_std / math.sqrt(n), float(n - 1)
        a1, a2 = baseline_std**2 / n_baseline, experiment_std**2 / n
        denom = a1 * a1 / (n_baseline - 1) + a2 * a2 / (n - 1)
        return math.sqrt(a1 + a2), ((a1 + a2) ** 2 / denom if denom > 0 else float(n_baseline + n - 2))

    for n in range(max(n_experiment, 2), max_seeds + 1):
        p = tost_power(estimate, margin, *se(n), alpha=alpha)
        if p >= power:
            return Settle(n - n_experiment, n, p, True,
                          f"{n - n_experiment} more experiment seed(s), {n} in all, give the equivalence test about "
                          f"{p:.0%} power if the true Δ is the observed {estimate:+.4g}")
    best = tost_power(estimate, margin, *se(max_seeds), alpha=alpha)
    where = "differences" if paired else "baseline"
    return Settle(max_seeds - n_experiment, max_seeds, best, False,
                  f"even {max_seeds} experiment seeds give the equivalence test only {best:.0%} power at the observed "
                  f"Δ {estimate:+.4g}: the {where}'s noise is too large for a margin of ±{margin:.4g} (more baseline "
                  "seeds or a wider margin would be needed)")


def settle_seeds(used: Sequence[int], count: int, sequence: Sequence[int]) -> tuple[int, ...]:
    """The next ``count`` seeds of ``sequence`` that the experiment has not run yet."""
    fresh = tuple(s for s in sequence if s not in set(used))
    if count > len(fresh):
        raise ValueError(f"only {len(fresh)} unused seeds are defined, {count} asked for")
    return fresh[:count]


def settle_arguments(spec: str, used: Sequence[int], more: Sequence[int]) -> tuple[str, ...]:
    """pytest's arguments that run the experiment (``spec``: its ``--experiment`` value) on ``used`` +
    ``more`` seeds; stored runs are reused, so only ``more`` train.

    Every seed goes in the always-run list and the extension list is emptied, since the two may
    not overlap.
    """
    seeds = ",".join(str(s) for s in (*used, *more))
    return (f"--experiment={spec}", f"--exprun-experiment-seeds={seeds}", "--exprun-extension-seeds=")
