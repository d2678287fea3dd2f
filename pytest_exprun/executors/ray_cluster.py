"""The Ray executor's cluster: a local one this session starts and ends, or one it joins and leaves.

A local cluster's processes (GCS, raylet, workers, and any trainer they still run) are ended
by their process ids after ``ray.shutdown()``: SIGTERM, then SIGKILL after a short grace,
since a ``gcs_server`` has been seen to ignore SIGTERM for 20 s. A joined cluster is never
stopped. Ray's files for a local cluster go to a fresh temporary folder, removed at the end,
and its token (Ray 2.60 turns token authentication on) stays in this process's environment
instead of being written to ``~/.ray``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import tempfile
import threading
from typing import Any

from ..trainer.procgroup import terminate_then_kill
from . import ExecutorError

#: How long connecting to (or starting) a cluster may take before the session stops.
INIT_TIMEOUT_S = 180.0
#: After ``ray.shutdown()``: how long a local cluster's processes get after SIGTERM.
END_GRACE_S = 3.0
LOCAL = ""


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, or None once it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return int(fields[1]), fields[19].decode()


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``, with its start time (to tell a reused pid)."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _stat(int(name))
                if stat is not None:
                    parents.setdefault(stat[0], []).append(int(name))
                    started[int(name)] = stat[1]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), ()):
            if child not in found and child in started:
                found[child] = started[child]
                todo.append(child)
    return found


def end_processes(pids: dict[int, str], grace: float = END_GRACE_S) -> None:
    """SIGTERM these processes (those still the same process), then SIGKILL what is left after ``grace``."""
    terminate_then_kill(lambda: [pid for pid, start in pids.items() if (_stat(pid) or (0, ""))[1] == start], grace)


class _Quiet(logging.Filter):
    """Ray's warning that it set no SIGTERM handler: on purpose here, so not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


class Cluster:
    """Ray as this session uses it: ``connect`` once, ``disconnect`` at the end."""

    def __init__(self, address: str, local_gpus: tuple[str, ...], runtime_env: dict[str, Any] | None) -> None:
        self.address = address
        self.local_gpus = local_gpus
        self.runtime_env = runtime_env
        self.ours: dict[int, str] = {}  # a local cluster's processes, found as this process's new children
        self._temp: str | None = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def started_here(self) -> bool:
        return self.address == LOCAL

    def describe(self) -> str:
        return "a local Ray cluster started for this session" if self.started_here else f"the Ray cluster at {self.address}"

    def connect(self) -> Any:
        """Start or join the cluster; the ``ray`` module, ready. A failure is one line naming the address."""
        if self.started_here and "RAY_AUTH_MODE" not in os.environ and "RAY_AUTH_TOKEN" not in os.environ:
            # Read by Ray when it is first imported: set before that, or Ray writes ~/.ray/auth_token.
            self._set_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
        import ray

        if self._saved_env and hasattr(ray, "_raylet"):
            ray._raylet.Config.initialize("")  # type: ignore[attr-defined]  # Ray imported earlier (a conftest.py): let it read the mode again
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.runtime_env:
            kwargs["runtime_env"] = self.runtime_env
        if self.started_here:
            before = descendants(os.getpid())
            self._temp = tempfile.mkdtemp(prefix="exprun-ray-")
            if self.local_gpus:
                self._set_env({"CUDA_VISIBLE_DEVICES": ",".join(self.local_gpus)})
                kwargs["num_gpus"] = len(self.local_gpus)
            kwargs.update(include_dashboard=False, _temp_dir=self._temp)
        else:
            kwargs["address"] = self.address
        error: list[BaseException] = []

        def init() -> None:
            try:
                ray.init(**kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure to start or join is reported in one line
                error.append(exc)

        if self.started_here:
            # In this thread: Ray starts its daemons to die with the thread that started them. Ray's
            # SIGTERM handler is put back to pytest's, which ends the runs before the session stops.
            previous = signal.getsignal(signal.SIGTERM)
            try:
                init()
            except BaseException:  # Ctrl-C while starting: what had started is ended too
                self.ours = {pid: start for pid, start in descendants(os.getpid()).items() if pid not in before}
                self.disconnect()
                raise
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
            timed_out = False
        else:
            # Joining starts no process: in a thread, so that an address that never answers has a time-out.
            quiet = _Quiet()
            logging.getLogger("ray._private.worker").addFilter(quiet)
            joiner = threading.Thread(target=init, name="exprun-ray-init", daemon=True)
            joiner.start()
            joiner.join(INIT_TIMEOUT_S)
            logging.getLogger("ray._private.worker").removeFilter(quiet)
            timed_out = joiner.is_alive()
        if self.started_here:
            self.ours = {pid: start for pid, start in descendants(os.getpid()).items() if pid not in before}
        if timed_out or error:
            what = (f"did not answer within {INIT_TIMEOUT_S:g}s" if not error else
                    (str(error[0]).strip().splitlines() or [type(error[0]).__name__])[-1])
            self.disconnect()
            raise ExecutorError(f"--exprun-executor=ray could not {'start' if self.started_here else 'join'} "
                                f"{self.describe()}: {what}; check --exprun-ray-address (empty: a local cluster)")
        return ray

    def disconnect(self) -> None:
        """Leave the cluster; a local one is shut down and every process it started is ended by pid."""
        import ray

        if self.started_here:
            # Workers started since, and trainers they still run, hang below the cluster's daemons.
            for pid in list(self.ours):
                self.ours.update(descendants(pid))
        with contextlib.suppress(Exception):  # noqa: BLE001 - a cluster already gone has nothing to shut down
            ray.shutdown()
        if self.started_here:
            end_processes(self.ours)
            if self._temp is not None:
                shutil.rmtree(self._temp, ignore_errors=True)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
