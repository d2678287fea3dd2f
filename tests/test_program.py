"""The research program's error control: LOND's levels, its replay from stored verdicts, the fixed
rule's exact false-WINNER rate and widened threshold (checked against the simulations in
``rates``), and the rate a program states without the option."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_exprun.decide import rates
from pytest_exprun.decide.program import (
    LEVEL_GRID,
    FixedDesign,
    ProgramError,
    fixed_false_winner,
    fixed_familywise,
    fixed_threshold,
    gamma,
    lond_level,
    replay,
    round_level,
    sequential_at_level,
    uncontrolled_familywise,
    widened_extension,
    widened_threshold,
    widened_verdict,
)
from pytest_exprun.decide.protocol import Verdict, judge
from pytest_exprun.decide.sequential_design import make_design
from pytest_exprun.decide.sequential_rates import simulate
from pytest_exprun.decide.stats import summarize


def _mc(p: float, trials: int) -> float:
    return math.sqrt(p * (1 - p) / trials)


# ------------------------------------------------------------------ the procedure
def test_spending_sequence_never_spends_more_than_the_budget() -> None:
    partial = math.fsum(gamma(j) for j in range(1, 200_001))
    # the tail beyond J is below ∫_J^∞ x^-1.5 dx / ζ(1.5) = 2 / (ζ(1.5) sqrt(J))
    assert partial < 1.0 < partial + 2 / (2.6123753 * math.sqrt(200_000)) + 1e-9
    assert all(gamma(j) > gamma(j + 1) for j in range(1, 100))


def test_levels_round_down_to_the_grid_and_never_up() -> None:
    for level in (0.05, 0.0123, 3.3e-4, 1e-5, 0.01):
        rounded = round_level(level)
        assert rounded <= level * (1 + 1e-12)
        assert rounded > level * 10 ** (-1 / LEVEL_GRID) * (1 - 1e-12)
    assert round_level(0.01) == pytest.approx(0.01)


def test_lond_level_grows_with_each_winner_before_it() -> None:
    assert lond_level(0.05, 1, 0) == round_level(0.05 * gamma(1))
    assert lond_level(0.05, 10, 3) == round_level(0.05 * gamma(10) * 4)
    assert lond_level(0.05, 10, 0) < lond_level(0.05, 10, 1) < lond_level(0.05, 10, 2)
    with pytest.raises(ValueError):
        lond_level(0.05, 3, 3)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 0.5, math.nan, math.inf])
def test_bad_program_alpha_is_one_line_error(alpha: float) -> None:
    with pytest.raises(ProgramError, match="--exprun-program-alpha") as info:
        replay(alpha, [])
    assert "\n" not in str(info.value)


def test_replay_is_the_program_rebuilt_from_stored_verdicts() -> None:
    verdicts = ["NEUTRAL", "WINNER", "LOSER", "WINNER", "NEUTRAL", "NEUTRAL"]
    state = replay(0.05, verdicts)
    assert [s.index for s in state.steps] == [1, 2, 3, 4, 5, 6]
    assert [s.winners_before for s in state.steps] == [0, 0, 1, 1, 2, 2]
    assert state.winners == 2 and state.next.index == 7 and state.next.winners_before == 2
    assert state.spent == pytest.approx(sum(gamma(j) for j in range(1, 7)))
    assert "decision 3" in state.steps[2].describe()


def test_a_resumed_program_continues_at_the_same_level() -> None:
    """A crash after k stored decisions: the next decision gets the level the full run gave it."""
    verdicts = ["WINNER", "NEUTRAL", "WINNER", "NEUTRAL", "LOSER", "NEUTRAL", "WINNER"]
    full = replay(0.05, verdicts)
    for k in range(len(verdicts)):
        assert replay(0.05, verdicts[:k]).next == full.steps[k]


def test_replay_refuses_stored_levels_it_does_not_reproduce() -> None:
    levels = [s.level for s in replay(0.05, ["NEUTRAL", "WINNER", "NEUTRAL"]).steps]
    replay(0.05, ["NEUTRAL", "WINNER", "NEUTRAL"], levels)  # consistent
    with pytest.raises(ProgramError, match="decision 3 was stored"):
        replay(0.05, ["NEUTRAL", "NEUTRAL", "NEUTRAL"], levels)  # the second verdict changed
    with pytest.raises(ProgramError, match="program-alpha=0.1"):
        replay(0.1, ["NEUTRAL", "WINNER", "NEUTRAL"], levels)


# ------------------------------------------------------------------ the fixed rule, integrated
@pytest.mark.parametrize(("threshold", "design"), [
    (2.0, FixedDesign()), (3.0, FixedDesign()), (2.0, FixedDesign(3, 3, 2)), (2.5, FixedDesign(5, 3, 0)),
])
def test_integrated_false_winner_matches_the_rates_simulation(threshold: float, design: FixedDesign) -> None:
    trials = 400_000
    simulated = rates.fixed_rule_rates(design.n_baseline, design.n_first, design.n_extension, threshold,
                                       effects=(0.0,), trials=trials)[0].p_winner
    exact = fixed_false_winner(threshold, design)
    assert exact == pytest.approx(simulated, abs=3 * _mc(exact, trials))


def test_integrated_power_matches_the_rates_simulation() -> None:
    assert fixed_false_winner(2.0, effect=2.0) == pytest.approx(rates.design_power(2.0), abs=0.003)
    assert fixed_false_winner(2.0, effect=1.0) == pytest.approx(rates.design_power(1.0), abs=0.003)


@pytest.mark.parametrize("k", [5, 20])
def test_integrated_familywise_matches_the_rates_simulation(k: int) -> None:
    trials = 60_000
    simulated = rates.familywise_false_winner(k, trials=trials)
    exact = fixed_familywise(k)
    assert exact == pytest.approx(simulated, abs=3 * _mc(exact, trials))
    assert fixed_familywise(1) == pytest.approx(fixed_false_winner())
    assert fixed_familywise(0) == 0.0


@pytest.mark.parametrize("level", [0.02, 0.005, 1e-3, 1e-5])
def test_widened_threshold_has_exactly_its_level(level: float) -> None:
    c = fixed_threshold(level)
    assert c > 2.0 and fixed_false_winner(c, loser=2.0) == pytest.approx(level, rel=1e-6)
    assert fixed_false_winner(c) >= fixed_false_winner(c, loser=2.0)  # a LOSER at 2σ can only stop WINNERs


def test_widened_threshold_holds_its_level_in_an_independent_simulation() -> None:
    """Runs drawn seed by seed (not from sufficient statistics), the rule applied by hand."""
    level, trials = 0.005, 200_000
    c = fixed_threshold(level)
    rng = np.random.default_rng(5)
    base = rng.standard_normal((trials, 5))
    exp = rng.standard_normal((trials, 5))
    mb, sb = base.mean(axis=1), base.std(axis=1, ddof=1)
    first = exp[:, :3].mean(axis=1)
    extend = (first - mb > -c * sb) & (first - mb < 2 * sb)  # LOSER stays at 2σ
    final = np.where(extend, exp.mean(axis=1), first)
    rate = float(np.mean(final <= mb - c * sb))
    assert rate == pytest.approx(level, abs=3 * _mc(level, trials))


def test_lond_program_of_null_experiments_keeps_its_familywise_bound() -> None:
    """20 experiments without effect on one baseline, each at LOND's level: P(any WINNER) ≤ A.

    Under the global null no WINNER precedes the first false one, so the levels are A·γ_j.
    """
    alpha, k, trials = 0.05, 20, 40_000
    thresholds = np.array([fixed_threshold(lond_level(alpha, j, 0)) for j in range(1, k + 1)])
    rng = np.random.default_rng(9)
    mb = rng.standard_normal((trials, 1)) / math.sqrt(5)
    sb = np.sqrt(rng.chisquare(4, (trials, 1)) / 4)
    first = rng.standard_normal((trials, k)) / math.sqrt(3)
    combined = (3 * first + 2 * rng.standard_normal((trials, k)) / math.sqrt(2)) / 5
    final = np.where((first - mb > -thresholds * sb) & (first - mb < 2 * sb), combined, first)
    familywise = float(np.mean(np.any(final <= mb - thresholds * sb, axis=1)))
    assert familywise <= alpha + 2 * _mc(alpha, trials)
    assert familywise > 0.5 * alpha * sum(gamma(j) for j in range(1, k + 1))  # the test can fail both ways


def test_widened_rule_is_protocols_judge_at_2_sigma_and_widens_only_winner() -> None:
    base = summarize([2.00, 2.02, 1.98, 2.01, 1.99])  # s_b = 0.0158
    for mean in (1.95, 1.968, 1.97, 2.0, 2.03, 2.032, 2.05):
        experiment = summarize([mean - 0.001, mean, mean + 0.001])
        assert widened_verdict(base, experiment, 2.0) is judge(base, experiment)
    winner_at_2 = summarize([1.955, 1.96, 1.965])  # 2.5σ better
    loser_at_2 = summarize([2.035, 2.04, 2.045])  # 2.5σ worse
    assert widened_verdict(base, winner_at_2, 3.0) is Verdict.NEUTRAL
    assert widened_extension(base, winner_at_2, 3.0)
    assert widened_verdict(base, loser_at_2, 3.0) is Verdict.LOSER
    assert not widened_extension(base, loser_at_2, 3.0)
    with pytest.raises(ValueError, match="only widens"):
        widened_verdict(base, winner_at_2, 1.5)


def test_a_program_never_loosens_a_rule() -> None:
    assert fixed_threshold(0.08) < 2.0 and widened_threshold(0.08) == 2.0
    assert widened_threshold(0.001) == fixed_threshold(0.001)
    design = make_design(0.03)
    assert sequential_at_level(design, 0.05) is design


def test_integrated_rate_of_the_widened_rule_matches_a_simulation_through_it() -> None:
    """The widened rule applied run by run through ``widened_verdict``, against the integral."""
    c, trials = 3.0, 12_000
    rng = np.random.default_rng(13)
    wins = 0
    for _ in range(trials):
        base = summarize(rng.standard_normal(5).tolist())
        runs = rng.standard_normal(5)
        first = summarize(runs[:3].tolist())
        final = summarize(runs.tolist()) if widened_extension(base, first, c) else first
        wins += widened_verdict(base, final, c) is Verdict.WINNER
    exact = fixed_false_winner(c, loser=2.0)
    assert wins / trials == pytest.approx(exact, abs=3 * _mc(exact, trials))


# ------------------------------------------------------------------ without the option
def test_uncontrolled_rate_grows_with_the_program() -> None:
    five, twenty = uncontrolled_familywise(5), uncontrolled_familywise(20)
    assert five.exact and 0.09 < five.familywise < twenty.familywise < 0.2
    mixed = uncontrolled_familywise(5, (0.03, 0.03))
    assert not mixed.exact and mixed.familywise == pytest.approx(five.familywise + 0.06)
    assert "at most" in mixed.describe() and "decision 7" in mixed.describe()
    assert uncontrolled_familywise(0).familywise == 0.0


# ------------------------------------------------------------------ the sequential mode
@pytest.mark.slow
def test_sequential_design_at_a_program_level_holds_it() -> None:
    design = make_design(0.03)
    level = lond_level(0.05, 3, 0)
    at = sequential_at_level(design, level)
    assert at.alpha == level and at.calibration_trials * level >= 400
    assert all(w > d for w, d in zip(at.winner_bounds, design.winner_bounds))
    trials = 400_000
    codes, _, _ = simulate(at, 0.0, trials=trials, seed=123)
    rate = float(np.mean(codes == 1))
    assert rate <= level + 3 * _mc(level, trials)


def test_replay_reads_the_verdict_enums_of_every_rule() -> None:
    from pytest_exprun.decide.equivalence import MarginVerdict
    from pytest_exprun.decide.sequential import Decision

    mixed = [Verdict.WINNER, MarginVerdict.EQUIVALENT, Decision.WINNER, MarginVerdict.WINNER, "INCONCLUSIVE"]
    assert replay(0.05, mixed).winners == 3
    assert replay(0.05, mixed) == replay(0.05, ["WINNER", "NEUTRAL", "WINNER", "WINNER", "NEUTRAL"])
