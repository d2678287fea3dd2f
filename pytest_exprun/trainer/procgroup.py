"""Start a trainer in its own process group, and end that group and every descendant with it.

A time-out, Ctrl-C or cancellation must leave nothing the trainer started behind: the
group is sent SIGTERM, then SIGKILL after a grace period, and children that left the
group (``setsid``, a daemon) are found by a token every trainer gets in its environment.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Set in every trainer's environment; its descendants inherit it, even those that left the group.
RUN_TOKEN_ENV = "EXPRUN_RUN_TOKEN"
TERMINATE_GRACE_S = 5.0

#: Each started trainer's ``RUN_TOKEN_ENV=<token>`` entry, to find its descendants by.
_run_tokens: weakref.WeakKeyDictionary[subprocess.Popen[bytes], bytes] = weakref.WeakKeyDictionary()


class TimedPopen(subprocess.Popen[bytes]):
    """A ``Popen`` that keeps what its child used when it reaps it (``os.wait4``): the CPU time of
    the child and of every descendant the child itself waited for, which no later call can ask for.

    Both of ``Popen``'s reaping paths are routed through ``os.wait4``; where an interpreter lacks
    them, the process still works and ``cpu_time`` stays None.
    """

    rusage: resource.struct_rusage | None = None

    def _wait4(self, pid: int, flags: int) -> tuple[int, int]:
        found, status, usage = os.wait4(pid, flags)
        if found == pid:
            self.rusage = usage
        return found, status

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        try:
            return self._wait4(self.pid, wait_flags)
        except ChildProcessError:  # SIGCHLD ignored: the status is gone (as in Popen itself)
            return self.pid, 0

    def _internal_poll(self, _deadstate: Any = None, **_: Any) -> int | None:
        polled: int | None = super()._internal_poll(_deadstate, _waitpid=self._wait4)  # type: ignore[misc]
        return polled

    @property
    def cpu_time(self) -> float | None:
        """User plus system seconds of the reaped child and its waited-for descendants."""
        return None if self.rusage is None else self.rusage.ru_utime + self.rusage.ru_stime


def start_process(argv: list[str], env: dict[str, str], cwd: Path | None, stdin: int) -> TimedPopen:
    """Start a trainer in its own process group (so it can be ended with its children).

    stdout and stderr are two pipes, read as two streams: merged, a progress bar left open on
    one would glue itself onto the start of an evaluation line printed on the other.
    """
    token = uuid.uuid4().hex
    proc = TimedPopen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env, RUN_TOKEN_ENV: token},
        cwd=cwd,
    )
    _run_tokens[proc] = f"{RUN_TOKEN_ENV}={token}".encode()
    return proc


def remember_token(proc: subprocess.Popen[bytes], token: str) -> None:
    """Find ``proc``'s strays by ``token`` too: a trainer not started here (forked by a fork
    server) that was given ``RUN_TOKEN_ENV=token`` in its environment."""
    _run_tokens[proc] = f"{RUN_TOKEN_ENV}={token}".encode()


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
    terminate_then_kill(lambda: strays(marker), TERMINATE_GRACE_S, poll=0.02)


def terminate_then_kill(find: Callable[[], list[int]], grace: float, poll: float = 0.05) -> None:
    """SIGTERM the processes ``find`` returns, give them ``grace`` seconds, then SIGKILL those still found.

    ``find`` is asked again while waiting, so a process that went (or a pid now someone else's,
    where ``find`` checks) is not signalled. Interrupted, it SIGKILLs what it last found.
    """
    pids = find()
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                time.sleep(poll)
                pids = find()
    except BaseException:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        raise


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
