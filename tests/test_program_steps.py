"""A program's steps replayed from stored decisions: gaps after a crash, refusals that keep the guarantee."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_exprun.decide import decision as rules
from pytest_exprun.decide.equivalence import Margin, Unit
from pytest_exprun.decide.program import lond_level
from pytest_exprun.model import Decision, ExperimentDesign, RunRecord, Setup, Verdict
from pytest_exprun.names import ProtocolFailure
from pytest_exprun.program_records import ProgramRecord
from pytest_exprun.program_steps import controlled, next_step

BASE = Setup(("python", "train.py"), 1000, (), {"files": {}})


def stored(name: str, verdict: Verdict, index: int, winners: int, alpha: float = 0.05,
           level: float | None = None) -> Decision:
    design = ExperimentDesign(name, (f"--{name}",), Setup(("python", "train.py"), 1000, (f"--{name}",), {}), BASE,
                              (name,))
    step = ProgramRecord(index, winners, lond_level(alpha, index, winners) if level is None else level, alpha)
    return dataclasses.replace(Decision.made(design, (), (), verdict), program=step, decided_at=f"t{index}")


def test_a_step_handed_out_but_never_stored_leaves_a_gap_the_program_continues_after() -> None:
    history = controlled([stored("b", Verdict.WINNER, 2, 0)], BASE.key())
    step = next_step(0.05, history, "a", 0, None)
    assert (step.index, step.winners_before) == (3, 1)
    assert step.level == lond_level(0.05, 3, 1)


def test_a_decision_made_again_keeps_its_stored_step() -> None:
    history = controlled([stored("a", Verdict.NEUTRAL, 1, 0), stored("b", Verdict.WINNER, 2, 0)], BASE.key())
    assert next_step(0.05, history, "a", 5, None) == history[0].program


def test_steps_handed_out_in_this_session_come_after_the_stored_ones() -> None:
    history = controlled([stored("a", Verdict.NEUTRAL, 1, 0)], BASE.key())
    assert next_step(0.05, history, "c", 2, None).index == 4


@pytest.mark.parametrize(("history", "words"), [
    ([stored("a", Verdict.NEUTRAL, 1, 0, alpha=0.1)], "made at --exprun-program-alpha=0.1, not 0.05"),
    ([stored("a", Verdict.NEUTRAL, 1, 0, level=0.05)], "does not follow from the decisions before it"),
    ([stored("a", Verdict.NEUTRAL, 2, 0), stored("b", Verdict.NEUTRAL, 2, 0)], "does not follow"),
])
def test_a_program_this_alpha_cannot_continue_is_refused_in_one_line(history: list[Decision], words: str) -> None:
    with pytest.raises(ProtocolFailure, match=words):
        next_step(0.05, controlled(history, BASE.key()), "z", 0, None)


def test_a_winner_on_too_few_seeds_for_the_equivalence_test_stays_a_winner() -> None:
    design = ExperimentDesign("x", ("--x",), Setup(("python", "train.py"), 1000, ("--x",), {}), BASE, ("x",),
                              margin=Margin(0.01, Unit.METRIC), spec="x")
    base = [RunRecord("baseline", s, v, 1.0, "k") for s, v in zip((1, 2, 3, 4, 5), (2.0, 2.02, 1.98, 2.01, 1.99))]
    one = [RunRecord("x", 1, 1.5, 1.0, "k")]
    made = rules.with_margin(design, Decision.made(design, base, one, Verdict.WINNER), base, one)  # a project's rule
    assert made.verdict is Verdict.WINNER and made.margin is None
    neutral = rules.with_margin(design, Decision.made(design, base, one, Verdict.NEUTRAL), base, one)
    assert neutral.verdict is None and "drop --exprun-margin" in (neutral.problem or "")
