"""The sequential mode's design: seeds, looks and bounds, planned before any experiment seed runs.

Bounds are calibrated by simulating the look statistics under no effect (``simulate_statistics``,
shared with ``sequential_rates``), so that P(false WINNER) ≤ α with the binding futility stops
obeyed; ``sequential`` explains the rule they serve. Pure: numpy and scipy.special only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .simulated import simulated
from .._lazy import LazyModule
from ..names import DEFAULT_ALPHA, DEFAULT_LOOKS, DEFAULT_MIN_EFFECT, MAX_SEEDS, SEEDS, ProtocolError  # noqa: F401 - SEEDS re-exported

special = LazyModule("scipy.special")

#: The fixed protocol's seeds first, then powers of two: deterministic, documented, and below
#: 2**32 so that every seed is accepted by numpy's legacy seeding as well as by torch.

#: Chosen by simulation (see docs/sequential.md): with Welch's t, Pocock-shaped bounds and a
#: futility margin of 0.3 these looks give 80% WINNER at a true 2σ with 2.4 experiment seeds on
#: average under no effect and 3.6 at 2σ; (2, 3, 5) and (2, 3, 4, 5) fall short of 78% at 2σ,
#: (2, 4, 6) spends more seeds for the same power, (2, 3, 5, 7) does as well with a higher cap.
#: Looks used when only a cap on seeds is given: these below the cap, then the cap itself.
LOOK_LADDER: tuple[int, ...] = (2, 3, 4, 6, 8, 12, 16, 24)
DEFAULT_FUTILITY_MARGIN = 0.3
#: Pocock (0) rather than O'Brien-Fleming (0.5): see the module's docstring.
DEFAULT_EFFICACY_SHAPE = 0.0
MIN_BASELINE_SEEDS = 5
CALIBRATION_TRIALS = 400_000
CALIBRATION_SEED = 20261202


@dataclass(frozen=True)
class Design:
    """A sequential design, planned before any experiment seed runs; bounds are in t units.

    ``statistic`` at a look is (baseline mean − experiment mean) / its standard error, so a
    positive value means a lower val_loss with the change.
    """

    alpha: float
    min_effect: float
    looks: tuple[int, ...]
    max_seeds: int
    paired: bool
    baseline_looks: tuple[int, ...]  # baseline seeds each look needs: max(min_baseline_seeds, n)
    winner_bounds: tuple[float, ...]  # t ≥ bound: WINNER
    loser_bounds: tuple[float, ...]  # t ≤ bound: LOSER
    futility_bounds: tuple[float, ...]  # t < bound: NEUTRAL (binding); the last equals the WINNER bound
    nominal_p: tuple[float, ...]  # one-sided p-value each WINNER bound corresponds to
    loser_nominal_p: tuple[float, ...]  # the same for the LOSER bounds (lower tail)
    design_df: tuple[float, ...]  # degrees of freedom the bounds were converted with (equal σ)
    futility_margin: float
    efficacy_shape: float
    min_baseline_seeds: int
    calibration_trials: int
    calibration_seed: int

    @property
    def method(self) -> str:
        return "paired t" if self.paired else "Welch's t"


# ------------------------------------------------------------------ design
def _z_to_t(z: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """The t value with the same one-sided p-value as normal deviate ``z``."""
    t: np.ndarray = -special.stdtrit(df, special.ndtr(-np.asarray(z, dtype=float)))  # upper tail: exact far out
    return t


def _upper_p(z: np.ndarray | float) -> np.ndarray:
    p: np.ndarray = special.ndtr(-np.asarray(z, dtype=float))
    return p


def _information(n: int, m: int, paired: bool) -> float:
    """1 / Var(estimated difference) in σ² units, without any pairing benefit (r = 0)."""
    return n / 2.0 if paired else 1.0 / (1.0 / n + 1.0 / m)


def _design_df(n: int, m: int, paired: bool) -> float:
    """The statistic's degrees of freedom when both groups share one σ (Welch–Satterthwaite)."""
    if paired:
        return float(n - 1)
    v = 1.0 / n + 1.0 / m
    return v * v / (1.0 / (n * n * (n - 1)) + 1.0 / (m * m * (m - 1)))


def _resolve_looks(looks: tuple[int, ...] | None, max_seeds: int | None) -> tuple[tuple[int, ...], int]:
    if looks is None:
        if max_seeds is None:
            chosen = DEFAULT_LOOKS
        else:
            if max_seeds < 2:
                raise ProtocolError(f"max_seeds must be at least 2 (the first look needs 2 seeds), got {max_seeds}")
            chosen = tuple(n for n in LOOK_LADDER if n < max_seeds) + (max_seeds,)
    else:
        chosen = tuple(int(n) for n in looks)
    if not chosen:
        raise ProtocolError("looks is empty; give experiment-seed counts such as 2,3,4,6")
    if chosen[0] < 2:
        raise ProtocolError(f"the first look needs at least 2 experiment seeds (a t needs a variance), got {chosen[0]}")
    if any(b <= a for a, b in zip(chosen, chosen[1:])):
        raise ProtocolError(f"looks must be strictly increasing seed counts, got {list(chosen)}")
    cap = chosen[-1] if max_seeds is None else int(max_seeds)
    if chosen[-1] > cap:
        raise ProtocolError(f"the last look ({chosen[-1]} seeds) exceeds max_seeds={cap}; "
                            f"raise max_seeds or drop the looks above it")
    if cap > MAX_SEEDS:
        raise ProtocolError(f"at most {MAX_SEEDS} seeds are defined (42 … 2**31), got max_seeds={cap}")
    return chosen, cap


@functools.lru_cache(maxsize=8)
def _null_statistics(looks: tuple[int, ...], baseline_looks: tuple[int, ...], paired: bool, trials: int,
                     seed: int) -> np.ndarray:
    """The simulated null statistics, shared by every level of one design (the step-down's α/j)."""
    stats, _ = simulate_statistics(looks, baseline_looks, paired, 0.0, 0.0, trials, np.random.default_rng(seed))
    stats.setflags(write=False)
    return stats


@simulated
@functools.lru_cache(maxsize=64)
def _calibrate(alpha: float, min_effect: float, looks: tuple[int, ...], baseline_looks: tuple[int, ...],
               paired: bool, futility_margin: float, shape: float, trials: int, seed: int) -> tuple[float, ...]:
    """Efficacy constants (C, L): P(WINNER | no effect) ≤ α and P(LOSER | no effect) ≤ α.

    On the normal scale the WINNER bound at look k is C·w_k (w_k = (I_K / I_k)^shape) and the
    futility bound does not depend on C, so which simulated null experiments reach which look is
    fixed, and the share of WINNERs falls as C grows: bisection on C. The LOSER bound −L·w_k lies
    inside the futility region, so it only names some of the stops LOSER and changes neither the
    WINNERs nor the seeds: L is found the same way on the statistic where each null experiment
    stopped. The level aimed at is α less two Monte Carlo standard errors of the calibration.
    """
    info = np.array([_information(n, m, paired) for n, m in zip(looks, baseline_looks)])
    df = np.array([_design_df(n, m, paired) for n, m in zip(looks, baseline_looks)])
    weights = (info[-1] / info) ** shape
    z_futility = min_effect * np.sqrt(info) - futility_margin
    t_futility = _z_to_t(z_futility, df)
    stats = _null_statistics(looks, baseline_looks, paired, trials, seed)
    reached = []  # the statistic of the null experiments that get to each look
    alive = np.ones(trials, dtype=bool)
    for look in range(len(looks)):
        reached.append(np.where(alive, stats[:, look], -np.inf))
        alive &= stats[:, look] >= t_futility[look]
    target = alpha - 2.0 * math.sqrt(alpha * (1.0 - alpha) / trials)

    def winners(c: float) -> float:
        bounds = _z_to_t(c * weights, df)
        won = np.zeros(trials, dtype=bool)
        for look, column in enumerate(reached):
            won |= column >= bounds[look]
        return float(won.mean())

    c = _bisect(winners, target)
    win_t = _z_to_t(c * weights, df)
    k = len(looks)
    stop = np.full(trials, k - 1)
    alive = np.ones(trials, dtype=bool)
    for look in range(k - 1):
        ended = alive & ((stats[:, look] >= win_t[look]) | (stats[:, look] < t_futility[look]))
        stop[ended] = look
        alive &= ~ended
    at_stop = stats[np.arange(trials), stop]

    def losers(ell: float) -> float:
        bounds = _loser_t(ell, weights, df, t_futility)
        return float(np.mean(at_stop <= bounds[stop]))

    return (c, _bisect(losers, target), *weights.tolist(), *z_futility.tolist(), *df.tolist())


def _loser_t(ell: float, weights: np.ndarray, df: np.ndarray, t_futility: np.ndarray) -> np.ndarray:
    """LOSER bounds in t units, kept inside the futility region so that a LOSER is always a stop."""
    bounds = _z_to_t(-ell * weights, df)
    bounds[:-1] = np.minimum(bounds[:-1], t_futility[:-1])
    return bounds


def _bisect(rate: Callable[[float], float], target: float) -> float:
    """The smallest constant (to 1e-7) at which a rate that falls with it is at most ``target``."""
    low, high = 0.0, 12.0
    while high - low > 1e-7:
        mid = (low + high) / 2.0
        low, high = (mid, high) if rate(mid) > target else (low, mid)
    return high


def make_design(alpha: float = DEFAULT_ALPHA, min_effect: float = DEFAULT_MIN_EFFECT,
                looks: tuple[int, ...] | None = None, max_seeds: int | None = None, paired: bool = False,
                *, futility_margin: float | None = None, efficacy_shape: float = DEFAULT_EFFICACY_SHAPE,
                min_baseline_seeds: int = MIN_BASELINE_SEEDS, calibration_trials: int = CALIBRATION_TRIALS,
                calibration_seed: int = CALIBRATION_SEED) -> Design:
    """A calibrated design: P(false WINNER) ≤ ``alpha`` whatever σ, futility stops obeyed.

    ``paired`` defaults to False: with no seed-to-seed correlation a paired t on 2 to 4 pairs has
    1 to 3 degrees of freedom and cannot stop early, while Welch's t against the whole 5-seed
    baseline can; Welch still gains (and only grows more conservative) when pairs do correlate.
    Choose ``paired=True`` when the pairs are known to correlate strongly (r ≳ 0.5). Calibration
    takes about half a second and is cached per distinct design.

    ``futility_margin`` left out: the default margin, widened by ``futility_margin_for`` when
    ``min_effect`` is larger than the default, so that a larger smallest effect worth finding
    never costs power at that very effect (see there).
    """
    if not 0.0 < alpha < 0.5:
        raise ProtocolError(f"alpha is the false-WINNER rate and must lie in (0, 0.5), got {alpha}")
    if not (math.isfinite(min_effect) and min_effect > 0.0):
        raise ProtocolError(f"min_effect is in baseline σ and must be positive, got {min_effect}")
    if min_baseline_seeds < 2:
        raise ProtocolError(f"the baseline needs at least 2 seeds for its variance, got {min_baseline_seeds}")
    chosen, cap = _resolve_looks(looks, max_seeds)
    baseline_looks = tuple(max(min_baseline_seeds, n) for n in chosen)
    if baseline_looks[-1] > MAX_SEEDS:
        raise ProtocolError(f"at most {MAX_SEEDS} baseline seeds are defined, the design needs {baseline_looks[-1]}")
    if futility_margin is None:
        futility_margin = futility_margin_for(float(alpha), float(min_effect), chosen, bool(paired), efficacy_shape,
                                              min_baseline_seeds, calibration_trials, calibration_seed)
    k = len(chosen)
    values = _calibrate(float(alpha), float(min_effect), chosen, baseline_looks, bool(paired), float(futility_margin),
                        float(efficacy_shape), int(calibration_trials), int(calibration_seed))
    c, ell = values[0], values[1]
    weights, z_fut, df = (np.asarray(values[2 + i * k:2 + (i + 1) * k]) for i in range(3))
    z_win = c * weights
    winner = [float(x) for x in _z_to_t(z_win, df)]
    t_fut = _z_to_t(z_fut, df)
    loser = [float(x) for x in _loser_t(ell, weights, df, t_fut)]
    futility = [min(float(f), w) for f, w in zip(t_fut, winner)]
    futility[-1] = winner[-1]
    return Design(
        alpha=float(alpha), min_effect=float(min_effect), looks=chosen, max_seeds=cap, paired=bool(paired),
        baseline_looks=baseline_looks, winner_bounds=tuple(winner), loser_bounds=tuple(loser),
        futility_bounds=tuple(futility), nominal_p=tuple(float(_upper_p(z)) for z in z_win),
        loser_nominal_p=tuple(float(special.stdtr(d, b)) for d, b in zip(df, loser)),
        design_df=tuple(float(d) for d in df), futility_margin=float(futility_margin),
        efficacy_shape=float(efficacy_shape), min_baseline_seeds=int(min_baseline_seeds),
        calibration_trials=int(calibration_trials), calibration_seed=int(calibration_seed),
    )


#: Power at ``min_effect`` a design aims for, when the default design reaches it there.
TARGET_POWER = 0.8
#: Simulated experiments per power estimate in the margin search (MC s.e. 0.13 points at 80%).
POWER_TRIALS = 100_000
POWER_SEED = 20261204


def _power(alpha: float, min_effect: float, looks: tuple[int, ...], baseline_looks: tuple[int, ...], paired: bool,
           margin: float, shape: float, trials: int, seed: int, effect: float) -> float:
    """P(WINNER) at a true improvement of ``effect`` σ (r = 0, normal noise) of the design with this margin."""
    k = len(looks)
    values = _calibrate(alpha, min_effect, looks, baseline_looks, paired, margin, shape, trials, seed)
    c = values[0]
    weights, z_fut, df = (np.asarray(values[2 + i * k:2 + (i + 1) * k]) for i in range(3))
    win_t = _z_to_t(c * weights, df)
    fut_t = np.minimum(_z_to_t(z_fut, df), win_t)
    stats, _ = simulate_statistics(looks, baseline_looks, paired, effect, 0.0, POWER_TRIALS,
                                   np.random.default_rng(POWER_SEED))
    alive = np.ones(POWER_TRIALS, dtype=bool)
    won = np.zeros(POWER_TRIALS, dtype=bool)
    for look in range(k):
        won |= alive & (stats[:, look] >= win_t[look])
        alive &= (stats[:, look] < win_t[look]) & (stats[:, look] >= fut_t[look])
    return float(won.mean())


@simulated
@functools.lru_cache(maxsize=32)
def futility_margin_for(alpha: float, min_effect: float, looks: tuple[int, ...], paired: bool = False,
                        efficacy_shape: float = DEFAULT_EFFICACY_SHAPE, min_baseline_seeds: int = MIN_BASELINE_SEEDS,
                        calibration_trials: int = CALIBRATION_TRIALS,
                        calibration_seed: int = CALIBRATION_SEED) -> float:
    """The futility margin that keeps power at ``min_effect`` where a larger min effect should leave it.

    The futility bound sits ``margin`` below what an effect of ``min_effect`` gives on average,
    so with a fixed margin about 38% of experiments with exactly that effect stop for futility
    at the first look, and a larger min effect only moves the bound up: with min effect 2σ and
    the default margin every experiment stops after 2 seeds and a true 2σ is found 46% of the
    time, against 80% at the default 1σ. So when ``min_effect`` exceeds the default, the margin
    is the smallest (to 0.01, at least the default) whose design calls a true ``min_effect`` a
    WINNER at least as often as the smaller of ``TARGET_POWER`` and the default design does;
    the saving a larger min effect buys is then seeds under no effect, never power at it.
    Costs a few calibrations (seconds) once per design; cached.
    """
    if min_effect <= DEFAULT_MIN_EFFECT:
        return DEFAULT_FUTILITY_MARGIN
    baseline_looks = tuple(max(min_baseline_seeds, n) for n in looks)

    def power(design_effect: float, margin: float) -> float:
        return _power(alpha, design_effect, looks, baseline_looks, paired, margin, efficacy_shape, calibration_trials,
                      calibration_seed, effect=min_effect)

    wanted = min(TARGET_POWER, power(DEFAULT_MIN_EFFECT, DEFAULT_FUTILITY_MARGIN))

    def enough(margin: float) -> bool:
        return power(min_effect, margin) >= wanted

    low, high = DEFAULT_FUTILITY_MARGIN, DEFAULT_FUTILITY_MARGIN + (min_effect - DEFAULT_MIN_EFFECT) * math.sqrt(
        _information(looks[-1], baseline_looks[-1], paired))
    if enough(low):
        return low
    for _ in range(6):  # the default's own last bound is this one: widening further is rarely needed
        if enough(high):
            break
        low, high = high, high + 1.0
    else:  # futility no longer binds at all and the recalibrated bounds still fall short (Monte Carlo noise)
        return round(high, 2)
    while high - low > 0.01:
        mid = (low + high) / 2.0
        low, high = (low, mid) if enough(mid) else (mid, high)
    return round(high, 2)


def at_level(design: Design, alpha: float) -> Design:
    """The same design calibrated for another level (the step-down rule's α/j)."""
    return make_design(alpha, design.min_effect, design.looks, design.max_seeds, design.paired,
                       futility_margin=design.futility_margin, efficacy_shape=design.efficacy_shape,
                       min_baseline_seeds=design.min_baseline_seeds, calibration_trials=design.calibration_trials,
                       calibration_seed=design.calibration_seed)


# ------------------------------------------------------------------ simulation
def simulate_statistics(looks: tuple[int, ...], baseline_looks: tuple[int, ...], paired: bool, effect: float,
                         correlation: float, trials: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, baseline mean − experiment mean) at every look of ``trials`` simulated
    experiments (σ = 1), each of shape (trials, looks).

    Seed i of the experiment correlates ``correlation`` with seed i of the baseline; the
    experiment's mean is ``effect`` lower (positive effect: improvement).
    """
    n_max, m_max = looks[-1], baseline_looks[-1]
    base = rng.standard_normal((trials, m_max))
    own = rng.standard_normal((trials, n_max))
    exp = correlation * base[:, :n_max] + math.sqrt(1.0 - correlation**2) * own - effect
    return look_statistics(looks, baseline_looks, paired, base, exp)


def look_statistics(looks: tuple[int, ...], baseline_looks: tuple[int, ...], paired: bool, base: np.ndarray,
                    exp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, baseline mean − experiment mean) at every look, from given runs: ``base`` of
    shape (trials, baseline_looks[-1]) and ``exp`` of shape (trials, looks[-1]), seed i of one
    paired with seed i of the other. Lets a simulation draw noise that is not normal."""
    trials, n_max = exp.shape
    out = np.empty((trials, len(looks)))
    gain = np.empty((trials, len(looks)))
    if paired:
        diff = base[:, :n_max] - exp
        d1, d2 = np.cumsum(diff, axis=1), np.cumsum(diff * diff, axis=1)
        for k, n in enumerate(looks):
            mean, var = _moments(d1[:, n - 1], d2[:, n - 1], n)
            gain[:, k] = mean
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, k] = mean / np.sqrt(var / n)
        return out, gain
    b1, b2 = np.cumsum(base, axis=1), np.cumsum(base * base, axis=1)
    e1, e2 = np.cumsum(exp, axis=1), np.cumsum(exp * exp, axis=1)
    for k, (n, m) in enumerate(zip(looks, baseline_looks)):
        mb, vb = _moments(b1[:, m - 1], b2[:, m - 1], m)
        me, ve = _moments(e1[:, n - 1], e2[:, n - 1], n)
        gain[:, k] = mb - me
        out[:, k] = gain[:, k] / np.sqrt(vb / m + ve / n)
    return out, gain


def _moments(total: np.ndarray, squares: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample variance from running sums (values are O(1) here, so no cancellation)."""
    mean = total / n
    return mean, np.maximum(squares - n * mean * mean, 0.0) / (n - 1)
