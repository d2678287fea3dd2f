"""Start one trainer process, stream and parse its output, and end it cleanly.

The trainer runs from an argv list in its own process group (never through a shell),
so a time-out, Ctrl-C or cancellation can end it together with any children it
started. Output is read in chunks with every kept line capped in length, so a trainer
that prints gigabytes, or one line of 100 MB, costs bounded memory.
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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

#: ``Step 240 | val_loss: 1.9876 | ...``: the protocol reads the last val_loss printed.
STEP_LINE = re.compile(r"^\s*Step\s+(\d+)\s*\|\s*val_loss:\s*([^\s|]+)")

TAIL_LINES = 20
MAX_LINE_CHARS = 2000
MAX_LOG_BYTES = 64 * 1024 * 1024
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
    NON_FINITE = "printed a non-finite val_loss"
    CANCELLED = "was cancelled"
    NOT_STARTED = "could not be started"
    WORKER_LOST = "worker exited in the middle of the run"


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
        what += f" after {self.wall_time:.1f}s"
        if self.where:
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
    """Split a byte stream into text lines, keeping at most ``MAX_LINE_CHARS`` of each."""

    def __init__(self) -> None:
        self._partial = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[str]:
        lines = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            self._keep(piece)
            if end < 0:
                return lines
            lines.append(self._take())
            start = end + 1

    def flush(self) -> list[str]:
        return [self._take()] if self._partial else []

    def _keep(self, piece: bytes) -> None:
        room = MAX_LINE_CHARS * 4 - len(self._partial)
        if len(piece) > room:
            self._overflow = True
        self._partial += piece[: max(room, 0)]

    def _take(self) -> str:
        text = self._partial.decode("utf-8", "replace").rstrip("\r")
        if self._overflow or len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line truncated]"
        self._partial.clear()
        self._overflow = False
        return text


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


class RunLines:
    """What the protocol keeps of one run's output: the last lines, the learning curve, the echo."""

    def __init__(self, on_line: Callable[[str], None] | None, parse_line: LineParser) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.curve: list[tuple[int, float]] = []
        self._on_line = on_line
        self._parse_line = parse_line

    def __call__(self, lines: list[str]) -> None:
        for line in lines:
            self.tail.append(line)
            parsed = self._parse_line(line)
            if parsed is not None:
                self.curve.append(parsed)
            if self._on_line is not None:
                self._on_line(line)

    @property
    def val_loss(self) -> float | None:
        return self.curve[-1][1] if self.curve else None


def classify(stopped: Failure | None, returncode: int | None, val_loss: float | None) -> Failure | None:
    """Why a finished run is unusable, or None when it produced a finite val_loss."""
    if stopped is not None:
        return stopped
    if returncode is not None and returncode < 0:
        return Failure.SIGNAL
    if returncode != 0:
        return Failure.EXIT_CODE
    if val_loss is None:
        return Failure.NO_VAL_LOSS
    if not math.isfinite(val_loss):
        return Failure.NON_FINITE
    return None


def start_process(argv: list[str], env: dict[str, str], cwd: Path | None, stdin: int) -> subprocess.Popen[bytes]:
    """Start a trainer in its own process group (so it can be ended with its children), output merged."""
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        cwd=cwd,
    )


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """End a trainer's process group if anything in it is still running (Ctrl-C included)."""
    if proc.poll() is None or _group_alive(proc.pid):
        _end_group(proc)


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
    finally:
        # Runs on Ctrl-C too: nothing the trainer started outlives the run.
        end_process(proc)
        reader.close()
    lines(reader.rest())
    returncode = proc.wait()
    wall_time = time.perf_counter() - start
    log.close(lines.tail)
    return RunResult(
        spec=spec,
        val_loss=lines.val_loss,
        wall_time=wall_time,
        curve=tuple(lines.curve),
        returncode=returncode,
        failure=classify(stopped, returncode, lines.val_loss),
        tail=tuple(lines.tail),
        started_at=wall_start,
    )
