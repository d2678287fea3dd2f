"""Start one trainer process, stream and parse its output, and end it cleanly.

The trainer runs from an argv list in its own process group (never through a shell),
so a time-out, Ctrl-C or cancellation can end it together with any children it
started; children that left the group (``setsid``) are found by a token in their
environment. Output is read in chunks with every kept line capped in length, and the
learning curve is thinned past a cap, so a trainer that prints gigabytes, one line of
100 MB or a million evaluations costs bounded memory.

The value recorded for a run is its final evaluation: the val_loss at the highest step
printed, which must be at (or within 1% of) the last step the trainer reports.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import selectors
import signal
import subprocess
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

#: ``Step 240 | val_loss: 1.9876 | ...``: the protocol records the val_loss at the highest step.
STEP_LINE = re.compile(r"^\s*Step\s+(\d+)\s*\|\s*val_loss:\s*([^\s|]+)")
#: Any line that reports a step (``Step 250 | train_loss ...``, ``step 250: ...``, ``iter 250``):
#: how far training went, so that a final evaluation can be told from an early one.
PROGRESS_LINE = re.compile(r"^\s*(?:step|iter)\s+(\d+)\b", re.IGNORECASE)

TAIL_LINES = 20
MAX_LINE_CHARS = 2000
MAX_LOG_BYTES = 64 * 1024 * 1024
#: Evaluations kept for the learning curve; past this the curve is thinned evenly.
MAX_CURVE_POINTS = 1000
#: The final evaluation may lie this fraction of the final step before it (at least 1 step).
FINAL_STEP_TOLERANCE = 0.01
#: Set in every trainer's environment; its descendants inherit it, even those that left the group.
RUN_TOKEN_ENV = "EXPRUN_RUN_TOKEN"
TERMINATE_GRACE_S = 5.0
#: After the trainer exits, how long to wait for children still holding its output open.
ORPHAN_GRACE_S = 1.0

LineParser = Callable[[str], tuple[int, float] | None]


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


def parse_step_line(line: str) -> tuple[int, float] | None:
    """(step, val_loss) from a trainer's evaluation line, or None for any other line."""
    match = STEP_LINE.match(line)
    if match is None:
        return None
    try:
        return int(match.group(1)), float(match.group(2))
    except ValueError:
        return None


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


class _LineSplitter:
    """Split a byte stream into text lines, keeping at most ``MAX_LINE_CHARS`` of each.

    A line ends at ``\n``, ``\r\n`` or a lone ``\r``: progress bars (tqdm) redraw with ``\r``,
    and an evaluation printed after one must still start a line of its own.
    """

    def __init__(self) -> None:
        self._partial = bytearray()
        self._overflow = False
        self._after_cr = False  # the last chunk ended with \r: a \n starting the next one is its pair

    def feed(self, data: bytes) -> list[str]:
        lines = []
        start = 0
        if self._after_cr and data[:1] == b"\n":
            start = 1
        self._after_cr = False
        for match in _LINE_END.finditer(data, start):
            self._keep(data[start : match.start()])
            lines.append(self._take())
            start = match.end()
        self._keep(data[start:])
        self._after_cr = data.endswith(b"\r")
        return lines

    def flush(self) -> list[str]:
        return [self._take()] if self._partial else []

    def _keep(self, piece: bytes) -> None:
        room = MAX_LINE_CHARS * 4 - len(self._partial)
        if len(piece) > room:
            self._overflow = True
        self._partial += piece[: max(room, 0)]

    def _take(self) -> str:
        text = self._partial.decode("utf-8", "replace")
        if self._overflow or len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line truncated]"
        self._partial.clear()
        self._overflow = False
        return text


_LINE_END = re.compile(rb"\r\n|\r|\n")


class LineThrottle:
    """Let through a burst of lines, then at most ``rate`` a second; count the ones held back.

    Echoing a trainer's output keeps a long run watchable, but a trainer that floods its
    output must not flood the terminal or a CI log too: every line is in the run's log anyway.
    """

    def __init__(self, rate: float = 20.0, burst: int = 1000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._held_back = 0
        self._told = -math.inf

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._held_back += 1
        return False

    def take_held_back(self, every: float = 10.0) -> int:
        """Lines held back since last told, at most once per ``every`` seconds (else 0)."""
        now = time.monotonic()
        if not self._held_back or now - self._told < every:
            return 0
        count, self._held_back, self._told = self._held_back, 0, now
        return count


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left after a grace period.

    A second Ctrl-C during the grace period skips the rest of it: the group is killed at once.
    """
    try:
        for sig, grace in ((signal.SIGTERM, TERMINATE_GRACE_S), (signal.SIGKILL, TERMINATE_GRACE_S)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if proc.poll() is not None and not _group_alive(proc.pid):
                    return
                time.sleep(0.02)
        proc.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
    """Whether a group member is still running, not merely a zombie left for init to reap.

    Orphaned children of a killed trainer stay zombies until init reaps them, which some
    systems do only every second or two; waiting for that would delay every time-out.
    Without /proc (not Linux), any member counts.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp.
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


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


def log_lines(path: Path) -> Iterator[str]:
    """A log file's lines, split and capped as a running trainer's output is."""
    splitter = _LineSplitter()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            yield from splitter.feed(block)
    yield from splitter.flush()


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


#: Each started trainer's ``RUN_TOKEN_ENV=<token>`` entry, to find its descendants by.
_run_tokens: weakref.WeakKeyDictionary[subprocess.Popen[bytes], bytes] = weakref.WeakKeyDictionary()


def start_process(argv: list[str], env: dict[str, str], cwd: Path | None, stdin: int) -> subprocess.Popen[bytes]:
    """Start a trainer in its own process group (so it can be ended with its children), output merged."""
    token = uuid.uuid4().hex
    proc = subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env, RUN_TOKEN_ENV: token},
        cwd=cwd,
    )
    _run_tokens[proc] = f"{RUN_TOKEN_ENV}={token}".encode()
    return proc


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """End a trainer's process group if anything in it is still running (Ctrl-C included),
    then any descendant that left the group (``setsid``, a daemon) and is still running."""
    if proc.poll() is None or _group_alive(proc.pid):
        _end_group(proc)
    marker = _run_tokens.get(proc)
    if marker is not None:
        _end_strays(marker)


def strays(marker: bytes) -> list[int]:
    """Running processes whose environment holds ``marker`` (a trainer's token), this one excepted.

    Only Linux's /proc shows other processes' environments; elsewhere none are found.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    found = []
    me = os.getpid()
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:  # gone, or another user's
            continue
        if marker in environ.split(b"\0"):
            found.append(int(name))
    return found


def _end_strays(marker: bytes) -> None:
    """SIGTERM the trainer's stray descendants, then SIGKILL those left after a grace period."""
    pids = strays(marker)
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + TERMINATE_GRACE_S
            while pids and time.monotonic() < deadline:
                time.sleep(0.02)
                pids = strays(marker)
    except BaseException:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        raise


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
