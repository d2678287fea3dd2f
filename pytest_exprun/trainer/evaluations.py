"""A run's evaluations, read from its output lines: the final one, how far training went, a curve.

The value recorded for a run is its final evaluation: the val_loss at the highest step printed,
which must be at (or within 1% of) the last step the trainer reports; a line that names the
val_loss at a later step than the one recorded but cannot be parsed fails the run. Why a run
failed is one ``Failure``, shared by everything that runs trainers.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from enum import Enum

from .lines import (
    UNSTEPPED,
    LineParser,
    mentioned_value,
    mentions_metric,
    parse_step_line,
    progress_epoch,
    progress_step,
    rank_of,
)

#: Evaluations kept for the learning curve; past this the curve is thinned evenly.
MAX_CURVE_POINTS = 1000
#: The final evaluation may lie this fraction of the final step before it (at least 1 step).
FINAL_STEP_TOLERANCE = 0.01
#: How much of a line a failure message quotes.
QUOTE_CHARS = 200


class Failure(str, Enum):
    """Why a run produced no usable val_loss; each has its own message for the user."""

    EXIT_CODE = "exited with a non-zero code"
    SIGNAL = "was killed by a signal"
    TIMEOUT = "timed out"
    NO_VAL_LOSS = "printed no val_loss"
    NO_RESULT = "left no usable result file"
    NON_FINITE = "printed a non-finite val_loss"
    NOT_FINAL = "did not evaluate at its final step"
    ONLY_STEP_ZERO = "evaluated only at step 0, before any training"
    UNPARSED = "printed a val_loss exprun could not read"
    STALE_RESULT = "left a result file from before its last step"
    CONFLICTING = "printed two different val_loss at its final step"
    LOG_CUT_SHORT = "had its log cut short"
    CANCELLED = "was cancelled"
    NOT_STARTED = "could not be started"
    WORKER_LOST = "worker exited in the middle of the run"


#: Failures decided by what the trainer printed, rather than by how its process ended.
EVALUATION_FAILURES = frozenset({Failure.NO_VAL_LOSS, Failure.NON_FINITE, Failure.NOT_FINAL, Failure.ONLY_STEP_ZERO,
                                 Failure.UNPARSED, Failure.CONFLICTING})
#: Failures whose message needs the run's ``detail`` (the line quoted, the values, the epochs).
DETAILED_FAILURES = frozenset({Failure.UNPARSED, Failure.CONFLICTING, Failure.NOT_FINAL})


class Evaluations:
    """A run's evaluations: the final one, how far training went, and a bounded learning curve.

    The recorded value is the one at the highest step (the last printed at that step), not
    the last printed: a trainer may print a summary line or evaluate out of order. Up to
    ``cap`` finite points are kept as they come; past that every other point is dropped
    and only every 2nd, 4th, ... later one is taken, so the curve stays evenly thinned.
    Non-finite intermediate values are left out of the curve (they cannot be stored as
    JSON); only a non-finite *final* value fails the run. With ``timed``, the wall-clock
    time at which the output reached its final step is kept, to tell a stale result file by.

    A distributed run's lines from ranks other than 0 (``[rank1]:``, ``[default1]:``) are not
    evaluations: each rank may print its own val_loss for the same step. Two different values
    at the final step (ranks without a prefix) fail the run: which one is "the" value would
    depend on the order the lines arrived in. An evaluation without a step of its own
    (``UNSTEPPED``: a pattern with no ``step`` group) is at the highest step reported so far,
    the last one printed wins, and it must not be followed by more training (steps, or
    epochs when no step was reported before it).
    """

    def __init__(self, cap: int = MAX_CURVE_POINTS, timed: bool = False) -> None:
        self.cap = max(cap, 2)
        self.final: tuple[int, float] | None = None
        self.final_step: int | None = None
        self.final_epoch: float | None = None
        self.count = 0
        #: The line at the highest step that names a val_loss no parser read, and that step.
        self.unparsed: tuple[int | None, str] | None = None
        self._points: list[tuple[int, float]] = []
        self._stride = 1
        self._timed = timed
        # Each new highest step and when it was first seen, the ones below the final window dropped.
        self._reached: deque[tuple[int, float]] = deque()
        #: Two values printed at the same step (the step, the first, the other), the latest such step only.
        self.conflict: tuple[int, float, float] | None = None
        #: For an unstepped final evaluation: the step and epoch reported when it was printed.
        self.unstepped: tuple[int | None, float | None] | None = None
        #: The last line naming a val_loss with no step of its own that no parser read: its index among
        #: the lines, its value and half a unit of its last digit, the line quoted; and the index of
        #: the line that gave the final evaluation.
        self.undated: tuple[int, float, float, str] | None = None
        self._lines = 0
        self._final_line = 0

    def add(self, step: int, value: float) -> None:
        """One evaluation line."""
        if self.final is not None and step == self.final[0] and self.unstepped is None \
                and not same_value(self.final[1], value):
            self.conflict = (step, self.final[1], value)
        if self.final is None or step >= self.final[0]:
            self.final = (step, value)
            self.unstepped = None
            self._final_line = self._lines
        self.saw_step(step)
        self._curve_point(step, value)

    def add_unstepped(self, value: float) -> None:
        """An evaluation line without a step: at the highest step reported so far (else its ordinal)."""
        at = self.final_step
        self.final = (at if at is not None else self.count + 1, value)
        self.unstepped = (at, self.final_epoch)
        self._final_line = self._lines
        self._curve_point(self.final[0], value)

    def _curve_point(self, step: int, value: float) -> None:
        index, self.count = self.count, self.count + 1
        if not math.isfinite(value) or index % self._stride:
            return
        self._points.append((step, value))
        if len(self._points) > self.cap:
            self._points = self._points[::2]
            self._stride *= 2

    def saw_step(self, step: int) -> None:
        """Any line that says training reached ``step``."""
        if self.final_step is None or step > self.final_step:
            self.final_step = step
            if self._timed:
                self._reached.append((step, time.time()))
                while self._reached[0][0] < step - _tolerance(step):
                    self._reached.popleft()

    def saw_epoch(self, epoch: float) -> None:
        if self.final_epoch is None or epoch > self.final_epoch:
            self.final_epoch = epoch

    def saw_unparsed(self, line: str, step: int | None) -> None:
        """A line that names a val_loss with a number, which no parser read; ``step``: its own or the last seen."""
        if self.unparsed is None or (step is not None and (self.unparsed[0] is None or step >= self.unparsed[0])):
            self.unparsed = (step, _quoted(line))

    def note(self, line: str, parse_line: LineParser) -> None:
        """One line of output: an evaluation, a step or epoch reached, or a val_loss no parser read."""
        self._lines += 1
        other_rank = rank_of(line) not in (None, 0)
        parsed = None if other_rank else parse_line(line)
        step = progress_step(line)
        if step is not None:
            self.saw_step(step)
        epoch = progress_epoch(line)
        if epoch is not None:
            self.saw_epoch(epoch)
        if parsed is not None and parsed[0] == UNSTEPPED:
            self.add_unstepped(parsed[1])
        elif parsed is not None:
            self.add(*parsed)
        if parsed is None and not other_rank and mentions_metric(line):
            self.saw_unparsed(line, step if step is not None else self.final_step)
            mentioned = mentioned_value(line) if step is None else None
            if mentioned is not None:
                self.undated = (self._lines, *mentioned, _quoted(line))

    @property
    def val_loss(self) -> float | None:
        return None if self.final is None else self.final[1]

    @property
    def eval_step(self) -> int | None:
        return None if self.final is None else self.final[0]

    @property
    def final_step_at(self) -> float | None:
        """When the output first reported a step within the tolerance of the final one."""
        return self._reached[0][1] if self._reached else None

    @property
    def curve(self) -> tuple[tuple[int, float], ...]:
        """The kept points, ending with the final evaluation when it is finite."""
        points = list(self._points)
        if self.final is not None and math.isfinite(self.final[1]) and (not points or points[-1] != self.final):
            points.append(self.final)
        return tuple(points)

    def problem(self) -> Failure | None:
        """Why this run's evaluations cannot stand for the trained model, or None."""
        if self._unparsed_later():
            return Failure.UNPARSED
        if self.final is None:
            return Failure.NO_VAL_LOSS
        step, value = self.final
        if not math.isfinite(value):
            return Failure.NON_FINITE
        if self.unstepped is not None:
            return Failure.NOT_FINAL if self._unstepped_early() else None
        if self.conflict is not None and self.conflict[0] == step:
            return Failure.CONFLICTING
        if step == 0:
            return Failure.ONLY_STEP_ZERO
        assert self.final_step is not None
        if self.final_step - step > _tolerance(self.final_step):
            return Failure.NOT_FINAL
        return None

    def _unstepped_early(self) -> bool:
        """Whether training went on after an evaluation printed without a step (by steps, else by epochs)."""
        assert self.unstepped is not None
        at_step, at_epoch = self.unstepped
        if at_step is not None and self.final_step is not None:
            return self.final_step - at_step > _tolerance(self.final_step)
        if self.final_epoch is not None and at_epoch is not None:
            return self.final_epoch - at_epoch > FINAL_STEP_TOLERANCE * self.final_epoch
        return False

    def _unparsed_later(self) -> bool:
        if self._undated_later():
            return True
        if self.unparsed is None:
            return False
        if self.final is None:
            return True
        step = self.unparsed[0]
        if self.unstepped is not None:  # its step is the one reported before it, if any
            return step is not None and self.unstepped[0] is not None and step > self.unstepped[0]
        return step is not None and step > self.final[0]

    def _undated_later(self) -> bool:
        """A val_loss with no readable step (``Step 50.0 | val_loss: 2.0``), printed after the final
        evaluation with another value: a later evaluation the parser could not date, not a summary."""
        if self.undated is None or self.final is None or self.unstepped is not None:
            return False
        index, value, half_unit, _ = self.undated
        final = self.final[1]
        if index <= self._final_line:
            return False
        if not (math.isfinite(value) and math.isfinite(final)):
            return not (value == final or (math.isnan(value) and math.isnan(final)))
        return abs(final - value) > half_unit * (1 + 1e-9)

    def detail(self) -> str:
        """What the message of an ``UNPARSED``, ``CONFLICTING`` or unstepped ``NOT_FINAL`` failure adds."""
        problem = self.problem()
        if problem is Failure.CONFLICTING and self.conflict is not None:
            step, first, other = self.conflict
            return (f"{first!r} and {other!r} at step {step}: each process of a distributed run printing its own? "
                    "print the val_loss from rank 0 only (or prefix lines with [rankN]:), once per step")
        if problem is Failure.NOT_FINAL and self.unstepped is not None:
            at_step, at_epoch = self.unstepped
            where, went = ((f"epoch {at_epoch:g}", f"epoch {self.final_epoch:g}") if at_step is None
                           else (f"step {at_step}", f"step {self.final_step}"))
            return (f"its last val_loss was printed at {where}, but training went on to {went}; exprun records "
                    "the final evaluation: make the trainer evaluate after its last step")
        if self._undated_later():
            assert self.undated is not None and self.final is not None
            return (f"after the val_loss at step {self.final[0]} it printed {self.undated[3]!r}, which names another "
                    "val_loss with no step exprun could read; print it as 'Step N | val_loss: X' or make "
                    "exprun_line_pattern match it")
        if self.unparsed is None:
            return ""
        mentioned, line = self.unparsed
        at = f"at step {mentioned} " if mentioned is not None else ""
        after = (f", so the last val_loss read would be the one at step {self.final[0]}"
                 if self.final is not None else "")
        return (f"{at}it printed {line!r}, which names a val_loss but did not parse{after}; print it as "
                "'Step N | val_loss: X' or make exprun_line_pattern match it")


def _quoted(line: str) -> str:
    quoted = line.strip()
    return quoted[:QUOTE_CHARS] + "..." if len(quoted) > QUOTE_CHARS else quoted


def same_value(first: float, other: float) -> bool:
    """Whether two values printed for one step are the same evaluation: equal, or one the other rounded
    (to three or more decimals; fewer may be trailing zeros a float no longer shows)."""
    if first == other or (math.isnan(first) and math.isnan(other)):
        return True
    decimals = min(_decimals(first), _decimals(other))
    return decimals >= 3 and abs(first - other) <= 0.5 * 10.0 ** -decimals * (1 + 1e-9)


def _decimals(value: float) -> int:
    text = repr(value)
    if not math.isfinite(value) or "e" in text:
        return 0
    return len(text.partition(".")[2])


def _tolerance(final_step: int) -> int:
    """How many steps before the final one the final evaluation may lie."""
    return max(1, math.floor(final_step * FINAL_STEP_TOLERANCE))


def parse_lines(lines: Iterable[str], parse_line: LineParser = parse_step_line) -> Evaluations:
    """The evaluations in a finished run's lines (its log read again, e.g. on a cluster)."""
    evals = Evaluations()
    for line in lines:
        evals.note(line, parse_line)
    return evals
