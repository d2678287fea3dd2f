"""A research program: every decision made against one baseline, and the false WINNERs among them.

Each experiment judged on its own holds its rule's false-WINNER rate (3% for the fixed 2σ rule),
but a program of tens or hundreds of experiments against one baseline gives that rate a chance
each time, and the shared baseline makes it worse: a baseline whose s_b came out small lowers the
bar for all of them at once. ``uncontrolled_familywise`` states that rate; ``--exprun-program-alpha``
controls it with **LOND** (Javanmard & Montanari, 2018), an online procedure:

    level of the j-th decision = A · γ_j · (W + 1)

where A is the program's level, γ a fixed spending sequence summing to at most 1 (here
γ_j = j^(−1.5) / ζ(1.5)) and W the number of WINNERs among the j − 1 decisions before it.

Why LOND, for keep/discard decisions:

* **What it guarantees.** The false-discovery rate E[false WINNERs / WINNERs] ≤ A over the whole
  program, however long, when the decisions' statistics are positively dependent (PRDS), which is
  what a shared baseline gives: every experiment is compared with the same baseline mean. And when
  no experiment has an effect, no WINNER comes before the first false one, so every level is A·γ_j
  and P(any false WINNER) ≤ Σ A·γ_j ≤ A under any dependence at all: the family-wise rate under
  the global null is bounded too.
* **Why a false-discovery bound rather than a family-wise one.** A program keeps what wins; the
  cost of its errors is the share of what it kept that was noise. Alpha-spending for a family-wise
  bound over an open-ended program must shrink every level towards zero, and the fixed rule's
  threshold with it (6σ and more after a few dozen experiments), so a long program could keep
  nothing; LOND hands budget back after each WINNER, as a program that finds real improvements
  can afford. LORD++ and SAFFRON are more powerful but need independent p-values, which a shared
  baseline denies; e-LOND would suit the sequential looks but gives up power at the few seeds a
  training experiment can afford, where the calibrated bounds already give an exact level.
* **Resumable.** The level of the j-th decision depends only on j and the verdicts before it, so
  ``replay`` rebuilds the program's state from its stored decisions in order: a crash loses
  nothing, and a decision that was never stored is simply made again at the same level.

Each rule is given its level as follows. The fixed rule's WINNER threshold is widened from 2σ to
the threshold whose false-WINNER rate is exactly that level (``fixed_threshold``); LOSER stays at
2σ, and the extension runs when the first seeds decide neither (``widened_verdict``). The rate is
computed by numerical integration, not simulated, because the levels fall to 10⁻⁵. The sequential
mode's bounds are calibrated at the level by ``sequential_design`` with enough trials for it
(``sequential_at_level``). Levels are rounded down to a grid of 20 a decade, which keeps the
guarantee (a lower level) and bounds the number of distinct calibrations.

Pure functions and frozen dataclasses; no I/O.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .simulated import simulated
from .._lazy import LazyModule
from ..model import Verdict
from .protocol import SIGNIFICANT_SIGMAS, judge
from .sequential_design import Design as SequentialDesign
from .sequential_design import make_design
from .stats import Summary

special = LazyModule("scipy.special")
optimize = LazyModule("scipy.optimize")

#: The spending sequence γ_j = j^(−SPENDING_EXPONENT) / ζ(SPENDING_EXPONENT): a fifth of the
#: budget for the first decision, 8% left after 100 (a heavier tail would starve the first ones).
SPENDING_EXPONENT = 1.5
#: Levels are rounded down to 10^(k / LEVEL_GRID) for an integer k.
LEVEL_GRID = 20
#: The sequential design's calibration keeps at least this many null trials beyond its bound.
CALIBRATION_TAIL = 400
MAX_CALIBRATION_TRIALS = 1_500_000


class ProgramError(ValueError):
    """Stored decisions that do not make one program; the message says how to proceed."""


# ------------------------------------------------------------------ the procedure
@functools.lru_cache(maxsize=1)
def _zeta() -> float:
    return float(special.zeta(SPENDING_EXPONENT, 1.0))


def gamma(index: int) -> float:
    """γ_j, the share of the program's level the j-th decision (1-based) starts from."""
    if index < 1:
        raise ValueError(f"decisions are counted from 1, got {index}")
    return float(index ** -SPENDING_EXPONENT) / _zeta()


def round_level(level: float) -> float:
    """The largest grid level at or below ``level`` (20 a decade): rounding down keeps the guarantee."""
    if not level > 0.0:
        raise ValueError(f"a level must be positive, got {level}")
    k = math.floor(math.log10(level) * LEVEL_GRID + 1e-9)
    return float(10.0 ** (k / LEVEL_GRID))


def lond_level(program_alpha: float, index: int, winners_before: int) -> float:
    """LOND's level for the ``index``-th decision after ``winners_before`` WINNERs, on the grid."""
    check_program_alpha(program_alpha)
    if winners_before < 0 or winners_before >= index:
        raise ValueError(f"decision {index} can follow 0 to {index - 1} WINNERs, got {winners_before}")
    return round_level(min(program_alpha * gamma(index) * (winners_before + 1), program_alpha))


def check_program_alpha(program_alpha: float) -> None:
    if not (math.isfinite(program_alpha) and 0.0 < program_alpha < 0.5):
        raise ProgramError(f"--exprun-program-alpha is the program's false-discovery rate and must lie between 0 and "
                           f"0.5 (e.g. 0.05), got {program_alpha:g}")


@dataclass(frozen=True)
class Step:
    """Where one decision stands in its program."""

    index: int  # the n-th decision on this baseline under the program's control, from 1
    winners_before: int
    level: float  # the false-WINNER rate it was (or is to be) tested at
    program_alpha: float

    def describe(self) -> str:
        return (f"decision {self.index} on this baseline, tested at a false-WINNER level of {self.level:.2g} "
                f"(LOND, {self.winners_before} WINNER(s) before it); program-wide false-discovery rate ≤ "
                f"{self.program_alpha:g}")


@dataclass(frozen=True)
class ProgramState:
    """The program replayed from its stored verdicts, in the order they were decided."""

    program_alpha: float
    steps: tuple[Step, ...]
    winners: int

    @property
    def next(self) -> Step:
        """The step the next decision takes."""
        index = len(self.steps) + 1
        return Step(index, self.winners, lond_level(self.program_alpha, index, self.winners), self.program_alpha)

    @property
    def spent(self) -> float:
        """Σ γ_j of the decisions so far: the share of the no-WINNER budget used."""
        return sum(gamma(step.index) for step in self.steps)


def replay(program_alpha: float, verdicts: Sequence[str], stored_levels: Sequence[float | None] = ()) -> ProgramState:
    """The program's state from its verdicts in decision order (WINNER counts as a discovery).

    ``stored_levels``, when given, are the levels the decisions were recorded at; a level that
    the replay does not reproduce means the stored order or the program's level changed, which
    would void the guarantee, so it is refused.
    """
    check_program_alpha(program_alpha)
    steps: list[Step] = []
    winners = 0
    for position, verdict in enumerate(verdicts):
        index = position + 1
        step = Step(index, winners, lond_level(program_alpha, index, winners), program_alpha)
        stored = stored_levels[position] if position < len(stored_levels) else None
        if stored is not None and not math.isclose(stored, step.level, rel_tol=1e-9):
            raise ProgramError(
                f"decision {index} was stored at level {stored:.3g} but the program at --exprun-program-alpha="
                f"{program_alpha:g} gives {step.level:.3g}: keep the program's alpha, or start a new program "
                "with a new baseline (--exprun-rerun-baseline)")
        steps.append(step)
        if str(getattr(verdict, "value", verdict)) == "WINNER":
            winners += 1
    return ProgramState(float(program_alpha), tuple(steps), winners)


# ------------------------------------------------------------------ the fixed 2σ rule, exactly
@dataclass(frozen=True)
class FixedDesign:
    """The fixed rule's seed counts (``rates.Design`` without its threshold)."""

    n_baseline: int = 5
    n_first: int = 3
    n_extension: int = 2

    def __post_init__(self) -> None:
        if self.n_baseline < 2 or self.n_first < 1 or self.n_extension < 0:
            raise ValueError(f"the fixed rule needs at least 2 baseline seeds and 1 experiment seed, got "
                             f"{self.n_baseline}, {self.n_first} and {self.n_extension} extension seeds")


@functools.lru_cache(maxsize=16)
def _nodes(design: FixedDesign) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Quadrature over the baseline mean (Gauss–Hermite), its s_b (panels of Gauss–Legendre on the chi
    density, smooth in s unlike in s²) and, later, the first stage's mean (Gauss–Legendre)."""
    z, wz = special.roots_hermitenorm(48)
    wz = wz / math.sqrt(2.0 * math.pi)
    nu = design.n_baseline - 1
    s_max = math.sqrt(float(special.chdtri(nu, 1e-15)) / nu)
    g, wg = special.roots_legendre(16)
    edges = np.linspace(0.0, s_max, 17)
    s = np.concatenate([(a + b) / 2 + (b - a) / 2 * g for a, b in itertools.pairwise(edges)])
    ws = np.concatenate([(b - a) / 2 * wg for a, b in itertools.pairwise(edges)])
    # density of s = sqrt(χ²_ν / ν): 2νs · f_χ²(νs²)
    log_pdf = (math.log(2.0 * nu) + np.log(s) + (nu / 2 - 1) * np.log(nu * s * s) - nu * s * s / 2
               - (nu / 2) * math.log(2.0) - math.lgamma(nu / 2))
    ws = ws * np.exp(log_pdf)
    f, wf = special.roots_legendre(64)
    return z / math.sqrt(design.n_baseline), wz, s, ws, f, wf


def _conditional_winner(design: FixedDesign, threshold: float, effect: float = 0.0,
                        loser: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """P(WINNER | baseline mean, s_b) of one experiment on a grid, with the grid's weights (σ = 1).

    WINNER at the first stage when its mean ≤ m_b − c·s_b; when the first stage lies between
    m_b − c·s_b and m_b + L·s_b (L = ``loser``, c when None) the extension runs and WINNER needs
    the combined mean ≤ m_b − c·s_b.
    """
    upper = threshold if loser is None else loser
    bm, wz, s, ws, f, wf = _nodes(design)
    nf, ne = design.n_first, design.n_extension
    m = bm[:, None]
    lo = m - threshold * s[None, :]  # (bm, s)
    # experiment means are lowered by ``effect``: work with shifted thresholds instead
    lo_e, hi_e = lo + effect, m + upper * s[None, :] + effect
    p = special.ndtr(lo_e * math.sqrt(nf))
    if ne:
        first = (lo_e + hi_e)[..., None] / 2 + (hi_e - lo_e)[..., None] / 2 * f  # (bm, s, f)
        density = math.sqrt(nf) * np.exp(-nf * first * first / 2) / math.sqrt(2 * math.pi)
        combined_ok = special.ndtr(math.sqrt(ne) * ((nf + ne) * lo_e[..., None] - nf * first) / ne)
        p = p + np.sum(wf * density * combined_ok, axis=-1) * (hi_e - lo_e) / 2
    return np.clip(p, 0.0, 1.0), wz[:, None] * ws[None, :]


def fixed_false_winner(threshold: float = SIGNIFICANT_SIGMAS, design: FixedDesign = FixedDesign(),
                       effect: float = 0.0, loser: float | None = None) -> float:
    """P(WINNER) of one experiment under the fixed rule at ``threshold`` baseline σ, at a true
    improvement of ``effect`` σ (0: the false-WINNER rate); integrated, not simulated.

    ``loser`` is the LOSER threshold (None: the same as the WINNER one, as ``rates`` simulates;
    a program widens only the WINNER side and keeps LOSER at 2σ). Given s_b, D₁ = first-stage
    mean − m_b and D₂ = combined mean − m_b are jointly normal (Var D₁ = 1/n_f + 1/n_b,
    Var D₂ = Cov(D₁, D₂) = 1/(n_f + n_e) + 1/n_b): WINNER when D₁ ≤ −c·s_b, or when
    −c·s_b < D₁ < L·s_b (the extension runs) and D₂ ≤ −c·s_b; what remains is one integral over
    D₁ and one over s_b.
    """
    upper = threshold if loser is None else loser
    _, _, s, ws, f, wf = _nodes(design)
    nb, nf, ne = design.n_baseline, design.n_first, design.n_extension
    var1 = 1.0 / nf + 1.0 / nb
    edge = threshold * s  # (s,)
    p = special.ndtr((-edge + effect) / math.sqrt(var1))
    if ne:
        var2 = 1.0 / (nf + ne) + 1.0 / nb  # also Cov(D₁, D₂)
        slope, rest = var2 / var1, math.sqrt(var2 - var2 * var2 / var1)
        half = (threshold + upper) * s / 2  # D₁ over (−c·s, L·s)
        d1 = ((upper - threshold) * s / 2)[:, None] + half[:, None] * f[None, :]
        density = np.exp(-(d1 + effect) ** 2 / (2 * var1)) / math.sqrt(2 * math.pi * var1)
        below = special.ndtr((-edge[:, None] + effect - slope * (d1 + effect)) / rest)
        p = p + np.sum(wf * density * below, axis=-1) * half
    return float(np.sum(ws * np.clip(p, 0.0, 1.0)))


def fixed_threshold(level: float, design: FixedDesign = FixedDesign()) -> float:
    """The WINNER threshold, in baseline σ, at which the fixed rule's false-WINNER rate is ``level``,
    LOSER kept at 2σ (``widened_verdict``)."""
    if not 0.0 < level < 0.5:
        raise ValueError(f"a false-WINNER level must lie in (0, 0.5), got {level}")
    return float(_threshold(float(level), design))


@functools.lru_cache(maxsize=512)
def _threshold(level: float, design: FixedDesign) -> float:
    def rate(c: float) -> float:
        return math.log(fixed_false_winner(c, design, loser=SIGNIFICANT_SIGMAS)) - math.log(level)

    high = 4.0
    while rate(high) > 0:
        high *= 2.0
    return float(optimize.brentq(rate, 1e-3, high, xtol=1e-10))


@simulated
def fixed_familywise(k: int, threshold: float = SIGNIFICANT_SIGMAS, design: FixedDesign = FixedDesign()) -> float:
    """P(at least one false WINNER) among ``k`` experiments without effect on one baseline.

    Given the baseline's mean and s_b the experiments are independent, so the rate is
    1 − E[(1 − p(m_b, s_b))^k], integrated like ``fixed_false_winner``.
    """
    if k < 0:
        raise ValueError(f"a program has 0 or more decisions, got {k}")
    if k == 0:
        return 0.0
    p, w = _conditional_winner(design, threshold)
    return float(1.0 - np.sum(w * (1.0 - p) ** k))


def widened_threshold(level: float, design: FixedDesign = FixedDesign()) -> float:
    """The WINNER threshold a program gives the fixed rule at ``level``: never below 2σ, so that a
    large program alpha never makes one decision looser than the rule is on its own."""
    return max(SIGNIFICANT_SIGMAS, fixed_threshold(level, design))


def widened_verdict(baseline: Summary, experiment: Summary, threshold: float) -> Verdict:
    """The fixed rule with its WINNER side at ``threshold`` baseline σ and LOSER kept at 2σ.

    Built on ``protocol.judge`` itself: a threshold of c σ is the 2σ rule on a baseline σ scaled
    by c / 2. Only false WINNERs are the program's to control; a wider LOSER bar would only hide
    harm.
    """
    if threshold < SIGNIFICANT_SIGMAS:
        raise ValueError(f"a program only widens the 2σ threshold, got {threshold:g}σ")
    scaled = replace(baseline, std=baseline.std * threshold / SIGNIFICANT_SIGMAS)
    if judge(scaled, experiment) is Verdict.WINNER:
        return Verdict.WINNER
    return Verdict.LOSER if judge(baseline, experiment) is Verdict.LOSER else Verdict.NEUTRAL


def widened_extension(baseline: Summary, first_seeds: Summary, threshold: float) -> bool:
    """Run the extension seeds when the first seeds decide neither way at the widened threshold."""
    return widened_verdict(baseline, first_seeds, threshold) is Verdict.NEUTRAL


# ------------------------------------------------------------------ the sequential mode
def sequential_at_level(design: SequentialDesign, level: float) -> SequentialDesign:
    """The same sequential design calibrated at ``level`` (the design itself when ``level`` is not
    below its α), with enough null trials for its tail.

    The design's own trials when they give at least ``CALIBRATION_TAIL`` expected false WINNERs,
    else ``MAX_CALIBRATION_TRIALS``: two sizes only, so every level shares one cached simulation
    of the null statistics and a new level costs a bisection, not a simulation.
    """
    if not 0.0 < level < 0.5:
        raise ValueError(f"a false-WINNER level must lie in (0, 0.5), got {level}")
    if level >= design.alpha:
        return design  # a program never loosens the design
    enough = design.calibration_trials * level >= CALIBRATION_TAIL
    trials = design.calibration_trials if enough else max(design.calibration_trials, MAX_CALIBRATION_TRIALS)
    return make_design(level, design.min_effect, design.looks, design.max_seeds, design.paired,
                       futility_margin=design.futility_margin, efficacy_shape=design.efficacy_shape,
                       min_baseline_seeds=design.min_baseline_seeds, calibration_trials=trials,
                       calibration_seed=design.calibration_seed)


# ------------------------------------------------------------------ without the option
@dataclass(frozen=True)
class UncontrolledRate:
    """What a report without ``--exprun-program-alpha`` states about its program."""

    decisions: int
    familywise: float
    exact: bool  # False: an upper bound (union bound over sequential decisions)

    def describe(self) -> str:
        word = "" if self.exact else "at most "
        return (f"decision {self.decisions} on this baseline without program-wide control: the chance that at least "
                f"one of these {self.decisions} decisions is a false WINNER when none has an effect is {word}"
                f"{self.familywise:.1%} (--exprun-program-alpha bounds it)")


def uncontrolled_familywise(fixed_decisions: int, sequential_alphas: Sequence[float] = (),
                            design: FixedDesign = FixedDesign()) -> UncontrolledRate:
    """The program's family-wise false-WINNER rate so far, if no experiment had an effect.

    Fixed-rule decisions exactly (their shared baseline included); sequential ones each add at
    most their design's α (a union bound, valid under any dependence).
    """
    fixed = fixed_familywise(fixed_decisions, SIGNIFICANT_SIGMAS, design) if fixed_decisions else 0.0
    total = fixed + math.fsum(sequential_alphas)
    return UncontrolledRate(fixed_decisions + len(sequential_alphas), min(1.0, total), not sequential_alphas)
