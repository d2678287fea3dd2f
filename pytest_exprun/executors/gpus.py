"""Runs spread over the GPUs of one host: one run per GPU at a time, each pinned to its GPU.

Every GPU is one slot of a ``SlotPool``: runs on one GPU stay sequential (their wall times
remain clean measurements) while different GPUs work at once.
GPUs are found without importing torch: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import replace

from ..trainer.lines import LineParser
from ..trainer.runner import RunResult, RunSpec, run_trainer
from . import Executor, ExecutorError, LineSink, RunHandle
from .slots import QueuedRun, SlotPool

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
        self._pool = SlotPool(self.gpus, self._run, lambda gpu: f"gpu-{gpu}")

    @staticmethod
    def _run(gpu: str, queued: QueuedRun) -> RunResult:
        return run_trainer(pinned(queued.spec, gpu), None, queued.cancelled, queued.parse_line)

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        # on_line is ignored: lines of parallel runs would interleave on the terminal.
        return self._pool.submit(spec, parse_line)

    def close(self, cancel: bool) -> None:
        self._pool.close(cancel)


def pinned(spec: RunSpec, gpu: str) -> RunSpec:
    """``spec`` with its process seeing only ``gpu``."""
    return replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": gpu})
