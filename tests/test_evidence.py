"""The evidence statistics, against scipy, hand-computed values and simulation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from pytest_exprun import protocol, rates, stats
from pytest_exprun.protocol import Verdict, judge
from pytest_exprun.stats import summarize

BASE = {42: 2.00, 137: 2.02, 256: 1.98, 512: 2.01, 1024: 1.99}
EXP = {42: 1.90, 137: 1.91, 256: 1.89}


def test_welch_matches_scipy_and_hand_computation() -> None:
    result = stats.welch_test(list(BASE.values()), list(EXP.values()))
    reference = sps.ttest_ind(list(EXP.values()), list(BASE.values()), equal_var=False)
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)
    # By hand: se² = 2.5e-4/5 + 1e-4/3 = 8.333e-5, t = -0.1 / 0.0091287 = -10.954
    assert result.statistic == pytest.approx(-0.1 / math.sqrt(2.5e-4 / 5 + 1e-4 / 3))


def test_mann_whitney_matches_scipy_and_exact_count() -> None:
    result = stats.mann_whitney(list(BASE.values()), list(EXP.values()))
    assert result.statistic == 0.0
    # Every experiment run beats every baseline run: 2 of C(8, 3) = 56 orderings are this extreme.
    assert result.p_value == pytest.approx(2 / 56)
    assert result.p_value == pytest.approx(sps.mannwhitneyu(list(EXP.values()), list(BASE.values())).pvalue)


def test_bootstrap_interval_is_reproducible_and_matches_scipy() -> None:
    b, e = list(BASE.values()), list(EXP.values())
    first = stats.bootstrap_interval(b, e)
    assert first == stats.bootstrap_interval(b, e)
    reference = sps.bootstrap(
        (np.array(e), np.array(b)), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        n_resamples=stats.BOOTSTRAP_RESAMPLES, method="percentile", vectorized=True,
        rng=np.random.default_rng(stats.BOOTSTRAP_SEED),
    )
    assert first.low == pytest.approx(reference.confidence_interval.low)
    assert first.high == pytest.approx(reference.confidence_interval.high)
    assert first.low < -0.1 < first.high < 0


def test_paired_seeds_match_scipy_and_say_pairing_helped() -> None:
    paired = stats.paired_seeds(BASE, EXP)
    assert paired.seeds == (42, 137, 256)
    assert paired.differences == pytest.approx((-0.10, -0.11, -0.09))
    reference = sps.ttest_rel([1.90, 1.91, 1.89], [2.00, 2.02, 1.98])
    assert paired.t_test.p_value == pytest.approx(reference.pvalue)
    # By hand: Var(d) = 1e-4; Var(e) + Var(b) over the same seeds = 1e-4 + 4e-4.
    assert paired.paired_variance == pytest.approx(1e-4)
    assert paired.unpaired_variance == pytest.approx(5e-4)
    assert paired.variance_ratio == pytest.approx(0.2)
    assert paired.helped is True
    assert paired.wilcoxon.p_value is None
    assert "smallest possible p would be 0.25" in (paired.wilcoxon.reason or "")


def test_wilcoxon_runs_from_five_pairs() -> None:
    exp = {42: 1.90, 137: 1.93, 256: 1.89, 512: 1.95, 1024: 1.92}
    paired = stats.paired_seeds(BASE, exp)
    reference = sps.wilcoxon(list(exp.values()), list(BASE.values()))
    assert paired.wilcoxon.p_value == pytest.approx(reference.pvalue)
    assert paired.wilcoxon.p_value == pytest.approx(2 / 32)  # all five differences negative


@pytest.mark.parametrize(
    ("base", "exp", "reason"),
    [
        ({1: 2.0, 2: 2.0}, {1: 2.0, 2: 2.0}, "zero variance"),
        ({1: 2.0}, {1: 1.0}, "at least 2"),
        ({1: 2.0, 2: 2.0, 3: 2.0}, {1: 2.0, 2: 2.0, 3: 2.0}, "zero variance"),
    ],
)
def test_degenerate_inputs_give_reasons_without_warnings(base: dict, exp: dict, reason: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = rates.evaluate(base, exp, summarize(list(base.values())), summarize(list(exp.values())))
    assert result.welch.p_value is None and reason in (result.welch.reason or "")
    assert result.mann_whitney.p_value is None
    assert result.bootstrap.low is None and result.bootstrap.reason
    assert result.paired.t_test.p_value is None and result.paired.t_test.reason
    assert result.power.minimum_detectable_effect is None and result.power.reason


def test_identical_paired_differences_are_not_a_t_test() -> None:
    paired = stats.paired_seeds({1: 2.0, 2: 2.1, 3: 2.2}, {1: 1.9, 2: 2.0, 3: 2.1})
    assert paired.t_test.p_value is None
    assert paired.t_test.reason == "every paired difference is the same"
    assert paired.helped is True


def test_holm_matches_hand_computation() -> None:
    # Sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → running max 0.03, 0.06, 0.06.
    assert stats.holm_adjust([0.01, 0.04, None, 0.03]) == pytest.approx((0.03, 0.06, None, 0.06))
    assert stats.holm_adjust([0.5, 0.9]) == pytest.approx((1.0, 1.0))
    assert stats.holm_adjust([0.02]) == (0.02,)
    assert stats.holm_adjust([]) == ()


def _winner_rate(effect: float, n_base: int, n_exp: int, trials: int = 200_000, seed: int = 1) -> float:
    """The protocol's WINNER rule applied to simulated normal runs with σ = 1."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, (trials, n_base))
    exp = rng.normal(-effect, 1.0, (trials, n_exp))
    return float(np.mean(exp.mean(axis=1) <= base.mean(axis=1) - 2.0 * base.std(axis=1, ddof=1)))


@pytest.mark.parametrize(("n_base", "n_exp"), [(5, 3), (5, 5), (10, 10)])
def test_minimum_detectable_effect_is_called_winner_80_percent_of_the_time(n_base: int, n_exp: int) -> None:
    mde = rates.minimum_detectable_effect(1.0, n_base, n_exp)
    assert rates.rule_power(mde, 1.0, n_base, n_exp) == pytest.approx(0.8)
    assert _winner_rate(mde, n_base, n_exp) == pytest.approx(0.8, abs=0.005)


def test_simulated_rule_is_the_protocols_judge() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        base, exp = rng.normal(0, 1, 5), rng.normal(-2.7, 1, 3)
        vectorised = exp.mean() <= base.mean() - 2.0 * base.std(ddof=1)
        assert vectorised == (judge(summarize(base), summarize(exp)) is Verdict.WINNER)


def test_minimum_detectable_effect_scales_with_sigma() -> None:
    assert rates.minimum_detectable_effect(0.02, 5, 3) == pytest.approx(0.02 * rates.minimum_detectable_effect(1, 5, 3))


def test_seeds_for_the_rule_reach_80_percent_in_simulation() -> None:
    n, reason = rates.seeds_for_rule(2.5, 1.0)
    assert reason is None and n is not None
    assert _winner_rate(2.5, n, n) >= 0.8 - 0.005
    assert _winner_rate(2.5, n - 1, n - 1) < 0.8


def test_no_number_of_seeds_lets_the_rule_call_an_effect_below_two_sigma() -> None:
    n, reason = rates.seeds_for_rule(1.5, 1.0)
    assert n is None and "exceeds 2σ" in (reason or "")
    assert _winner_rate(1.5, 200, 200, trials=20_000) < 0.01


def test_seeds_for_a_t_test_match_simulation_and_textbook_formula() -> None:
    n, _ = stats.seeds_for_ttest(0.5, 1.0)
    assert n == 64  # the textbook answer for d = 0.5, α = 0.05, 80% power
    rng = np.random.default_rng(3)
    for size, expect_enough in ((n, True), (n - 3, False)):
        a = rng.normal(0, 1, (20_000, size))
        b = rng.normal(0.5, 1, (20_000, size))
        rate = float(np.mean(sps.ttest_ind(a, b, axis=1).pvalue < 0.05))
        assert (rate >= 0.79) is expect_enough, (size, rate)


def test_power_analysis_uses_the_baseline_sigma() -> None:
    b, e = summarize(list(BASE.values())), summarize([1.99, 2.00, 1.98])
    power = rates.power_analysis(b, e)
    assert power.sigma == pytest.approx(b.std)
    assert power.minimum_detectable_effect == pytest.approx(rates.minimum_detectable_effect(b.std, 5, 3))
    assert power.observed_effect == pytest.approx(0.01)
    assert power.seeds_for_rule is None  # 0.63σ is below the rule's 2σ threshold
    assert power.seeds_for_ttest == stats.seeds_for_ttest(0.01, b.std)[0]


def test_learning_curves_band_and_tokens_to_target() -> None:
    base = [[(10, 2.5), (20, 2.2), (30, 2.0)], [(10, 2.7), (20, 2.4), (30, 2.2)]]
    exp = [[(10, 2.3), (20, 2.05), (30, 1.9)], [(10, 2.5), (20, 2.15), (30, 2.0)]]
    curves = stats.learning_curves(base, exp, 3000, target=2.1)
    assert [p.step for p in curves.points] == [10, 20, 30]
    assert [p.tokens for p in curves.points] == [1000, 2000, 3000]
    first = curves.points[0]
    assert first.baseline_mean == pytest.approx(2.6) and first.baseline_std == pytest.approx(math.sqrt(0.02))
    assert curves.points[1].experiment_mean == pytest.approx(2.1)
    assert curves.to_target.step == 20 and curves.to_target.tokens == 2000
    assert curves.to_target.fraction == pytest.approx(2 / 3)


def test_learning_curves_without_baseline_curves_or_target() -> None:
    curves = stats.learning_curves([[], []], [[(10, 2.3), (20, 2.2)]], 1000, target=2.0)
    assert curves.points[0].baseline_mean is None and curves.points[0].experiment_std is None
    assert "reused" in (curves.reason or "")
    assert curves.to_target.step is None and "never reached" in (curves.to_target.reason or "")
    nothing = stats.learning_curves([], [[]], 1000, target=2.0)
    assert nothing.points == () and nothing.reason


def test_thin_keeps_first_and_last() -> None:
    curves = stats.learning_curves([], [[(s, 1.0) for s in range(1, 101)]], 100, target=0.5)
    kept = stats.thin(curves.points, 20)
    assert len(kept) == 20 and kept[0].step == 1 and kept[-1].step == 100


def test_control_within_one_sigma() -> None:
    b = summarize(list(BASE.values()))  # mean 2.0, σ 0.0158
    assert protocol.check_control(b, 2.01).ok
    far = protocol.check_control(b, 2.03)
    assert not far.ok and far.sigmas == pytest.approx(0.03 / b.std)


def test_ranking_orders_by_delta_and_adjusts_over_all() -> None:
    base = list(BASE.values())
    ranked = protocol.rank_experiments([
        ("worse", "LOSER", base, [2.10, 2.11, 2.09], "a.md"),
        ("better", "WINNER", base, [1.90, 1.91, 1.89], "b.md"),
    ])
    assert [r.name for r in ranked] == ["better", "worse"]
    assert [r.rank for r in ranked] == [1, 2]
    raw = [r.welch_p for r in ranked]
    assert [r.holm_p for r in ranked] == pytest.approx(list(stats.holm_adjust(raw)))
    assert ranked[0].sigmas == pytest.approx(-0.1 / summarize(base).std)
