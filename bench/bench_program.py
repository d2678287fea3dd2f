"""A research program on one baseline: false WINNERs with and without program-wide control, and
the equivalence test's rates.

Part 1 simulates programs of K = 20 and K = 100 experiments against one baseline (5 seeds, 6 for
the sequential mode's last look), all without effect and with 10% of them truly 2σ better, and
judges every experiment through the real decision code: the fixed rule as ``protocol`` applies
it (``needs_extension`` then ``judge``), the sequential rule as ``sequential.decide`` decides.
Each program is judged twice on the same runs: uncontrolled (2σ; the sequential design's α) and
under LOND at ``--program-alpha`` (``program.lond_level``: the fixed rule at the widened threshold
of ``program.fixed_threshold``, the sequential rule at ``program.sequential_at_level``). It prints
the family-wise false-WINNER rate, the false-discovery rate and the power at 2σ, each with its
Monte Carlo standard error.

Part 1b states the sequential design at LOND's levels, as a report under ``--exprun-program-alpha``
quotes it: the bounds calibrated at the level (``program.sequential_at_level``) and their simulated
P(WINNER) at no effect, 1σ and 2σ, with the expected experiment seeds (``sequential_rates``, the
report's own simulation).

Part 2 simulates the equivalence test (TOST, Welch, α = 5%) after the fixed rule: P(EQUIVALENT)
at a true Δ of exactly ±M, and P(EQUIVALENT) at no effect by the number of seeds.

Normal noise, σ = 1, fixed seeds; no training runs:

    python bench/bench_program.py                     # 9.5 minutes measured on 2 shared, busy cores
    python bench/bench_program.py --only programs     # part 1 alone (about 7 of those minutes)
    python bench/bench_program.py --only equivalence  # part 2 alone (about 2.5)
    python bench/bench_program.py --only levels       # part 1b alone (about a minute)
    python bench/bench_program.py --quick             # 10 times fewer trials: about 2 minutes
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pytest_exprun.decide import protocol
from pytest_exprun.decide.equivalence import (
    MarginVerdict,
    margin_verdict,
    tost_sigma,
    tost_welch,
)
from pytest_exprun.decide.program import (
    fixed_false_winner,
    fixed_familywise,
    fixed_threshold,
    gamma,
    lond_level,
    replay,
    sequential_at_level,
    widened_extension,
    widened_threshold,
    widened_verdict,
)
from pytest_exprun.decide.sequential import Decision, decide
from pytest_exprun.decide.sequential_design import SEEDS, Design, make_design
from pytest_exprun.decide.sequential_rates import sequential_rates
from pytest_exprun.decide.stats import Summary, summarize

SEED = 20261204
EFFECT = 2.0  # the true improvement of the experiments that have one, in σ
SHARE = 0.10  # the share of experiments that have it


# ------------------------------------------------------------------ one experiment, through the real rules
def fixed_winner(base: Summary, values: np.ndarray, threshold: float) -> bool:
    """The fixed rule as ``protocol`` applies it (``needs_extension``, ``judge``) at 2σ; widened,
    through ``program.widened_verdict``, which is ``protocol.judge`` on a scaled σ."""
    first = summarize(values[:3].tolist())
    if threshold == protocol.SIGNIFICANT_SIGMAS:
        final = summarize(values[:5].tolist()) if protocol.needs_extension(base, first) else first
        return protocol.judge(base, final) is protocol.Verdict.WINNER
    final = summarize(values[:5].tolist()) if widened_extension(base, first, threshold) else first
    return widened_verdict(base, final, threshold) is protocol.Verdict.WINNER


def sequential_winner(design: Design, baseline: dict[int, float], values: np.ndarray) -> bool:
    experiment = {seed: float(v) for seed, v in zip(SEEDS, values)}
    return decide(design, len(design.looks) - 1, baseline, experiment).decision is Decision.WINNER


# ------------------------------------------------------------------ programs
def simulate_programs(rule: str, k: int, with_effects: bool, trials: int, program_alpha: float,
                      design: Design, seed: int) -> dict[str, dict[str, float]]:
    """Family-wise rate, false-discovery rate and power, uncontrolled and under LOND, on the same runs."""
    rng = np.random.default_rng(seed)
    n_true = round(SHARE * k) if with_effects else 0
    width = design.baseline_looks[-1] if rule == "sequential" else 5
    out = {name: {"any_false": [], "fdp": [], "power": [], "level": []} for name in ("uncontrolled", "LOND")}
    levels: dict[tuple[int, int], object] = {}
    for trial in range(trials):
        base_values = rng.standard_normal(max(width, 5))
        base = summarize(base_values[:5].tolist())
        base_map = {seed_: float(v) for seed_, v in zip(SEEDS, base_values)}
        effects = np.zeros(k)
        effects[rng.choice(k, n_true, replace=False)] = EFFECT
        runs = rng.standard_normal((k, max(width, 5))) - effects[:, None]
        for name in out:
            winners, verdicts, spent = [], [], []
            for j in range(k):
                if name == "uncontrolled":
                    level = design.alpha if rule == "sequential" else fixed_false_winner()
                    rule_at: object = design if rule == "sequential" else protocol.SIGNIFICANT_SIGMAS
                else:
                    level = lond_level(program_alpha, j + 1, sum(winners))
                    key = (j + 1, sum(winners))
                    if key not in levels:
                        levels[key] = (sequential_at_level(design, level) if rule == "sequential"
                                       else widened_threshold(level))
                    rule_at = levels[key]
                won = (sequential_winner(rule_at, base_map, runs[j]) if rule == "sequential"  # type: ignore[arg-type]
                       else fixed_winner(base, runs[j], rule_at))  # type: ignore[arg-type]
                winners.append(won)
                verdicts.append("WINNER" if won else "NEUTRAL")
                spent.append(level)
            if name == "LOND" and trial == 0:  # the replay from stored verdicts gives the same levels
                assert [s.level for s in replay(program_alpha, verdicts).steps] == spent
            won_arr = np.asarray(winners)
            false = int(np.sum(won_arr & (effects == 0)))
            true = int(np.sum(won_arr & (effects > 0)))
            out[name]["any_false"].append(false > 0)
            out[name]["fdp"].append(false / max(false + true, 1))
            out[name]["power"].append(true / n_true if n_true else math.nan)
            out[name]["level"].append(float(np.mean(spent)))
    summary = {}
    for name, columns in out.items():
        any_false = np.asarray(columns["any_false"], dtype=float)
        fdp = np.asarray(columns["fdp"])
        power = np.asarray(columns["power"])
        summary[name] = {
            "fwer": float(any_false.mean()), "fwer_se": float(any_false.std(ddof=1) / math.sqrt(trials)),
            "fdr": float(fdp.mean()), "fdr_se": float(fdp.std(ddof=1) / math.sqrt(trials)),
            "power": float(power.mean()) if n_true else math.nan,
            "power_se": float(power.std(ddof=1) / math.sqrt(trials)) if n_true else math.nan,
            "level": float(np.mean(columns["level"])),
        }
    return summary


def _pct(p: float, se: float) -> str:
    return "–" if math.isnan(p) else f"{100 * p:.1f}% ± {100 * se:.1f}"


def program_table(trials: dict[int, int], program_alpha: float, design: Design) -> str:
    lines = [
        (f"LOND at program alpha {program_alpha:g}: the j-th decision at A·γ_j·(WINNERs before + 1), "
         f"γ_j = j^-1.5/ζ(1.5); true effects {EFFECT:g}σ in {SHARE:.0%} of the experiments where present."),
        "",
        ("| rule | K | true effects | control | trials | P(any false WINNER) | false-discovery rate | "
         "power at 2σ | mean level |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rule in ("fixed", "sequential"):
        for k in (20, 100):
            for with_effects in (False, True):
                start = time.perf_counter()
                n = trials[k]
                result = simulate_programs(rule, k, with_effects, n, program_alpha, design, SEED + k + 7 * with_effects)
                for name, row in result.items():
                    lines.append(
                        f"| {rule} | {k} | {'10% at 2σ' if with_effects else 'none'} | {name} | {n:,} | "
                        f"{_pct(row['fwer'], row['fwer_se'])} | {_pct(row['fdr'], row['fdr_se'])} | "
                        f"{_pct(row['power'], row['power_se'])} | {row['level']:.2g} |")
                print(f"  ({rule}, K = {k}, {'with' if with_effects else 'without'} effects: "
                      f"{time.perf_counter() - start:.0f} s)", flush=True)
    return "\n".join(lines)


def exact_fixed_lines(program_alpha: float) -> str:
    """The integrated figures the simulation checks: uncontrolled family-wise rates and the LOND levels'
    thresholds and powers when no WINNER came before."""
    lines = ["Fixed rule, integrated (no simulation): family-wise false-WINNER rate without control, "
             + ", ".join(f"K = {k}: {fixed_familywise(k):.1%}" for k in (1, 5, 20, 100)) + ".",
             "",
             "| decision j | LOND level (no WINNER before) | threshold (baseline σ) | P(WINNER) at 2σ |",
             "| --- | --- | --- | --- |",
             f"| uncontrolled | {fixed_false_winner():.4f} | 2.00 | {fixed_false_winner(2.0, effect=EFFECT):.1%} |"]
    for j in (1, 2, 5, 10, 20, 50, 100):
        level = lond_level(program_alpha, j, 0)
        c = fixed_threshold(level)
        lines.append(f"| {j} | {level:.2g} | {c:.2f} | {fixed_false_winner(c, effect=EFFECT, loser=2.0):.1%} |")
    lines.append(f"\nΣ γ_j over 20 decisions: {sum(gamma(j) for j in range(1, 21)):.3f}; over 100: "
                 f"{sum(gamma(j) for j in range(1, 101)):.3f} (the family-wise bound under no effect is A times that).")
    return "\n".join(lines)


# ------------------------------------------------------------------ the sequential design at its level
def level_table(program_alpha: float, design: Design, trials: int) -> str:
    """The sequential design calibrated at the j-th decision's level (no WINNER before), simulated."""
    lines = [f"The sequential design (α = {design.alpha:g}, looks {', '.join(map(str, design.looks))}) calibrated at "
             f"LOND's level for decision j at program alpha {program_alpha:g}, no WINNER before; {trials:,} "
             "simulated experiments a column (normal noise, σ = 1); ± is one Monte Carlo standard error.",
             "",
             ("| decision j | level | calibration trials | WINNER bound at the looks | P(WINNER) at 0 | "
              "P(WINNER) at 1σ | P(WINNER) at 2σ | expected seeds at 0 |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def se(p: float) -> float:
        return math.sqrt(max(p * (1 - p), 1.0 / trials) / trials)

    for j in (0, 1, 2, 5, 10, 20, 50):
        level = design.alpha if j == 0 else lond_level(program_alpha, j, 0)
        at = design if j == 0 else sequential_at_level(design, level)
        rows = sequential_rates(at, (0.0, 1.0, 2.0), trials=trials)
        bounds = ", ".join(f"{b:.2f}" for b in at.winner_bounds)
        cells = " | ".join(f"{100 * r.p_winner:.3f}% ± {100 * se(r.p_winner):.3f}" if r.effect == 0 else
                           f"{100 * r.p_winner:.2f}% ± {100 * se(r.p_winner):.2f}" for r in rows)
        lines.append(f"| {'uncontrolled' if j == 0 else j} | {level:.2g} | {at.calibration_trials:,} | {bounds} | "
                     f"{cells} | {rows[0].expected_seeds:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ the equivalence test
def equivalence_rate(effect: float, margin: float, sigma_margin: bool | str, n_baseline: int, n_experiment: int | None,
                     trials: int, rng: np.random.Generator) -> float:
    """P(EQUIVALENT) at a true Δ of ``effect`` σ (experiment − baseline), through the real rules.

    ``n_experiment`` None: the fixed rule's own seeds (3, or 5 after its extension) and its verdict
    first; a number: that many experiment seeds and the TOST alone (the rule's NEUTRAL assumed).
    ``sigma_margin``: the margin is ``margin`` baseline σ, tested by ``tost_sigma``; ``"naive"``: the
    plain TOST at ``margin`` times the measured s_b (what ``tost_sigma`` replaces).
    """
    hits = 0
    for _ in range(trials):
        b = rng.standard_normal(n_baseline)
        e = rng.standard_normal(n_experiment or 5) + effect
        base = summarize(b.tolist())
        if n_experiment is None:
            first = summarize(e[:3].tolist())
            used = e[:5] if protocol.needs_extension(base, first) else e[:3]
            rule = protocol.judge(base, summarize(used.tolist()))
        else:
            used, rule = e, protocol.Verdict.NEUTRAL
        if sigma_margin == "naive":
            test = tost_welch(b.tolist(), used.tolist(), margin * base.std)
        elif sigma_margin:
            test = tost_sigma(b.tolist(), used.tolist(), margin)
        else:
            test = tost_welch(b.tolist(), used.tolist(), margin)
        verdict = margin_verdict(rule, test)
        hits += verdict is MarginVerdict.EQUIVALENT
    return hits / trials


def equivalence_tables(trials: int) -> str:
    rng = np.random.default_rng(SEED)
    def se(p: float) -> float:
        return math.sqrt(max(p * (1 - p), 0.25 / trials) / trials)

    lines = [f"TOST (Welch, α = 5%) after the fixed rule (5 baseline seeds, 3 + 2 experiment seeds), {trials:,} trials a row.",
             "",
             "| margin M | given as | true Δ | P(EQUIVALENT) |", "| --- | --- | --- | --- |"]
    for margin in (1.0, 2.0, 3.0):
        for sigma_margin in (False, True, "naive"):
            for effect in (-margin, margin):
                p = equivalence_rate(effect, margin, sigma_margin, 5, None, trials, rng)
                given = {False: "val_loss units", True: f"{margin:g}sigma (noncentral t)",
                         "naive": f"{margin:g}sigma read as × s_b (naive)"}[sigma_margin]
                lines.append(f"| {margin:g}σ | {given} | {effect:+g}σ | {100 * p:.2f}% ± {100 * se(p):.2f} |")
    lines += ["", "P(EQUIVALENT) at no effect, TOST alone on n experiment seeds:", "",
              ("| margin M | n experiment seeds | units, baseline 5 seeds | units, baseline n seeds | "
               "sigma, baseline 5 seeds | sigma, baseline n seeds |"),
              "| --- | --- | --- | --- | --- | --- |"]
    for margin in (1.0, 1.5, 2.0):
        for n in (3, 5, 8, 12, 16, 26):
            row = [equivalence_rate(0.0, margin, given, nb, n, trials, rng)
                   for given in (False, True) for nb in (5, max(5, n))]
            lines.append(f"| {margin:g}σ | {n} | " + " | ".join(f"{100 * p:.1f}%" for p in row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 times fewer trials (a smoke run)")
    parser.add_argument("--program-alpha", type=float, default=0.05)
    parser.add_argument("--only", choices=("programs", "levels", "equivalence"), help="run one part")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    start = time.perf_counter()
    design = make_design()
    if args.only in (None, "programs"):
        print(exact_fixed_lines(args.program_alpha), "\n", flush=True)
        print(program_table({20: 2000 // scale, 100: 500 // scale}, args.program_alpha, design), "\n", flush=True)
    if args.only in (None, "levels"):
        print(level_table(args.program_alpha, design, 200_000 // scale), "\n", flush=True)
    if args.only in (None, "equivalence"):
        print(equivalence_tables(10_000 // scale), flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
