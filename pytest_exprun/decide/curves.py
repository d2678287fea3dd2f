"""Learning curves of both groups: mean and spread of val_loss per step, and tokens to a target.

Pure, like ``stats``: the curves come from stored run records, never from a log or a report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

Curve = Sequence[tuple[int, float]]


@dataclass(frozen=True)
class CurvePoint:
    step: int
    tokens: int
    baseline_mean: float | None
    baseline_std: float | None
    baseline_n: int
    experiment_mean: float | None
    experiment_std: float | None
    experiment_n: int


@dataclass(frozen=True)
class TokensToTarget:
    """When the experiment's mean curve first reached the baseline's final mean val_loss."""

    target: float
    step: int | None
    tokens: int | None
    fraction: float | None  # of the training budget
    reason: str | None = None


@dataclass(frozen=True)
class Curves:
    points: tuple[CurvePoint, ...]
    final_step: int | None
    to_target: TokensToTarget
    reason: str | None = None


def _by_step(curves: Sequence[Curve]) -> dict[int, list[float]]:
    found: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            found.setdefault(int(step), []).append(float(value))
    return found


def _mean_std(values: list[float] | None) -> tuple[float | None, float | None, int]:
    if not values:
        return None, None, 0
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None), int(arr.size)


def learning_curves(baseline: Sequence[Curve], experiment: Sequence[Curve], train_tokens: int,
                    target: float) -> Curves:
    """Mean ± std of val_loss per step for both groups, and the experiment's tokens to ``target``.

    The trainer prints steps, not tokens, so tokens = step / final step × train_tokens, which
    holds for a constant batch size. The experiment reaches the target at the first step where
    the mean over all of its runs is at or below it (no interpolation between steps).
    """
    base = [c for c in baseline if c]
    exp = [c for c in experiment if c]
    if not exp:
        reason = "no learning curve was stored for the experiment's runs"
        return Curves((), None, TokensToTarget(target, None, None, None, reason), reason)
    b_steps, e_steps = _by_step(base), _by_step(exp)
    final = max(max(b_steps, default=0), max(e_steps))
    if final <= 0:
        reason = "the curves have no positive step numbers"
        return Curves((), None, TokensToTarget(target, None, None, None, reason), reason)
    points = []
    for step in sorted(set(b_steps) | set(e_steps)):
        bm, bs, bn = _mean_std(b_steps.get(step))
        em, es, en = _mean_std(e_steps.get(step))
        points.append(CurvePoint(step, round(step / final * train_tokens), bm, bs, bn, em, es, en))
    reached = [p for p in points if p.experiment_n == len(exp) and p.experiment_mean is not None
               and p.experiment_mean <= target]
    if reached:
        first = reached[0]
        to_target = TokensToTarget(target, first.step, first.tokens, first.tokens / train_tokens)
    else:
        to_target = TokensToTarget(target, None, None, None, "the experiment's mean curve never reached it")
    missing = None if base else "no learning curves were stored for the baseline's runs (reused from its report)"
    return Curves(tuple(points), final, to_target, missing)


def thin(points: Sequence[CurvePoint], limit: int = 20) -> tuple[CurvePoint, ...]:
    """At most ``limit`` evenly spaced points, always keeping the first and the last."""
    if len(points) <= limit:
        return tuple(points)
    keep = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
    return tuple(points[i] for i in keep)
