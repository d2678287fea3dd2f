"""Pure statistics over per-seed measurements.

Nothing here reads files, prints or knows about pytest, so every function can be
checked against scipy or hand-computed values with plain asserts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

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


def summarize(values: Sequence[float]) -> Summary:
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
