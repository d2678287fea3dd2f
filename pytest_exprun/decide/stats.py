"""Pure statistics over per-seed measurements: summaries, tests, intervals, pairing (curves: ``curves``).

Nothing here reads files, prints, knows about pytest or about the protocol's 2σ rule (that is
``protocol`` and ``rates``), so every function can be checked against scipy or hand-computed
values with plain asserts. Where a statistic cannot be computed (too few runs, zero variance,
identical values) the result carries ``None`` and a ``reason`` instead of raising.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .._lazy import LazyModule

# scipy.stats takes about a second to import: only sessions that judge an experiment pay it.
sps = LazyModule("scipy.stats")
Values = Sequence[float] | np.ndarray  # one group's per-seed values: a list, a tuple or a 1-D array

TARGET_POWER = 0.8
ALPHA = 0.05
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 9999
#: Fixed so that a report rendered twice from the same runs shows the same interval.
BOOTSTRAP_SEED = 20240501
#: Below this many non-zero paired differences the Wilcoxon test cannot get near p = 0.05
#: (its smallest two-sided p is 2 / 2**n: 0.25 for 3 pairs, 0.0625 for 5).
MIN_WILCOXON_PAIRS = 5
MAX_SEEDS = 1000

#: Cohen's conventional thresholds for |d|: below 0.2 negligible, 0.5 small, 0.8 medium.
EFFECT_SIZE_THRESHOLDS: tuple[tuple[float, str], ...] = (
    (0.2, "Negligible"),
    (0.5, "Small"),
    (0.8, "Medium"),
)


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one metric over one group of seeds.

    ``std`` is the sample standard deviation (ddof=1), NaN with fewer than two values.
    """

    n: int
    mean: float
    std: float
    min: float
    max: float


def summarize(values: Values) -> Summary:
    """Summarise finite values; an empty or non-finite input is a caller's bug, so it raises."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("cannot summarise an empty list of values")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"cannot summarise non-finite values: {arr.tolist()}")
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
    return Summary(
        n=int(arr.size),
        mean=float(np.mean(arr)),
        std=std,
        min=float(np.min(arr)),
        max=float(np.max(arr)),
    )


def pooled_std(a: Summary, b: Summary) -> float:
    """The protocol's pooled σ: sqrt((σ_a² + σ_b²) / 2), equal weights whatever the n."""
    return math.sqrt((a.std**2 + b.std**2) / 2)


def cohens_d(baseline: Summary, experiment: Summary) -> float | None:
    """Standardised difference (μ_exp − μ_base) / σ_pooled; None where it is undefined."""
    sigma = pooled_std(baseline, experiment)
    if not math.isfinite(sigma) or sigma == 0.0:
        return None
    return (experiment.mean - baseline.mean) / sigma


def effect_size_label(d: float | None) -> str:
    """Cohen's verbal label for |d|, 'n/a' when d is undefined."""
    if d is None or not math.isfinite(d):
        return "n/a"
    for limit, label in EFFECT_SIZE_THRESHOLDS:
        if abs(d) < limit:
            return label
    return "Large"


def percent_faster(baseline_mean: float, experiment_mean: float) -> float | None:
    """Wall-clock change in percent, positive when the experiment is faster; None if undefined."""
    if baseline_mean == 0.0 or not math.isfinite(baseline_mean):
        return None
    return (baseline_mean - experiment_mean) / baseline_mean * 100.0


@dataclass(frozen=True)
class SignificanceTest:
    """One hypothesis test; ``p_value`` is None with a ``reason`` when it cannot be run."""

    name: str
    statistic: float | None
    p_value: float | None
    reason: str | None = None


@dataclass(frozen=True)
class Interval:
    """A confidence interval: of experiment mean − baseline mean (negative: lower loss) or of σ."""

    low: float | None
    high: float | None
    confidence: float
    method: str
    reason: str | None = None


@dataclass(frozen=True)
class Paired:
    """The experiment's runs against the baseline's runs with the same seeds."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]  # experiment − baseline, seed by seed
    mean_difference: float | None
    t_test: SignificanceTest
    wilcoxon: SignificanceTest
    paired_variance: float | None  # Var(e_i − b_i)
    unpaired_variance: float | None  # Var(e) + Var(b): the same difference without pairing
    variance_ratio: float | None
    #: Pearson's r between a seed's baseline and experiment values, with its two-sided p: a
    #: variance ratio below 1 alone happens about half the time when seeds share nothing.
    correlation: SignificanceTest
    #: True only when the correlation is positive and significant at 5%; None when untestable.
    helped: bool | None
    #: Every shared seed gave exactly the same value in both groups (an A/A run).
    identical: bool = False
    reason: str | None = None


# ------------------------------------------------------------------ helpers
def _array(values: Values) -> np.ndarray:
    return np.asarray(list(values), dtype=float)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _too_few(name: str, a: np.ndarray, b: np.ndarray, least: int = 2) -> SignificanceTest | None:
    if a.size < least or b.size < least:
        return SignificanceTest(name, None, None, f"needs at least {least} runs per group (have {b.size} and {a.size})")
    return None


# --------------------------------------------------------- unpaired tests
def welch_test(baseline: Values, experiment: Values) -> SignificanceTest:
    """Welch's t-test (unequal variances), two-sided, on experiment − baseline."""
    name = "Welch's t-test"
    b, e = _array(baseline), _array(experiment)
    if (few := _too_few(name, b, e)) is not None:
        return few
    if np.ptp(b) == 0 and np.ptp(e) == 0:
        return SignificanceTest(name, None, None, "both groups have zero variance")
    result = sps.ttest_ind(e, b, equal_var=False)
    return SignificanceTest(name, _finite(result.statistic), _finite(result.pvalue))


def mann_whitney(baseline: Values, experiment: Values) -> SignificanceTest:
    """Mann–Whitney U, two-sided: no normality assumed, only ranks."""
    name = "Mann–Whitney U"
    b, e = _array(baseline), _array(experiment)
    if (few := _too_few(name, b, e)) is not None:
        return few
    if np.ptp(np.concatenate([b, e])) == 0:
        return SignificanceTest(name, None, None, "every run gave the same value")
    result = sps.mannwhitneyu(e, b, alternative="two-sided")
    return SignificanceTest(name, _finite(result.statistic), _finite(result.pvalue))


def _mean_difference(e: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.mean(e, axis=axis) - np.mean(b, axis=axis))


def bootstrap_interval(
    baseline: Values, experiment: Values, confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Percentile bootstrap CI of mean(experiment) − mean(baseline), reproducible by its seed.

    Percentile rather than BCa: BCa's acceleration estimate is unstable with 3–5 runs per group.
    """
    method = "percentile bootstrap"
    b, e = _array(baseline), _array(experiment)
    if b.size < 2 or e.size < 2:
        return Interval(None, None, confidence, method, "needs at least 2 runs per group")
    if np.ptp(b) == 0 and np.ptp(e) == 0:
        return Interval(None, None, confidence, method, "both groups have zero variance")
    generator = np.random.default_rng(seed)
    randomness = {"rng": generator} if "rng" in inspect.signature(sps.bootstrap).parameters else {
        "random_state": generator}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about few distinct resamples with tiny groups
        result = sps.bootstrap(
            (e, b), _mean_difference, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence,
            method="percentile", vectorized=True, **randomness,
        )
    low, high = _finite(result.confidence_interval.low), _finite(result.confidence_interval.high)
    if low is None or high is None:
        return Interval(None, None, confidence, method, "the resampled differences are degenerate")
    return Interval(low, high, confidence, method)


def welch_interval(
    baseline: Values, experiment: Values, confidence: float = CONFIDENCE
) -> Interval:
    """Welch's t-interval of mean(experiment) − mean(baseline), Welch–Satterthwaite degrees of freedom.

    The report's interval of Δ: by simulation it covers the true Δ at its nominal rate with 3 to 5
    runs per group, also after the protocol's extension step, where the percentile bootstrap
    covers 83–87% (``docs/statistics.md``).
    """
    method = "Welch t-interval"
    b, e = _array(baseline), _array(experiment)
    if b.size < 2 or e.size < 2:
        return Interval(None, None, confidence, method, "needs at least 2 runs per group")
    vb, ve = np.var(b, ddof=1) / b.size, np.var(e, ddof=1) / e.size
    se2 = vb + ve
    if se2 == 0:
        return Interval(None, None, confidence, method, "both groups have zero variance")
    df = se2**2 / (vb**2 / (b.size - 1) + ve**2 / (e.size - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    delta = float(e.mean() - b.mean())
    return Interval(delta - half, delta + half, confidence, method)


def std_interval(std: float, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Confidence interval of a normal σ from a sample std of ``n`` values (chi-square, n − 1 df).

    With 5 seeds it spans a factor of almost 5: every figure stated in units of the baseline σ
    inherits that uncertainty.
    """
    method = f"chi-square, {n - 1} df"
    if n < 2 or not math.isfinite(std) or std <= 0:
        return Interval(None, None, confidence, method, "needs at least 2 runs with some spread")
    df = n - 1
    tail = (1 - confidence) / 2
    low = std * math.sqrt(df / float(sps.chi2.isf(tail, df)))
    high = std * math.sqrt(df / float(sps.chi2.ppf(tail, df)))
    return Interval(low, high, confidence, method)


# ------------------------------------------------------------------ pairs
def paired_seeds(baseline: Mapping[int, float], experiment: Mapping[int, float]) -> Paired:
    """Seed-by-seed differences and paired tests over the seeds both groups ran.

    Pairing helps when a seed's luck carries over from baseline to experiment (same data
    order, same initialisation): then the paired values correlate and Var(e_i − b_i) is below
    Var(e) + Var(b). The claim is made only when the correlation is significant, since the
    variance ratio alone falls below 1 about half the time by chance.
    """
    seeds = tuple(sorted(set(baseline) & set(experiment)))
    b = _array([baseline[s] for s in seeds])
    e = _array([experiment[s] for s in seeds])
    d = e - b
    n = len(seeds)
    t_name, w_name, r_name = "paired t-test", "Wilcoxon signed-rank", "Pearson correlation of paired values"
    if n < 2:
        reason: str | None = f"{n} seed(s) in common; pairing needs at least 2"
        missing = SignificanceTest(r_name, None, None, reason)
        return Paired(seeds, tuple(d.tolist()), _finite(d.mean()) if n else None,
                      SignificanceTest(t_name, None, None, reason), SignificanceTest(w_name, None, None, reason),
                      None, None, None, missing, None, False, reason)
    identical = bool(np.all(d == 0))
    if np.ptp(d) == 0:
        t_test = SignificanceTest(t_name, None, None, "every paired difference is the same")
    else:
        result = sps.ttest_rel(e, b)
        t_test = SignificanceTest(t_name, _finite(result.statistic), _finite(result.pvalue))
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        wilcoxon = SignificanceTest(w_name, None, None, "every paired difference is 0")
    elif nonzero < MIN_WILCOXON_PAIRS:
        wilcoxon = SignificanceTest(
            w_name, None, None,
            f"{nonzero} non-zero difference(s); its smallest possible p would be {2 / 2 ** nonzero:.3g}, "
            f"so it needs at least {MIN_WILCOXON_PAIRS}",
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ties among |d| switch scipy to the normal approximation
            result = sps.wilcoxon(e, b)
        wilcoxon = SignificanceTest(w_name, _finite(result.statistic), _finite(result.pvalue))
    correlation = correlation_test(b, e)
    paired_var = float(np.var(d, ddof=1))
    unpaired_var = float(np.var(e, ddof=1) + np.var(b, ddof=1))
    ratio = paired_var / unpaired_var if unpaired_var > 0 else None
    if identical:
        helped, reason = None, "every shared seed gave the same value in both groups: the flag changed nothing"
    elif correlation.p_value is None:
        helped, reason = None, correlation.reason
    else:
        helped = bool(correlation.statistic is not None and correlation.statistic > 0 and correlation.p_value < ALPHA)
        reason = None
    return Paired(
        seeds=seeds, differences=tuple(d.tolist()), mean_difference=float(d.mean()), t_test=t_test,
        wilcoxon=wilcoxon, paired_variance=paired_var, unpaired_variance=unpaired_var, variance_ratio=ratio,
        correlation=correlation, helped=helped, identical=identical, reason=reason,
    )


def correlation_test(baseline: Values, experiment: Values) -> SignificanceTest:
    """Pearson's r of paired values with its two-sided p (t with n − 2 df); needs 3 pairs."""
    name = "Pearson correlation of paired values"
    b, e = _array(baseline), _array(experiment)
    if b.size < 3:
        return SignificanceTest(name, None, None, f"{b.size} pairs; a correlation test needs at least 3")
    if np.ptp(b) == 0 or np.ptp(e) == 0:
        return SignificanceTest(name, None, None, "one group has the same value on every shared seed")
    result = sps.pearsonr(b, e)
    return SignificanceTest(name, _finite(result.statistic), _finite(result.pvalue))


def ttest_power(effect: float, sigma: float, n: int | np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Power of a two-sided two-sample t-test at level ``alpha`` with ``n`` runs per group."""
    n = np.asarray(n)
    df = 2 * n - 2
    crit = sps.t.isf(alpha / 2, df)
    lam = abs(effect) / (sigma * np.sqrt(2.0 / n))
    return np.asarray(sps.nct.sf(crit, df, lam) + sps.nct.cdf(-crit, df, lam))


def seeds_for_ttest(effect: float, sigma: float, power: float = TARGET_POWER, alpha: float = ALPHA,
                    max_seeds: int = MAX_SEEDS) -> tuple[int | None, str | None]:
    """Seeds per group for a two-sided t-test at ``alpha`` to detect ``effect`` with ``power``.

    Exact through the noncentral t (df = 2n − 2, λ = |δ|/(σ·sqrt(2/n))); close to the textbook
    n ≈ 2·((z_{1−α/2} + z_power)·σ/δ)² for large n.
    """
    if effect == 0:
        return None, "the observed difference is exactly 0"
    return _fewest(lambda n: ttest_power(effect, sigma, n, alpha), power, max_seeds, "seeds per group")


def _fewest(power_at: Callable[[np.ndarray], np.ndarray], power: float, max_seeds: int,
            unit: str) -> tuple[int | None, str | None]:
    """The smallest n from 2 to ``max_seeds`` whose power reaches ``power`` (power grows with n)."""
    n = np.arange(2, max_seeds + 1)
    reached = power_at(n) >= power
    if not reached.any():
        return None, f"more than {max_seeds} {unit}"
    return int(n[np.argmax(reached)]), None


def paired_ttest_power(effect: float, sigma_difference: float, n: int | np.ndarray,
                       alpha: float = ALPHA) -> np.ndarray:
    """Power of a two-sided paired t-test at ``alpha`` with ``n`` pairs whose differences have σ_d."""
    n = np.asarray(n)
    df = n - 1
    crit = sps.t.isf(alpha / 2, df)
    lam = abs(effect) * np.sqrt(n) / sigma_difference
    return np.asarray(sps.nct.sf(crit, df, lam) + sps.nct.cdf(-crit, df, lam))


def seeds_for_paired_ttest(effect: float, sigma_difference: float, power: float = TARGET_POWER,
                           alpha: float = ALPHA, max_seeds: int = MAX_SEEDS) -> tuple[int | None, str | None]:
    """Pairs (seeds run by both groups) for a two-sided paired t-test to detect ``effect``.

    Exact through the noncentral t (df = n − 1, λ = |δ|·sqrt(n)/σ_d). When seeds share their
    luck, σ_d is well below sqrt(2)·σ and far fewer seeds are needed than for an unpaired test.
    """
    if effect == 0:
        return None, "the observed difference is exactly 0"
    if not math.isfinite(sigma_difference) or sigma_difference <= 0:
        return None, "the paired differences have no spread"
    return _fewest(lambda n: paired_ttest_power(effect, sigma_difference, n, alpha), power, max_seeds, "seeds")


# ----------------------------------------------------- several experiments
def holm_adjust(p_values: Sequence[float | None]) -> tuple[float | None, ...]:
    """Holm–Bonferroni adjusted p-values, in the input order; None stays None and is not counted."""
    where = [i for i, p in enumerate(p_values) if p is not None]
    p = _array([value for value in p_values if value is not None])
    out: list[float | None] = [None] * len(p_values)
    if p.size == 0:
        return tuple(out)
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    for rank, index in enumerate(order):
        out[where[index]] = float(adjusted[rank])
    return tuple(out)
