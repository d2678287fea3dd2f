"""How far a verdict can be trusted: what the 2σ rule can detect (power, seeds needed) and the
bundle of evidence an experiment report shows next to the verdict.

Pure functions; the rule itself (thresholds, extension) is ``protocol``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._lazy import LazyModule
from .protocol import SIGNIFICANT_SIGMAS
from .stats import (
    MAX_SEEDS,
    TARGET_POWER,
    Interval,
    Paired,
    SignificanceTest,
    Summary,
    bootstrap_interval,
    mann_whitney,
    paired_seeds,
    seeds_for_ttest,
    welch_test,
)

optimize = LazyModule("scipy.optimize")
sps = LazyModule("scipy.stats")


@dataclass(frozen=True)
class Power:
    """What the 2σ rule can detect with these runs, and what the observed effect would need."""

    sigma: float | None
    n_baseline: int
    n_experiment: int
    target: float
    minimum_detectable_effect: float | None
    mde_sigmas: float | None
    observed_effect: float  # baseline mean − experiment mean: positive is an improvement
    observed_sigmas: float | None
    observed_power: float | None  # chance the rule calls the observed effect, were it true
    seeds_for_rule: int | None
    seeds_for_rule_reason: str | None
    seeds_for_ttest: int | None
    seeds_for_ttest_reason: str | None
    reason: str | None = None



# ------------------------------------------------------------------ power
def rule_power(effect: float, sigma: float, n_baseline: int, n_experiment: int) -> float:
    """Chance that the 2σ rule calls WINNER when the true improvement is ``effect``.

    The rule says WINNER when x̄_b − x̄_e ≥ 2·s_b, with s_b the baseline's sample std.
    Assume both groups are normal with the same true σ and the experiment's true mean is
    ``effect`` lower. With k = sqrt(1/n_b + 1/n_e),

        T = (x̄_b − x̄_e) / (s_b·k)

    is a noncentral t with ν = n_b − 1 degrees of freedom (s_b is independent of both means)
    and noncentrality λ = effect / (σ·k); WINNER is T ≥ 2/k, so

        P(WINNER) = 1 − F_nct(2/k; ν, λ).

    The same expression with −effect gives P(LOSER). This is exact under the assumptions;
    the only approximation in the reports is plugging the measured σ in for the true one.
    """
    k = math.sqrt(1 / n_baseline + 1 / n_experiment)
    return float(sps.nct.sf(SIGNIFICANT_SIGMAS / k, n_baseline - 1, effect / (sigma * k)))


def minimum_detectable_effect(sigma: float, n_baseline: int, n_experiment: int,
                              power: float = TARGET_POWER) -> float:
    """Smallest true improvement the 2σ rule calls WINNER with probability ``power``.

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
        return None, (f"the observed |Δ| is {size:.2f}σ; the 2σ rule calls an effect only when it exceeds 2σ, "
                      f"so no number of seeds gives it {power:.0%} power")
    n = np.arange(2, max_seeds + 1)
    k = np.sqrt(2.0 / n)
    reached = sps.nct.sf(SIGNIFICANT_SIGMAS / k, n - 1, abs(effect) / (sigma * k)) >= power
    if not reached.any():
        return None, f"more than {max_seeds} seeds per group"
    return int(n[np.argmax(reached)]), None



def power_analysis(baseline: Summary, experiment: Summary, power: float = TARGET_POWER) -> Power:
    """Power of this comparison with σ = the baseline's sample std, as the 2σ rule uses."""
    sigma = baseline.std
    effect = baseline.mean - experiment.mean
    empty = Power(None, baseline.n, experiment.n, power, None, None, effect, None, None, None, None, None, None)
    if baseline.n < 2 or experiment.n < 1:
        return _with_reason(empty, "needs at least 2 baseline runs and 1 experiment run")
    if not math.isfinite(sigma) or sigma == 0:
        return _with_reason(empty, "the baseline's σ is 0, so no noise level to plan against")
    mde = minimum_detectable_effect(sigma, baseline.n, experiment.n, power)
    direction = 1.0 if effect >= 0 else -1.0
    rule_n, rule_reason = seeds_for_rule(effect, sigma, power)
    t_n, t_reason = seeds_for_ttest(effect, sigma, power)
    return Power(
        sigma=sigma, n_baseline=baseline.n, n_experiment=experiment.n, target=power,
        minimum_detectable_effect=mde, mde_sigmas=mde / sigma, observed_effect=effect,
        observed_sigmas=effect / sigma,
        observed_power=rule_power(direction * effect, sigma, baseline.n, experiment.n),
        seeds_for_rule=rule_n, seeds_for_rule_reason=rule_reason,
        seeds_for_ttest=t_n, seeds_for_ttest_reason=t_reason,
    )


def _with_reason(power: Power, reason: str) -> Power:
    return Power(**{**power.__dict__, "reason": reason, "seeds_for_rule_reason": reason,
                    "seeds_for_ttest_reason": reason})


@dataclass(frozen=True)
class Evidence:
    welch: SignificanceTest
    mann_whitney: SignificanceTest
    bootstrap: Interval
    paired: Paired
    power: Power



def evaluate(baseline: Mapping[int, float], experiment: Mapping[int, float],
             baseline_summary: Summary, experiment_summary: Summary) -> Evidence:
    """Every val_loss statistic of one experiment report, keyed by seed for the pairing."""
    b, e = list(baseline.values()), list(experiment.values())
    return Evidence(
        welch=welch_test(b, e),
        mann_whitney=mann_whitney(b, e),
        bootstrap=bootstrap_interval(b, e),
        paired=paired_seeds(baseline, experiment),
        power=power_analysis(baseline_summary, experiment_summary),
    )

