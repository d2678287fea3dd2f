"""Where the next decision stands in its program: LOND's step replayed from the stored decisions.

The level of each decision depends only on its index and the WINNERs before it
(``decide.program``), so the state is rebuilt from the store at every session: a crash loses
nothing, and a decision made again keeps the step it was stored with. A stored program at another
alpha, or a stored level above what the replay allows, would void the guarantee and is refused.
"""

from __future__ import annotations

from typing import Sequence

from .model import Decision, Verdict
from .names import ProtocolFailure
from .program_records import ProgramRecord


def controlled(decisions: Sequence[Decision], baseline_key: str) -> list[Decision]:
    """The stored decisions under program control on this baseline, in the order they were made."""
    found = [d for d in decisions if d.baseline_key == baseline_key and d.program is not None]
    return sorted(found, key=lambda d: d.program.index if d.program is not None else 0)


def check(program_alpha: float, stored: Sequence[Decision]) -> None:
    """Refuse a stored program that this alpha cannot continue (see the module's docstring).

    Indices must increase and each stored level be at most LOND's level at its index after the
    WINNERs stored before it. An index may be missing (a step handed out to a decision that was
    never stored, say after a crash): skipping one only spends budget, the guarantee holds.
    """
    from .decide.program import lond_level

    winners, last = 0, 0
    for decision in stored:
        step = decision.program
        assert step is not None
        if step.alpha != program_alpha:
            raise ProtocolFailure(
                f"the decisions on this baseline were made at --exprun-program-alpha={step.alpha:g}, not "
                f"{program_alpha:g}: keep the program's alpha, or start a new program with --exprun-rerun-baseline")
        if step.index <= last or step.level > lond_level(program_alpha, step.index, winners) * (1 + 1e-9):
            raise ProtocolFailure(
                f"the stored decision on {decision.name} (step {step.index}, level {step.level:.3g}) does not follow "
                f"from the decisions before it; the program's order was changed: start a new program with "
                "--exprun-rerun-baseline")
        winners += decision.verdict is Verdict.WINNER
        last = step.index


def next_step(program_alpha: float, stored: Sequence[Decision], name: str, taken: int,
              threshold_at: "ThresholdAt | None") -> ProgramRecord:
    """The step ``name`` takes: its stored one when it was decided before, else the next after the
    stored decisions and the ``taken`` steps this session has handed out but not stored yet.

    WINNERs among the steps not yet stored are not counted, which can only lower the level (the
    guarantee holds), and the stored level is what a later replay checks against.
    """
    from .decide.program import lond_level

    check(program_alpha, stored)
    own = next((d.program for d in stored if d.name == name), None)
    if own is not None:
        return own
    index = max((d.program.index for d in stored if d.program is not None), default=0) + taken + 1
    winners = sum(d.verdict is Verdict.WINNER for d in stored)
    level = lond_level(program_alpha, index, winners)
    threshold = None if threshold_at is None else threshold_at(level)
    return ProgramRecord(index, winners, level, program_alpha, threshold)


class ThresholdAt:
    """The fixed rule's widened WINNER threshold at a level, for its seed counts."""

    def __init__(self, n_baseline: int, n_first: int, n_extension: int) -> None:
        self.counts = (n_baseline, n_first, n_extension)

    def __call__(self, level: float) -> float:
        from .decide.program import FixedDesign, widened_threshold

        return widened_threshold(level, FixedDesign(*self.counts))
