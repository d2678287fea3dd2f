"""A helper process that imports scipy and matplotlib while the runs go on, and then does the
statistics and the plots of each verdict.

Importing ``scipy.stats`` and matplotlib takes one to three seconds, more on machines without a
bytecode cache: paid after the last run, it is time added to every verdict, and with the GPU
runs of a 1M-token protocol it is a visible share of the whole. Imported in a thread, numpy's C
extensions can race with the main thread's own imports, so the imports happen in a helper
process started when pytest's session starts (``prestart``), at the lowest CPU priority so that
it does not slow the trainer it overlaps. A call sends a module-level function and its arguments
and gets the result back (pickled), with the warnings it gave; if the helper cannot be started,
fails or dies, the same call runs in-process: same result, only later.

A call is sent (``Aside.submit``) and its reply read (``Pending.result``) apart, so a caller can
hand over work and wait for it later; the helper answers calls in the order they were sent.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import pickle
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from .. import timings

T = TypeVar("T")
_HEADER = struct.Struct("!Q")
#: Where ``import pytest_exprun`` finds this very package, whatever the helper's sys.path.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class Pending(Generic[T]):
    """One call handed to the helper; ``result`` waits for its reply, or does the call in-process."""

    def __init__(self, func: Callable[..., T], args: tuple[Any, ...]) -> None:
        self.func = func
        self.args = args
        #: The helper that owes the reply; None once it has come, or when it never will.
        self.owner: Aside | None = None
        self._reply: tuple[str, Any, list[tuple[type[Warning], str]]] | None = None

    def settle(self, reply: tuple[str, Any, list[tuple[type[Warning], str]]]) -> None:
        self.owner, self._reply = None, reply

    def result(self) -> T:
        if self.owner is not None:
            self.owner.receive_until(self)
        reply = self._reply
        if reply is None or reply[0] != "ok":  # no helper, or it failed: raised here, in-process, or succeeds
            return self.func(*self.args)
        for category, message in reply[2]:  # what it warned of, warned of here
            warnings.warn(message, category, stacklevel=2)
        return reply[1]  # type: ignore[no-any-return]


class Aside:
    """One helper process; a call falls back to running in-process whenever the helper cannot help."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "pytest_exprun.reports.aside"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C is the session's to handle; close() ends the helper
            env=env,
        )
        #: Calls sent and not yet answered, in the order the helper answers them.
        self._waiting: collections.deque[Pending[Any]] = collections.deque()

    def submit(self, func: Callable[..., T], *args: Any) -> Pending[T]:
        """Send the call and return at once; the helper works on it while the session goes on."""
        pending = Pending(func, args)
        proc = self._proc
        if proc is None:
            return pending
        assert proc.stdin is not None
        try:
            _send(proc.stdin, (func.__module__, func.__qualname__, args))
        except (OSError, pickle.PickleError, TypeError, AttributeError):
            self.close()
            return pending
        pending.owner = self
        self._waiting.append(pending)
        return pending

    def call(self, func: Callable[..., T], *args: Any) -> T:
        return self.submit(func, *args).result()

    def receive_until(self, target: Pending[Any]) -> None:
        """Read replies, oldest call first, until ``target``'s has come (or the helper is gone)."""
        proc = self._proc
        while target.owner is self and proc is not None and self._waiting:
            assert proc.stdout is not None
            try:
                reply = _receive(proc.stdout)
            except (OSError, EOFError, pickle.PickleError, struct.error, AttributeError, ImportError):
                self.close()
                return
            self._waiting.popleft().settle(reply)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        for pending in self._waiting:  # never answered: each is done in-process when asked for
            pending.owner = None
        self._waiting.clear()
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


class Helper:
    """A session's statistics, plots and reports: in the aside process once it is started, else
    in-process; the same calls give the same results either way."""

    def __init__(self, process: Aside | None = None) -> None:
        """``process``: a helper already started (``prestart``), else one is started by ``start``."""
        self.process = process
        self.tried = process is not None
        #: Calls the helper makes before any other once it starts (the store's simulated figures).
        self._first: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def start(self) -> None:
        if not self.tried:
            self.tried = True
            self.process = start()
            for func, args in self._first:
                if self.process is not None:
                    self.process.submit(func, *args)  # answered, and read, before the next call's reply

    def first(self, func: Callable[..., Any], *args: Any) -> None:
        """Have the helper call ``func(*args)`` first thing, while the session goes on; never waited for."""
        self._first.append((func, args))
        if self.process is not None:
            self.process.submit(func, *args)

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)``, waited for: in the helper, which has imported scipy and matplotlib by now."""
        with timings.span(f"statistics or plot: {func.__qualname__}", "" if self.process else "in process"):
            return func(*args) if self.process is None else self.process.call(func, *args)

    def close(self) -> None:
        if self.process is not None:
            timings.timed("close the aside helper", self.process.close)


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
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = target(*args)
            reply: tuple[str, Any, list[tuple[type[Warning], str]]] = (
                "ok", value, [(w.category, str(w.message)) for w in caught])
            _send(replies, reply)
        except Exception as exc:  # noqa: BLE001 - reported back; the caller re-runs it in-process
            _send(replies, ("error", repr(exc), []))


if __name__ == "__main__":
    # Replies get their own copy of stdout; anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, replies)
