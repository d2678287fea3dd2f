"""The protocol's pure rules: scale labels, flags, names, seeds, extension and verdict."""

from __future__ import annotations

import math

import pytest

from pytest_exprun.decide.protocol import (
    ProtocolError,
    Significance,
    Verdict,
    compare,
    experiment_flags,
    experiment_name,
    needs_extension,
    parse_seeds,
    safe_name,
    scale_label,
    significance,
)
from pytest_exprun.decide.stats import summarize

BASE = summarize([2.00, 2.02, 1.98, 2.01, 1.99])  # mean 2.0, σ = 0.0158114
SIGMA = math.sqrt(2.5e-4)


@pytest.mark.parametrize(
    ("tokens", "label"),
    [(1_000_000, "1M"), (100_000, "100K"), (2_500_000, "2.5M"), (20_000, "20K"), (999, "999"),
     (1_234_567, "1.234567M"), (3_000_000_000, "3B"), (1500, "1.5K")],
)
def test_scale_label(tokens: int, label: str) -> None:
    assert scale_label(tokens) == label


def test_scale_label_refuses_non_positive() -> None:
    with pytest.raises(ProtocolError, match="positive"):
        scale_label(0)


@pytest.mark.parametrize(
    ("spec", "flags"),
    [
        ("use_qk_norm", ["--use_qk_norm"]),
        ("optimizer=muon", ["--optimizer", "muon"]),
        ("lr=3e-3", ["--lr", "3e-3"]),
        ("--optimizer muon --use_swiglu", ["--optimizer", "muon", "--use_swiglu"]),
        ("--note 'two words'", ["--note", "two words"]),
        ("x=$(rm -rf /)", ["--x", "$(rm -rf /)"]),
    ],
)
def test_experiment_flags(spec: str, flags: list[str]) -> None:
    assert experiment_flags(spec) == flags


@pytest.mark.parametrize("spec", ["", "   ", "=1", "two words", "--unclosed 'quote"])
def test_experiment_flags_refuse_bad_specs(spec: str) -> None:
    with pytest.raises(ProtocolError):
        experiment_flags(spec)


def test_experiment_name_from_flags() -> None:
    assert experiment_name(["--use_qk_norm"]) == "use_qk_norm"
    assert experiment_name(["--optimizer", "muon"]) == "optimizer-muon"
    assert experiment_name(["--lr", "3e-3"]) == "lr-3e-3"


@pytest.mark.parametrize(
    "hostile", ["../../etc/passwd", "/abs/path", "a; rm -rf ~", "$(touch x)", "`id`", "line\nbreak",
                "ünïcødé", "." * 50, "x" * 5000, ".."],
)
def test_safe_name_is_always_a_plain_file_name(hostile: str) -> None:
    name = safe_name(hostile)
    assert name and len(name) <= 80
    assert all(ch.isascii() and (ch.isalnum() or ch in "_.-") for ch in name)
    assert not name.startswith(".") and "/" not in name and name not in {".", ".."}


def test_safe_name_keeps_long_names_distinct() -> None:
    assert safe_name("a" * 200) != safe_name("a" * 199 + "b")


def test_parse_seeds() -> None:
    assert parse_seeds("42,137, 256", "seeds") == (42, 137, 256)
    for bad, match in [("", "empty"), ("1,x", "integers"), ("1,1", "more than once"), ("-3", "non-negative")]:
        with pytest.raises(ProtocolError, match=match):
            parse_seeds(bad, "seeds")


def test_extension_when_within_two_sigma() -> None:
    assert needs_extension(BASE, summarize([2.0 - 1.9 * SIGMA] * 2 + [2.0 - 1.9 * SIGMA]))
    assert not needs_extension(BASE, summarize([2.0 - 2.1 * SIGMA] * 3))
    assert not needs_extension(BASE, summarize([2.0 + 2.1 * SIGMA] * 3))
    assert needs_extension(summarize([2.0, 2.0]), summarize([1.0, 1.0]))  # σ = 0: degenerate


def test_significance_bands() -> None:
    assert significance(-2.0 * SIGMA, SIGMA) is Significance.SIGNIFICANT
    assert significance(1.5 * SIGMA, SIGMA) is Significance.SUGGESTIVE
    assert significance(0.5 * SIGMA, SIGMA) is Significance.NOISE
    assert significance(0.1, 0.0) is None


@pytest.mark.parametrize(
    ("exp_losses", "verdict"),
    [([1.90, 1.91, 1.89], Verdict.WINNER), ([2.10, 2.11, 2.09], Verdict.LOSER),
     ([2.00, 1.99, 2.01, 2.00, 2.00], Verdict.NEUTRAL), ([1.99, 1.98, 1.97], Verdict.NEUTRAL)],
)
def test_verdict(exp_losses: list[float], verdict: Verdict) -> None:
    wall = summarize([10.0, 11.0, 12.0])
    cmp = compare(BASE, summarize(exp_losses), wall, wall)
    assert cmp.verdict is verdict and cmp.problem is None


def test_verdict_boundary_is_inclusive() -> None:
    at_two_sigma = summarize([BASE.mean - 2 * BASE.std] * 3)
    wall = summarize([1.0, 2.0])
    assert compare(BASE, at_two_sigma, wall, wall).verdict is Verdict.WINNER


@pytest.mark.parametrize(
    ("base", "exp", "why"),
    [([2.0, 2.0, 2.0], [1.0, 1.1], "std is 0"), ([2.0], [1.0, 1.1], "at least 2"), ([2.0, 2.1], [1.0], "at least 2")],
)
def test_degenerate_data_gives_a_reason_not_a_crash(base: list[float], exp: list[float], why: str) -> None:
    wall = summarize([1.0, 1.0])
    cmp = compare(summarize(base), summarize(exp), wall, wall)
    assert cmp.verdict is None and why in (cmp.problem or "")
    assert cmp.wall_time.cohens_d is None and cmp.wall_time.significance is None


def test_comparison_numbers() -> None:
    exp = summarize([1.90, 1.91, 1.89])
    cmp = compare(BASE, exp, summarize([40.0, 42.0, 38.0]), summarize([30.0, 31.0, 29.0]))
    assert cmp.val_loss.delta == pytest.approx(-0.10)
    assert cmp.val_loss.sigmas == pytest.approx(-0.10 / SIGMA)
    assert cmp.val_loss.effect_size == "Large"
    assert cmp.percent_faster == pytest.approx(25.0)
