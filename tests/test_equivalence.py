"""The equivalence test with a margin, the margin's parsing and the verdict it gives, checked
against scipy's one-sided t-tests and against small simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from pytest_exprun.decide.equivalence import (
    Margin,
    MarginError,
    MarginVerdict,
    Unit,
    margin_verdict,
    parse_margin,
    passes,
    seeds_to_settle,
    settle_arguments,
    settle_seeds,
    tost,
    tost_paired,
    tost_power,
    tost_sigma,
    tost_welch,
)
from pytest_exprun.decide.protocol import Verdict
from pytest_exprun.decide.sequential import Decision
from pytest_exprun.decide.sequential_design import SEEDS

BASE = [3.412, 3.398, 3.405, 3.421, 3.409]
EXP = [3.404, 3.411, 3.401, 3.407, 3.399]


# ------------------------------------------------------------------ the margin
@pytest.mark.parametrize(("text", "margin"), [
    ("0.01", Margin(0.01, Unit.METRIC)),
    (" 1e-2 ", Margin(0.01, Unit.METRIC)),
    ("0.5sigma", Margin(0.5, Unit.SIGMA)),
    ("0.5 sigma", Margin(0.5, Unit.SIGMA)),
    ("0.5SIGMA", Margin(0.5, Unit.SIGMA)),
    ("0.5σ", Margin(0.5, Unit.SIGMA)),
    ("2", Margin(2.0, Unit.METRIC)),
])
def test_margin_reads_units_or_baseline_sigma(text: str, margin: Margin) -> None:
    assert parse_margin(text) == margin


@pytest.mark.parametrize("text", ["", "sigma", "σ", "0", "0sigma", "-0.01", "-0.5sigma", "nan", "nansigma", "inf",
                                  "5%", "0.5s", "0.5 s", "0.5 sigmas", "sigma0.5", "0.1 0.2", "0.5sigmasigma"])
def test_bad_margin_is_one_line_error(text: str) -> None:
    with pytest.raises(MarginError) as info:
        parse_margin(text)
    message = str(info.value)
    assert "\n" not in message and "--exprun-margin" in message and repr(text) in message


def test_sigma_margin_scales_with_measured_baseline_sigma() -> None:
    assert parse_margin("0.5sigma").in_metric_units(0.02) == pytest.approx(0.01)
    assert parse_margin("0.01").in_metric_units(123.0) == 0.01
    with pytest.raises(MarginError, match="val_loss units"):
        parse_margin("0.5sigma").in_metric_units(0.0)


# ------------------------------------------------------------------ TOST against scipy
def _scipy_welch_tost(b: list[float], e: list[float], margin: float) -> tuple[float, float]:
    """Two scipy calls on shifted data: H0 Δ ≤ −M (alternative greater), H0 Δ ≥ +M (alternative less)."""
    e = np.asarray(e)
    lower = sps.ttest_ind(e + margin, b, equal_var=False, alternative="greater").pvalue
    upper = sps.ttest_ind(e - margin, b, equal_var=False, alternative="less").pvalue
    return float(lower), float(upper)


@pytest.mark.parametrize("margin", [0.002, 0.008, 0.02])
def test_welch_tost_matches_two_scipy_one_sided_tests(margin: float) -> None:
    result = tost_welch(BASE, EXP, margin)
    lower, upper = _scipy_welch_tost(BASE, EXP, margin)
    assert result.p_lower == pytest.approx(lower, rel=1e-9)
    assert result.p_upper == pytest.approx(upper, rel=1e-9)
    assert result.p_value == pytest.approx(max(lower, upper), rel=1e-9)
    assert result.estimate == pytest.approx(np.mean(EXP) - np.mean(BASE))


def test_welch_tost_on_random_groups_matches_scipy_and_its_interval() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        b = rng.normal(0.0, rng.uniform(0.5, 2.0), rng.integers(2, 9)).tolist()
        e = rng.normal(rng.normal(0, 0.5), rng.uniform(0.5, 2.0), rng.integers(2, 9)).tolist()
        margin = float(rng.uniform(0.1, 3.0))
        result = tost_welch(b, e, margin, alpha=0.05)
        lower, upper = _scipy_welch_tost(b, e, margin)
        assert (result.p_lower, result.p_upper) == pytest.approx((lower, upper), rel=1e-8, abs=1e-12)
        # The 90% Welch interval of Δ, as scipy computes it, decides the same.
        ci = sps.ttest_ind(e, b, equal_var=False).confidence_interval(confidence_level=0.90)
        assert result.interval == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert result.equivalent == (-margin < ci.low and ci.high < margin)


def test_paired_tost_matches_scipy_on_differences() -> None:
    seeds = (42, 137, 256, 512, 1024)
    b = dict(zip(seeds, BASE))
    e = dict(zip(seeds, EXP))
    margin = 0.01
    result = tost_paired(b, e, margin, alpha=0.05)
    diff = np.asarray(EXP) - np.asarray(BASE)
    assert result.p_lower == pytest.approx(sps.ttest_1samp(diff, -margin, alternative="greater").pvalue)
    assert result.p_upper == pytest.approx(sps.ttest_1samp(diff, margin, alternative="less").pvalue)
    assert result.df == 4 and result.method == "paired"


def test_paired_tost_uses_only_shared_seeds() -> None:
    b = {1: 1.0, 2: 1.1, 3: 0.9, 4: 5.0}
    e = {1: 1.01, 2: 1.12, 3: 0.92, 9: 7.0}
    result = tost_paired(b, e, 0.1)
    assert result.df == 2 and result.estimate == pytest.approx(0.05 / 3)


def test_stricter_alpha_is_never_more_equivalent() -> None:
    loose = tost_welch(BASE, EXP, 0.012, alpha=0.1)
    strict = tost_welch(BASE, EXP, 0.012, alpha=0.01)
    assert loose.p_value == strict.p_value
    assert strict.interval[0] < loose.interval[0] and loose.interval[1] < strict.interval[1]
    assert loose.equivalent and not strict.equivalent


def test_identical_groups_are_equivalent_without_noise_only_inside_the_margin() -> None:
    assert tost_welch([1.0, 1.0], [1.005, 1.005], 0.01).equivalent
    assert not tost_welch([1.0, 1.0], [1.02, 1.02], 0.01).equivalent


@pytest.mark.parametrize(("call", "match"), [
    (lambda: tost_welch([1.0], [1.0, 2.0], 0.1), "at least 2 runs"),
    (lambda: tost_welch(BASE, EXP, -0.1), "positive"),
    (lambda: tost_welch(BASE, EXP, math.nan), "positive"),
    (lambda: tost_welch(BASE, EXP, 0.1, alpha=0.5), "alpha"),
    (lambda: tost_paired({1: 1.0}, {1: 1.0}, 0.1), "at least 2 seeds"),
])
def test_unusable_input_is_refused_in_one_line(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MarginError, match=match):
        call()


def test_tost_rate_at_the_margin_is_at_most_alpha_by_simulation() -> None:
    """At a true Δ of exactly +M (metric units) the TOST says equivalent at most α of the time."""
    rng = np.random.default_rng(11)
    margin, trials = 1.0, 3000
    hits = sum(tost_welch(rng.normal(0, 1, 5).tolist(), rng.normal(margin, 1, 5).tolist(), margin).equivalent
               for _ in range(trials))
    rate = hits / trials
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / trials)


# ------------------------------------------------------------------ the verdict
def _equivalence(equivalent: bool):  # type: ignore[no-untyped-def]
    return tost_welch(BASE, EXP, 0.05 if equivalent else 1e-4)


@pytest.mark.parametrize(("rule", "equivalent", "verdict"), [
    (Verdict.WINNER, True, MarginVerdict.WINNER),
    (Verdict.WINNER, False, MarginVerdict.WINNER),
    (Verdict.LOSER, True, MarginVerdict.LOSER),
    (Verdict.NEUTRAL, True, MarginVerdict.EQUIVALENT),
    (Verdict.NEUTRAL, False, MarginVerdict.INCONCLUSIVE),
    (Decision.NEUTRAL, True, MarginVerdict.EQUIVALENT),
    (Decision.WINNER, False, MarginVerdict.WINNER),
    ("NEUTRAL", False, MarginVerdict.INCONCLUSIVE),
])
def test_rule_decides_winner_and_loser_tost_splits_neutral(rule: str, equivalent: bool,
                                                           verdict: MarginVerdict) -> None:
    assert _equivalence(equivalent).equivalent is equivalent
    assert margin_verdict(rule, _equivalence(equivalent)) is verdict


def test_continue_is_not_a_verdict() -> None:
    with pytest.raises(ValueError, match="CONTINUE"):
        margin_verdict(Decision.CONTINUE, _equivalence(True))


def test_accept_neutral_passes_equivalent_but_never_inconclusive() -> None:
    assert passes(MarginVerdict.EQUIVALENT, accept_neutral=True)
    assert not passes(MarginVerdict.EQUIVALENT, accept_neutral=False)
    assert not passes(MarginVerdict.INCONCLUSIVE, accept_neutral=True)
    assert passes(MarginVerdict.WINNER, accept_neutral=False)
    assert not passes(MarginVerdict.LOSER, accept_neutral=True)


# ------------------------------------------------------------------ what would settle it
def test_tost_power_formula_agrees_with_simulation() -> None:
    """The approximate power the suggestion uses, against the real test on simulated runs."""
    rng = np.random.default_rng(3)
    n_b, n_e, margin, trials = 5, 8, 1.2, 4000
    hits = sum(tost_welch(rng.normal(0, 1, n_b).tolist(), rng.normal(0, 1, n_e).tolist(), margin).equivalent
               for _ in range(trials))
    se = math.sqrt(1 / n_b + 1 / n_e)
    df = (1 / n_b + 1 / n_e) ** 2 / (1 / (n_b**2 * (n_b - 1)) + 1 / (n_e**2 * (n_e - 1)))
    assert tost_power(0.0, margin, se, df) == pytest.approx(hits / trials, abs=0.04)


def test_settle_suggests_the_fewest_seeds_reaching_the_power() -> None:
    plan = seeds_to_settle(0.0, 2.5, 1.0, 5, 1.0, 3)
    assert plan.reachable and plan.power >= 0.8 and plan.more_seeds > 0
    def se(n: int) -> float:
        return math.sqrt(1 / 5 + 1 / n)

    def df(n: int) -> float:
        return (1 / 5 + 1 / n) ** 2 / (1 / 100 + 1 / (n * n * (n - 1)))

    n = plan.total_seeds
    assert tost_power(0.0, 2.5, se(n - 1), df(n - 1)) < 0.8 <= tost_power(0.0, 2.5, se(n), df(n))


def test_settle_says_when_the_baseline_noise_alone_is_too_large() -> None:
    # With 5 baseline seeds se ≥ 1/sqrt(5) and 4 df: even 1.5σ is out of reach at 80%.
    plan = seeds_to_settle(0.0, 1.5, 1.0, 5, 1.0, 5)
    assert not plan.reachable and "baseline" in plan.reason


def test_settle_refuses_an_estimate_past_the_margin() -> None:
    plan = seeds_to_settle(0.02, 0.01, 0.01, 5, 0.01, 5)
    assert not plan.reachable and plan.more_seeds == 0
    full = seeds_to_settle(0.0, 3.0, 1.0, 5, 1.0, 30, max_seeds=26)
    assert not full.reachable and full.more_seeds == 0


def test_settle_names_unused_seeds_and_the_arguments_to_run_them() -> None:
    seeds = settle_seeds((42, 137, 256, 512, 1024), 3, SEEDS)
    assert seeds == (2048, 4096, 8192)
    args = settle_arguments("use_qk_norm", (42, 137, 256, 512, 1024), seeds)
    assert args == ("--experiment=use_qk_norm", "--exprun-experiment-seeds=42,137,256,512,1024,2048,4096,8192",
                    "--exprun-extension-seeds=")
    with pytest.raises(ValueError):
        settle_seeds((), 100, SEEDS)


# ------------------------------------------------------------------ a margin in baseline σ
def test_sigma_margin_p_values_are_noncentral_t_probabilities() -> None:
    result = tost_sigma(BASE, EXP, 1.5)
    s_b, c = float(np.std(BASE, ddof=1)), math.sqrt(1 / 5 + 1 / 5)
    t = (np.mean(EXP) - np.mean(BASE)) / (c * s_b)
    assert result.p_lower == pytest.approx(sps.nct.sf(t, 4, -1.5 / c), rel=1e-9)
    assert result.p_upper == pytest.approx(sps.nct.cdf(t, 4, 1.5 / c), rel=1e-9)
    assert result.margin == pytest.approx(1.5 * s_b) and result.df == 4


@pytest.mark.parametrize("sigmas", [1.0, 3.0])
def test_sigma_margin_holds_alpha_at_the_margin_where_the_naive_reading_does_not(sigmas: float) -> None:
    """At a true Δ of exactly +kσ: the exact test at most α (and near it), 0.5sigma read as 0.5·s_b above it at 3σ."""
    rng = np.random.default_rng(21)
    trials, exact, naive = 6000, 0, 0
    for _ in range(trials):
        b, e = rng.normal(0, 1, 5), rng.normal(sigmas, 1, 5)
        exact += tost_sigma(b.tolist(), e.tolist(), sigmas).equivalent
        naive += tost_welch(b.tolist(), e.tolist(), sigmas * float(np.std(b, ddof=1))).equivalent
    bound = 0.05 + 2 * math.sqrt(0.05 * 0.95 / trials)
    assert exact / trials <= bound
    if sigmas == 3.0:
        assert exact / trials > 0.03 and naive / trials > bound


def test_tost_picks_the_test_the_margin_and_analysis_call_for() -> None:
    seeds = (42, 137, 256, 512, 1024)
    b, e = dict(zip(seeds, BASE)), dict(zip(seeds, EXP))
    assert tost(Margin(0.01, Unit.METRIC), b, e).method == "Welch"
    assert tost(Margin(0.01, Unit.METRIC), b, e, paired=True).method == "paired"
    assert tost(Margin(0.5, Unit.SIGMA), b, e, paired=True).method.startswith("noncentral t")
    with pytest.raises(MarginError, match="val_loss units"):
        tost_sigma([1.0, 1.0, 1.0], [1.0, 1.1], 0.5)
