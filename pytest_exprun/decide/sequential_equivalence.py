"""EQUIVALENT at a sequential look: the two one-sided tests at every look, and their error rate
under the data-dependent stop.

With a margin the sequential rule may stop at any look for EQUIVALENT, not only judge it where
WINNER, LOSER or futility stopped it. At each look the experiment still running is tested by the
two one-sided tests of ``equivalence.tost`` on that look's seeds at **α / K** (K: the design's
looks), and it stops as EQUIVALENT when they reject; where the rule stops for another reason
without a WINNER or LOSER, the same test at the same level says EQUIVALENT or INCONCLUSIVE.

Why Bonferroni over the looks: "EQUIVALENT at some look" lies inside the union over the looks of
"that look's test rejects at α / K", so when the true Δ lies at or beyond the margin,
P(EQUIVALENT) ≤ K · α / K = α whatever the stop rule, the bounds, the dependence between looks or
σ. A level calibrated by simulation would spend α better, but it would depend on the margin in
units of σ, which a margin in val_loss units leaves unknown (σ is only estimated), and on the
noise's shape; the union bound depends on neither. What it costs is measured, not assumed:
``false_equivalent_rate`` runs the rule with these stops on simulated experiments
(``bench/bench_sequential.py``, ``docs/sequential.md``), and a report quotes it at its own design
and margin.

The WINNER and LOSER bounds are unchanged: an equivalence stop only ends an experiment that had
not crossed them, so it can only lower the rule's false-WINNER and false-LOSER rates.

Pure: numbers in, numbers or frozen records out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .._lazy import LazyModule
from .equivalence import DEFAULT_ALPHA, Equivalence, Margin, MarginError, Unit, tost
from .sequential_design import Design

special = LazyModule("scipy.special")

#: Simulated experiments behind a report's false-EQUIVALENT rate (Monte Carlo s.e. ≤ 0.07 points at 5%).
EQUIVALENCE_TRIALS = 100_000
EQUIVALENCE_SEED = 20261206


@dataclass(frozen=True)
class LookEquivalence:
    """The equivalence test a sequential design runs at each of its ``looks``: TOST at ``alpha / looks``."""

    margin: Margin
    looks: int
    paired: bool = False
    alpha: float = DEFAULT_ALPHA

    @property
    def per_look(self) -> float:
        return self.alpha / self.looks

    def test(self, baseline: Mapping[int, float], experiment: Mapping[int, float]) -> Equivalence:
        """The two one-sided tests on exactly these runs (a look's seeds), at the per-look level."""
        return tost(self.margin, baseline, experiment, paired=self.paired, alpha=self.per_look)

    def at(self, baseline: Mapping[int, float], experiment: Mapping[int, float]) -> bool:
        """Does this look stop as EQUIVALENT? A look the test cannot judge (no spread) does not."""
        try:
            return self.test(baseline, experiment).equivalent
        except MarginError:
            return False

    def describe(self) -> str:
        """'two one-sided tests at each of its 4 looks at α/4 = 1.25%', for a stop's reason."""
        return (f"two one-sided tests at each of its {self.looks} looks at α/{self.looks} = {self.per_look:.3g} "
                f"(Bonferroni: P(false EQUIVALENT) ≤ {self.alpha:g} over the looks)")


def at_looks(margin: Margin | None, design: Design) -> LookEquivalence | None:
    """The design's equivalence stops for ``margin`` (None without a margin: no such stop)."""
    return None if margin is None else LookEquivalence(margin, len(design.looks), design.paired)


# ------------------------------------------------------------------ its error rate, simulated
@dataclass(frozen=True)
class EquivalenceRate:
    """P(EQUIVALENT) of the rule with its equivalence stops at a true Δ (σ units), by simulation."""

    effect: float  # true Δ = experiment − baseline, in σ
    margin: float  # in σ
    sigma_margin: bool  # the margin given in baseline σ (tested by ``tost_sigma``)
    p_equivalent: float
    p_winner: float
    expected_seeds: float
    trials: int

    @property
    def standard_error(self) -> float:
        p = self.p_equivalent
        return math.sqrt(max(p * (1.0 - p), 1.0 / self.trials) / self.trials)


def _tost_passes(base: np.ndarray, exp: np.ndarray, margin: float, sigma_margin: bool, paired: bool,
                 alpha: float) -> np.ndarray:
    """``equivalence.tost`` on each row (σ = 1, so a margin in units is a margin in σ), vectorised."""
    m, n = base.shape[1], exp.shape[1]
    mb, me = base.mean(axis=1), exp.mean(axis=1)
    estimate = me - mb
    with np.errstate(divide="ignore", invalid="ignore"):
        if sigma_margin:
            c = math.sqrt(1.0 / m + 1.0 / n)
            t = estimate / (c * base.std(axis=1, ddof=1))
            p_lower = 1.0 - special.nctdtr(m - 1, -margin / c, t)
            p_upper = special.nctdtr(m - 1, margin / c, t)
        else:
            if paired:
                diff = exp - base[:, :n]
                se = diff.std(axis=1, ddof=1) / math.sqrt(n)
                df = np.full(len(diff), float(n - 1))
                estimate = diff.mean(axis=1)
            else:
                a1, a2 = base.var(axis=1, ddof=1) / m, exp.var(axis=1, ddof=1) / n
                se = np.sqrt(a1 + a2)
                df = (a1 + a2) ** 2 / (a1 * a1 / (m - 1) + a2 * a2 / (n - 1))
            p_lower = special.stdtr(df, -(estimate + margin) / se)
            p_upper = special.stdtr(df, (estimate - margin) / se)
    passes: np.ndarray = np.maximum(p_lower, p_upper) < alpha
    return passes


def simulate(design: Design, effect: float, margin: float, sigma_margin: bool = False, trials: int = EQUIVALENCE_TRIALS,
             seed: int = EQUIVALENCE_SEED, per_look: float | None = None) -> EquivalenceRate:
    """The sequential rule with equivalence stops on ``trials`` simulated experiments (normal noise,
    σ = 1, no pairing benefit), the experiment's mean ``effect`` σ above the baseline's.

    ``per_look``: the level of each look's test (default: the rule's α / K; a larger one shows
    what the union bound guards against).
    """
    level = DEFAULT_ALPHA / len(design.looks) if per_look is None else per_look
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((trials, design.baseline_looks[-1]))
    exp = rng.standard_normal((trials, design.looks[-1])) + effect
    equivalent, won, seeds = apply(design, base, exp, margin, sigma_margin, level)
    return EquivalenceRate(float(effect), float(margin), bool(sigma_margin), float(equivalent.mean()),
                           float(won.mean()), float(seeds.mean()), int(trials))


def apply(design: Design, base: np.ndarray, exp: np.ndarray, margin: float, sigma_margin: bool,
          per_look: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(EQUIVALENT, WINNER, experiment seeds used) per row of given runs (σ = 1), the rule with its
    equivalence stops applied as ``sequential.decide`` and ``decision.with_margin`` apply them."""
    from .sequential_design import look_statistics

    trials = base.shape[0]
    t, _ = look_statistics(design.looks, design.baseline_looks, design.paired, base, exp)
    alive = np.ones(trials, dtype=bool)
    equivalent = np.zeros(trials, dtype=bool)
    won = np.zeros(trials, dtype=bool)
    seeds = np.full(trials, float(design.looks[-1]))
    last = len(design.looks) - 1
    for look, (n, m) in enumerate(zip(design.looks, design.baseline_looks)):
        col = t[:, look]
        win = alive & (col >= design.winner_bounds[look])
        lose = alive & ~win & (col <= design.loser_bounds[look])
        rest = alive & ~win & ~lose
        eq = np.zeros(trials, dtype=bool)
        eq[rest] = _tost_passes(base[rest, :m], exp[rest, :n], margin, sigma_margin, design.paired, per_look)
        stop = win | lose | eq | (rest & (col < design.futility_bounds[look])) if look < last else alive.copy()
        won |= win
        equivalent |= eq
        seeds[stop] = n
        alive &= ~stop
    return equivalent, won, seeds


@functools.lru_cache(maxsize=16)
def false_equivalent_rate(design: Design, margin: float, sigma_margin: bool,
                          trials: int = EQUIVALENCE_TRIALS) -> EquivalenceRate:
    """The larger P(EQUIVALENT) of the true Δ at −margin and at +margin: the rule's false-EQUIVALENT rate."""
    rates = [simulate(design, sign * margin, margin, sigma_margin, trials, EQUIVALENCE_SEED + i)
             for i, sign in enumerate((-1.0, 1.0))]
    return max(rates, key=lambda r: r.p_equivalent)


def report_note(equivalence: LookEquivalence, design: Design, margin_sigmas: float | None) -> str:
    """What a sequential decision with a margin says of its equivalence stops (stored with it)."""
    text = (f"the rule may stop at any look for EQUIVALENT: {equivalence.describe()}; where it stopped "
            "without a WINNER or LOSER the same test at the same level decides EQUIVALENT or INCONCLUSIVE")
    if margin_sigmas is not None and math.isfinite(margin_sigmas) and margin_sigmas > 0:
        rate = false_equivalent_rate(design, round(margin_sigmas, 2), equivalence.margin.unit is Unit.SIGMA)
        measured = "" if equivalence.margin.unit is Unit.SIGMA else " (the margin at the measured baseline σ)"
        text += (f". Simulated for this design at a margin of {rate.margin:g}σ{measured}: P(EQUIVALENT) when the true "
                 f"Δ lies on the margin is {rate.p_equivalent:.2%} ± {rate.standard_error:.2%} "
                 f"({rate.trials:,} trials, normal noise); the sequential section's table of error rates leaves these stops out, which "
                 "only end experiments earlier")
    return text
