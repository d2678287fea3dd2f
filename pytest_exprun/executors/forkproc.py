"""The fork server seen from the session: the server process (``_forkserver.py``) and each forked run.

``ForkServer`` starts the server with the first run's environment, learns from its socket when
it is ready (or why it refused), which pid each run got, and how each child ended and what CPU
it used; ``ForkedProcess`` is one forked run as the runner's helpers expect a ``Popen``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..trainer.procgroup import end_process

SERVER = Path(__file__).with_name("_forkserver.py")
#: How long the server may take, from its start, to import the trainer's libraries (``--exprun-fork-timeout``).
READY_TIMEOUT_S = 300.0
#: How long a ready server may take to say it forked a run; one that does not answer is given up.
FORK_ANSWER_S = 30.0



# ------------------------------------------------------------------ the server
class ForkServer:
    """The server process, and what it has said: ready or refused, each child's pid and exit code."""

    def __init__(self, interpreter: Sequence[str], kind: str, target: str, preload: Sequence[str],
                 env: Mapping[str, str], cwd: Path | None) -> None:
        self._sock, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [*interpreter, str(SERVER), str(theirs.fileno()), target, kind, json.dumps(list(preload))],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
        finally:
            theirs.close()
        self.started_at = time.monotonic()
        self.state: str | None = None  # "ready", or why it refused or ended
        self.output: collections.deque[str] = collections.deque(maxlen=10)
        self._changed = threading.Condition()
        self._pids: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        #: Each reaped child's user + system seconds, with its waited-for descendants' (``os.wait4``).
        self._cpu: dict[int, float] = {}
        self._ids = iter(range(1, 1 << 62))
        self._send_lock = threading.Lock()
        threading.Thread(target=self._listen, name="exprun-forkserver", daemon=True).start()
        threading.Thread(target=self._drain, name="exprun-forkserver-output", daemon=True).start()

    def _listen(self) -> None:
        buffer = b""
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                with self._changed:
                    if self.state in (None, "ready"):
                        last = f"; its last output: {' | '.join(self.output)}" if self.output else ""
                        self.state = f"the fork server ended (exit code {self.proc.wait()}){last}"
                    self._changed.notify_all()
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            with self._changed:
                for line in lines:
                    message = json.loads(line)
                    if "ready" in message:
                        self.state = "ready"
                    elif "refused" in message:
                        self.state = str(message["refused"])
                    elif "started" in message:
                        self._pids[message["started"]] = message["pid"]
                    elif "exit" in message:
                        self._exits[message["exit"]] = message["code"]
                        if isinstance(message.get("cpu"), (int, float)):
                            self._cpu[message["exit"]] = float(message["cpu"])
                self._changed.notify_all()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.output.append(raw.decode(errors="replace").rstrip())

    def wait_ready(self, timeout: float, cancel: threading.Event | None = None) -> str | None:
        """None once ready; otherwise why not (refused, ended, cancelled, or not ready ``timeout``
        seconds after its start: an import that hangs must not hold the session)."""
        deadline = self.started_at + timeout
        with self._changed:
            while self.state is None:
                if cancel is not None and cancel.is_set():
                    return "cancelled while the fork server was starting"
                if time.monotonic() > deadline:
                    last = f"; its last output: {' | '.join(self.output)}" if self.output else ""
                    return (f"the fork server had not imported the trainer's libraries {timeout:g}s after its start "
                            f"(an import that hangs?); raise --exprun-fork-timeout if they take that long{last}")
                self._changed.wait(0.1)
            return None if self.state == "ready" else self.state

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def fork(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> ForkedProcess:
        """One run as a forked child writing to two new pipes (stdout, stderr); OSError if the server cannot fork it."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            request = {"id": next(self._ids), "argv": list(argv), "env": dict(env), "cwd": str(cwd or os.getcwd())}
            with self._send_lock:
                socket.send_fds(self._sock, [(json.dumps(request) + "\n").encode()], [out_write, err_write])
        except OSError:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        deadline = time.monotonic() + FORK_ANSWER_S
        with self._changed:
            while request["id"] not in self._pids:
                if self.state == "ready" and time.monotonic() > deadline:
                    self.state = f"the fork server did not say it had started a run within {FORK_ANSWER_S:g}s"
                if self.state != "ready":
                    os.close(out_read)
                    os.close(err_read)
                    raise OSError(self.state or "the fork server ended")
                self._changed.wait(0.1)
            pid = self._pids.pop(request["id"])
        return ForkedProcess(self, pid, out_read, err_read)

    def exit_code(self, pid: int) -> int | None:
        with self._changed:
            code = self._exits.get(pid)
            if code is None and self.state != "ready" and not _running(pid):
                return -9  # its server is gone, and with it the exit code: as if killed
            return code

    def cpu_time(self, pid: int) -> float | None:
        """The CPU seconds of an exited child and the descendants it waited for, as the server reaped it."""
        with self._changed:
            return self._cpu.get(pid)

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.exit_code(pid)) is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            with self._changed:
                self._changed.wait(0.05)
        return code

    def stop(self) -> None:
        """Close the socket (the server exits by itself) and end it if it does not."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            end_process(self.proc)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


class ForkedProcess:
    """A forked run as the runner's helpers expect a ``Popen``: ``pid``, ``stdout``, ``stderr``, ``poll``, ``wait``."""

    def __init__(self, server: ForkServer, pid: int, out_read: int, err_read: int) -> None:
        self.server = server
        self.pid = pid
        self.args = f"forked run {pid}"
        self.stdout = os.fdopen(out_read, "rb", buffering=0)
        self.stderr = os.fdopen(err_read, "rb", buffering=0)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.wait_exit(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self.returncode

    @property
    def cpu_time(self) -> float | None:
        """As ``TimedPopen.cpu_time``: the child's and its waited-for descendants' user + system seconds."""
        return self.server.cpu_time(self.pid)
