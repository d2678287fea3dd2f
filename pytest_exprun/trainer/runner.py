"""Run one trainer: start it, pass its output lines on, decide how it ended.

The trainer runs from an argv list in its own process group (never through a shell;
see ``procgroup``), so a time-out, Ctrl-C or cancellation can end it together with any
children it started. Its output is read in chunks and split into capped lines (see
``lines``), and the learning curve is thinned past a cap, so a trainer that prints
gigabytes, one line of 100 MB or a million evaluations costs bounded memory.

The value recorded for a run is its final evaluation: the val_loss at the highest step
printed, which must be at (or within 1% of) the last step the trainer reports.
"""

from __future__ import annotations

import math
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .lines import PROGRESS_LINE, LineParser, _LineSplitter, parse_step_line
from .procgroup import end_process, start_process

TAIL_LINES = 20
MAX_LOG_BYTES = 64 * 1024 * 1024
#: Evaluations kept for the learning curve; past this the curve is thinned evenly.
MAX_CURVE_POINTS = 1000
#: The final evaluation may lie this fraction of the final step before it (at least 1 step).
FINAL_STEP_TOLERANCE = 0.01
#: After the trainer exits, how long to wait for children still holding its output open.
ORPHAN_GRACE_S = 1.0


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
    CANCELLED = "was cancelled"
    NOT_STARTED = "could not be started"
    WORKER_LOST = "worker exited in the middle of the run"


#: Failures decided by what the trainer printed, rather than by how its process ended.
EVALUATION_FAILURES = frozenset({Failure.NO_VAL_LOSS, Failure.NON_FINITE, Failure.NOT_FINAL, Failure.ONLY_STEP_ZERO})


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

    @property
    def ok(self) -> bool:
        return self.failure is None

    def describe_failure(self) -> str:
        """One message naming what happened, with the trainer's last lines."""
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
            what += " (expected lines like 'Step 240 | val_loss: 1.9876 | ...')"
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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class RunLog:
    """The run's log file, capped: past the cap only a marker is written, and the tail at the end.

    A log that cannot be written (a full disk) does not stop the run: the error is kept
    and reported with the run's last lines, which are kept in memory anyway.
    """

    def __init__(self, path: Path, limit: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: output reaches the file as it arrives, so `tail -f` follows a long run.
        self._file = open(path, "wb", buffering=0)
        self._limit = limit
        self._written = 0
        self.truncated = False
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        if self.truncated or self.error is not None:
            return
        room = self._limit - self._written
        if len(data) > room:
            self._write_all(data[:room])
            self._write_all(b"\n[exprun: log truncated here; the last lines follow]\n")
            self.truncated = True
            return
        self._write_all(data)
        self._written += len(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) or 0 :]
        except OSError as exc:
            self.error = exc

    def close(self, tail: deque[str]) -> None:
        if self.truncated and self.error is None:
            self._write_all("\n".join(tail).encode() + b"\n")
        try:
            self._file.close()
        except OSError as exc:
            self.error = self.error or exc
        if self.error is not None:
            tail.append(f"[exprun: the log file could not be written: {self.error}]")



class OutputReader:
    """A child's merged stdout/stderr: raw bytes to the run's log, capped lines to the caller.

    ``log`` may be swapped between reads: a warm worker's output belongs to one run after another.
    """

    def __init__(self, proc: subprocess.Popen[bytes], log: RunLog) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.log = log
        self._fd = proc.stdout.fileno()
        self._splitter = _LineSplitter()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    def read(self, timeout: float) -> list[str] | None:
        """The lines completed within ``timeout`` seconds (maybe none); None once the output has ended."""
        if not self._selector.select(timeout=timeout):
            return []
        data = os.read(self._fd, 1 << 16)
        if not data:
            return None
        self.log.write(data)
        return self._splitter.feed(data)

    def rest(self) -> list[str]:
        """A last line the child left unterminated."""
        return self._splitter.flush()

    def close(self) -> None:
        self._selector.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Evaluations:
    """A run's evaluations: the final one, how far training went, and a bounded learning curve.

    The recorded value is the one at the highest step (the last printed at that step), not
    the last printed: a trainer may print a summary line or evaluate out of order. Up to
    ``cap`` finite points are kept as they come; past that every other point is dropped
    and only every 2nd, 4th, ... later one is taken, so the curve stays evenly thinned.
    Non-finite intermediate values are left out of the curve (they cannot be stored as
    JSON); only a non-finite *final* value fails the run.
    """

    def __init__(self, cap: int = MAX_CURVE_POINTS) -> None:
        self.cap = max(cap, 2)
        self.final: tuple[int, float] | None = None
        self.final_step: int | None = None
        self.count = 0
        self._points: list[tuple[int, float]] = []
        self._stride = 1

    def add(self, step: int, value: float) -> None:
        """One evaluation line."""
        if self.final is None or step >= self.final[0]:
            self.final = (step, value)
        self.saw_step(step)
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

    @property
    def val_loss(self) -> float | None:
        return None if self.final is None else self.final[1]

    @property
    def eval_step(self) -> int | None:
        return None if self.final is None else self.final[0]

    @property
    def curve(self) -> tuple[tuple[int, float], ...]:
        """The kept points, ending with the final evaluation when it is finite."""
        points = list(self._points)
        if self.final is not None and math.isfinite(self.final[1]) and (not points or points[-1] != self.final):
            points.append(self.final)
        return tuple(points)

    def problem(self) -> Failure | None:
        """Why this run's evaluations cannot stand for the trained model, or None."""
        if self.final is None:
            return Failure.NO_VAL_LOSS
        step, value = self.final
        if not math.isfinite(value):
            return Failure.NON_FINITE
        if step == 0:
            return Failure.ONLY_STEP_ZERO
        assert self.final_step is not None
        if self.final_step - step > max(1, math.floor(self.final_step * FINAL_STEP_TOLERANCE)):
            return Failure.NOT_FINAL
        return None


def parse_lines(lines: Iterable[str], parse_line: LineParser = parse_step_line) -> Evaluations:
    """The evaluations in a finished run's lines (its log read again, e.g. on a cluster)."""
    evals = Evaluations()
    for line in lines:
        _note(evals, parse_line, line)
    return evals


def _note(evals: Evaluations, parse_line: LineParser, line: str) -> None:
    parsed = parse_line(line)
    if parsed is not None:
        evals.add(*parsed)
        return
    progress = PROGRESS_LINE.match(line)
    if progress is not None:
        evals.saw_step(int(progress.group(1)))


class RunLines:
    """What the protocol keeps of one run's output: the last lines, the evaluations, the echo."""

    def __init__(self, on_line: Callable[[str], None] | None, parse_line: LineParser) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.evals = Evaluations()
        self._on_line = on_line
        self._parse_line = parse_line

    def __call__(self, lines: list[str]) -> None:
        for line in lines:
            self.tail.append(line)
            _note(self.evals, self._parse_line, line)
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
              failure: Failure | None, started_at: float, where: str = "") -> RunResult:
    """The ``RunResult`` of a run whose output went to ``lines``."""
    evals = lines.evals
    return RunResult(spec=spec, val_loss=evals.val_loss, wall_time=wall_time, curve=evals.curve,
                     returncode=returncode, failure=failure, tail=tuple(lines.tail), started_at=started_at,
                     where=where, eval_step=evals.eval_step, final_step=evals.final_step)


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
        lines.tail.append(f"{type(exc).__name__}: {exc}")
        log.write(f"{exc}\n".encode())
        log.close(lines.tail)
        return RunResult(spec, None, 0.0, (), None, Failure.NOT_STARTED, tuple(lines.tail), wall_start)

    reader = OutputReader(proc, log)
    try:
        _, stopped = read_until(reader, lines, start, spec.timeout, cancel)
        if stopped is None:
            stopped = wait_for_exit(proc, start, spec.timeout, cancel)
    finally:
        # Runs on Ctrl-C too: nothing the trainer started outlives the run.
        end_process(proc)
        reader.close()
    lines(reader.rest())
    returncode = proc.wait()
    wall_time = time.perf_counter() - start
    log.close(lines.tail)
    return result_of(spec, lines, wall_time, returncode, classify(stopped, returncode, lines.evals), wall_start)
