"""EQUIVALENT at a sequential look: the per-look test's level, its false-EQUIVALENT rate under the
data-dependent stop (simulated), and the simulation checked trial by trial against the rule the
session applies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_exprun.decide import looks
from pytest_exprun.decide.equivalence import DEFAULT_ALPHA, Margin, Unit
from pytest_exprun.decide.sequential import Decision, decide
from pytest_exprun.decide.sequential_design import SEEDS, make_design
from pytest_exprun.decide.sequential_equivalence import LookEquivalence, apply, at_looks, simulate


def _scalar(design, stop: LookEquivalence, base: np.ndarray, exp: np.ndarray) -> tuple[bool, bool, int]:  # type: ignore[no-untyped-def]
    """(EQUIVALENT, WINNER, experiment seeds) through the looks coordinator and the margin's test at the stop."""
    b = {s: float(v) for s, v in zip(SEEDS, base)}
    e = {s: float(v) for s, v in zip(SEEDS, exp)}
    decided = looks.decisions_at(design, ["x"], b, {"x": e}, len(design.looks) - 1, until="x", equivalence=stop)
    assert not isinstance(decided, str)
    d = decided["x"]
    if d.decision is not Decision.NEUTRAL:
        return False, d.decision is Decision.WINNER, d.n_experiment
    b_seeds, e_seeds = SEEDS[:d.n_baseline], SEEDS[:d.n_experiment]
    at_stop = stop.test({s: b[s] for s in b_seeds}, {s: e[s] for s in e_seeds}).equivalent
    return at_stop, False, d.n_experiment


def test_each_look_tests_at_alpha_over_the_looks() -> None:
    design = make_design()
    stop = at_looks(Margin(0.5, Unit.SIGMA), design)
    assert stop is not None and stop.looks == len(design.looks) == 4
    assert stop.per_look == pytest.approx(DEFAULT_ALPHA / 4)
    assert "α/4 = 0.0125" in stop.describe() and "≤ 0.05" in stop.describe()
    assert at_looks(None, design) is None
    # a look the test cannot judge (a baseline without spread and a margin in σ) does not stop
    assert not stop.at({42: 2.0, 137: 2.0}, {42: 2.0, 137: 2.0})


@pytest.mark.parametrize("sigma_margin", [False, True], ids=["units", "sigma"])
def test_the_simulation_is_the_rule_the_session_applies(sigma_margin: bool) -> None:
    design = make_design()
    margin = 3.0
    stop = LookEquivalence(Margin(margin, Unit.SIGMA if sigma_margin else Unit.METRIC), len(design.looks))
    rng = np.random.default_rng(5)
    trials = 250
    base = rng.standard_normal((trials, design.baseline_looks[-1]))
    exp = rng.standard_normal((trials, design.looks[-1])) + rng.choice([-2.0, 0.0, 2.0], (trials, 1))
    equivalent, won, seeds = apply(design, base, exp, margin, sigma_margin, stop.per_look)
    assert equivalent.sum() > 20 and won.sum() > 5 and (~equivalent & ~won).sum() > 20  # both kinds of stop occur
    for i in range(trials):
        assert _scalar(design, stop, base[i], exp[i]) == (equivalent[i], won[i], int(seeds[i])), i


def test_a_look_that_crosses_no_bound_stops_as_equivalent_only_with_a_margin() -> None:
    design = make_design()
    base = {42: 2.00, 137: 2.02, 256: 1.98, 512: 2.01, 1024: 1.99}
    exp = {42: 1.990, 137: 1.991}  # a small, precise gain: between the futility and WINNER bounds
    plain = decide(design, 0, base, exp)
    assert plain.decision is Decision.CONTINUE and not plain.equivalent
    stop = LookEquivalence(Margin(0.05, Unit.METRIC), len(design.looks))
    stopped = decide(design, 0, base, exp, stop)
    assert stopped.decision is Decision.NEUTRAL and stopped.equivalent and stopped.next_seeds is None
    assert "stopped as equivalent" in stopped.reason
    assert looks.stopped_reason(stopped, 4, "use_x") == "use_x stopped as equivalent within the margin at look 1 of 4"


@pytest.mark.parametrize("sigma_margin", [False, True], ids=["units", "sigma"])
@pytest.mark.parametrize("margin", [1.0, 2.0, 3.0])
def test_a_true_effect_on_the_margin_is_rarely_equivalent_over_all_looks(margin: float, sigma_margin: bool) -> None:
    """P(EQUIVALENT) at a true Δ of exactly ±M stays within α (+ Monte Carlo error), whatever look it stops at."""
    design = make_design()
    trials = 40_000
    for i, effect in enumerate((-margin, margin)):
        rate = simulate(design, effect, margin, sigma_margin, trials, seed=100 + i)
        assert rate.p_equivalent <= DEFAULT_ALPHA + 2 * rate.standard_error, rate


def test_the_same_test_undivided_at_every_look_breaks_its_level() -> None:
    """Why the level is divided: 10% at every look gives well over 10% false EQUIVALENT (the simulation can fail)."""
    design = make_design()
    rate = simulate(design, -2.0, 2.0, False, 40_000, seed=7, per_look=0.10)
    assert rate.p_equivalent > 0.10 + 4 * math.sqrt(0.1 * 0.9 / 40_000)


def test_an_equivalence_stop_saves_seeds_when_nothing_changes() -> None:
    design = make_design()
    with_stop = simulate(design, 0.0, 3.0, False, 40_000, seed=11)
    without = simulate(design, 0.0, 3.0, False, 40_000, seed=11, per_look=1e-12)
    assert with_stop.expected_seeds < without.expected_seeds
    assert with_stop.p_equivalent > 0.3 and with_stop.p_winner <= without.p_winner
