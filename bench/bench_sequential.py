"""The sequential decision mode's design and operating characteristics, next to the fixed 2σ rule.

Prints the default design's bounds, then P(WINNER), P(LOSER) and expected experiment seeds at
true effects of 0 to 3σ for seed-to-seed correlations r = 0, 0.5 and 0.85, for the default
(Welch) design and for the paired one, with the fixed rule's simulated figures (2M trials,
r = 0) beside them and the mean improvement WINNER verdicts report; last, the family-wise
false-WINNER rate of three experiments on one baseline. Pure simulation, no training runs:

    python bench/bench_sequential.py
    python bench/bench_sequential.py --trials 1000000 --alpha 0.01
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pytest_exprun.decide.sequential import (
    Decision,
    decide,
    decide_family,
)
from pytest_exprun.decide.sequential_design import SEEDS, Design, make_design
from pytest_exprun.decide.sequential_rates import (
    sequential_rates,
    winner_estimates,
)

EFFECTS = (0.0, 0.5, 1.0, 2.0, 3.0)
CORRELATIONS = (0.0, 0.5, 0.85)
#: The fixed protocol (5 baseline seeds, 3 + 2 experiment seeds, WINNER at 2 baseline σ),
#: simulated with 2M trials a row, r = 0: effect → (P(WINNER), P(LOSER), expected seeds).
FIXED_RULE = {0.0: (0.0305, 0.0303, 4.90), 0.5: (0.095, 0.0071, 4.83), 1.0: (0.223, 0.0012, 4.62),
              2.0: (0.617, 0.0, 3.89), 3.0: (0.905, 0.0, 3.27)}
#: Issue 17's reference design at 2σ and at no effect: looks 2, 3, 5, O'Brien-Fleming-shaped
#: bounds on a pooled t, futility |t| < 0.8 and < 1.2.
REFERENCE = "reference design (looks 2, 3, 5, OBF bounds on a pooled t): 78.6% WINNER at 2σ, 2.88 seeds at 0, 3.62 at 2σ"


def bounds_table(design: Design) -> str:
    lines = [
        f"{design.method}, α = {design.alpha:g}, min effect {design.min_effect:g}σ, looks {list(design.looks)}, "
        f"futility margin {design.futility_margin:g}, calibrated on {design.calibration_trials:,} null experiments",
        "",
        "| look | experiment seeds | baseline seeds | design df | WINNER if t ≥ | one-sided p | NEUTRAL if t < | LOSER if t ≤ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, n in enumerate(design.looks):
        last = i == len(design.looks) - 1
        futility = "(last look)" if last else f"{design.futility_bounds[i]:.3f}"
        lines.append(f"| {i + 1} | {n} | {design.baseline_looks[i]} | {design.design_df[i]:.2f} | "
                     f"{design.winner_bounds[i]:.3f} | {design.nominal_p[i]:.4f} | {futility} | {design.loser_bounds[i]:.3f} |")
    return "\n".join(lines)


def rates_table(design: Design, correlation: float, trials: int) -> str:
    rows = sequential_rates(design, EFFECTS, correlation=correlation, trials=trials)
    lines = [
        f"{design.method}, r = {correlation:g} ({trials:,} trials a row)",
        "",
        "| true effect (σ) | P(WINNER) | P(LOSER) | expected experiment seeds | WINNERs report (σ) | fixed rule, r = 0: P(WINNER) | P(LOSER) | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        fixed = FIXED_RULE[row.effect]
        reported = winner_estimates(design, row.effect, correlation, trials) if row.effect > 0 else None
        shown = "-" if reported is None else f"{reported:.2f}"
        lines.append(f"| {row.effect:g} | {100 * row.p_winner:.1f}% | {100 * row.p_loser:.2f}% | {row.expected_seeds:.2f} | "
                     f"{shown} | {100 * fixed[0]:.1f}% | {100 * fixed[1]:.2f}% | {fixed[2]:.2f} |")
    return "\n".join(lines)


def family_rates(design: Design, k: int, trials: int, seed: int = 3) -> str:
    """P(at least one false WINNER) among k null experiments on one baseline, with and without the step-down."""
    rng = np.random.default_rng(seed)
    n = design.baseline_looks[-1]
    step_down = one_by_one = 0
    for _ in range(trials):
        base = dict(zip(SEEDS, rng.standard_normal(n).tolist()))
        experiments = {f"e{i}": dict(zip(SEEDS, rng.standard_normal(n).tolist())) for i in range(k)}
        results = decide_family(design, len(design.looks) - 1, base, experiments)
        step_down += any(r.decision is Decision.WINNER for r in results.values())
        one_by_one += any(decide(design, len(design.looks) - 1, base, e).decision is Decision.WINNER
                          for e in experiments.values())
    se = math.sqrt(design.alpha * (1 - design.alpha) / trials)
    return (f"{k} experiments without effect on one baseline ({trials:,} trials, MC s.e. {100 * se:.2f} points): "
            f"P(any false WINNER) {100 * step_down / trials:.2f}% with the step-down, "
            f"{100 * one_by_one / trials:.2f}% judged one by one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.03)
    parser.add_argument("--min-effect", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=400_000)
    parser.add_argument("--family-trials", type=int, default=10_000, help="0 skips the family-wise check")
    args = parser.parse_args()
    start = time.process_time()
    welch = make_design(args.alpha, args.min_effect)
    took = time.process_time() - start
    paired = make_design(args.alpha, args.min_effect, paired=True)
    print(f"calibrating the default design took {took:.2f} s of CPU (cached per design afterwards)\n")
    for design in (welch, paired):
        print(bounds_table(design) + "\n")
    print(REFERENCE + "\n")
    for design in (welch, paired):
        for r in CORRELATIONS:
            print(rates_table(design, r, args.trials) + "\n")
    if args.family_trials:
        print(family_rates(welch, 3, args.family_trials))


if __name__ == "__main__":
    main()
