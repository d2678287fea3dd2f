"""The protocol's rules: seeds, groups and names, when to extend, the verdict, the control check,
which runs may be compared, and the order experiments are ranked in.

Pure functions and small frozen records only; the session applies them to stored runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping, Sequence

import numpy as np

from .._lazy import LazyModule
from ..model import Verdict
from ..names import (  # noqa: F401 - the protocol's vocabulary, kept importable from here
    BASELINE,
    BASELINE_SEEDS,
    CONTROL,
    CONTROL_SEED,
    DEFAULT_TRAIN_TOKENS,
    EXPERIMENT_SEEDS,
    EXTENSION_SEEDS,
    MAX_NAME_LENGTH,
    ProtocolError,
    ProtocolFailure,
    experiment_flags,
    experiment_name,
    parse_seeds,
    safe_name,
    scale_label,
)
from .stats import Summary, cohens_d, effect_size_label, holm_adjust, percent_faster, welch_test

sps = LazyModule("scipy.stats")

#: How many baseline standard deviations separate a real change from noise.
SIGNIFICANT_SIGMAS = 2.0
SUGGESTIVE_SIGMAS = 1.0
#: A control run within this many baseline σ of the stored value of its own seed reproduces it.
#: Far below anything the 2σ rule can call; GPU nondeterminism measured about 0.0005σ.
CONTROL_REPRODUCTION_SIGMAS = 0.05
#: The prediction-interval control's false-alarm rate when nothing changed (two-sided).
CONTROL_FALSE_ALARM = 0.05

#: Keys of a trainer's ``metrics.json`` that must agree between runs that are compared.
ENVIRONMENT_KEYS = ("device", "torch_version", "data_fingerprint")
#: What a run's wall time covers (``Executor.timing``); runs stored before it was recorded
#: were all timed as one process per run.
TIMING_KEY = "timing"
DEFAULT_TIMING = "process"


class Significance(str, Enum):
    SIGNIFICANT = "Yes (≥2σ)"
    SUGGESTIVE = "Suggestive (1–2σ), inconclusive"
    NOISE = "No (<1σ, noise)"


def sigmas_apart(baseline: Summary, experiment: Summary) -> float | None:
    """(μ_exp − μ_base) / σ_base: the one distance every 2σ rule reads; None if σ is 0 or undefined."""
    sigma = baseline.std
    if not math.isfinite(sigma) or sigma <= 0.0:
        return None
    return (experiment.mean - baseline.mean) / sigma


def needs_extension(baseline: Summary, first_seeds: Summary) -> bool:
    """Run the extension seeds when the experiment's mean lies within 2σ of the baseline's.

    A baseline σ of zero or NaN is degenerate; more seeds are then the safe choice.
    """
    sigmas = sigmas_apart(baseline, first_seeds)
    return sigmas is None or abs(sigmas) < SIGNIFICANT_SIGMAS


@dataclass(frozen=True)
class Extension:
    """Whether an experiment's extension seeds run, and why (for the skip message and the report)."""

    extend: bool
    reason: str


def extension(baseline: Summary, first_seeds: Summary) -> Extension:
    """The extension rule with its reason, decided on the first seeds alone."""
    where = f"mean {first_seeds.mean:.4f} vs baseline {baseline.mean:.4f} ± {baseline.std:.4f}"
    if needs_extension(baseline, first_seeds):
        return Extension(True, f"{where}: within 2σ, so the extension seeds run")
    sigmas = sigmas_apart(baseline, first_seeds)
    return Extension(False, f"not needed: experiment {where} is {abs(sigmas or 0.0):.1f}σ away (≥ 2σ)")


def mixed_environments(*groups: Iterable[Mapping[str, object]]) -> str | None:
    """How the runs' environments differ (machine, torch, data, timing), or None when they agree.

    Each run is given as its environment mapping; a run without a recorded timing was timed as
    one process per run.
    """
    seen: dict[str, set[str]] = {}
    for environments in groups:
        for environment in environments:
            for key, value in {TIMING_KEY: DEFAULT_TIMING, **environment}.items():
                seen.setdefault(key, set()).add(str(value))
    differing = {key: sorted(values) for key, values in seen.items() if len(values) > 1}
    if not differing:
        return None
    return "; ".join(f"{key}: {' vs '.join(values)}" for key, values in sorted(differing.items()))


def significance(delta: float, sigma: float) -> Significance | None:
    """Classify |Δμ| against the baseline σ; None where σ is zero or undefined."""
    if not math.isfinite(sigma) or sigma <= 0.0:
        return None
    if abs(delta) >= SIGNIFICANT_SIGMAS * sigma:
        return Significance.SIGNIFICANT
    if abs(delta) >= SUGGESTIVE_SIGMAS * sigma:
        return Significance.SUGGESTIVE
    return Significance.NOISE


@dataclass(frozen=True)
class MetricComparison:
    """One metric, baseline against experiment."""

    metric: str
    baseline: Summary
    experiment: Summary
    delta: float
    sigmas: float | None
    cohens_d: float | None
    effect_size: str
    significance: Significance | None


def compare_metric(metric: str, baseline: Summary, experiment: Summary) -> MetricComparison:
    delta = experiment.mean - baseline.mean
    sigma = baseline.std
    sigmas = sigmas_apart(baseline, experiment)
    d = cohens_d(baseline, experiment)
    return MetricComparison(
        metric=metric,
        baseline=baseline,
        experiment=experiment,
        delta=delta,
        sigmas=sigmas,
        cohens_d=d,
        effect_size=effect_size_label(d),
        significance=significance(delta, sigma),
    )


@dataclass(frozen=True)
class Comparison:
    """Everything the verdict report states; ``verdict`` is None when the data cannot support one."""

    val_loss: MetricComparison
    wall_time: MetricComparison
    percent_faster: float | None
    verdict: Verdict | None
    problem: str | None


def degenerate_reason(baseline: Summary, experiment: Summary) -> str | None:
    """Why no verdict can be given on these val_loss summaries, or None if one can."""
    if baseline.n < 2:
        return f"the baseline has {baseline.n} run(s); at least 2 are needed to know its variance"
    if experiment.n < 2:
        return f"the experiment has {experiment.n} run(s); at least 2 are needed"
    if not math.isfinite(baseline.std) or baseline.std == 0.0:
        return (
            "the baseline's std is 0: every seed gave the same value, so the noise "
            "level is unknown (does the trainer honour --seed?)"
        )
    return None


def judge(baseline: Summary, experiment: Summary) -> Verdict:
    """The verdict on val_loss (lower is better), by at least 2 baseline σ either way."""
    margin = SIGNIFICANT_SIGMAS * baseline.std
    if experiment.mean <= baseline.mean - margin:
        return Verdict.WINNER
    if experiment.mean >= baseline.mean + margin:
        return Verdict.LOSER
    return Verdict.NEUTRAL


def compare(
    baseline_val: Summary,
    experiment_val: Summary,
    baseline_wall: Summary,
    experiment_wall: Summary,
) -> Comparison:
    problem = degenerate_reason(baseline_val, experiment_val)
    return Comparison(
        val_loss=compare_metric("val_loss", baseline_val, experiment_val),
        wall_time=compare_metric("wall_time", baseline_wall, experiment_wall),
        percent_faster=percent_faster(baseline_wall.mean, experiment_wall.mean),
        verdict=None if problem else judge(baseline_val, experiment_val),
        problem=problem,
    )


@dataclass(frozen=True)
class ControlCheck:
    """A control run (baseline setup, one of its seeds) against the stored baseline."""

    value: float
    baseline_mean: float
    baseline_std: float
    sigmas: float | None  # (value − baseline mean) / baseline σ
    ok: bool
    rule: str  # "reproduction" or "prediction interval"
    false_alarm: float | None  # chance of failing when nothing changed, under this rule
    limit: float | None  # the largest |value − reference| that passes
    message: str


@dataclass(frozen=True)
class Ranked:
    """One experiment's line in the summary of a scale."""

    rank: int
    name: str
    verdict: str
    delta: float
    sigmas: float | None
    welch_p: float | None
    holm_p: float | None
    n_experiment: int
    report: str
    n_baseline: int = 0
    family: int = 1  # the Holm family: experiments judged against the same baseline runs
    family_size: int = 1


def rank_experiments(entries: Sequence[tuple[str, str, Sequence[float], Sequence[float], str]]) -> tuple[Ranked, ...]:
    """Order experiments by Δ val_loss (best first) from (name, verdict, baseline, experiment, report).

    Holm's adjustment runs over one family: every experiment listed that was judged against the
    same baseline runs (the same values), since they share that baseline's luck. Families are
    numbered in the order their first experiment is listed.
    """
    rows = []
    families: dict[tuple[float, ...], int] = {}
    for name, verdict, base, exp in ((n, v, np.asarray(b, dtype=float), np.asarray(e, dtype=float)) for n, v, b, e, _ in entries):
        sigma = float(np.std(base, ddof=1)) if base.size > 1 else math.nan
        delta = float(exp.mean() - base.mean())
        sigmas = delta / sigma if math.isfinite(sigma) and sigma > 0 else None
        family = families.setdefault(tuple(base.tolist()), len(families) + 1)
        rows.append((name, verdict, delta, sigmas, welch_test(base, exp).p_value, exp.size, base.size, family))
    holm: list[float | None] = [None] * len(rows)
    sizes = {f: sum(1 for row in rows if row[7] == f) for f in families.values()}
    for family in sizes:
        members = [i for i, row in enumerate(rows) if row[7] == family]
        for i, adjusted in zip(members, holm_adjust([rows[i][4] for i in members])):
            holm[i] = adjusted
    reports = [entry[4] for entry in entries]
    order = sorted(range(len(rows)), key=lambda i: (rows[i][2], rows[i][0]))
    return tuple(
        Ranked(rank + 1, rows[i][0], rows[i][1], rows[i][2], rows[i][3], rows[i][4], holm[i], int(rows[i][5]),
               reports[i], int(rows[i][6]), rows[i][7], sizes[rows[i][7]])
        for rank, i in enumerate(order)
    )



# ------------------------------------------------------------------ control
@functools.lru_cache(maxsize=64)
def _prediction_factor(n: int, false_alarm: float) -> float:
    return float(sps.t.isf(false_alarm / 2, n - 1)) * math.sqrt(1 + 1 / n)


def check_control(baseline: Summary, value: float, stored_same_seed: float | None = None,
                  metric: str = "val_loss") -> ControlCheck:
    """Does a fresh run without experiment flags still give what the baseline says?

    Two rules, each with a stated false-alarm rate when nothing changed. A trainer that
    reproduces its seeds gives the stored value of the same seed again: within
    ``CONTROL_REPRODUCTION_SIGMAS`` baseline σ it passes (false alarm 0 for a deterministic
    trainer). Otherwise the control is one more draw from the baseline's distribution, and it
    fails only outside the 95% prediction interval |x − mean| > t(0.975, n − 1)·s·sqrt(1 + 1/n):
    5% false alarm for a run independent of the baseline's, less when it shares the seed's luck.
    ``metric`` names the value in the message.
    """
    sigma = baseline.std
    degenerate = not math.isfinite(sigma) or sigma == 0
    sigmas = None if degenerate else (value - baseline.mean) / sigma
    if stored_same_seed is not None:
        limit = 0.0 if degenerate else CONTROL_REPRODUCTION_SIGMAS * sigma
        if abs(value - stored_same_seed) <= limit:
            return ControlCheck(value, baseline.mean, sigma, sigmas, True, "reproduction", 0.0, limit,
                                f"{metric} {value:.4f} reproduces the stored {stored_same_seed:.4f} of the same seed "
                                f"(within {CONTROL_REPRODUCTION_SIGMAS:g}σ = {limit:.4g})")
    if degenerate or baseline.n < 2:
        return ControlCheck(value, baseline.mean, sigma, None, math.isclose(value, baseline.mean), "equality",
                            None, 0.0, f"the baseline has no spread, so the control must equal its mean "
                            f"{baseline.mean:.4f}; it gave {value:.4f}")
    limit = _prediction_factor(baseline.n, CONTROL_FALSE_ALARM) * sigma
    ok = abs(value - baseline.mean) <= limit
    where = (f"{metric} {value:.4f} is {sigmas:+.2f}σ from the baseline mean {baseline.mean:.4f} ± {sigma:.4f} "
             f"({baseline.n} seeds), {'inside' if ok else 'outside'} its 95% prediction interval "
             f"[{baseline.mean - limit:.4f}, {baseline.mean + limit:.4f}]")
    if stored_same_seed is not None:
        where += f"; it does not reproduce the stored {stored_same_seed:.4f} of the same seed"
    return ControlCheck(value, baseline.mean, sigma, sigmas, ok, "prediction interval", CONTROL_FALSE_ALARM, limit,
                        where + f" (false alarm {CONTROL_FALSE_ALARM:.0%} when nothing changed)")
