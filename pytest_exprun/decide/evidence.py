"""What one experiment report says about one comparison: its tests and intervals, what the
rule that decided could detect with these runs, and whether the tests agree with the verdict.

Each figure belongs to the rule that decided (``RULES``): the 2σ rule's error rates, power and
notes only where the 2σ rule decided; the sequential rule's power and interval coverage from
its own simulation (``sequential_figures``); none of either for a project's own rule.

Pure functions over per-seed values; statistics come from ``stats``, the rules' simulated
operating characteristics from ``rates`` and ``sequential_figures``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .._lazy import LazyModule
from ..model import Verdict
from .protocol import SIGNIFICANT_SIGMAS, degenerate_reason, judge
from .rates import (
    Design,
    RateRow,
    bootstrap_coverage_at,
    design_mde,
    design_power,
    design_rates,
    fixed_rule_null_rates,
    NOISE_SHAPES,
    noise_assumption,
)
from .stats import (
    ALPHA,
    MAX_SEEDS,
    TARGET_POWER,
    Interval,
    Paired,
    SignificanceTest,
    Summary,
    bootstrap_interval,
    mann_whitney,
    paired_seeds,
    seeds_for_paired_ttest,
    seeds_for_ttest,
    std_interval,
    welch_interval,
    welch_test,
)

if TYPE_CHECKING:
    from .sequential_design import Design as SequentialDesign
    from .sequential_figures import Coverage

optimize = LazyModule("scipy.optimize")
sps = LazyModule("scipy.stats")


# ------------------------------------------------------------------ power
def rule_power(effect: float, sigma: float, n_baseline: int, n_experiment: int) -> float:
    """Chance that the 2σ rule calls WINNER with a fixed ``n_experiment`` seeds (no extension step).

    The rule says WINNER when x̄_b − x̄_e ≥ 2·s_b, with s_b the baseline's sample std.
    Assume both groups are normal with the same true σ and the experiment's true mean is
    ``effect`` lower. With k = sqrt(1/n_b + 1/n_e),

        T = (x̄_b − x̄_e) / (s_b·k)

    is a noncentral t with ν = n_b − 1 degrees of freedom (s_b is independent of both means)
    and noncentrality λ = effect / (σ·k); WINNER is T ≥ 2/k, so

        P(WINNER) = 1 − F_nct(2/k; ν, λ).

    Exact for a fixed design; the protocol as it runs is ``design_power``.
    """
    k = math.sqrt(1 / n_baseline + 1 / n_experiment)
    return float(sps.nct.sf(SIGNIFICANT_SIGMAS / k, n_baseline - 1, effect / (sigma * k)))


def minimum_detectable_effect(sigma: float, n_baseline: int, n_experiment: int,
                              power: float = TARGET_POWER) -> float:
    """Smallest true improvement the 2σ rule with fixed seed counts calls WINNER with ``power``.

    Solves ``rule_power(δ) = power`` for δ (power rises monotonically with λ = δ/(σk)).
    Rule of thumb for large n: δ ≈ σ·(2 + z_power·k), where k = sqrt(1/n_b + 1/n_e).
    """
    k = math.sqrt(1 / n_baseline + 1 / n_experiment)
    nu, cut = n_baseline - 1, SIGNIFICANT_SIGMAS / k
    lam = optimize.brentq(lambda x: sps.nct.sf(cut, nu, x) - power, 0.0, 100.0 * cut + 100.0, xtol=1e-10)
    return float(lam * sigma * k)


def seeds_for_rule(effect: float, sigma: float, power: float = TARGET_POWER,
                   max_seeds: int = MAX_SEEDS) -> tuple[int | None, str | None]:
    """Seeds per group (baseline and experiment alike) for the 2σ rule to call ``effect``.

    The rule's threshold is 2·σ_base whatever n is, so more seeds only sharpen the estimates
    around it: a true |effect| at or below 2σ is called with probability tending to at most 1/2
    as n grows. Only an effect above 2σ can reach 80%.
    """
    size = abs(effect) / sigma
    if size <= SIGNIFICANT_SIGMAS:
        return None, (f"the observed |Δ| is {size:.2f}σ, below the rule's 2σ threshold: the rule stays NEUTRAL "
                      f"on an effect that size however many seeds run, so plan with the t-test figure")
    n = np.arange(2, max_seeds + 1)
    k = np.sqrt(2.0 / n)
    reached = sps.nct.sf(SIGNIFICANT_SIGMAS / k, n - 1, abs(effect) / (sigma * k)) >= power
    if not reached.any():
        return None, f"more than {max_seeds} seeds per group"
    return int(n[np.argmax(reached)]), None


@dataclass(frozen=True)
class Power:
    """What this design can detect, and (post hoc) what the observed effect would need."""

    sigma: float | None
    sigma_interval: Interval
    n_baseline: int
    n_experiment: int
    design: Design
    target: float
    minimum_detectable_effect: float | None  # of the design as run, two-stage
    mde_sigmas: float | None
    observed_effect: float  # baseline mean − experiment mean: positive is an improvement
    observed_sigmas: float | None
    observed_power: float | None  # the design's chance to call the observed effect, were it true
    observed_call: str | None  # the verdict that call would be: WINNER for an improvement, else LOSER
    seeds_for_rule: int | None
    seeds_for_rule_reason: str | None
    seeds_for_ttest: int | None
    seeds_for_ttest_reason: str | None
    ttest: str  # which test the seeds figure is for: paired when pairs exist
    reason: str | None = None


def power_analysis(baseline: Summary, experiment: Summary, design: Design | None = None,
                   paired: Paired | None = None, power: float = TARGET_POWER, rule: str = "fixed",
                   sequential: "SequentialDesign | None" = None) -> Power:
    """Power with σ = the baseline's sample std over the runs compared, for the rule that decided.

    ``rule`` "fixed": the 2σ rule's design as run (``design``: the baseline seeds actually
    compared). "sequential": the sequential design's own P(WINNER) at the observed effect, by
    simulation; no 2σ-rule figures. "own" (a project's rule): the t-test's seeds only.
    """
    sigma = baseline.std
    effect = baseline.mean - experiment.mean
    if design is None:
        design = Design(max(baseline.n, 2))
    use_pairs = (paired is not None and len(paired.seeds) >= 3 and paired.paired_variance is not None
                 and paired.paired_variance > 0)
    ttest = "paired t-test" if use_pairs else "two-sample t-test"
    interval = std_interval(sigma, baseline.n)
    empty = Power(None, interval, baseline.n, experiment.n, design, power, None, None, effect, None, None, None,
                  None, None, None, None, ttest)
    if baseline.n < 2 or experiment.n < 1:
        return _with_reason(empty, "needs at least 2 baseline runs and 1 experiment run")
    if not math.isfinite(sigma) or sigma == 0:
        return _with_reason(empty, "the baseline's σ is 0, so no noise level to plan against")
    if use_pairs:
        assert paired is not None and paired.paired_variance is not None
        t_n, t_reason = seeds_for_paired_ttest(effect, math.sqrt(paired.paired_variance), power)
    else:
        t_n, t_reason = seeds_for_ttest(effect, sigma, power)
    call = Verdict.WINNER.value if effect >= 0 else Verdict.LOSER.value
    if rule != "fixed":
        observed = None
        if rule == "sequential" and sequential is not None:
            from .sequential_figures import power_at

            # Stated for an improvement; a loss reads as its mirror (the bounds are near symmetric).
            observed = power_at(sequential, abs(effect) / sigma)
        not_the_rule = "the 2σ rule did not decide this experiment"
        return Power(sigma=sigma, sigma_interval=interval, n_baseline=baseline.n, n_experiment=experiment.n,
                     design=design, target=power, minimum_detectable_effect=None, mde_sigmas=None,
                     observed_effect=effect, observed_sigmas=effect / sigma, observed_power=observed,
                     observed_call=call, seeds_for_rule=None, seeds_for_rule_reason=not_the_rule,
                     seeds_for_ttest=t_n, seeds_for_ttest_reason=t_reason, ttest=ttest)
    mde_sigmas = design_mde(design, power)
    rule_n, rule_reason = seeds_for_rule(effect, sigma, power)
    return Power(
        sigma=sigma, sigma_interval=interval, n_baseline=baseline.n, n_experiment=experiment.n, design=design,
        target=power, minimum_detectable_effect=mde_sigmas * sigma, mde_sigmas=mde_sigmas, observed_effect=effect,
        # The rule is symmetric: P(LOSER) at a loss of δ is P(WINNER) at an improvement of δ.
        observed_sigmas=effect / sigma, observed_power=design_power(abs(effect) / sigma, design),
        observed_call=call,
        seeds_for_rule=rule_n, seeds_for_rule_reason=rule_reason,
        seeds_for_ttest=t_n, seeds_for_ttest_reason=t_reason, ttest=ttest,
    )


def _with_reason(power: Power, reason: str) -> Power:
    return Power(**{**power.__dict__, "reason": reason, "seeds_for_rule_reason": reason,
                    "seeds_for_ttest_reason": reason})


# ------------------------------------------------------------------ verdict and evidence
def flag_changed_nothing(baseline: Mapping[int, float], experiment: Mapping[int, float]) -> bool:
    """Every experiment seed was also a baseline seed and gave exactly the same value (A/A)."""
    return bool(experiment) and all(seed in baseline and baseline[seed] == value for seed, value in experiment.items())


def _rejects(test: SignificanceTest) -> bool:
    return test.p_value is not None and test.p_value < ALPHA


def _p(test: SignificanceTest) -> str:
    p = test.p_value
    assert p is not None
    return f"{test.name} (p = {p:.4f}" if p >= 1e-4 else f"{test.name} (p = {p:.1e}"


def verdict_note(verdict: Verdict | None, welch: SignificanceTest, paired_t: SignificanceTest, interval: Interval,
                 delta: float, changed_nothing: bool = False, metric: str = "val_loss", more: str = "") -> str | None:
    """One sentence when the tests disagree with the verdict, naming the next step; else None.

    The 2σ rule stays the verdict (it is the protocol); this says when a reader should not
    take it at face value. ``delta`` is experiment − baseline (negative: lower loss). ``more``: the
    command that runs more seeds of it (made by the reports from the decision; a rule knows no argv).
    """
    if changed_nothing:
        return (f"Every experiment seed gave exactly its baseline seed's {metric}: the flag changed nothing, so "
                "check that the trainer reads it (a misspelt or ignored flag looks like this).")
    if verdict is None:
        return None
    tests = [t for t in (welch, paired_t) if t.p_value is not None]
    rejecting = [t for t in tests if _rejects(t)]
    if verdict is Verdict.NEUTRAL and rejecting:
        said = []
        for test in rejecting:
            extra = ""
            if test is welch and interval.low is not None and interval.high is not None:
                extra = (f"; {interval.confidence:.0%} interval of Δ [{signed_number(interval.low, interval)}, "
                         f"{signed_number(interval.high, interval)}]")
            said.append(f"{_p(test)}, two-sided{extra})")
        direction = "lower" if delta < 0 else "higher"
        verb = "rejects" if len(said) == 1 else "both reject"
        start = (f"The 2σ rule says NEUTRAL, but {' and '.join(said)} {verb} no difference at 5%: the experiment's "
                 f"{metric} is probably {direction} by less than the rule's 2σ threshold, so run more seeds before "
                 "reading this as no effect")
        if not more:
            return f"{start} (a longer --exprun-experiment-seeds list)."
        return f"{start}: `{more}` (stored runs are reused, only the new seeds train)."
    if verdict in (Verdict.WINNER, Verdict.LOSER) and tests and not rejecting:
        neither = " nor ".join(f"{_p(t)}, two-sided)" for t in tests)
        what = "relying on it" if verdict is Verdict.WINNER else "discarding the idea"
        return (f"The 2σ rule says {verdict.value}, but neither {neither} rejects no difference at 5%: the 2σ margin may "
                "come from a baseline whose σ came out small, so re-measure the baseline with more seeds "
                f"(--exprun-rerun-baseline with a longer --exprun-baseline-seeds) before {what}.")
    return None


def explain_verdict(verdict: Verdict, baseline: Summary, experiment: Summary, note: str | None,
                    metric: str = "val_loss") -> str:
    """The verdict section's first sentence: where the experiment's mean fell against the 2σ band.

    NEUTRAL says "not distinguishable from noise" only when no test distinguishes it either.
    """
    margin = SIGNIFICANT_SIGMAS * baseline.std
    bm, em = baseline.mean, experiment.mean
    d = decimals_for(baseline.std)
    if verdict is Verdict.WINNER:
        return (f"The experiment's mean {metric} {em:.{d}f} is at or below the baseline's {bm:.{d}f} − 2σ = "
                f"{bm - margin:.{d}f}.")
    if verdict is Verdict.LOSER:
        return (f"The experiment's mean {metric} {em:.{d}f} is at or above the baseline's {bm:.{d}f} + 2σ = "
                f"{bm + margin:.{d}f}.")
    where = (f"The experiment's mean {metric} {em:.{d}f} lies within the baseline's {bm:.{d}f} ± 2σ = "
             f"[{bm - margin:.{d}f}, {bm + margin:.{d}f}]")
    return where + ("." if note else ": neither the rule nor the tests tell it apart from noise at these seeds.")


def decimals_for(*scales: float | None, least: int = 4, most: int = 15) -> int:
    """Decimals that show the smallest nonzero of ``scales`` (σ, an interval's width) to 2 significant digits.

    Four where values are of the usual size (σ from 0.001 up); more as σ shrinks (σ = 1e-6 gets
    7), so that a Δ of σ's size never prints as −0.0000 and two means σ apart never read the same.
    """
    sizes = [abs(x) for x in scales if x is not None and math.isfinite(x) and x != 0]
    if not sizes:
        return least
    return max(least, min(most, 1 - math.floor(math.log10(min(sizes)))))


def signed_number(value: float, interval: Interval) -> str:
    """``value`` signed, with the decimals that the interval's width needs."""
    width = None if interval.low is None or interval.high is None else interval.high - interval.low
    d = decimals_for(width, value)
    text = f"{value:+.{d}f}"
    return text if text.strip("+-0.") else f"{0:.{d}f}"


#: Who decided, as a report tells it: exprun's 2σ rule, its sequential rule, or a project's own
#: rule through ``pytest_exprun_decide`` (a decision that carries its own ``reason``).
RULES = ("fixed", "sequential", "own")


@dataclass(frozen=True)
class Evidence:
    welch: SignificanceTest
    mann_whitney: SignificanceTest
    interval: Interval  # Welch's t-interval of Δ: the report's 95% interval
    bootstrap: Interval
    bootstrap_coverage: float | None  # simulated coverage of the bootstrap's nominal level at these n, n fixed
    paired: Paired
    power: Power
    design: Design
    rates: tuple[RateRow, ...]  # the 2σ design's P(WINNER), P(LOSER), seeds at EFFECTS; () where it did not decide
    false_winner: float | None  # P(WINNER) when nothing changed, at the 2σ design; None where it did not decide
    two_sigma_verdict: Verdict | None  # what the 2σ rule would say on these runs (the verdict only in the fixed mode)
    note: str | None  # one sentence when the tests disagree with the verdict
    changed_nothing: bool
    rule: str = "fixed"  # which of RULES decided
    #: The 2σ rule's false-WINNER rate under each of ``rates.NOISE_SHAPES`` (fixed mode only).
    noise: Mapping[str, float] | None = None
    noise_note: str | None = None  # the sentence stating those rates
    #: The sequential mode's interval coverage under its data-dependent stop (sequential mode only).
    coverage: "Coverage | None" = None


def noise_rates(design: Design, normal: float) -> dict[str, float]:
    """The 2σ rule's false-WINNER rate at ``design`` under each noise shape (cached simulations)."""
    out = {shape: _null_winner(shape, design) for shape in NOISE_SHAPES if shape != "normal"}
    out["normal"] = normal
    return out


@functools.lru_cache(maxsize=16)
def _null_winner(shape: str, design: Design) -> float:
    return fixed_rule_null_rates(shape, design)[0]


@functools.lru_cache(maxsize=8)
def sequential_noise(design: "SequentialDesign") -> dict[str, float]:
    """The sequential rule's false-WINNER rate under each noise shape, normal as its report's table states it."""
    from .sequential_rates import noise_rates, operating_table

    return noise_rates(design, normal=operating_table(design)[0].rates.p_winner)


def evaluate(baseline: Mapping[int, float], experiment: Mapping[int, float],
             baseline_summary: Summary, experiment_summary: Summary, design: Design | None = None,
             rule: str = "fixed", sequential: "SequentialDesign | None" = None, metric: str = "val_loss",
             more: str = "") -> Evidence:
    """Every statistic of one experiment report, keyed by seed for the pairing.

    ``design`` is the 2σ rule's as run (the baseline seeds compared, the configured experiment
    and extension seeds); without it the protocol's default 3 + 2 experiment seeds are assumed,
    with the baseline's actual size. ``rule`` says who decided (``RULES``): the 2σ rule's rates,
    power and notes are stated only where it did; ``sequential`` is that mode's design. ``metric``
    names the value in the notes, ``more`` is the command a note gives for more seeds.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    b, e = list(baseline.values()), list(experiment.values())
    if design is None:
        design = Design(max(baseline_summary.n, 2))
    paired = paired_seeds(baseline, experiment)
    welch = welch_test(b, e)
    interval = welch_interval(b, e)
    two_sigma = None if degenerate_reason(baseline_summary, experiment_summary) else judge(baseline_summary,
                                                                                          experiment_summary)
    changed = flag_changed_nothing(baseline, experiment)
    boot = bootstrap_interval(b, e)
    fixed = rule == "fixed"
    rows = design_rates(design) if fixed else ()
    false_winner = (rows[0].p_winner if rows[0].effect == 0 else design_power(0.0, design)) if fixed else None
    noise = noise_rates(design, false_winner) if false_winner is not None else None
    coverage = None
    if rule == "sequential" and sequential is not None:
        from .sequential_figures import interval_coverage

        coverage = interval_coverage(sequential)
        noise = sequential_noise(sequential)
    delta = experiment_summary.mean - baseline_summary.mean
    return Evidence(
        welch=welch,
        mann_whitney=mann_whitney(b, e),
        interval=interval,
        bootstrap=boot,
        bootstrap_coverage=None if boot.low is None else bootstrap_coverage_at(len(b), len(e)),
        paired=paired,
        power=power_analysis(baseline_summary, experiment_summary, design, paired, rule=rule, sequential=sequential),
        design=design,
        rates=rows,
        false_winner=false_winner,
        two_sigma_verdict=two_sigma,
        # The notes weigh the 2σ rule against the tests; under another rule only the A/A check is said.
        note=verdict_note(two_sigma if fixed else None, welch, paired.t_test, interval, delta, changed, metric,
                          more),
        changed_nothing=changed,
        rule=rule,
        noise=noise,
        noise_note=None if noise is None else noise_assumption(noise),
        coverage=coverage,
    )
