"""A helper process that imports scipy and matplotlib while the runs go on, and then does the
statistics and the plots of each verdict.

Importing ``scipy.stats`` and matplotlib takes one to three seconds, more on machines without a
bytecode cache: paid after the last run, it is time added to every verdict, and with the GPU
runs of a 1M-token protocol it is a visible share of the whole. Imported in a thread, numpy's C
extensions can race with the main thread's own imports, so the imports happen in a helper
process started with the session's first run, at the lowest CPU priority so that it does not
slow the trainer it overlaps. A call sends a module-level function and its arguments and gets
the result back (pickled); if the helper cannot be started, fails or dies, the same call runs
in-process: same result, only later.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")
_HEADER = struct.Struct("!Q")
#: Where ``import pytest_exprun`` finds this very package, whatever the helper's sys.path.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class Aside:
    """One helper process; ``call`` falls back to running in-process whenever it cannot help."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "pytest_exprun.reports.aside"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C is the session's to handle; close() ends the helper
            env=env,
        )

    def call(self, func: Callable[..., T], *args: Any) -> T:
        proc = self._proc
        if proc is None:
            return func(*args)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _send(proc.stdin, (func.__module__, func.__qualname__, args))
            status, value = _receive(proc.stdout)
        except (OSError, EOFError, pickle.PickleError, struct.error):
            self.close()
            return func(*args)
        if status != "ok":  # raise it here, with an in-process traceback, or succeed here
            return func(*args)
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # It holds nothing worth a clean exit, and tearing down scipy and matplotlib takes a while.
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a pipe the dead helper broke
                    stream.close()


def start() -> Aside | None:
    """A helper process, or None where one cannot be started (the work then happens in-process)."""
    try:
        return Aside()
    except OSError:
        return None


def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the helper process ended")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the helper process ended mid-reply")
    return pickle.loads(data)


def _preload() -> None:
    """What the verdict will need and is slow to import; a missing optional extra is fine."""
    try:
        os.nice(19)
    except OSError:
        pass
    from . import plots
    from ..decide import stats

    stats.sps.t  # noqa: B018 - the first attribute imports scipy.stats
    plots._matplotlib()


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    _preload()
    while True:
        try:
            module, name, args = _receive(requests)
        except EOFError:
            return
        try:
            target: Any = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
            reply: tuple[str, Any] = ("ok", target(*args))
            _send(replies, reply)
        except Exception as exc:  # noqa: BLE001 - reported back; the caller re-runs it in-process
            _send(replies, ("error", repr(exc)))


if __name__ == "__main__":
    # Replies get their own copy of stdout; anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, replies)
