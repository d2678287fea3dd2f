"""The sequential decision mode's design and operating characteristics, next to the fixed 2σ rule:
every figure ``docs/sequential.md`` quotes.

Each simulated figure is printed with its trials and its Monte Carlo standard error (±, in
percentage points for a rate, in seeds or σ otherwise). Prints, in order:

  1. the default design's bounds (Welch's t and paired t), and the first bound O'Brien-Fleming's
     shape would set;
  2. the looks compared at the default bounds' recipe;
  3. P(WINNER), P(LOSER), expected experiment seeds and the mean improvement WINNER verdicts report,
     at true effects of −2σ to 3σ, for r = 0, 0.5 and 0.85, Welch and paired, with the fixed rule's
     rates (simulated here, r = 0) beside them;
  4. the false-WINNER rate away from the assumptions: heavy tails, skew, an experiment σ unlike the
     baseline's, negatively correlated seeds;
  5. what a larger ``--exprun-min-effect`` buys and costs;
  6. the family-wise false-WINNER rate of three experiments on one baseline;
  7. what a sequential report states from ``decide/sequential_figures.py``: the printed Welch
     interval's coverage under the data-dependent stop, per true effect, and the step-down's
     family-wise false-WINNER rate for K = 1 to 4, as the summary quotes them;
  8. EQUIVALENT at any look with a margin (``decide/sequential_equivalence.py``): P(EQUIVALENT) at a
     true Δ of exactly ±M (the false-EQUIVALENT rate the per-look level α/K bounds by 5%), beside the
     same test undivided at every look, and at no effect with the seeds it takes.

Pure simulation, no training runs, fixed seeds:

    python bench/bench_sequential.py                 # a few minutes on 2 cores
    python bench/bench_sequential.py --trials 1000000 --alpha 0.01
    python bench/bench_sequential.py --only equivalence   # part 8 alone (about a minute)
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pytest_exprun.decide import rates
from pytest_exprun.decide.sequential import Decision, decide, decide_family
from pytest_exprun.decide.sequential_design import (
    DEFAULT_FUTILITY_MARGIN,
    SEEDS,
    Design,
    make_design,
)
from pytest_exprun.decide.sequential_rates import null_rates_under, simulate

EFFECTS = (-2.0, 0.0, 0.5, 1.0, 2.0, 3.0)
CORRELATIONS = (0.0, 0.5, 0.85)
FIXED_TRIALS = 2_000_000
LOOK_CHOICES = ((2, 3, 5), (2, 3, 4, 5), (2, 4, 6), (2, 3, 4, 6), (2, 3, 5, 7), (2, 3, 4, 5, 6))


def pct(p: float, trials: int, digits: int = 2) -> str:
    """A simulated rate with its Monte Carlo standard error in percentage points."""
    return f"{100 * p:.{digits}f}% ± {100 * math.sqrt(p * (1 - p) / trials):.{digits}f}"


def mean_se(values: np.ndarray, digits: int = 3) -> str:
    if values.size < 2:
        return "-"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1) / math.sqrt(values.size):.{digits}f}"


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


def outcomes(design: Design, effect: float, correlation: float, trials: int, seed: int
             ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """P(WINNER), P(LOSER), seeds used per experiment, improvement reported per WINNER."""
    code, stop, gain = simulate(design, effect, correlation, trials, seed)
    seeds = np.asarray(design.looks, dtype=float)[stop]
    return float(np.mean(code == 1)), float(np.mean(code == -1)), seeds, gain[code == 1]


def fixed_rule(trials: int) -> dict[float, rates.RateRow]:
    return {row.effect: row for row in rates.fixed_rule_rates(effects=EFFECTS, trials=trials)}


def fixed_seeds_se(row: rates.RateRow) -> float:
    """The fixed rule runs 3 seeds, or 5 with probability q: seeds = 3 + 2q, a binomial share."""
    q = (row.expected_seeds - 3) / 2
    return 2 * math.sqrt(q * (1 - q) / FIXED_TRIALS)


def rates_table(design: Design, correlation: float, trials: int, fixed: dict[float, rates.RateRow]) -> str:
    lines = [
        f"{design.method}, r = {correlation:g} ({trials:,} trials a row; fixed rule: {FIXED_TRIALS:,} trials a row, r = 0)",
        "",
        "| true effect (σ) | P(WINNER) | P(LOSER) | expected experiment seeds | WINNERs report (σ) "
        "| fixed rule: P(WINNER) | P(LOSER) | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, effect in enumerate(EFFECTS):
        won, lost, seeds, reported = outcomes(design, effect, correlation, trials, seed=17 + i)
        f = fixed[effect]
        shown = mean_se(reported) if effect > 0 else "-"
        lines.append(f"| {effect:g} | {pct(won, trials)} | {pct(lost, trials)} | {mean_se(seeds)} | {shown} | "
                     f"{pct(f.p_winner, FIXED_TRIALS)} | {pct(f.p_loser, FIXED_TRIALS)} | {f.expected_seeds:.3f} ± {fixed_seeds_se(f):.3f} |")
    return "\n".join(lines)


def looks_table(alpha: float, min_effect: float, trials: int) -> str:
    lines = [f"Looks compared (Welch's t, Pocock bounds, futility margin {DEFAULT_FUTILITY_MARGIN}; {trials:,} trials a point)",
             "", "| looks | P(WINNER) at 2σ | seeds at 0 | seeds at 2σ |", "| --- | --- | --- | --- |"]
    for looks in LOOK_CHOICES:
        design = make_design(alpha, min_effect, looks=looks)
        _, _, null_seeds, _ = outcomes(design, 0.0, 0.0, trials, seed=31)
        won, _, seeds, _ = outcomes(design, 2.0, 0.0, trials, seed=32)
        lines.append(f"| {', '.join(map(str, looks))} | {pct(won, trials)} | {mean_se(null_seeds)} | {mean_se(seeds)} |")
    return "\n".join(lines)


def assumptions(welch: Design, paired: Design, trials: int) -> str:
    lines = [f"False WINNER / false LOSER when the change does nothing, away from the assumptions ({trials:,} trials each)", ""]
    for design in (welch, paired):
        cases: list[tuple[str, float, float]] = [
            (f"{label}", *null_rates_under(design, shape, trials=trials)) for shape, label in rates.NOISE_SHAPES.items()]
        for ratio in (2.0, 0.5):
            cases.append((f"normal, experiment σ {ratio:g}× the baseline's", *null_rates_under(
                design, experiment_sigma=ratio, trials=trials)))
        for r in (-0.5, -0.9):
            code, _, _ = simulate(design, 0.0, r, trials, seed=41)
            cases.append((f"normal, seeds correlated r = {r:g}", float(np.mean(code == 1)), float(np.mean(code == -1))))
        for label, won, lost in cases:
            lines.append(f"  {design.method}, {label}: false WINNER {pct(won, trials, 2)}, false LOSER {pct(lost, trials, 2)}")
    return "\n".join(lines)


def min_effect_table(alpha: float, trials: int) -> str:
    lines = [f"Larger min effects (Welch's t; {trials:,} trials a point). The margin is widened so that power at the min "
             "effect stays at least min(80%, the default design's); 'fixed margin' is the design before that rule.",
             "", "| min effect (σ) | futility margin | P(WINNER) at the min effect | P(WINNER) at 2σ | seeds at 0 |",
             "| --- | --- | --- | --- | --- |"]
    for min_effect, margin in ((1.0, None), (1.5, None), (2.0, None), (3.0, None), (2.0, DEFAULT_FUTILITY_MARGIN),
                               (3.0, DEFAULT_FUTILITY_MARGIN)):
        design = make_design(alpha, min_effect, futility_margin=margin)
        at_min, _, _, _ = outcomes(design, min_effect, 0.0, trials, seed=51)
        at_two, _, _, _ = outcomes(design, 2.0, 0.0, trials, seed=52)
        _, _, null_seeds, _ = outcomes(design, 0.0, 0.0, trials, seed=53)
        label = f"{design.futility_margin:g}" + (" (fixed margin)" if margin is not None else "")
        lines.append(f"| {min_effect:g} | {label} | {pct(at_min, trials)} | {pct(at_two, trials)} | {mean_se(null_seeds)} |")
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
    return (f"{k} experiments without effect on one baseline ({trials:,} trials): P(any false WINNER) "
            f"{pct(step_down / trials, trials, 2)} with the step-down, {pct(one_by_one / trials, trials, 2)} judged one by one")


def report_figures(design: Design, trials: int) -> str:
    """The figures a sequential report and the summary quote, from the functions that compute them."""
    from pytest_exprun.decide import sequential_figures as figures

    lines = [f"Coverage of the printed 95% Welch interval at the stop ({trials:,} trials each)", ""]
    for effect in (0.0, 0.5, 1.0, 2.0, 3.0):
        found = figures.interval_coverage(design, (effect,), trials)
        lines.append(f"  true effect {effect:g}σ: {pct(found.low, trials)}")
    lines += ["", f"Family-wise false WINNER with the step-down ({trials:,} trials each)", ""]
    for k in (1, 2, 3, 4):
        fam = figures.familywise_false_winner(design, k, trials)
        lines.append(f"  K = {k}: {pct(fam.false_winner, trials)}")
    return "\n".join(lines)


def equivalence_table(design: Design, trials: int) -> str:
    """Part 8: the rule with its equivalence stops (``sequential_equivalence.simulate``), at ±M and at 0."""
    from pytest_exprun.decide.sequential_equivalence import simulate as with_stops

    def pct(rate: float, se: float) -> str:
        return f"{100 * rate:.2f}% ± {100 * se:.2f}"

    def se(p: float) -> float:
        return math.sqrt(max(p * (1 - p), 1.0 / trials) / trials)

    lines = [f"EQUIVALENT at any look: two one-sided tests at α/K = 5%/{len(design.looks)} at each look of the design "
             f"(α = {design.alpha:g}, looks {', '.join(map(str, design.looks))}); {trials:,} simulated experiments a "
             "cell, normal noise, σ = 1. 'undivided': the same test at 5% at every look. 'seeds': expected experiment "
             "seeds at no effect, with the stops and without them (the rule alone).",
             "",
             ("| margin M | given as | P(EQ) at Δ = −M | P(EQ) at Δ = +M | undivided, worse of ±M | "
              "P(EQ) at Δ = 0 | seeds at 0, with stops | seeds at 0, without |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for margin in (0.5, 1.0, 1.5, 2.0, 3.0):
        for sigma in (False, True):
            low = with_stops(design, -margin, margin, sigma, trials, seed=801)
            high = with_stops(design, margin, margin, sigma, trials, seed=802)
            loose = max(with_stops(design, sign * margin, margin, sigma, trials, seed=803 + i, per_look=0.05).p_equivalent
                        for i, sign in enumerate((-1.0, 1.0)))
            zero = with_stops(design, 0.0, margin, sigma, trials, seed=805)
            alone = with_stops(design, 0.0, margin, sigma, trials, seed=805, per_look=1e-300)
            lines.append(f"| {margin:g}σ | {'baseline σ (noncentral t)' if sigma else 'val_loss units (Welch)'} | "
                         f"{pct(low.p_equivalent, low.standard_error)} | {pct(high.p_equivalent, high.standard_error)} | "
                         f"{pct(loose, se(loose))} | {pct(zero.p_equivalent, zero.standard_error)} | "
                         f"{zero.expected_seeds:.2f} | {alone.expected_seeds:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.03)
    parser.add_argument("--min-effect", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=400_000)
    parser.add_argument("--family-trials", type=int, default=100_000, help="0 skips the family-wise check")
    parser.add_argument("--only", choices=("equivalence",), help="print part 8 alone")
    args = parser.parse_args()
    wall = time.perf_counter()
    if args.only == "equivalence":
        print("8. " + equivalence_table(make_design(args.alpha, args.min_effect), min(args.trials, 200_000)))
        print(f"\n({time.perf_counter() - wall:.0f} s)")
        return
    start = time.process_time()
    welch = make_design(args.alpha, args.min_effect)
    took = time.process_time() - start
    paired = make_design(args.alpha, args.min_effect, paired=True)
    print(f"calibrating the default design took {took:.2f} s of CPU (cached per design afterwards)\n")
    print("1. Bounds\n")
    for design in (welch, paired):
        print(bounds_table(design) + "\n")
    obf = make_design(args.alpha, args.min_effect, efficacy_shape=0.5)
    print(f"O'Brien-Fleming's shape (efficacy_shape 0.5) would put the first WINNER bound at t = {obf.winner_bounds[0]:.1f}\n")
    print("2. " + looks_table(args.alpha, args.min_effect, args.trials // 2) + "\n")
    fixed = fixed_rule(FIXED_TRIALS)
    print("3. Operating characteristics\n")
    for design in (welch, paired):
        for r in CORRELATIONS:
            print(rates_table(design, r, args.trials, fixed) + "\n")
    print("4. " + assumptions(welch, paired, args.trials) + "\n")
    print("5. " + min_effect_table(args.alpha, args.trials // 2) + "\n")
    if args.family_trials:
        print("6. " + family_rates(welch, 3, args.family_trials))
    print("\n7. " + report_figures(welch, args.trials))
    print("\n8. " + equivalence_table(welch, min(args.trials, 200_000)))
    print(f"\n({time.perf_counter() - wall:.0f} s)")


if __name__ == "__main__":
    main()
