"""Runs spread over the GPUs of one host: one run per GPU at a time, each pinned to its GPU.

Every GPU has one worker thread that takes the next queued run, so runs on one GPU stay
sequential (their wall times remain clean measurements) while different GPUs work at once.
GPUs are found without importing torch: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi``.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from dataclasses import replace
from typing import Sequence


from ..trainer.lines import LineParser
from ..trainer.runner import Failure, RunResult, RunSpec, run_trainer
from . import Executor, ExecutorError, LineSink, RunHandle

NVIDIA_SMI = ("nvidia-smi", "--query-gpu=index", "--format=csv,noheader")


def visible_gpus() -> tuple[str, ...]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else what nvidia-smi lists."""
    pinned = os.environ.get("CUDA_VISIBLE_DEVICES")
    if pinned is not None:
        ids = tuple(g.strip() for g in pinned.split(",") if g.strip())
        # "-1" or "NoDevFiles" hide every GPU, as CUDA itself reads them.
        return () if any(g.startswith("-") or g == "NoDevFiles" for g in ids[:1]) else ids
    try:
        out = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


class _GpuRun(RunHandle):
    """A queued run; its worker thread fills in the result."""

    def __init__(self, spec: RunSpec, parse_line: LineParser) -> None:
        self.spec = spec
        self._parse_line = parse_line
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None

    def execute(self, gpu: str) -> None:
        try:
            if self._cancel.is_set():
                # Cancelled while queued: it never started, so it never took the GPU.
                self._result = RunResult(self.spec, None, 0.0, (), None, Failure.CANCELLED, (), time.time())
            else:
                pinned = replace(self.spec, env={**self.spec.env, "CUDA_VISIBLE_DEVICES": gpu})
                self._result = run_trainer(pinned, None, self._cancel, self._parse_line)
        except Exception as exc:  # e.g. the log folder is not writable: reported in the test, not lost in a thread
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
        self._cancel.set()


class GpuExecutor(Executor):
    streams_output = False
    eager = True

    def __init__(self, gpus: Sequence[str] = ()) -> None:
        self.gpus = tuple(gpus) or visible_gpus()
        if not self.gpus:
            raise ExecutorError(
                "--exprun-executor=gpus found no GPU (CUDA_VISIBLE_DEVICES unset and nvidia-smi lists none); "
                "pass --exprun-gpus=0,1,... or use --exprun-executor=local"
            )
        if len(set(self.gpus)) != len(self.gpus):
            raise ExecutorError(f"--exprun-gpus lists a GPU twice: {','.join(self.gpus)}")
        self._queue: queue.Queue[_GpuRun | None] = queue.Queue()
        self._runs: list[_GpuRun] = []
        self._workers = [
            threading.Thread(target=self._work, args=(gpu,), name=f"exprun-gpu-{gpu}", daemon=True)
            for gpu in self.gpus
        ]
        for worker in self._workers:
            worker.start()

    def _work(self, gpu: str) -> None:
        while True:
            run = self._queue.get()
            if run is None:
                return
            run.execute(gpu)

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        # on_line is ignored: lines of parallel runs would interleave on the terminal.
        run = _GpuRun(spec, parse_line)
        self._runs.append(run)
        self._queue.put(run)
        return run

    def close(self, cancel: bool) -> None:
        if cancel:
            for run in self._runs:
                run.cancel()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
