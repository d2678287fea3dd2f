"""The evidence statistics, against scipy, hand-computed values and simulation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from pytest_exprun.decide import evidence, protocol, rates, stats
from pytest_exprun.decide.curves import learning_curves, thin
from pytest_exprun.decide.protocol import Verdict, judge
from pytest_exprun.decide.stats import summarize

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


def test_welch_interval_matches_scipy_and_hand_computation() -> None:
    b, e = list(BASE.values()), list(EXP.values())
    interval = stats.welch_interval(b, e)
    reference = sps.ttest_ind(e, b, equal_var=False).confidence_interval(0.95)
    assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high))
    # By hand: se = 0.0091287, Welch–Satterthwaite df = se⁴ / ((5e-5)²/4 + (3.33e-5)²/2) = 5.73.
    se = math.sqrt(2.5e-4 / 5 + 1e-4 / 3)
    df = se**4 / ((2.5e-4 / 5) ** 2 / 4 + (1e-4 / 3) ** 2 / 2)
    assert interval.high - (-0.1) == pytest.approx(sps.t.ppf(0.975, df) * se)
    assert stats.welch_interval([2.0, 2.0], [1.0, 1.0]).reason == "both groups have zero variance"


def test_sigma_interval_is_the_chi_square_one() -> None:
    interval = stats.std_interval(0.02, 5)
    assert interval.low == pytest.approx(0.02 * math.sqrt(4 / sps.chi2.ppf(0.975, 4)))
    assert interval.high == pytest.approx(0.02 * math.sqrt(4 / sps.chi2.ppf(0.025, 4)))
    assert interval.high / interval.low == pytest.approx(4.80, abs=0.01)  # "a factor of almost 5"
    assert stats.std_interval(0.0, 5).low is None


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
    # e = b / 2 + 0.9 exactly: r = 1, and pairing helps by a test, not only by the ratio.
    assert paired.correlation.statistic == pytest.approx(1.0)
    assert paired.correlation.p_value == pytest.approx(sps.pearsonr([2.00, 2.02, 1.98], [1.90, 1.91, 1.89]).pvalue)
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
        result = evidence.evaluate(base, exp, summarize(list(base.values())), summarize(list(exp.values())))
    assert result.welch.p_value is None and reason in (result.welch.reason or "")
    assert result.mann_whitney.p_value is None
    assert result.bootstrap.low is None and result.bootstrap.reason
    assert result.paired.t_test.p_value is None and result.paired.t_test.reason
    assert result.power.minimum_detectable_effect is None and result.power.reason
    assert result.interval.low is None and result.interval.reason


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
    mde = evidence.minimum_detectable_effect(1.0, n_base, n_exp)
    assert evidence.rule_power(mde, 1.0, n_base, n_exp) == pytest.approx(0.8)
    assert _winner_rate(mde, n_base, n_exp) == pytest.approx(0.8, abs=0.005)


def test_simulated_rule_is_the_protocols_judge() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        base, exp = rng.normal(0, 1, 5), rng.normal(-2.7, 1, 3)
        vectorised = exp.mean() <= base.mean() - 2.0 * base.std(ddof=1)
        assert vectorised == (judge(summarize(base), summarize(exp)) is Verdict.WINNER)


def test_minimum_detectable_effect_scales_with_sigma() -> None:
    assert evidence.minimum_detectable_effect(0.02, 5, 3) == pytest.approx(0.02 * evidence.minimum_detectable_effect(1, 5, 3))


def test_seeds_for_the_rule_reach_80_percent_in_simulation() -> None:
    n, reason = evidence.seeds_for_rule(2.5, 1.0)
    assert reason is None and n is not None
    assert _winner_rate(2.5, n, n) >= 0.8 - 0.005
    assert _winner_rate(2.5, n - 1, n - 1) < 0.8


def test_no_number_of_seeds_lets_the_rule_call_an_effect_below_two_sigma() -> None:
    n, reason = evidence.seeds_for_rule(1.5, 1.0)
    assert n is None and "below the rule's 2σ threshold" in (reason or "")
    assert "no number of seeds" not in (reason or "")
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


def test_power_analysis_uses_the_baseline_sigma_and_the_design_as_run() -> None:
    b, e = summarize(list(BASE.values())), summarize([1.99, 2.00, 1.98])
    power = evidence.power_analysis(b, e)
    assert power.sigma == pytest.approx(b.std)
    # The two-stage design's 80% point (2.53σ), not the fixed 5-vs-3 formula's (2.72σ).
    assert power.mde_sigmas == pytest.approx(rates.design_mde())
    assert power.minimum_detectable_effect == pytest.approx(rates.design_mde() * b.std)
    assert power.observed_effect == pytest.approx(0.01)
    assert power.observed_power == pytest.approx(rates.design_power(0.01 / b.std))
    assert power.seeds_for_rule is None  # 0.63σ is below the rule's 2σ threshold
    assert power.ttest == "two-sample t-test"
    assert power.seeds_for_ttest == stats.seeds_for_ttest(0.01, b.std)[0]
    assert power.sigma_interval == stats.std_interval(b.std, 5)


def test_seeds_needed_use_the_paired_test_when_pairs_exist() -> None:
    """Where seeds share their luck, the unpaired figure asks for many seeds the paired test does not need."""
    base = {42: 2.00, 137: 2.05, 256: 1.95, 512: 2.03, 1024: 1.97}
    exp = {42: 1.990, 137: 2.041, 256: 1.939, 512: 2.021, 1024: 1.958}
    found = evidence.evaluate(base, exp, summarize(list(base.values())), summarize(list(exp.values())))
    assert found.paired.t_test.p_value is not None and found.paired.t_test.p_value < 0.001
    assert found.power.ttest == "paired t-test"
    unpaired, _ = stats.seeds_for_ttest(found.power.observed_effect, found.power.sigma)
    assert unpaired is not None and unpaired > 80
    assert found.power.seeds_for_ttest is not None and found.power.seeds_for_ttest <= 5


def test_seeds_for_a_paired_t_test_reach_80_percent_in_simulation() -> None:
    n, _ = stats.seeds_for_paired_ttest(0.5, 1.0)
    assert n == 34  # the textbook answer for a paired d = 0.5, α = 0.05, 80% power
    rng = np.random.default_rng(5)
    for size, expect_enough in ((n, True), (n - 3, False)):
        d = rng.normal(0.5, 1.0, (20_000, size))
        rate = float(np.mean(sps.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05))
        assert (rate >= 0.79) is expect_enough, (size, rate)


def test_learning_curves_band_and_tokens_to_target() -> None:
    base = [[(10, 2.5), (20, 2.2), (30, 2.0)], [(10, 2.7), (20, 2.4), (30, 2.2)]]
    exp = [[(10, 2.3), (20, 2.05), (30, 1.9)], [(10, 2.5), (20, 2.15), (30, 2.0)]]
    curves = learning_curves(base, exp, 3000, target=2.1)
    assert [p.step for p in curves.points] == [10, 20, 30]
    assert [p.tokens for p in curves.points] == [1000, 2000, 3000]
    first = curves.points[0]
    assert first.baseline_mean == pytest.approx(2.6) and first.baseline_std == pytest.approx(math.sqrt(0.02))
    assert curves.points[1].experiment_mean == pytest.approx(2.1)
    assert curves.to_target.step == 20 and curves.to_target.tokens == 2000
    assert curves.to_target.fraction == pytest.approx(2 / 3)


def test_learning_curves_without_baseline_curves_or_target() -> None:
    curves = learning_curves([[], []], [[(10, 2.3), (20, 2.2)]], 1000, target=2.0)
    assert curves.points[0].baseline_mean is None and curves.points[0].experiment_std is None
    assert "reused" in (curves.reason or "")
    assert curves.to_target.step is None and "never reached" in (curves.to_target.reason or "")
    nothing = learning_curves([], [[]], 1000, target=2.0)
    assert nothing.points == () and nothing.reason


def test_thin_keeps_first_and_last() -> None:
    curves = learning_curves([], [[(s, 1.0) for s in range(1, 101)]], 100, target=0.5)
    kept = thin(curves.points, 20)
    assert len(kept) == 20 and kept[0].step == 1 and kept[-1].step == 100


def test_control_that_reproduces_its_seed_passes() -> None:
    b = summarize(list(BASE.values()))
    check = protocol.check_control(b, 2.00 + 1e-5, stored_same_seed=2.00)
    assert check.ok and check.rule == "reproduction" and check.false_alarm == 0.0
    assert "reproduces the stored 2.0000" in check.message


def test_control_outlier_seed_of_its_own_baseline_is_no_alarm() -> None:
    """The old rule failed seed 42 = 3.0300 exactly reproduced, 1.2σ from its own baseline's mean."""
    values = {42: 3.0300, 137: 3.0001, 256: 3.0102, 512: 3.0053, 1024: 2.9951}
    b = summarize(list(values.values()))
    assert abs(3.0300 - b.mean) > b.std  # beyond the old 1σ rule
    assert protocol.check_control(b, 3.0300, stored_same_seed=3.0300).ok


def test_control_without_reproduction_uses_the_prediction_interval() -> None:
    b = summarize(list(BASE.values()))
    limit = sps.t.ppf(0.975, 4) * b.std * math.sqrt(1 + 1 / 5)
    inside = protocol.check_control(b, 2.0 + 0.99 * limit, stored_same_seed=1.90)
    outside = protocol.check_control(b, 2.0 + 1.01 * limit)
    assert inside.ok and inside.rule == "prediction interval" and inside.limit == pytest.approx(limit)
    assert "does not reproduce the stored 1.9000" in inside.message
    assert not outside.ok and outside.false_alarm == 0.05 and "false alarm 5% when nothing changed" in outside.message
    assert outside.sigmas == pytest.approx(1.01 * limit / b.std)


@pytest.mark.parametrize("n", [3, 5])
def test_control_false_alarm_rate_is_five_percent_when_nothing_changed(n: int) -> None:
    rng = np.random.default_rng(n)
    trials = 4000
    alarms = 0
    for _ in range(trials):
        values = rng.normal(2.0, 0.05, n + 1)  # a non-deterministic trainer: the control shares nothing
        alarms += not protocol.check_control(summarize(values[:n]), float(values[n]), stored_same_seed=float(values[0])).ok
    assert alarms / trials == pytest.approx(0.05, abs=4 * math.sqrt(0.05 * 0.95 / trials))


def test_a_deterministic_trainer_never_raises_a_false_alarm() -> None:
    rng = np.random.default_rng(8)
    for _ in range(500):
        values = rng.normal(2.0, 0.05, 5)
        assert protocol.check_control(summarize(values), float(values[0]), stored_same_seed=float(values[0])).ok


def test_pairing_is_claimed_only_with_a_significant_correlation() -> None:
    """With independent seeds the variance ratio is below 1 about half the time; the test claims ~2.5%."""
    rng = np.random.default_rng(13)
    trials, claims, below_one = 1000, 0, 0
    for _ in range(trials):
        b, e = rng.normal(2, 0.05, 5), rng.normal(2, 0.05, 5)
        r = stats.correlation_test(b, e)
        claims += r.statistic > 0 and r.p_value < 0.05
        below_one += np.var(e - b, ddof=1) < np.var(e, ddof=1) + np.var(b, ddof=1)
    assert below_one / trials == pytest.approx(0.5, abs=0.07)
    assert claims / trials <= 0.025 + 4 * math.sqrt(0.025 * 0.975 / trials)
    assert stats.paired_seeds(dict(enumerate(b)), dict(enumerate(e))).helped is bool(r.statistic > 0 and r.p_value < 0.05)


@pytest.mark.slow
def test_paired_seeds_claim_pairing_rarely_for_independent_seeds() -> None:
    rng = np.random.default_rng(14)
    trials = 3000
    claims = sum(
        stats.paired_seeds(dict(enumerate(rng.normal(2, 0.05, 5))), dict(enumerate(rng.normal(2, 0.05, 5)))).helped is True
        for _ in range(trials)
    )
    assert claims / trials <= 0.025 + 4 * math.sqrt(0.025 * 0.975 / trials)


def test_an_a_a_run_says_the_flag_changed_nothing() -> None:
    base = dict(BASE)
    same = {seed: BASE[seed] for seed in (42, 137, 256, 512, 1024)}
    found = evidence.evaluate(base, same, summarize(list(base.values())), summarize(list(same.values())))
    assert found.paired.identical and found.paired.helped is None
    assert "flag changed nothing" in (found.paired.reason or "")
    assert found.changed_nothing and "the flag changed nothing" in (found.note or "")
    assert found.two_sigma_verdict is Verdict.NEUTRAL


def _note(verdict: Verdict, welch_p: float | None, paired_p: float | None, low: float = -0.131, high: float = -0.027) -> str | None:
    welch = stats.SignificanceTest("Welch's t-test", -2.5, welch_p)
    paired = stats.SignificanceTest("paired t-test", -4.0, paired_p, None if paired_p is not None else "too few")
    interval = stats.Interval(low, high, 0.95, "Welch t-interval")
    return evidence.verdict_note(verdict, welch, paired, interval, delta=(low + high) / 2)


def test_a_neutral_that_the_tests_reject_says_so_and_names_the_next_step() -> None:
    note = _note(Verdict.NEUTRAL, 0.036, None)
    assert note is not None and note.count(". ") == 0  # one sentence
    assert "Welch's t-test (p = 0.0360, two-sided; 95% interval of Δ [-0.1310, -0.0270])" in note
    assert "probably lower" in note and "run more seeds" in note
    shipped = _note(Verdict.NEUTRAL, 0.11, 0.0066, low=-0.01, high=0.10)
    assert shipped is not None and "paired t-test (p = 0.0066, two-sided)" in shipped and "probably higher" in shipped


def test_a_winner_the_tests_do_not_support_says_so() -> None:
    note = _note(Verdict.WINNER, 0.08, 0.12)
    assert note is not None and "says WINNER, but neither Welch's t-test (p = 0.0800" in note
    assert "re-measure the baseline with more seeds" in note


def test_agreeing_tests_add_nothing() -> None:
    assert _note(Verdict.NEUTRAL, 0.40, 0.30) is None
    assert _note(Verdict.WINNER, 0.001, None) is None
    assert _note(Verdict.WINNER, None, None) is None


def test_neutral_explanation_speaks_of_noise_only_when_nothing_rejects() -> None:
    b, e = summarize(list(BASE.values())), summarize([1.99, 2.00, 1.98])
    quiet = evidence.explain_verdict(Verdict.NEUTRAL, b, e, None)
    assert "tell it apart from noise" in quiet
    loud = evidence.explain_verdict(Verdict.NEUTRAL, b, e, "The 2σ rule says NEUTRAL, but ...")
    assert "noise" not in loud and loud.endswith("].")


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


def test_holm_runs_within_each_baseline_family() -> None:
    other = [2.00, 2.03, 1.97, 2.02, 1.98]
    base = list(BASE.values())
    ranked = protocol.rank_experiments([
        ("a", "WINNER", base, [1.90, 1.91, 1.89], "a.md"),
        ("b", "NEUTRAL", base, [1.98, 1.99, 2.00], "b.md"),
        ("c", "NEUTRAL", other, [1.97, 1.99, 1.98], "c.md"),
    ])
    by_name = {r.name: r for r in ranked}
    assert (by_name["a"].family, by_name["a"].family_size) == (1, 2)
    assert (by_name["c"].family, by_name["c"].family_size) == (2, 1)
    first = stats.holm_adjust([by_name["a"].welch_p, by_name["b"].welch_p])
    assert (by_name["a"].holm_p, by_name["b"].holm_p) == pytest.approx(first)
    assert by_name["c"].holm_p == pytest.approx(by_name["c"].welch_p)
    families = rates.family_rates(ranked)
    assert [(f.family, f.size, f.n_baseline) for f in families] == [(1, 2, 5), (2, 1, 5)]
    assert families[1].false_winner == pytest.approx(0.03, abs=0.003)
    assert families[0].false_winner == pytest.approx(rates.familywise_false_winner(2))
