"""Runs spread over slots (GPUs, or warm processes pinned to GPUs), one run per slot at a time.

Every slot has one thread that takes the next queued run, so runs in one slot stay sequential
(their wall times remain clean measurements) while different slots work at once. The ``gpus``
executor and the ``warm`` executor given several GPUs both queue their runs here.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ..trainer.lines import LineParser
from ..trainer.runner import Failure, RunResult, RunSpec
from . import RunHandle

Slot = TypeVar("Slot")


class QueuedRun(RunHandle):
    """A queued run; the thread of the slot that takes it fills in the result."""

    def __init__(self, spec: RunSpec, parse_line: LineParser) -> None:
        self.spec = spec
        self.parse_line = parse_line
        self.cancelled = threading.Event()
        self._done = threading.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None

    def execute(self, run: Callable[[QueuedRun], RunResult]) -> None:
        try:
            if self.cancelled.is_set():
                # Cancelled while queued: it never started, so it never took the slot.
                self._result = RunResult(self.spec, None, 0.0, (), None, Failure.CANCELLED, (), time.time())
            else:
                self._result = run(self)
        except Exception as exc:  # noqa: BLE001 - e.g. the log folder is not writable: reported in the test, not lost in a thread
            self._error = exc
        finally:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def result(self) -> RunResult:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        self.cancelled.set()


class SlotPool(Generic[Slot]):
    """One thread per slot, each running ``run(slot, queued)`` for the next queued run."""

    def __init__(self, slots: Sequence[Slot], run: Callable[[Slot, QueuedRun], RunResult],
                 name: Callable[[Slot], str]) -> None:
        self._run = run
        self._queue: queue.Queue[QueuedRun | None] = queue.Queue()
        self._runs: list[QueuedRun] = []
        self._threads = [threading.Thread(target=self._work, args=(slot,), name=f"exprun-{name(slot)}", daemon=True)
                         for slot in slots]
        for thread in self._threads:
            thread.start()

    def _work(self, slot: Slot) -> None:
        while (queued := self._queue.get()) is not None:
            queued.execute(lambda q: self._run(slot, q))

    def submit(self, spec: RunSpec, parse_line: LineParser) -> QueuedRun:
        queued = QueuedRun(spec, parse_line)
        self._runs.append(queued)
        self._queue.put(queued)
        return queued

    def close(self, cancel: bool) -> None:
        """Let every slot finish its queue (with ``cancel``, after cancelling every run), then stop."""
        if cancel:
            for queued in self._runs:
                queued.cancel()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
