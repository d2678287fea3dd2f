"""The sequential decision mode: its statistic against scipy, its error rates against a plain loop.

The loop simulations here draw their data with Python's ``random`` and call ``decide`` look by look
as a session would, so they share no code with the vectorised ``sequential_rates``.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from pytest_exprun.decide.protocol import ProtocolError
from pytest_exprun.decide.sequential import (
    Decision,
    LookDecision,
    completed_look,
    decide,
    decide_family,
    look_statistic,
    seeds_for_look,
)
from pytest_exprun.decide.sequential_design import SEEDS, Design, make_design
from pytest_exprun.decide.sequential_rates import (
    null_rates_under,
    rates_table,
    sequential_rates,
    winner_estimates,
)

BASELINE = {42: 2.00, 137: 2.02, 256: 1.98, 512: 2.01, 1024: 1.99, 2048: 2.00}


@pytest.fixture(scope="module")
def welch() -> Design:
    return make_design()


@pytest.fixture(scope="module")
def paired() -> Design:
    return make_design(paired=True)


def draw(rng: random.Random, n: int, effect: float, sigma: float, r: float, level: float = 3.0
         ) -> tuple[dict[int, float], dict[int, float]]:
    """Baseline and experiment val_loss by seed; the experiment is ``effect`` σ better."""
    base, exp = {}, {}
    for seed in SEEDS[:n]:
        shared, own = rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)
        base[seed] = level + sigma * shared
        exp[seed] = level + sigma * (r * shared + math.sqrt(1 - r * r) * own - effect)
    return base, exp


def run_loop(design: Design, trials: int, effect: float, sigma: float = 1.0, r: float = 0.0,
             seed: int = 1) -> list[LookDecision]:
    """The final decision of each simulated experiment, run one look at a time."""
    rng = random.Random(seed)
    finals = []
    for _ in range(trials):
        base, exp = draw(rng, design.baseline_looks[-1], effect, sigma, r)
        for look in range(len(design.looks)):
            result = decide(design, look, base, exp)
            if result.decision is not Decision.CONTINUE:
                break
        finals.append(result)
    return finals


def mc_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


# ------------------------------------------------------------------ seeds and design
def test_seeds_start_with_the_protocols_then_double_after_1024() -> None:
    assert SEEDS[:5] == (42, 137, 256, 512, 1024)
    assert SEEDS[5:8] == (2048, 4096, 8192)
    assert len(set(SEEDS)) == len(SEEDS) and max(SEEDS) < 2**32


def test_each_look_names_its_baseline_and_experiment_seeds(welch: Design) -> None:
    assert welch.looks == (2, 3, 4, 6)
    assert seeds_for_look(welch, 0) == ((42, 137, 256, 512, 1024), (42, 137))
    assert seeds_for_look(welch, 2) == ((42, 137, 256, 512, 1024), (42, 137, 256, 512))
    # Beyond five seeds the baseline grows with the experiment, so every pair is complete.
    assert seeds_for_look(welch, 3) == (SEEDS[:6], SEEDS[:6])
    with pytest.raises(ProtocolError, match="look 4 does not exist"):
        seeds_for_look(welch, 4)


def test_a_resumed_session_finds_the_last_complete_look(welch: Design) -> None:
    baseline = SEEDS[:5]
    assert completed_look(welch, baseline, (42,)) is None
    assert completed_look(welch, baseline, (42, 137, 256)) == 1
    assert completed_look(welch, baseline, SEEDS[:6]) == 2  # look 4 also needs baseline seed 2048
    assert completed_look(welch, SEEDS[:6], SEEDS[:6]) == 3


def test_default_bounds_have_pocock_shape_and_binding_futility(welch: Design) -> None:
    assert len(set(round(p, 12) for p in welch.nominal_p)) == 1
    assert list(welch.winner_bounds) == sorted(welch.winner_bounds, reverse=True)  # fewer df, higher t
    # LOSER bounds: Pocock-shaped too, calibrated on their own, and always inside the futility region.
    assert len(set(round(p, 12) for p in welch.loser_nominal_p)) == 1
    assert all(lo < f for lo, f in zip(welch.loser_bounds[:-1], welch.futility_bounds[:-1]))
    assert all(f < w for f, w in zip(welch.futility_bounds[:-1], welch.winner_bounds[:-1]))
    assert welch.futility_bounds[-1] == welch.winner_bounds[-1]
    # Each WINNER bound is the t quantile of its nominal p at the look's equal-σ Welch df.
    for bound, p, df in zip(welch.winner_bounds, welch.nominal_p, welch.design_df):
        assert sps.t.sf(bound, df) == pytest.approx(p, rel=1e-6)


def test_calibration_is_deterministic(welch: Design) -> None:
    assert make_design() == welch


def test_a_larger_min_effect_stops_for_futility_earlier() -> None:
    small, large = make_design(min_effect=1.0), make_design(min_effect=3.0)
    assert all(a < b for a, b in zip(small.futility_bounds[:-1], large.futility_bounds[:-1]))


@pytest.mark.parametrize("min_effect", [2.0, 3.0])
def test_a_larger_min_effect_never_costs_power_at_that_effect(welch: Design, min_effect: float) -> None:
    # With the default margin, min effect 2 stopped every experiment after 2 seeds and found a
    # true 2σ 46% of the time, against the default design's 80%.
    design = make_design(min_effect=min_effect)
    assert design.futility_margin > welch.futility_margin
    (null, at_effect), = [sequential_rates(design, (0.0, min_effect), trials=100_000, seed=99)]
    default_null, default_at = sequential_rates(welch, (0.0, min_effect), trials=100_000, seed=99)
    se = 0.0013  # Monte Carlo standard error of a rate near 80% with 100,000 trials
    assert at_effect.p_winner >= min(0.8, default_at.p_winner) - 3 * se
    assert null.expected_seeds <= default_null.expected_seeds + 0.01  # what the larger min effect buys
    assert null.p_winner <= design.alpha + 3 * 0.0005


def test_an_explicit_futility_margin_is_kept() -> None:
    assert make_design(min_effect=2.0, futility_margin=0.3, calibration_trials=20_000).futility_margin == 0.3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": 0.7}, "alpha"),
    ({"min_effect": -1.0}, "min_effect"),
    ({"looks": (1, 3)}, "at least 2 experiment seeds"),
    ({"looks": (2, 2, 4)}, "strictly increasing"),
    ({"looks": (2, 4, 8), "max_seeds": 6}, "exceeds max_seeds=6"),
    ({"max_seeds": 40}, "at most 26 seeds"),
])
def test_make_design_refuses_what_it_cannot_plan(kwargs: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        make_design(**kwargs)


def test_a_cap_alone_keeps_the_default_looks_below_it() -> None:
    quick = {"calibration_trials": 20_000}  # only the looks matter here
    assert make_design(max_seeds=5, **quick).looks == (2, 3, 4, 5)
    assert make_design(max_seeds=10, **quick).looks == (2, 3, 4, 6, 8, 10)


# ------------------------------------------------------------------ the statistic
def test_unpaired_statistic_is_welchs_t_with_improvement_positive(welch: Design) -> None:
    exp = {42: 1.95, 137: 1.99, 256: 1.96}
    t, df, estimate, (low, high) = look_statistic(welch, 1, BASELINE, exp)
    b, e = [BASELINE[s] for s in SEEDS[:5]], list(exp.values())
    ref = sps.ttest_ind(e, b, equal_var=False)
    assert t == pytest.approx(-ref.statistic)
    assert estimate == pytest.approx(np.mean(e) - np.mean(b))
    va, vb = np.var(e, ddof=1) / 3, np.var(b, ddof=1) / 5
    assert df == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 4))
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (low, high) == pytest.approx((estimate - half, estimate + half))


def test_paired_statistic_is_the_paired_t_on_the_looks_seeds(paired: Design) -> None:
    exp = {42: 1.97, 137: 2.00, 256: 1.97, 512: 2.00, 1024: 1.95}
    t, df, estimate, _ = look_statistic(paired, 2, BASELINE, exp)  # look 3: four pairs
    seeds = SEEDS[:4]
    ref = sps.ttest_rel([exp[s] for s in seeds], [BASELINE[s] for s in seeds])
    assert t == pytest.approx(-ref.statistic) and df == 3
    assert estimate == pytest.approx(np.mean([exp[s] - BASELINE[s] for s in seeds]))


@pytest.mark.parametrize("design_name", ["welch", "paired"])
def test_decision_does_not_depend_on_sigma_or_level(design_name: str, request: pytest.FixtureRequest) -> None:
    design = request.getfixturevalue(design_name)
    base, exp = draw(random.Random(5), 6, 1.5, 1.0, 0.3)
    reference = decide(design, 3, base, exp)
    for scale, shift in ((0.001, 2.0), (40.0, -7.0)):
        scaled = decide(design, 3, {s: shift + scale * v for s, v in base.items()},
                        {s: shift + scale * v for s, v in exp.items()})
        assert scaled.decision is reference.decision and scaled.look_index == reference.look_index
        assert scaled.statistic == pytest.approx(reference.statistic)


def test_a_missing_seed_is_named(welch: Design) -> None:
    with pytest.raises(ProtocolError, match=r"experiment seed\(s\) \[256\]"):
        look_statistic(welch, 1, BASELINE, {42: 1.9, 137: 1.9})
    with pytest.raises(ProtocolError, match=r"baseline seed\(s\) \[2048\]"):
        look_statistic(welch, 3, {s: v for s, v in BASELINE.items() if s != 2048}, dict(BASELINE))


# ------------------------------------------------------------------ decisions
def test_large_effect_stops_at_the_first_look_with_winner(welch: Design, paired: Design) -> None:
    exp = {42: 1.50, 137: 1.51}
    result = decide(welch, 0, BASELINE, exp)
    assert result.decision is Decision.WINNER and result.look_index == 0 and result.n_experiment == 2
    assert result.statistic >= result.boundary == result.winner_bound
    assert "WINNER bound" in result.reason and "naive" in result.estimate_note
    # A paired t on two pairs has one degree of freedom: only very consistent pairs stop it.
    pairs = {42: 1.50, 137: 1.52}
    assert decide(paired, 0, BASELINE, pairs).decision is Decision.WINNER


@pytest.mark.parametrize("design_name", ["welch", "paired"])
def test_no_effect_ends_neutral(design_name: str, request: pytest.FixtureRequest) -> None:
    """A flag that changes nothing on a deterministic trainer gives the baseline's own values."""
    design = request.getfixturevalue(design_name)
    result = decide(design, len(design.looks) - 1, BASELINE, dict(BASELINE))
    assert result.decision is Decision.NEUTRAL
    assert result.look_index == 0 and result.next_seeds is None


def test_a_clear_loser_is_called_loser(welch: Design) -> None:
    result = decide(welch, 3, BASELINE, {s: v + 0.2 for s, v in BASELINE.items()})
    assert result.decision is Decision.LOSER and result.look_index == 0


def test_between_the_bounds_it_asks_for_the_next_looks_seeds(welch: Design) -> None:
    b = [BASELINE[s] for s in SEEDS[:5]]
    mean_b, sd_b = float(np.mean(b)), float(np.std(b, ddof=1))
    # Two experiment seeds about 1.5σ better with the baseline's spread: t ≈ 2, between 1.16 and 5.7.
    exp = {42: mean_b - 1.5 * sd_b - 0.7 * sd_b, 137: mean_b - 1.5 * sd_b + 0.7 * sd_b}
    result = decide(welch, 0, BASELINE, exp)
    assert result.decision is Decision.CONTINUE
    assert welch.futility_bounds[0] <= result.statistic < welch.winner_bounds[0]
    assert result.next_seeds == seeds_for_look(welch, 1)


def test_a_later_look_replays_the_earlier_ones(welch: Design) -> None:
    """A resumed session asking about look 3 gets the stop the design made at look 1."""
    exp = {42: 2.03, 137: 2.02, 256: 1.80, 512: 1.80}  # bad first two seeds, great later ones
    first = decide(welch, 0, BASELINE, exp)
    assert first.decision is Decision.NEUTRAL
    assert decide(welch, 2, BASELINE, exp) == first


# ------------------------------------------------------------------ error rates
def check_false_verdicts(design: Design, trials: int, sigma: float, r: float, seed: int) -> None:
    decisions = [result.decision for result in run_loop(design, trials, effect=0.0, sigma=sigma, r=r, seed=seed)]
    bound = design.alpha + 3 * mc_se(design.alpha, trials)
    for verdict in (Decision.WINNER, Decision.LOSER):
        rate = decisions.count(verdict) / trials
        assert rate <= bound, (verdict, sigma, r, rate)


@pytest.mark.parametrize(("design_name", "sigma", "r"), [
    ("welch", 0.02, 0.0), ("welch", 3.0, 0.5), ("paired", 0.02, 0.0), ("paired", 3.0, 0.85),
])
def test_false_winner_and_loser_rates_at_most_alpha(design_name: str, sigma: float, r: float,
                                         request: pytest.FixtureRequest) -> None:
    check_false_verdicts(request.getfixturevalue(design_name), 2000, sigma, r, seed=int(sigma * 100 + r * 10))


@pytest.mark.slow
@pytest.mark.parametrize("design_name", ["welch", "paired"])
@pytest.mark.parametrize("sigma", [1e-3, 1.0, 250.0])
def test_false_winner_and_loser_rates_at_most_alpha_many_trials(design_name: str, sigma: float,
                                                     request: pytest.FixtureRequest) -> None:
    check_false_verdicts(request.getfixturevalue(design_name), 20_000, sigma, 0.0, seed=7)


@pytest.mark.parametrize(("design_name", "effect", "r"), [("welch", 2.0, 0.0), ("paired", 1.0, 0.85)])
def test_loop_agrees_with_the_vectorised_rates(design_name: str, effect: float, r: float,
                                               request: pytest.FixtureRequest) -> None:
    design = request.getfixturevalue(design_name)
    trials = 2000
    finals = run_loop(design, trials, effect=effect, r=r, seed=11)
    decisions, seeds = [f.decision for f in finals], [f.n_experiment for f in finals]
    (row,) = sequential_rates(design, effects=(effect,), correlation=r, trials=100_000)
    p_loop = decisions.count(Decision.WINNER) / trials
    assert abs(p_loop - row.p_winner) <= 3 * math.hypot(mc_se(row.p_winner, trials), mc_se(row.p_winner, 100_000))
    se_seeds = float(np.std(seeds, ddof=1)) / math.sqrt(trials)
    assert abs(float(np.mean(seeds)) - row.expected_seeds) <= 3 * se_seeds * math.sqrt(1 + trials / 100_000)


def test_winners_overstate_the_improvement_as_the_simulation_says(welch: Design) -> None:
    """At a true 1σ the naive estimate of a WINNER is far above 1σ: the report must say so."""
    reported = [-f.estimate for f in run_loop(welch, 2000, effect=1.0, seed=13) if f.decision is Decision.WINNER]
    expected = winner_estimates(welch, 1.0, trials=100_000)
    assert expected is not None and expected > 1.5
    assert abs(float(np.mean(reported)) - expected) <= 3 * float(np.std(reported, ddof=1)) / math.sqrt(len(reported))


def test_default_design_meets_the_goals_and_beats_the_reference(welch: Design) -> None:
    """Goals at α = 3%, r = 0: ≥ 75% WINNER at 2σ, ≤ 3.0 seeds at no effect, ≤ 3.7 at 2σ; the
    reference design reached 78.6%, 2.88 and 3.62."""
    null, two = sequential_rates(welch, effects=(0.0, 2.0), trials=200_000)
    assert null.p_winner <= 0.03 + 3 * mc_se(0.03, 200_000)
    assert two.p_winner >= 0.786 and null.expected_seeds <= 2.88 and two.expected_seeds <= 3.62


def test_rates_rise_with_the_effect(welch: Design) -> None:
    rows = sequential_rates(welch, effects=(0.0, 1.0, 3.0), trials=20_000)
    assert [r.effect for r in rows] == [0.0, 1.0, 3.0]
    assert rows[0].p_winner < rows[1].p_winner < rows[2].p_winner
    assert rows[2].p_loser == 0.0 and all(2 <= r.expected_seeds <= 6 for r in rows)


# ------------------------------------------------------------------ several experiments
def test_step_down_lets_a_second_experiment_win_only_after_the_first(welch: Design) -> None:
    strict, middle = make_design(alpha=0.01), make_design(alpha=0.015)  # α/3 and α/2 of 3%
    b = [BASELINE[s] for s in SEEDS[:5]]
    mean_b, var_b = float(np.mean(b)), float(np.var(b, ddof=1))

    def two_seeds_with_t(t: float) -> dict[int, float]:
        spread = 0.004  # experiment values mean ± spread/2 → variance spread²/2
        se = math.sqrt(var_b / 5 + spread**2 / 2 / 2)
        centre = mean_b - t * se
        return {42: centre - spread / 2, 137: centre + spread / 2}

    t_mid = (strict.winner_bounds[0] + middle.winner_bounds[0]) / 2
    t_mid = max(t_mid, middle.winner_bounds[0] + 0.01)
    alone = decide_family(welch, 0, BASELINE, {"mid": two_seeds_with_t(t_mid), "a": dict(BASELINE), "b": dict(BASELINE)})
    assert alone["mid"].decision is not Decision.WINNER
    with_leader = decide_family(welch, 0, BASELINE, {"mid": two_seeds_with_t(t_mid), "lead": two_seeds_with_t(50.0),
                                                     "b": dict(BASELINE)})
    assert with_leader["lead"].decision is Decision.WINNER and with_leader["lead"].alpha == pytest.approx(0.01)
    assert with_leader["mid"].decision is Decision.WINNER and with_leader["mid"].alpha == pytest.approx(0.015)
    assert with_leader["b"].decision is Decision.NEUTRAL


def test_family_of_one_is_decide(welch: Design) -> None:
    base, exp = draw(random.Random(3), 6, 2.0, 1.0, 0.0)
    assert decide_family(welch, 3, base, {"x": exp})["x"] == decide(welch, 3, base, exp)


def family_false_winner(design: Design, trials: int, seed: int, adjusted: bool) -> float:
    rng = random.Random(seed)
    hits = 0
    last = len(design.looks) - 1
    for _ in range(trials):
        base, first = draw(rng, design.baseline_looks[-1], 0.0, 1.0, 0.0)
        others = [draw(rng, design.baseline_looks[-1], 0.0, 1.0, 0.0)[1] for _ in range(2)]
        experiments = {"a": first, "b": others[0], "c": others[1]}
        if adjusted:
            for look in range(last + 1):
                results = decide_family(design, look, base, experiments)
                if all(r.decision is not Decision.CONTINUE for r in results.values()):
                    break
            found = [r.decision for r in results.values()]
        else:
            found = [decide(design, last, base, exp).decision for exp in experiments.values()]
        hits += Decision.WINNER in found
    return hits / trials


def test_family_wise_false_winner_rate_for_three_experiments(welch: Design) -> None:
    trials = 1500
    bound = welch.alpha + 3 * mc_se(welch.alpha, trials)
    assert family_false_winner(welch, trials, seed=21, adjusted=True) <= bound
    # The same three judged one by one exceed α: the check above can fail.
    assert family_false_winner(welch, trials, seed=21, adjusted=False) > bound


@pytest.mark.slow
def test_family_wise_false_winner_rate_many_trials(welch: Design) -> None:
    trials = 12_000
    assert family_false_winner(welch, trials, seed=5, adjusted=True) <= welch.alpha + 3 * mc_se(welch.alpha, trials)


# ------------------------------------------------------------------ away from the assumptions
@pytest.mark.parametrize(("ratio", "expected"), [(2.0, 0.0486), (0.5, 0.0284)])
def test_an_experiment_sigma_unlike_the_baselines_moves_the_false_winner_rate(welch: Design, ratio: float,
                                                                          expected: float) -> None:
    """Measured independently for the issue: σ doubled 4.86%, halved 2.84%; here against a loop
    over ``decide`` too."""
    vectorised = null_rates_under(welch, experiment_sigma=ratio, trials=200_000)[0]
    assert abs(vectorised - expected) <= 4 * math.hypot(mc_se(expected, 200_000), mc_se(expected, 400_000))
    rng = random.Random(21)
    trials, won = 2000, 0
    for _ in range(trials):
        base = {s: rng.gauss(0.0, 1.0) for s in SEEDS[:welch.baseline_looks[-1]]}
        exp = {s: rng.gauss(0.0, ratio) for s in SEEDS[:welch.looks[-1]]}
        for look in range(len(welch.looks)):
            result = decide(welch, look, base, exp)
            if result.decision is not Decision.CONTINUE:
                break
        won += result.decision is Decision.WINNER
    assert abs(won / trials - vectorised) <= 3 * math.hypot(mc_se(vectorised, trials), mc_se(vectorised, 200_000))


def test_normal_noise_through_null_rates_under_is_the_rates_table(welch: Design) -> None:
    ours = null_rates_under(welch, "normal", trials=200_000)
    (row,) = sequential_rates(welch, effects=(0.0,), trials=200_000)
    assert abs(ours[0] - row.p_winner) <= 4 * math.sqrt(2) * mc_se(0.03, 200_000)
    assert abs(ours[1] - row.p_loser) <= 4 * math.sqrt(2) * mc_se(0.03, 200_000)


def test_sequential_rates_table_states_its_noise_assumption(welch: Design) -> None:
    text = rates_table(welch)
    t3 = null_rates_under(welch, "t3", trials=400_000)[0]
    assert "These rates assume normal seed-to-seed noise with one σ for baseline and experiment" in text
    assert f"{t3:.2%} with heavy-tailed noise (Student's t, 3 df)" in text
    assert "smallest effect worth finding 1σ, found 30.3% of the time (futility margin 0.3)" in text


@pytest.mark.slow  # the min-effect-2 design's margin search and every rate of --exprun-rates: 8-30 s
def test_rates_with_a_larger_min_effect_state_the_power_there(project) -> None:  # type: ignore[no-untyped-def]
    """--exprun-min-effect 2 used to stop every experiment after 2 seeds and find a true 2σ 46% of the time."""
    import re

    result = project.run("--exprun-rates", "--exprun-decide=sequential", "--exprun-min-effect=2")
    assert result.ret == 0
    out = result.stdout.str()
    found = re.search(r"smallest effect worth finding 2σ, found (\d+\.\d)% of the time \(futility margin 1\.53\)", out)
    assert found is not None, out
    assert float(found.group(1)) >= 79.5
    assert "These rates assume normal seed-to-seed noise with one σ" in out
    from pytest_exprun.settings import OPTIONS

    (help_text,) = [text for dest, _, _, text in OPTIONS if dest == "min_effect"]  # what --help prints
    assert "a larger one stops hopeless experiments sooner while keeping the power to find that improvement" in help_text
