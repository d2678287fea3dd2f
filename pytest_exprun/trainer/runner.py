"""Run one trainer: start it, pass its output lines on, decide how it ended.

The trainer runs from an argv list in its own process group (never through a shell;
see ``procgroup``), so a time-out, Ctrl-C or cancellation can end it together with any
children it started. Its output is read in chunks and split into capped lines (see
``lines``), and the learning curve is thinned past a cap, so a trainer that prints
gigabytes, one line of 100 MB or a million evaluations costs bounded memory.

The value recorded for a run is its final evaluation: the val_loss at the highest step
printed, which must be at (or within 1% of) the last step the trainer reports. stdout and
stderr are read as two streams, so a progress bar left open on one never glues onto an
evaluation printed on the other; a line that names the val_loss at a later step than the one
recorded but cannot be parsed fails the run, so an earlier value is never recorded silently.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .lines import (
    LineParser,
    _LineSplitter,
    parse_step_line,
)
from .evaluations import DETAILED_FAILURES
from .evaluations import EVALUATION_FAILURES as EVALUATION_FAILURES  # what runs report, defined beside the rules
from .evaluations import FINAL_STEP_TOLERANCE as FINAL_STEP_TOLERANCE
from .evaluations import Evaluations as Evaluations
from .evaluations import Failure as Failure
from .evaluations import parse_lines as parse_lines
from .procgroup import end_process, start_process
from .runlog import MAX_LOG_BYTES as MAX_LOG_BYTES  # what executors reading a worker use
from .runlog import RunLog as RunLog

TAIL_LINES = 20
#: After the trainer exits, how long to wait for children still holding its output open.
ORPHAN_GRACE_S = 1.0



@dataclass(frozen=True)
class RunSpec:
    """One trainer invocation: what to run, where its files go, how long it may take."""

    label: str
    group: str
    seed: int
    argv: tuple[str, ...]
    output_dir: Path
    log_path: Path
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class RunResult:
    spec: RunSpec
    val_loss: float | None
    wall_time: float
    curve: tuple[tuple[int, float], ...]
    returncode: int | None
    failure: Failure | None
    tail: tuple[str, ...]
    started_at: float = 0.0
    #: Where the run happened when that helps the reader, e.g. "SLURM job 123".
    where: str = ""
    #: The step of the recorded evaluation, and the highest step the trainer reported.
    eval_step: int | None = None
    final_step: int | None = None
    #: What the failure message adds: the line that could not be read, why a result file is
    #: stale, why the log was cut short.
    detail: str = ""
    #: When (``time.time()``) the output first reported a step at the final one (within the
    #: tolerance), and the highest epoch it reported: what a result file is checked against.
    final_step_at: float | None = None
    final_epoch: float | None = None
    #: User plus system CPU seconds of the trainer's process tree (its descendants where they were
    #: waited for); an executor that runs trainers in its own worker reports the job's own.
    cpu_time: float | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def describe_failure(self, expected: str | None = None) -> str:
        """One message naming what happened, with the trainer's last lines.

        ``expected``: what an evaluation line looks like to this session (a custom
        ``exprun_line_pattern``), quoted when none was found.
        """
        if self.failure is None:
            return ""
        what = f"{self.spec.label}: trainer {self.failure.value}"
        if self.failure is Failure.EXIT_CODE:
            what += f" ({self.returncode})"
        elif self.failure is Failure.SIGNAL and self.returncode is not None:
            what += f" ({_signal_name(-self.returncode)})"
        elif self.failure is Failure.TIMEOUT and self.spec.timeout is not None:
            what += f" after {self.spec.timeout:g}s (--exprun-timeout); its process group was ended"
        elif self.failure is Failure.NON_FINITE:
            what += f" ({self.val_loss}); the run diverged"
        elif self.failure is Failure.NO_VAL_LOSS:
            what += f" (expected {expected or DEFAULT_EXPECTED})"
        elif self.failure in (Failure.UNPARSED, Failure.STALE_RESULT, Failure.LOG_CUT_SHORT, Failure.CONFLICTING) or (
                self.failure is Failure.NOT_FINAL and self.detail):
            what += f" ({self.detail or _UNDETAILED.get(self.failure, 'see the log')})"
        elif self.failure is Failure.NO_RESULT:
            what += f" ({self.where or 'see exprun_result'})"
        elif self.failure is Failure.NOT_FINAL:
            what += (f" (its last val_loss is at step {self.eval_step}, but it reported step {self.final_step}); "
                     "exprun records the final evaluation: make the trainer evaluate after its last step")
        elif self.failure is Failure.ONLY_STEP_ZERO:
            what += (" (an untrained model's loss); make the trainer evaluate after its last step "
                     "(e.g. set its eval interval)")
        what += f" after {self.wall_time:.1f}s"
        if self.where and self.failure is not Failure.NO_RESULT:
            what += f" ({self.where})"
        lines = "\n".join(f"    {line}" for line in self.tail) or "    (no output)"
        return f"{what}\n  last {len(self.tail)} lines of {self.spec.log_path}:\n{lines}"


#: What a failure's message says when the executor that ran it kept no detail (a log parsed again).
_UNDETAILED = {
    Failure.UNPARSED: "a line names the val_loss at a later step than the last one read; see the log",
    Failure.CONFLICTING: "two lines give the final step different values; print it from rank 0 only; see the log",
}

#: What the default parser reads, for the message of a run in which it found nothing.
DEFAULT_EXPECTED = "lines like 'Step 240 | val_loss: 1.9876 | ...'"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class OutputReader:
    """A child's stdout and stderr, each split into capped lines of its own; raw bytes to the run's log.

    Two streams, not one: a progress bar redrawn with ``\r`` on stderr and still open when
    an evaluation is printed on stdout must not become the start of the evaluation's line.
    ``log`` may be swapped between reads: a warm worker's output belongs to one run after another.
    """

    def __init__(self, proc: subprocess.Popen[bytes], log: RunLog) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.log = log
        self._selector = selectors.DefaultSelector()
        # stderr first: what a run printed there comes before the marker a warm worker prints on stdout.
        self._splitters: dict[int, _LineSplitter] = {}
        for pipe in (proc.stderr, proc.stdout):
            if pipe is not None:
                self._splitters[pipe.fileno()] = _LineSplitter()
                self._selector.register(pipe.fileno(), selectors.EVENT_READ)
        self._open = set(self._splitters)

    def read(self, timeout: float) -> list[str] | None:
        """The lines completed within ``timeout`` seconds (maybe none); None once the output has ended."""
        if not self._open:
            return None
        ready = {key.fd for key, _ in self._selector.select(timeout=timeout)}
        lines: list[str] = []
        for fd, splitter in self._splitters.items():
            if fd not in ready:
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                self._selector.unregister(fd)
                self._open.discard(fd)
                continue
            self.log.write_from(fd, data)
            lines += splitter.feed(data)
        if not lines and not self._open:
            return None
        return lines

    def rest(self) -> list[str]:
        """The last lines the child left unterminated."""
        return [line for splitter in self._splitters.values() for line in splitter.flush()]

    def close(self) -> None:
        self._selector.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class RunLines:
    """What the protocol keeps of one run's output: the last lines, the evaluations, the echo."""

    def __init__(self, on_line: Callable[[str], None] | None, parse_line: LineParser) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.evals = Evaluations(timed=True)
        self._on_line = on_line
        self._parse_line = parse_line

    def __call__(self, lines: list[str]) -> None:
        for line in lines:
            self.tail.append(line)
            self.evals.note(line, self._parse_line)
            if self._on_line is not None:
                self._on_line(line)

    @property
    def val_loss(self) -> float | None:
        return self.evals.val_loss

    @property
    def curve(self) -> tuple[tuple[int, float], ...]:
        return self.evals.curve


def classify(stopped: Failure | None, returncode: int | None, evals: Evaluations | None) -> Failure | None:
    """Why a finished run is unusable, or None when its final evaluation is a finite val_loss."""
    if stopped is not None:
        return stopped
    if returncode is not None and returncode < 0:
        return Failure.SIGNAL
    if returncode != 0:
        return Failure.EXIT_CODE
    if evals is None:
        return Failure.NO_VAL_LOSS
    return evals.problem()


def result_of(spec: RunSpec, lines: RunLines, wall_time: float, returncode: int | None,
              failure: Failure | None, started_at: float, where: str = "", log: RunLog | None = None) -> RunResult:
    """The ``RunResult`` of a run whose output went to ``lines`` (and its bytes to ``log``, closed).

    A log that could not be written fails a run that would otherwise stand.
    """
    evals = lines.evals
    detail = evals.detail() if failure in DETAILED_FAILURES else ""
    if log is not None and log.error is not None and (failure is None or failure in EVALUATION_FAILURES):
        failure = Failure.LOG_CUT_SHORT
        detail = (f"{log.describe_error()} while writing {spec.log_path}; the run's record would be "
                  "incomplete: free disk space or raise the file-size limit (ulimit -f), then run it again")
    return RunResult(spec=spec, val_loss=evals.val_loss, wall_time=wall_time, curve=evals.curve,
                     returncode=returncode, failure=failure, tail=tuple(lines.tail), started_at=started_at,
                     where=where, eval_step=evals.eval_step, final_step=evals.final_step, detail=detail,
                     final_step_at=evals.final_step_at, final_epoch=evals.final_epoch)


def evaluated_again(result: RunResult, evals: Evaluations) -> RunResult:
    """``result`` with its evaluations read again by the project's own line parser (a remote run's log).

    The failure's detail comes with it, so a run parsed on the submitting side says why as a local one does.
    """
    failure = evals.problem()
    return replace(result, curve=evals.curve, val_loss=evals.val_loss, failure=failure,
                   eval_step=evals.eval_step, final_step=evals.final_step,
                   detail=evals.detail() if failure in DETAILED_FAILURES else "")


def wait_for_exit(proc: subprocess.Popen[bytes], started: float, timeout: float | None,
                  cancel: threading.Event | None) -> Failure | None:
    """Wait for a trainer whose output has ended to exit by itself, within the run's time-out.

    A trainer may close or redirect its own output and go on training; ending it then
    would turn a normal run into one "killed by a signal".
    """
    while True:
        try:
            proc.wait(timeout=0.1)
            return None
        except subprocess.TimeoutExpired:
            pass
        if timeout is not None and time.perf_counter() - started > timeout:
            return Failure.TIMEOUT
        if cancel is not None and cancel.is_set():
            return Failure.CANCELLED


def read_until(
    reader: OutputReader,
    lines: RunLines,
    started: float,
    timeout: float | None,
    cancel: threading.Event | None,
    marker: re.Pattern[str] | None = None,
) -> tuple[str | None, Failure | None]:
    """Pass a child's lines to ``lines`` until a line matching ``marker`` (returned, not passed on),
    the end of its output, a time-out counted from ``started``, or cancellation (returned)."""
    exited_at: float | None = None
    while True:
        now = time.perf_counter()
        if timeout is not None and now - started > timeout:
            return None, Failure.TIMEOUT
        if cancel is not None and cancel.is_set():
            return None, Failure.CANCELLED
        got = reader.read(0.1)
        if got is None:
            lines(reader.rest())
            return None, None
        for i, line in enumerate(got):
            if marker is not None and marker.match(line):
                lines(got[:i])
                return line, None
        lines(got)
        if reader.proc.poll() is not None:
            # The child is gone; a child of it may still hold the pipe open.
            exited_at = exited_at or now
            if now - exited_at > ORPHAN_GRACE_S:
                return None, None


def not_started(spec: RunSpec, log: RunLog, lines: RunLines, tail: str, logged: str, wall_start: float) -> RunResult:
    """The result of a run whose process could not be started: ``tail`` for the message, ``logged`` in its log."""
    lines.tail.append(tail)
    log.write(f"{logged}\n".encode())
    log.close(lines.tail)
    return RunResult(spec, None, 0.0, (), None, Failure.NOT_STARTED, tuple(lines.tail), wall_start)


def follow(proc: subprocess.Popen[bytes], log: RunLog, lines: RunLines, start: float, timeout: float | None,
           cancel: threading.Event | None) -> tuple[Failure | None, int]:
    """Read a started run to its end (or time-out, or cancellation); (why it was stopped, its exit code).

    Its process group is ended on the way out, on Ctrl-C too: nothing the trainer started outlives the run.
    """
    reader = OutputReader(proc, log)
    try:
        _, stopped = read_until(reader, lines, start, timeout, cancel)
        if stopped is None:
            stopped = wait_for_exit(proc, start, timeout, cancel)
    finally:
        end_process(proc)
        reader.close()
    lines(reader.rest())
    return stopped, proc.wait()


def run_trainer(
    spec: RunSpec,
    on_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    parse_line: LineParser = parse_step_line,
    max_log_bytes: int = MAX_LOG_BYTES,
) -> RunResult:
    """Run one trainer to completion (or time-out, or cancellation) and classify the outcome."""
    spec.output_dir.parent.mkdir(parents=True, exist_ok=True)
    log = RunLog(spec.log_path, max_log_bytes)
    lines = RunLines(on_line, parse_line)
    wall_start = time.time()
    start = time.perf_counter()
    try:
        proc = start_process(list(spec.argv), spec.env, spec.cwd, subprocess.DEVNULL)
    except OSError as exc:
        return not_started(spec, log, lines, f"{type(exc).__name__}: {exc}", str(exc), wall_start)
    stopped, returncode = follow(proc, log, lines, start, spec.timeout, cancel)
    wall_time = time.perf_counter() - start
    log.close(lines.tail)
    result = result_of(spec, lines, wall_time, returncode, classify(stopped, returncode, lines.evals), wall_start,
                       log=log)
    return replace(result, cpu_time=proc.cpu_time)
