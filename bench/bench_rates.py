"""The protocol's operating characteristics, by simulation: the figures ``docs/statistics.md`` quotes.

Everything is normal noise with σ = 1 (effects in σ, positive = lower loss) and fixed seeds, so
two runs print the same figures. It prints:

  1. the default design's error-rate table (``rates.fixed_rule_rates``, the function reports use),
     a fixed 5-vs-5 design for comparison, the false-WINNER rate by baseline size and the
     minimum detectable effect;
  2. the family-wise false-WINNER rate of K experiments judged against one baseline;
  3. the coverage of a nominal 95% interval of Δ: percentile bootstrap (which sets
     ``rates.BOOTSTRAP_COVERAGE``) and Welch's t-interval, with fixed seed counts and after the
     extension step;
  4. the control check's false-alarm rate when nothing changed, old 1σ rule against the new one;
  5. how often "pairing helped" is claimed for seeds that share nothing, by the variance ratio
     alone and by the correlation test.

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
        "new rule, deterministic trainer (reproduces its seed)": 0.0,
        "new rule, non-deterministic trainer (prediction interval)": float(np.mean(np.abs(fresh - mean) > limit)),
    }


def pairing_claims(trials: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    b, e = rng.normal(size=(trials, 5)), rng.normal(size=(trials, 5))
    ratio = (e - b).var(axis=1, ddof=1) / (e.var(axis=1, ddof=1) + b.var(axis=1, ddof=1))
    r = np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(b, e)])
    t = r * np.sqrt(3 / (1 - r**2))
    p = 2 * sps.t.sf(np.abs(t), 3)
    return {"variance ratio < 1": float(np.mean(ratio < 1)),
            "correlation r > 0 with p < 0.05": float(np.mean((r > 0) & (p < 0.05)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=rates.RATE_TRIALS, help="trials per error-rate row")
    args = parser.parse_args()
    started = time.perf_counter()

    design = rates.Design()
    print(rates.format_rates_table("fixed", rates.fixed_rule_rates(trials=args.trials), design))
    print(f"\n{args.trials:,} trials a row. Fixed 5 vs 5, same threshold, for comparison:")
    print(rates.format_rates_table("fixed", rates.fixed_rule_rates(n_first=5, n_extension=0, trials=args.trials),
                                   rates.Design(5, 5, 0)))
    print("\nFalse WINNER by baseline size (experiment 3 + 2):")
    for n in (2, 3, 4, 5):
        (row,) = rates.fixed_rule_rates(n_baseline=n, effects=(0.0,), trials=args.trials)
        print(f"  {n} baseline seeds: {row.p_winner:.2%}")
    print(f"\nMinimum detectable effect (80% WINNER), two-stage as run: {rates.design_mde(trials=args.trials):.2f}σ; "
          f"fixed-design formula for 5 vs 3: {evidence.minimum_detectable_effect(1.0, 5, 3):.2f}σ")
    sigma = std_interval(1.0, 5)
    print(f"σ from 5 seeds: 95% interval {sigma.low:.3f}·s to {sigma.high:.3f}·s (a factor of {sigma.high / sigma.low:.2f})")

    print("\nK experiments with no effect, one shared baseline (5 seeds): P(at least one false WINNER)")
    for k in (1, 2, 5, 10, 20):
        print(f"  K = {k:2d}: {rates.familywise_false_winner(k):.2%}")

    print("\nCoverage of a nominal 95% interval of Δ")
    for n_exp in (3, 5):
        coverage = rates.bootstrap_coverage(5, n_exp, trials=20_000, resamples=999, seed=5)
        print(f"  percentile bootstrap, 5 vs {n_exp}: {coverage:.1%} (20,000 trials, 999 resamples)")
    for label, coverage in welch_coverage(400_000, seed=6).items():
        print(f"  Welch t-interval, {label}: {coverage:.1%}")

    print("\nControl check, nothing changed: false alarm (5 baseline seeds, 400,000 trials)")
    for label, rate in control_false_alarms(400_000, seed=7).items():
        print(f"  {label}: {rate:.1%}")

    print("\nSeeds that share nothing (5 pairs, 20,000 trials): 'pairing helped' claimed when")
    for label, rate in pairing_claims(20_000, seed=8).items():
        print(f"  {label}: {rate:.1%}")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
