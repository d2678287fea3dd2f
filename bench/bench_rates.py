"""The protocol's operating characteristics, by simulation: every figure ``docs/statistics.md`` quotes.

Normal noise with σ = 1 unless a section says otherwise (effects in σ, positive = lower loss),
fixed seeds, so two runs print the same figures. Each simulated figure is printed with its
trials and its Monte Carlo standard error (±, in the figure's own unit: percentage points for
a rate); a figure that is exact (a formula, or a symmetry) says so. It prints:

  1. the default design's error-rate table (``rates.fixed_rule_rates``, the function reports use),
     a fixed 5-vs-5 design, the false-WINNER rate by baseline size, the minimum detectable effect,
     σ's interval and how much the WINNERs' estimate overstates a true 1σ;
  2. the false-WINNER rate when the noise is not normal (``rates.fixed_rule_null_rates``);
  3. the family-wise false-WINNER rate of K experiments judged against one baseline;
  4. the coverage of a nominal 95% interval of Δ: percentile bootstrap (which sets
     ``rates.BOOTSTRAP_COVERAGE``) and Welch's t-interval, fixed and after the extension step;
  5. the control check's false-alarm rate when nothing changed, old 1σ rule against the new one;
  6. how often "pairing helped" would be claimed for seeds that share nothing.

    python bench/bench_rates.py                 # about a minute on 2 cores
    python bench/bench_rates.py --trials 2000000
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats as sps

from pytest_exprun.decide import evidence, rates
from pytest_exprun.decide.protocol import CONTROL_FALSE_ALARM
from pytest_exprun.decide.stats import std_interval


def rate(p: float, trials: int, digits: int = 2) -> str:
    """A simulated rate with its Monte Carlo standard error in percentage points."""
    se = 100 * math.sqrt(p * (1 - p) / trials)
    return f"{100 * p:.{digits}f}% ± {se:.{digits}f}"


def mean_with_se(values: np.ndarray, digits: int = 3) -> str:
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1) / math.sqrt(values.size):.{digits}f}"


def welch_bounds(b: np.ndarray, e: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t-interval of mean(e) − mean(b) row by row (the formula of ``stats.welch_interval``)."""
    vb, ve = b.var(axis=1, ddof=1) / b.shape[1], e.var(axis=1, ddof=1) / e.shape[1]
    se2 = vb + ve
    df = se2**2 / (vb**2 / (b.shape[1] - 1) + ve**2 / (e.shape[1] - 1))
    half = sps.t.ppf(0.5 + confidence / 2, df) * np.sqrt(se2)
    delta = e.mean(axis=1) - b.mean(axis=1)
    return delta - half, delta + half


def welch_coverage(trials: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    out = {}
    for n_exp in (3, 5):
        b, e = rng.normal(size=(trials, 5)), rng.normal(size=(trials, n_exp))
        low, high = welch_bounds(b, e)
        out[f"5 vs {n_exp}, fixed"] = float(np.mean((low <= 0) & (0 <= high)))
    for effect in (0.0, 1.0, 2.0):
        b, e = rng.normal(size=(trials, 5)), rng.normal(-effect, 1.0, size=(trials, 5))
        extend = np.abs(e[:, :3].mean(axis=1) - b.mean(axis=1)) < 2 * b.std(axis=1, ddof=1)
        low3, high3 = welch_bounds(b, e[:, :3])
        low5, high5 = welch_bounds(b, e)
        low, high = np.where(extend, low5, low3), np.where(extend, high5, high3)
        out[f"3 + 2 as run, true effect {effect:g}σ"] = float(np.mean((low <= -effect) & (-effect <= high)))
    return out


def winner_estimates(effect: float, trials: int, seed: int) -> np.ndarray:
    """The improvement (baseline mean − experiment mean, in true σ) WINNER verdicts of the fixed
    rule report at a true ``effect``: whole runs through the rule, independent of ``rates``."""
    rng = np.random.default_rng(seed)
    b, e = rng.normal(size=(trials, 5)), rng.normal(-effect, 1.0, size=(trials, 5))
    mean_b, margin = b.mean(axis=1), 2 * b.std(axis=1, ddof=1)
    first = e[:, :3].mean(axis=1)
    final = np.where(np.abs(first - mean_b) < margin, e.mean(axis=1), first)
    won = final <= mean_b - margin
    return (mean_b - final)[won]


def control_false_alarms(trials: int, seed: int) -> dict[str, float]:
    """Nothing changed: the control is the baseline's own seed-42 value (deterministic trainer) or a
    fresh draw (non-deterministic trainer, or one that does not reproduce seeds)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(trials, 5))
    mean, s = base.mean(axis=1), base.std(axis=1, ddof=1)
    fresh = rng.normal(size=trials)
    limit = sps.t.isf(CONTROL_FALSE_ALARM / 2, 4) * math.sqrt(1 + 1 / 5) * s
    return {
        "old 1σ rule, deterministic trainer": float(np.mean(np.abs(base[:, 0] - mean) > s)),
        "old 1σ rule, non-deterministic trainer": float(np.mean(np.abs(fresh - mean) > s)),
        "new rule, non-deterministic trainer (prediction interval)": float(np.mean(np.abs(fresh - mean) > limit)),
    }


def pairing_claims(trials: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    b, e = rng.normal(size=(trials, 5)), rng.normal(size=(trials, 5))
    ratio = (e - b).var(axis=1, ddof=1) / (e.var(axis=1, ddof=1) + b.var(axis=1, ddof=1))
    bc, ec = b - b.mean(axis=1, keepdims=True), e - e.mean(axis=1, keepdims=True)
    r = (bc * ec).sum(axis=1) / np.sqrt((bc * bc).sum(axis=1) * (ec * ec).sum(axis=1))
    t = r * np.sqrt(3 / (1 - r**2))
    p = 2 * sps.t.sf(np.abs(t), 3)
    return {"variance ratio < 1": float(np.mean(ratio < 1)),
            "correlation r > 0 with p < 0.05": float(np.mean((r > 0) & (p < 0.05)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=rates.RATE_TRIALS, help="trials per error-rate row")
    args = parser.parse_args()
    n = args.trials
    started = time.perf_counter()

    print(f"1. The fixed rule ({n:,} trials a row; ± one Monte Carlo standard error, in percentage points for rates)\n")
    design = rates.Design()
    rows = rates.fixed_rule_rates(trials=n)
    print(rates.format_rates_table("fixed", rows, design))
    for row in rows:
        extended = (row.expected_seeds - design.n_first) / design.n_extension
        seeds_se = design.n_extension * math.sqrt(extended * (1 - extended) / n)
        print(f"  {row.effect:g}σ: P(WINNER) {rate(row.p_winner, n)}, P(LOSER) {rate(row.p_loser, n)}, "
              f"expected experiment seeds {row.expected_seeds:.2f} ± {seeds_se:.3f}")
    five = rates.fixed_rule_rates(n_first=5, n_extension=0, effects=(0.0, 2.0), trials=n)
    print(f"\nFixed 5 vs 5, same threshold: false WINNER {rate(five[0].p_winner, n)}, "
          f"WINNER at 2σ {rate(five[1].p_winner, n)}")
    print("\nFalse WINNER by baseline size (experiment 3 + 2):")
    for n_base in (2, 3, 4, 5):
        (row,) = rates.fixed_rule_rates(n_baseline=n_base, effects=(0.0,), trials=n)
        print(f"  {n_base} baseline seeds: {rate(row.p_winner, n)}")
    mde = rates.design_mde(trials=n)
    h = 0.05  # the power curve's slope at the MDE turns the quantile's binomial error into σ
    slope = (rates.design_power(mde + h, trials=n) - rates.design_power(mde - h, trials=n)) / (2 * h)
    mde_se = math.sqrt(0.8 * 0.2 / n) / slope
    print(f"\nMinimum detectable effect (80% WINNER), two-stage as run: {mde:.3f}σ ± {mde_se:.3f}; "
          f"fixed-design formula for 5 vs 3 (exact): {evidence.minimum_detectable_effect(1.0, 5, 3):.2f}σ")
    sigma = std_interval(1.0, 5)
    assert sigma.low is not None and sigma.high is not None
    print(f"σ from 5 seeds (exact, chi-square with 4 df): 95% interval {sigma.low:.3f}·s to {sigma.high:.3f}·s "
          f"(a factor of {sigma.high / sigma.low:.2f})")
    reported = winner_estimates(1.0, n, seed=9)
    print(f"At a true 1σ, WINNER verdicts report an improvement of {mean_with_se(reported)}σ on average "
          f"({reported.size:,} WINNERs of {n:,} trials)")

    print(f"\n2. When nothing changed and the noise is not normal (mean 0, variance 1; {n:,} trials each)")
    for shape, label in rates.NOISE_SHAPES.items():
        winner, loser = rates.fixed_rule_null_rates(shape, trials=n)
        print(f"  {label}: P(WINNER) {rate(winner, n)}, P(LOSER) {rate(loser, n)}")
    print("  (right-skewed noise, the mirror image: the two rates swap)")

    print(f"\n3. K experiments with no effect, one shared baseline (5 seeds, {rates.FAMILY_TRIALS:,} trials each): "
          "P(at least one false WINNER)")
    for k in (1, 2, 3, 4, 5, 10, 20):
        print(f"  K = {k:2d}: {rate(rates.familywise_false_winner(k), rates.FAMILY_TRIALS)}")

    print("\n4. Coverage of a nominal 95% interval of Δ")
    boot = 20_000
    for n_exp in (3, 5):
        coverage = rates.bootstrap_coverage(5, n_exp, trials=boot, resamples=999, seed=5)
        print(f"  percentile bootstrap, 5 vs {n_exp}: {rate(coverage, boot, 1)} ({boot:,} trials, 999 resamples)")
    for label, coverage in welch_coverage(n, seed=6).items():
        print(f"  Welch t-interval, {label}: {rate(coverage, n, 2)} ({n:,} trials)")

    print(f"\n5. Control check, nothing changed: false alarm (5 baseline seeds, {n:,} trials)")
    for label, p in control_false_alarms(n, seed=7).items():
        print(f"  {label}: {rate(p, n)}")
    print("  new rule, deterministic trainer (reproduces its own seed's value): 0% (exact: nothing to simulate)")
    print(f"  the prediction interval's rate is {CONTROL_FALSE_ALARM:.0%} by construction (exact)")

    print(f"\n6. Seeds that share nothing (5 pairs, {n:,} trials): 'pairing helped' would be claimed by")
    claims = pairing_claims(n, seed=8)
    exact = {"variance ratio < 1": "exactly 50% by symmetry (the ratio is below 1 iff the sample covariance is "
                                   "positive, and e → −e flips its sign)",
             "correlation r > 0 with p < 0.05": "exactly 2.5% (the two-sided test rejects 5% of the time, "
                                                "half of it with r > 0, by symmetry)"}
    for label, p in claims.items():
        print(f"  {label}: {rate(p, n)}; {exact[label]}")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
