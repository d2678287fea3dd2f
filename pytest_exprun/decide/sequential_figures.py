"""What a sequential decision's report states beyond its verdict, by simulation of its own rule:
the coverage of the interval it prints, its power at an observed effect, and the family-wise
false-WINNER rate of its step-down over K experiments.

The fixed rule's figures (``rates``) assume 3 or 5 experiment runs fixed in advance; here the
number of runs depends on the data (2, 3, 4 or 6), so each figure is measured through the
sequential rule exactly as ``sequential_rates._apply`` and ``sequential.decide_family`` apply
it. Normal noise, σ = 1, fixed seeds and cached: a report rendered twice states the same figures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .simulated import simulated
from .._lazy import LazyModule
from .sequential_design import Design, at_level, look_statistics, make_design
from .sequential_rates import REPORT_EFFECTS, _apply

special = LazyModule("scipy.special")

#: Simulated experiments per figure: Monte Carlo standard error at most 0.11 percentage points.
FIGURE_TRIALS = 200_000
FIGURE_SEED = 20261205
CONFIDENCE = 0.95


def design_of(summary: Mapping[str, Any]) -> Design:
    """The design a stored decision was made with, from its summary (``sequential_rates.design_summary``).

    Recalibrated from the stored parameters (cached); the bounds come out as stored.
    """
    return make_design(float(summary["alpha"]), float(summary["min_effect"]), tuple(int(n) for n in summary["looks"]),
                       int(summary["max_seeds"]), bool(summary["paired"]),
                       futility_margin=float(summary["futility_margin"]),
                       efficacy_shape=float(summary["efficacy_shape"]),
                       calibration_trials=int(summary["calibration_trials"]))


def _runs(design: Design, effect: float, trials: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, experiment) runs of ``trials`` simulated experiments; the experiment ``effect`` σ lower."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((trials, design.baseline_looks[-1]))
    exp = rng.standard_normal((trials, design.looks[-1])) - effect
    return base, exp


def covered_at_stop(design: Design, base: np.ndarray, exp: np.ndarray, effect: float) -> np.ndarray:
    """Per trial: does the Welch 95% interval of Δ on the runs compared at the stop contain the true −effect?

    The interval a report prints (``stats.welch_interval`` on the stop look's baseline and
    experiment runs), as if the number of runs had been fixed in advance.
    """
    t, _ = look_statistics(design.looks, design.baseline_looks, design.paired, base, exp)
    _, stop = _apply(design, t)
    covered = np.zeros(base.shape[0], dtype=bool)
    for look, (n, m) in enumerate(zip(design.looks, design.baseline_looks)):
        rows = stop == look
        if not rows.any():
            continue
        b, e = base[rows, :m], exp[rows, :n]
        a1, a2 = b.var(axis=1, ddof=1) / m, e.var(axis=1, ddof=1) / n
        df = (a1 + a2) ** 2 / (a1 * a1 / (m - 1) + a2 * a2 / (n - 1))
        half = special.stdtrit(df, 1 - (1 - CONFIDENCE) / 2) * np.sqrt(a1 + a2)
        delta = e.mean(axis=1) - b.mean(axis=1)
        covered[rows] = np.abs(delta + effect) <= half
    return covered


@dataclass(frozen=True)
class Coverage:
    """The Welch interval's simulated coverage under the sequential stop, over the report's true effects."""

    low: float
    high: float
    trials: int  # per effect
    effects: tuple[float, ...]

    @property
    def mc_error(self) -> float:
        """Monte Carlo standard error of one coverage figure, at the lowest."""
        return math.sqrt(self.low * (1 - self.low) / self.trials)


@simulated
@functools.lru_cache(maxsize=8)
def interval_coverage(design: Design, effects: tuple[float, ...] = REPORT_EFFECTS, trials: int = FIGURE_TRIALS,
                      seed: int = FIGURE_SEED) -> Coverage:
    """How often the printed 95% interval covers the true Δ, at each of ``effects`` (σ): its lowest and highest."""
    found = [float(covered_at_stop(design, *_runs(design, effect, trials, seed + i), effect).mean())
             for i, effect in enumerate(effects)]
    return Coverage(min(found), max(found), trials, tuple(effects))


@simulated
@functools.lru_cache(maxsize=64)
def power_at(design: Design, effect: float, trials: int = FIGURE_TRIALS, seed: int = FIGURE_SEED) -> float:
    """P(WINNER) of this design alone at a true improvement of ``effect`` σ (normal noise, no pairing benefit)."""
    base, exp = _runs(design, effect, trials, seed)
    t, _ = look_statistics(design.looks, design.baseline_looks, design.paired, base, exp)
    code, _ = _apply(design, t)
    return float(np.mean(code == 1))


def family_any_winner(design: Design, t: np.ndarray) -> np.ndarray:
    """Per trial: did the step-down (``sequential.decide_family``) call any WINNER?

    ``t`` has shape (trials, K, looks): each experiment's statistic at every look, all against
    one baseline. At each look the experiments still running are taken strongest first, each
    against the bounds at α / (K − R), R the WINNERs so far; the first that does not cross ends
    the stepping; the others stop at their LOSER bound, below the futility bound, or at the last look.
    """
    trials, k, n_looks = t.shape
    levels = [design] + [at_level(design, design.alpha / j) for j in range(2, k + 1)]
    win = np.array([[lv.winner_bounds[look] for look in range(n_looks)] for lv in levels])  # (K, looks)
    lose = np.array([[lv.loser_bounds[look] for look in range(n_looks)] for lv in levels])
    active = np.ones((trials, k), dtype=bool)
    winners = np.zeros(trials, dtype=int)
    rows = np.arange(trials)
    for look in range(n_looks):
        col = np.where(active, t[:, :, look], -np.inf)
        order = np.argsort(-col, axis=1, kind="stable")
        stepping = np.ones(trials, dtype=bool)
        for rank in range(k):
            idx = order[:, rank]
            value = col[rows, idx]
            crossed = stepping & active[rows, idx] & (value >= win[k - winners - 1, look])
            winners += crossed
            active[rows[crossed], idx[crossed]] = False
            stepping &= crossed
        level = k - winners - 1
        now = t[:, :, look]
        ended = (now <= lose[level, look][:, None]) | (now < design.futility_bounds[look])
        if look == n_looks - 1:
            ended[:] = True
        active &= ~ended
    return winners > 0


@dataclass(frozen=True)
class FamilyRate:
    size: int
    false_winner: float  # P(at least one false WINNER among ``size`` experiments without effect)
    trials: int

    @property
    def mc_error(self) -> float:
        return math.sqrt(self.false_winner * (1 - self.false_winner) / self.trials)


@simulated
@functools.lru_cache(maxsize=16)
def familywise_false_winner(design: Design, k: int, trials: int = FIGURE_TRIALS,
                            seed: int = FIGURE_SEED) -> FamilyRate:
    """P(any false WINNER) among ``k`` experiments without effect, judged on one baseline by the step-down."""
    if k < 1:
        raise ValueError(f"a family has at least one experiment, got {k}")
    rng = np.random.default_rng(seed + k)
    base = rng.standard_normal((trials, design.baseline_looks[-1]))
    t = np.stack([look_statistics(design.looks, design.baseline_looks, design.paired, base,
                                  rng.standard_normal((trials, design.looks[-1])))[0] for _ in range(k)], axis=1)
    return FamilyRate(k, float(np.mean(family_any_winner(design, t))), trials)
