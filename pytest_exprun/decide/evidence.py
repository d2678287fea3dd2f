"""What one experiment report says about one comparison: its tests and intervals, what the
2σ rule could detect with these runs, and whether the tests agree with the verdict.

Pure functions over per-seed values; statistics come from ``stats``, the rule's simulated
operating characteristics from ``rates``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .._lazy import LazyModule
from .protocol import SIGNIFICANT_SIGMAS, Verdict, degenerate_reason, judge
from .rates import (
    Design,
    RateRow,
    bootstrap_coverage_at,
    design_mde,
    design_power,
    design_rates,
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
                   paired: Paired | None = None, power: float = TARGET_POWER) -> Power:
    """Power of this design with σ = the baseline's sample std, as the 2σ rule uses."""
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
    mde_sigmas = design_mde(design, power)
    rule_n, rule_reason = seeds_for_rule(effect, sigma, power)
    if use_pairs:
        assert paired is not None and paired.paired_variance is not None
        t_n, t_reason = seeds_for_paired_ttest(effect, math.sqrt(paired.paired_variance), power)
    else:
        t_n, t_reason = seeds_for_ttest(effect, sigma, power)
    return Power(
        sigma=sigma, sigma_interval=interval, n_baseline=baseline.n, n_experiment=experiment.n, design=design,
        target=power, minimum_detectable_effect=mde_sigmas * sigma, mde_sigmas=mde_sigmas, observed_effect=effect,
        # The rule is symmetric: P(LOSER) at a loss of δ is P(WINNER) at an improvement of δ.
        observed_sigmas=effect / sigma, observed_power=design_power(abs(effect) / sigma, design),
        observed_call=Verdict.WINNER.value if effect >= 0 else Verdict.LOSER.value,
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
                 delta: float, changed_nothing: bool = False) -> str | None:
    """One sentence when the tests disagree with the verdict, naming the next step; else None.

    The 2σ rule stays the verdict (it is the protocol); this says when a reader should not
    take it at face value. ``delta`` is experiment − baseline (negative: lower loss).
    """
    if changed_nothing:
        return ("Every experiment seed gave exactly its baseline seed's val_loss: the flag changed nothing, so "
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
                extra = f"; {interval.confidence:.0%} interval of Δ [{interval.low:+.4f}, {interval.high:+.4f}]"
            said.append(f"{_p(test)}, two-sided{extra})")
        direction = "lower" if delta < 0 else "higher"
        verb = "rejects" if len(said) == 1 else "both reject"
        return (f"The 2σ rule says NEUTRAL, but {' and '.join(said)} {verb} no difference at 5%: the experiment's "
                f"val_loss is probably {direction} by less than the rule's 2σ threshold, so run more seeds "
                "(a longer --exprun-extension-seeds, and baseline seeds) before reading this as no effect.")
    if verdict in (Verdict.WINNER, Verdict.LOSER) and tests and not rejecting:
        said = " nor ".join(f"{_p(t)}, two-sided)" for t in tests)
        what = "relying on it" if verdict is Verdict.WINNER else "discarding the idea"
        return (f"The 2σ rule says {verdict.value}, but neither {said} rejects no difference at 5%: the 2σ margin may "
                "come from a baseline whose σ came out small, so re-measure the baseline with more seeds "
                f"(--exprun-rerun-baseline with a longer --exprun-baseline-seeds) before {what}.")
    return None


def explain_verdict(verdict: Verdict, baseline: Summary, experiment: Summary, note: str | None) -> str:
    """The verdict section's first sentence: where the experiment's mean fell against the 2σ band.

    NEUTRAL says "not distinguishable from noise" only when no test distinguishes it either.
    """
    margin = SIGNIFICANT_SIGMAS * baseline.std
    bm, em = baseline.mean, experiment.mean
    if verdict is Verdict.WINNER:
        return f"The experiment's mean val_loss {em:.4f} is at or below the baseline's {bm:.4f} − 2σ = {bm - margin:.4f}."
    if verdict is Verdict.LOSER:
        return f"The experiment's mean val_loss {em:.4f} is at or above the baseline's {bm:.4f} + 2σ = {bm + margin:.4f}."
    where = (f"The experiment's mean val_loss {em:.4f} lies within the baseline's {bm:.4f} ± 2σ = "
             f"[{bm - margin:.4f}, {bm + margin:.4f}]")
    return where + ("." if note else ": neither the rule nor the tests tell it apart from noise at these seeds.")


@dataclass(frozen=True)
class Evidence:
    welch: SignificanceTest
    mann_whitney: SignificanceTest
    interval: Interval  # Welch's t-interval of Δ: the report's 95% interval
    bootstrap: Interval
    bootstrap_coverage: float | None  # simulated coverage of the bootstrap's nominal level at these n
    paired: Paired
    power: Power
    design: Design
    rates: tuple[RateRow, ...]  # the design's P(WINNER), P(LOSER), seeds at EFFECTS
    false_winner: float  # P(WINNER) when nothing changed, at this design
    verdict: Verdict | None
    note: str | None  # one sentence when the tests disagree with the verdict
    changed_nothing: bool


def evaluate(baseline: Mapping[int, float], experiment: Mapping[int, float],
             baseline_summary: Summary, experiment_summary: Summary, design: Design | None = None) -> Evidence:
    """Every val_loss statistic of one experiment report, keyed by seed for the pairing.

    ``design`` is the configured one (``Design.of(settings)``); without it the protocol's
    default 3 + 2 experiment seeds are assumed, with the baseline's actual size.
    """
    b, e = list(baseline.values()), list(experiment.values())
    if design is None:
        design = Design(max(baseline_summary.n, 2))
    paired = paired_seeds(baseline, experiment)
    welch = welch_test(b, e)
    interval = welch_interval(b, e)
    verdict = None if degenerate_reason(baseline_summary, experiment_summary) else judge(baseline_summary, experiment_summary)
    changed = flag_changed_nothing(baseline, experiment)
    rows = design_rates(design)
    boot = bootstrap_interval(b, e)
    return Evidence(
        welch=welch,
        mann_whitney=mann_whitney(b, e),
        interval=interval,
        bootstrap=boot,
        bootstrap_coverage=None if boot.low is None else bootstrap_coverage_at(len(b), len(e)),
        paired=paired,
        power=power_analysis(baseline_summary, experiment_summary, design, paired),
        design=design,
        rates=rows,
        false_winner=rows[0].p_winner if rows[0].effect == 0 else design_power(0.0, design),
        verdict=verdict,
        note=verdict_note(verdict, welch, paired.t_test, interval, experiment_summary.mean - baseline_summary.mean,
                          changed),
        changed_nothing=changed,
    )


