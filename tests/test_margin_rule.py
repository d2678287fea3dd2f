"""The margin's verdict in the pure decision (``decide.decision.with_margin``), checked against
scipy's own one-sided Welch tests, and a stored decision keeping its margin and program step."""

from __future__ import annotations

import dataclasses
import random

import pytest
from scipy import stats

from pytest_exprun.decide import decision as rules
from pytest_exprun.decide.equivalence import Margin, Unit
from pytest_exprun.model import Decision, ExperimentDesign, RunRecord, Setup, Verdict
from pytest_exprun.program_records import ProgramRecord

SETUP = Setup(("python", "train.py"), 1000, (), {"files": {}})
MINE = Setup(("python", "train.py"), 1000, ("--x",), {"files": {}})


def design(margin: Margin | None, spec: str = "x") -> ExperimentDesign:
    return ExperimentDesign("x", ("--x",), MINE, SETUP, ("x",), margin=margin, spec=spec)


def runs(group: str, values: list[float], first_seed: int = 0) -> list[RunRecord]:
    return [RunRecord(group, first_seed + i, v, 1.0, "k") for i, v in enumerate(values)]


def scipy_equivalent(base: list[float], exp: list[float], margin: float, alpha: float = 0.05) -> bool:
    """TOST as two one-sided Welch tests, by scipy: H0 Δ ≤ −M and H0 Δ ≥ +M both rejected."""
    lower = stats.ttest_ind([v + margin for v in exp], base, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind([v - margin for v in exp], base, equal_var=False, alternative="less").pvalue
    return max(lower, upper) < alpha


def test_neutral_splits_into_equivalent_and_inconclusive_as_scipy_s_one_sided_tests_say() -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(300):
        base = [2.0 + rng.gauss(0, 0.02) for _ in range(5)]
        exp = [2.0 + rng.uniform(-0.03, 0.03) + rng.gauss(0, 0.02) for _ in range(rng.choice((3, 5)))]
        margin = rng.choice((0.01, 0.03, 0.06))
        b, e = runs("baseline", base), runs("x", exp)
        made = rules.fixed(design(Margin(margin, Unit.METRIC)), b, e)
        plain = rules.fixed(design(None), b, e)
        assert made.margin is not None and plain.margin is None
        if plain.verdict is not Verdict.NEUTRAL:
            assert made.verdict is plain.verdict  # WINNER and LOSER as the rule decides
            continue
        expected = Verdict.EQUIVALENT if scipy_equivalent(base, exp, margin) else Verdict.INCONCLUSIVE
        assert made.verdict is expected
        seen.add(expected)
    assert seen == {Verdict.EQUIVALENT, Verdict.INCONCLUSIVE}


def test_a_project_s_own_rule_gets_the_same_split() -> None:
    base, exp = runs("baseline", [2.0, 2.02, 1.98, 2.01, 1.99]), runs("x", [2.0, 2.01, 1.99, 2.0, 2.0])
    d = design(Margin(0.05, Unit.METRIC))
    own = Decision.made(d, base, exp, Verdict.NEUTRAL, reason="my rule")
    judged = rules.with_margin(d, own, base, exp)
    assert judged.verdict is Verdict.EQUIVALENT and judged.margin is not None
    assert judged.margin.rule_verdict == "NEUTRAL" and "EQUIVALENT" in (judged.reason or "")
    assert rules.with_margin(d, judged, base, exp) == judged  # applied once
    winner = Decision.made(d, base, exp, Verdict.WINNER)
    assert rules.with_margin(d, winner, base, exp).verdict is Verdict.WINNER


def test_an_inconclusive_decision_names_the_seeds_to_run_with_its_own_margin() -> None:
    base = runs("baseline", [2.00, 2.02, 1.98, 2.01, 1.99], 42)
    exp = runs("x", [2.06, 1.94, 2.00, 2.06, 1.94], 42)
    made = rules.fixed(design(Margin(0.05, Unit.METRIC), spec="x"), base, exp)
    assert made.verdict is Verdict.INCONCLUSIVE and made.margin is not None
    settle = made.margin.settle
    assert settle[0] == "--experiment=x" and "--exprun-margin=0.05" in settle
    seeds = [int(s) for s in settle[1].split("=")[1].split(",")]
    assert seeds[:5] == [42, 43, 44, 45, 46] and len(seeds) == len(set(seeds)) > 5


def test_when_no_number_of_experiment_seeds_would_settle_it_the_decision_says_why() -> None:
    base = runs("baseline", [2.00, 2.02, 1.98, 2.01, 1.99], 42)
    exp = runs("x", [2.01, 1.99, 2.00, 2.02, 1.98], 42)
    made = rules.fixed(design(Margin(1.0, Unit.SIGMA)), base, exp)
    assert made.verdict is Verdict.INCONCLUSIVE and made.margin is not None and made.margin.unit == "sigma"
    assert made.margin.settle == () and "more baseline seeds or a wider margin" in made.margin.settle_note


@pytest.mark.parametrize("program", [None, ProgramRecord(3, 1, 0.0071, 0.05, 2.9)])
def test_a_stored_decision_keeps_its_margin_and_its_program_step(program: ProgramRecord | None) -> None:
    base = runs("baseline", [2.00, 2.02, 1.98, 2.01, 1.99])
    exp = runs("x", [2.0, 2.01, 1.99, 2.0, 2.0])
    made = dataclasses.replace(rules.fixed(design(Margin(0.05, Unit.METRIC)), base, exp), program=program)
    stamped = made.stamped("abc", "2026-12-04 10:00:00 UTC")
    back = Decision.from_json("x", stamped.to_json())
    assert back == dataclasses.replace(stamped, comparison=None)
    assert back.margin == made.margin and back.program == program and back.verdict is Verdict.EQUIVALENT
