"""The statistics, checked against numpy/scipy and against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from pytest_exprun.decide.stats import cohens_d, effect_size_label, percent_faster, pooled_std, summarize


def test_summary_uses_sample_std() -> None:
    s = summarize([2.00, 2.02, 1.98, 2.01, 1.99])
    assert s.n == 5
    assert s.mean == pytest.approx(2.0)
    # By hand: squared deviations 0, 4e-4, 4e-4, 1e-4, 1e-4 sum to 1e-3; / (n-1) = 2.5e-4.
    assert s.std == pytest.approx(math.sqrt(2.5e-4))
    assert s.std == pytest.approx(float(np.std([2.00, 2.02, 1.98, 2.01, 1.99], ddof=1)))
    assert (s.min, s.max) == (1.98, 2.02)


def test_summary_of_one_value_has_undefined_std() -> None:
    s = summarize([1.5])
    assert s.n == 1 and s.mean == 1.5 and math.isnan(s.std)


@pytest.mark.parametrize("values", [[], [1.0, float("nan")], [float("inf"), 1.0]])
def test_summary_refuses_empty_or_non_finite(values: list[float]) -> None:
    with pytest.raises(ValueError):
        summarize(values)


def test_cohens_d_matches_hand_computation() -> None:
    base = summarize([2.00, 2.02, 1.98, 2.01, 1.99])
    exp = summarize([1.90, 1.91, 1.89])
    # σ_base² = 2.5e-4, σ_exp² = 1e-4 → σ_pooled = sqrt(1.75e-4) = 0.0132288
    assert pooled_std(base, exp) == pytest.approx(math.sqrt(1.75e-4))
    assert cohens_d(base, exp) == pytest.approx(-0.10 / math.sqrt(1.75e-4))
    assert cohens_d(base, exp) == pytest.approx(-7.5593, abs=1e-4)


def test_cohens_d_equal_n_matches_pooled_variance_of_scipy_ttest() -> None:
    """With equal n the protocol's σ_pooled is the classic pooled σ, so d·sqrt(n/2) is Student's t."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(2.0, 0.02, 5), rng.normal(1.97, 0.03, 5)
    d = cohens_d(summarize(a), summarize(b))
    t = sps.ttest_ind(b, a, equal_var=True).statistic
    assert d is not None
    assert d * math.sqrt(5 / 2) == pytest.approx(t)


def test_cohens_d_is_undefined_without_spread() -> None:
    assert cohens_d(summarize([2.0, 2.0]), summarize([1.0, 1.0])) is None
    assert cohens_d(summarize([2.0]), summarize([1.0])) is None


@pytest.mark.parametrize(
    ("d", "label"),
    [(0.0, "Negligible"), (0.199, "Negligible"), (-0.2, "Small"), (0.49, "Small"), (0.5, "Medium"),
     (-0.79, "Medium"), (0.8, "Large"), (-12.0, "Large"), (None, "n/a"), (float("nan"), "n/a")],
)
def test_effect_size_thresholds(d: float | None, label: str) -> None:
    assert effect_size_label(d) == label


def test_percent_faster() -> None:
    assert percent_faster(40.0, 30.0) == pytest.approx(25.0)
    assert percent_faster(40.0, 50.0) == pytest.approx(-25.0)
    assert percent_faster(0.0, 1.0) is None
