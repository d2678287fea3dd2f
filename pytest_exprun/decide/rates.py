"""How often the protocol's decision rule errs, as it runs: simulated error rates, expected
seeds, the minimum detectable effect, the coverage of intervals, family-wise rates.

Pure functions; the rule itself (thresholds, extension) is ``protocol``'s. The operating
characteristics are simulated, not taken from a formula, because the two-stage design (3 seeds,
2 more when within 2σ) has no closed form; every simulation runs from a fixed seed, so a report
rendered twice states the same figures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np

from .simulated import simulated
from .._lazy import LazyModule
from .protocol import SIGNIFICANT_SIGMAS, Ranked
from .stats import CONFIDENCE, TARGET_POWER, std_interval

optimize = LazyModule("scipy.optimize")
sps = LazyModule("scipy.stats")

#: Fewer baseline seeds than this are refused unless explicitly allowed: with 2 the 2σ rule
#: calls a false WINNER about 15% of the time (3% with 5), because s_b is so often small.
from ..names import MIN_BASELINE_SEEDS  # noqa: E402,F401 - kept importable from here
#: The true effects (in σ, positive = lower loss) every error-rate table states.
EFFECTS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0)
#: Trials per table row: a Monte Carlo standard error of 0.03 percentage points at 3%.
RATE_TRIALS = 400_000
FAMILY_TRIALS = 200_000
#: Fixed so that a report rendered twice from the same runs states the same rates.
RATE_SEED = 20261202
DECISION_MODES: Mapping[str, str] = {
    "fixed": "the 2σ rule: WINNER when the experiment's mean value is at least 2 baseline σ below "
             "the baseline's mean, LOSER when at least 2σ above, NEUTRAL otherwise",
    "sequential": "group-sequential t-test at planned looks: WINNER or LOSER when a look's t crosses its bound, "
                  "NEUTRAL at a futility stop or the last look; --exprun-decide=sequential",
}
#: Simulated coverage of the nominal 95% percentile-bootstrap interval of Δ, by (baseline runs,
#: experiment runs), normal noise with a common σ: printed by ``bench/bench_rates.py``.
BOOTSTRAP_COVERAGE: Mapping[tuple[int, int], float] = {(5, 3): 0.833, (5, 5): 0.875}


# ------------------------------------------------------------------ design
class SeedLists(Protocol):
    """Anything with the protocol's three seed lists, such as ``settings.Settings``.

    Read-only properties, so that a frozen dataclass (whose fields cannot be set) matches.
    """

    @property
    def baseline_seeds(self) -> tuple[int, ...]: ...
    @property
    def experiment_seeds(self) -> tuple[int, ...]: ...
    @property
    def extension_seeds(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class Design:
    """The seed counts and threshold one verdict was reached with."""

    n_baseline: int = 5
    n_first: int = 3
    n_extension: int = 2
    threshold: float = SIGNIFICANT_SIGMAS

    def __post_init__(self) -> None:
        if self.n_baseline < 2 or self.n_first < 1 or self.n_extension < 0:
            raise ValueError(
                f"a design needs at least 2 baseline seeds and 1 experiment seed, got {self.n_baseline} "
                f"baseline, {self.n_first} experiment and {self.n_extension} extension seeds"
            )

    @classmethod
    def of(cls, seeds: SeedLists) -> Design:
        return cls(len(seeds.baseline_seeds), len(seeds.experiment_seeds), len(seeds.extension_seeds))

    @property
    def small_baseline(self) -> bool:
        return self.n_baseline < MIN_BASELINE_SEEDS

    def describe(self) -> str:
        more = (f", {self.n_extension} more when the first ones are within {self.threshold:g}σ"
                if self.n_extension else ", no extension")
        return f"{self.n_baseline} baseline seeds; {self.n_first} experiment seeds{more}"


@dataclass(frozen=True)
class RateRow:
    """The rule's behaviour at one true effect (in σ; positive = improvement = lower loss)."""

    effect: float
    p_winner: float
    p_loser: float
    expected_seeds: float


class _Draws:
    """Sufficient statistics of simulated runs under no effect, σ = 1.

    Under normal noise the baseline mean, its sample std (through a chi-square with n − 1 df)
    and the experiment's stage means are independent, so four numbers per trial stand for every
    run; an effect δ shifts the experiment's means by −δ.
    """

    def __init__(self, design: Design, trials: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        nb, nf, ne = design.n_baseline, design.n_first, design.n_extension
        self.design = design
        self.base_mean = rng.standard_normal(trials) / math.sqrt(nb)
        self.base_std = np.sqrt(rng.chisquare(nb - 1, trials) / (nb - 1))
        self.first = rng.standard_normal(trials) / math.sqrt(nf)
        more = rng.standard_normal(trials) / math.sqrt(ne) if ne else np.zeros(trials)
        self.combined = (nf * self.first + ne * more) / (nf + ne)

    def outcome(self, effect: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(WINNER, LOSER, extended) per trial, the rule applied as ``protocol`` applies it."""
        d = self.design
        margin = d.threshold * self.base_std
        first = self.first - effect
        extended = np.abs(first - self.base_mean) < margin if d.n_extension else np.zeros(first.shape, bool)
        final = np.where(extended, self.combined - effect, first)
        return final <= self.base_mean - margin, final >= self.base_mean + margin, extended

    @functools.cached_property
    def winner_threshold(self) -> np.ndarray:
        """Per trial, the smallest true effect at which the rule calls WINNER.

        WINNER at the first look when δ ≥ a = first − mean_b + 2s; after the extension when the
        first look extended (δ > c = first − mean_b − 2s) and δ ≥ b = combined − mean_b + 2s.
        The union of those sets is δ ≥ min(a, max(b, c)), so P(WINNER) at δ is the share of
        trials whose threshold is at most δ: power at any effect, and its inverse, for free.
        """
        margin = self.design.threshold * self.base_std
        a = self.first - self.base_mean + margin
        if not self.design.n_extension:
            return np.sort(a)
        b = self.combined - self.base_mean + margin
        c = self.first - self.base_mean - margin
        return np.sort(np.minimum(a, np.maximum(b, c)))

    def p_winner(self, effect: float) -> float:
        return float(np.searchsorted(self.winner_threshold, effect, side="right") / self.winner_threshold.size)

    def effect_for(self, power: float) -> float:
        return float(np.quantile(self.winner_threshold, power))


@functools.lru_cache(maxsize=8)
def _draws(design: Design, trials: int, seed: int) -> _Draws:
    return _Draws(design, trials, seed)


@simulated
def fixed_rule_rates(n_baseline: int = 5, n_first: int = 3, n_extension: int = 2, threshold: float = SIGNIFICANT_SIGMAS,
                     effects: Sequence[float] = EFFECTS, trials: int = RATE_TRIALS,
                     seed: int = RATE_SEED) -> tuple[RateRow, ...]:
    """P(WINNER), P(LOSER) and expected experiment seeds of the fixed protocol at each true effect.

    Normal noise with a common σ across seeds; the same simulated runs serve every effect, so
    the rows are ordered as the true rates are. Monte Carlo error: sqrt(p(1 − p)/trials).
    """
    draws = _draws(Design(n_baseline, n_first, n_extension, threshold), trials, seed)
    rows = []
    for effect in effects:
        winner, loser, extended = draws.outcome(float(effect))
        rows.append(RateRow(float(effect), float(winner.mean()), float(loser.mean()),
                            n_first + n_extension * float(extended.mean())))
    return tuple(rows)


def design_rates(design: Design, effects: Sequence[float] = EFFECTS, trials: int = RATE_TRIALS,
                 seed: int = RATE_SEED) -> tuple[RateRow, ...]:
    return fixed_rule_rates(design.n_baseline, design.n_first, design.n_extension, design.threshold,
                            effects, trials, seed)


@simulated
def design_power(effect: float, design: Design = Design(), trials: int = RATE_TRIALS, seed: int = RATE_SEED) -> float:
    """P(WINNER) of the design, as run, at a true improvement of ``effect`` σ."""
    return _draws(design, trials, seed).p_winner(effect)


@simulated
def design_mde(design: Design = Design(), power: float = TARGET_POWER, trials: int = RATE_TRIALS,
               seed: int = RATE_SEED) -> float:
    """The true improvement, in σ, that the design as run calls WINNER with probability ``power``."""
    return _draws(design, trials, seed).effect_for(power)


@simulated
def familywise_false_winner(k: int, n_baseline: int = 5, n_first: int = 3, n_extension: int = 2,
                            threshold: float = SIGNIFICANT_SIGMAS, trials: int = FAMILY_TRIALS,
                            seed: int = RATE_SEED) -> float:
    """P(at least one false WINNER) among ``k`` experiments with no effect judged on one baseline.

    The shared baseline is what makes this worse than one experiment's rate: a baseline whose
    s_b came out small lowers the bar for all of them at once.
    """
    if k < 1:
        raise ValueError(f"a family has at least one experiment, got {k}")
    design = Design(n_baseline, n_first, n_extension, threshold)
    rng = np.random.default_rng(seed)
    base_mean = rng.standard_normal((trials, 1)) / math.sqrt(n_baseline)
    margin = threshold * np.sqrt(rng.chisquare(n_baseline - 1, (trials, 1)) / (n_baseline - 1))
    first = rng.standard_normal((trials, k)) / math.sqrt(n_first)
    if design.n_extension:
        more = rng.standard_normal((trials, k)) / math.sqrt(n_extension)
        combined = (n_first * first + n_extension * more) / (n_first + n_extension)
        final = np.where(np.abs(first - base_mean) < margin, combined, first)
    else:
        final = first
    return float(np.mean(np.any(final <= base_mean - margin, axis=1)))


@simulated
def bootstrap_coverage(n_baseline: int, n_experiment: int, confidence: float = CONFIDENCE, trials: int = 2000,
                       resamples: int = 499, seed: int = RATE_SEED) -> float:
    """Share of simulated comparisons (normal, common σ, no effect) whose percentile-bootstrap
    interval of Δ contains the true Δ = 0: below the nominal level with a handful of runs."""
    rng = np.random.default_rng(seed)
    covered = 0
    tail = (1 - confidence) / 2
    for start in range(0, trials, 500):
        size = min(500, trials - start)
        b = rng.standard_normal((size, 1, n_baseline))
        e = rng.standard_normal((size, 1, n_experiment))
        bi = rng.integers(0, n_baseline, (size, resamples, n_baseline))
        ei = rng.integers(0, n_experiment, (size, resamples, n_experiment))
        diff = (np.take_along_axis(np.broadcast_to(e, ei.shape), ei, axis=2).mean(axis=2)
                - np.take_along_axis(np.broadcast_to(b, bi.shape), bi, axis=2).mean(axis=2))
        low, high = np.quantile(diff, [tail, 1 - tail], axis=1)
        covered += int(np.count_nonzero((low <= 0) & (0 <= high)))
    return covered / trials


def bootstrap_coverage_at(n_baseline: int, n_experiment: int) -> float:
    """The documented coverage where the bench measured it, a quicker simulation elsewhere."""
    known = BOOTSTRAP_COVERAGE.get((n_baseline, n_experiment))
    return known if known is not None else bootstrap_coverage(n_baseline, n_experiment)


# ------------------------------------------------------------------ tables
def _percent(p: float) -> str:
    return f"{p * 100:.1f}%"


def format_rates_table(mode: str, rows: Sequence[RateRow], design: Design | None = None) -> str:
    """A line naming the decision mode, then one Markdown row per true effect."""
    if mode not in DECISION_MODES:
        raise ValueError(f"unknown decision mode {mode!r}; known: {', '.join(DECISION_MODES)}")
    what = DECISION_MODES[mode] + (f"; {design.describe()}" if design is not None else "")
    lines = [f"decision mode: {mode} ({what})", "",
             "| true effect (σ) | P(WINNER) | P(LOSER) | expected experiment seeds |",
             "|---|---|---|---|"]
    lines += [f"| {row.effect:g} | {_percent(row.p_winner)} | {_percent(row.p_loser)} | {row.expected_seeds:.2f} |"
              for row in rows]
    return "\n".join(lines)


def rates_report(seeds: SeedLists, trials: int = RATE_TRIALS) -> str:
    """What ``pytest --exprun-rates`` prints: the configured design's error rates, before any run."""
    design = Design.of(seeds)
    rows = design_rates(design, trials=trials)
    sigma = std_interval(1.0, design.n_baseline)
    assert sigma.low is not None and sigma.high is not None
    notes = [
        "",
        f"Simulated with {trials:,} trials per row: normal noise, σ the true seed-to-seed std of the run's value, "
        "effect positive = lower loss.",
        f"80% WINNER at a true improvement of {design_mde(design, trials=trials):.2f}σ (this design's "
        f"minimum detectable effect). σ itself is estimated from {design.n_baseline} seeds: its 95% interval "
        f"runs from {sigma.low:.2f} to {sigma.high:.2f} times the measured s_b.",
    ]
    notes.append(fixed_noise_assumption(design, normal=rows[0].p_winner))
    if design.small_baseline:
        notes.append(f"Only {design.n_baseline} baseline seeds: a false WINNER {_percent(rows[0].p_winner)} of "
                     f"the time when nothing changed (refused unless --exprun-allow-small-baseline).")
    return format_rates_table("fixed", rows, design) + "\n" + "\n".join(notes) + "\n"


# ------------------------------------------------------------------ several experiments
@dataclass(frozen=True)
class FamilyRate:
    """One Holm family of the summary: the experiments judged against one baseline."""

    family: int
    size: int
    n_baseline: int
    false_winner: float  # P(at least one false WINNER among ``size`` experiments with no effect)


def family_rates(ranked: Sequence[Ranked], n_first: int = 3, n_extension: int = 2) -> tuple[FamilyRate, ...]:
    """The family-wise false-WINNER rate of each baseline's family in a summary."""
    seen: dict[int, tuple[int, int]] = {}
    for row in ranked:
        seen[row.family] = (row.family_size, row.n_baseline)
    return tuple(
        FamilyRate(family, size, n_base,
                   familywise_false_winner(size, max(n_base, 2), n_first, n_extension))
        for family, (size, n_base) in sorted(seen.items())
    )


# ------------------------------------------------------------------ when the noise is not normal
#: Noise shapes the false-WINNER rate is stated under, each with mean 0 and variance 1, so that a
#: rate differs from the normal one only through the shape, never through σ.
NOISE_SHAPES: Mapping[str, str] = {
    "normal": "normal",
    "t3": "heavy-tailed noise (Student's t, 3 df)",
    "left-skewed": "left-skewed noise (a mirrored exponential, skewness −2: now and then one seed far below the rest)",
}
#: Trials for the rates under other noise shapes: the error-rate table's, so that
#: ``bench/bench_rates.py`` and ``--exprun-rates`` print the same figures (MC error 0.03 points at 4.6%).
NOISE_TRIALS = RATE_TRIALS


def draw_noise(shape: str, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    """Seed-to-seed noise of the named shape (``NOISE_SHAPES``), mean 0 and variance 1."""
    if shape == "normal":
        return rng.standard_normal(size)
    if shape == "t3":
        return rng.standard_t(3, size) / math.sqrt(3.0)  # t with 3 df has variance 3
    if shape == "left-skewed":
        return 1.0 - rng.standard_exponential(size)
    raise ValueError(f"unknown noise shape {shape!r}; known: {', '.join(NOISE_SHAPES)}")


@simulated
def fixed_rule_null_rates(shape: str, design: Design = Design(), trials: int = NOISE_TRIALS,
                          seed: int = RATE_SEED) -> tuple[float, float]:
    """(P(WINNER), P(LOSER)) of the fixed rule when nothing changed and the noise has ``shape``.

    Runs whole seeds through the rule (mean, sample std, extension), since away from normal
    noise the baseline's mean and std are no longer independent and ``_Draws``' four numbers
    per trial no longer stand for the runs. Monte Carlo error: sqrt(p(1 − p)/trials).
    """
    rng = np.random.default_rng(seed)
    p_winner = p_loser = 0.0
    for start in range(0, trials, 50_000):
        size = min(50_000, trials - start)
        base = draw_noise(shape, rng, (size, design.n_baseline))
        exp = draw_noise(shape, rng, (size, design.n_first + design.n_extension))
        mean_b = base.mean(axis=1)
        margin = design.threshold * base.std(axis=1, ddof=1)
        first = exp[:, :design.n_first].mean(axis=1)
        extended = np.abs(first - mean_b) < margin if design.n_extension else np.zeros(size, bool)
        final = np.where(extended, exp.mean(axis=1), first)
        p_winner += float(np.count_nonzero(final <= mean_b - margin))
        p_loser += float(np.count_nonzero(final >= mean_b + margin))
    return p_winner / trials, p_loser / trials


def noise_assumption(false_winner: Mapping[str, float], trials: int = NOISE_TRIALS) -> str:
    """The sentence a rates table or a report states its rates under: the noise they assume and
    the false-WINNER rate measured when the noise is not normal.

    ``false_winner`` maps each of ``NOISE_SHAPES`` to its rate (``fixed_rule_null_rates`` or
    ``sequential_rates.null_rates_under``), so that both decision modes say it the same way.
    """
    others = [f"{false_winner[shape]:.2%} with {NOISE_SHAPES[shape]}"
              for shape in NOISE_SHAPES if shape != "normal"]
    return (f"These rates assume normal seed-to-seed noise with one σ for baseline and experiment; when nothing "
            f"changed the false-WINNER rate is {false_winner['normal']:.2%} there, "
            f"{' and '.join(others)}, at the same σ ({trials:,} trials each, Monte Carlo error at most "
            f"{_mc_points(max(false_winner.values()), trials)} points).")


def _mc_points(p: float, trials: int) -> str:
    return f"{100 * math.sqrt(p * (1 - p) / trials):.2f}"


def fixed_noise_assumption(design: Design = Design(), normal: float | None = None, trials: int = NOISE_TRIALS) -> str:
    """``noise_assumption`` for the fixed rule at ``design``: what ``--exprun-rates`` prints under its table.

    ``normal``: the normal-noise rate the table above it states, so that one output quotes one figure.
    """
    rates = {shape: fixed_rule_null_rates(shape, design, trials)[0] for shape in NOISE_SHAPES if shape != "normal"}
    rates["normal"] = fixed_rule_null_rates("normal", design, trials)[0] if normal is None else normal
    return noise_assumption(rates, trials)
