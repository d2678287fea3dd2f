"""``--exprun-executor=warm``: start-up paid once per session, not once per run.

``make_warm`` picks how: the trainer's own worker protocol where it speaks it (this module),
else a fork server (``forking.py``) for any Python trainer, else ``local`` with one line saying why.

At 1M tokens on a GPU, a fresh trainer process spends longer importing torch and creating
its CUDA context than training. A trainer that speaks the worker protocol (``train_llm.py``
does; docs/executors.md describes it) is started once, as ``<command> --worker``, and is sent
one run after another on its stdin, each fully re-seeded in the trainer; its output goes to
each run's own log as with ``local``. A run that fails, times out or is cancelled ends the
worker (its state is not trusted afterwards); the next run starts a fresh one.

A run's wall time here is the run alone, without the interpreter and framework start-up
that ``local`` includes, so the two are never compared (the session records how a run was
timed and refuses to compare runs timed differently).

``prestart`` starts the worker before the first run is asked for, so its start-up overlaps
pytest's collection and the baseline check. Given several GPUs, ``WorkerPool`` keeps one worker
per GPU, each pinned to its GPU with ``CUDA_VISIBLE_DEVICES``, and runs go to whichever is free
(``slots.SlotPool``: runs on one GPU stay one at a time, so their wall times stay clean measurements).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..trainer.lines import LineParser
from ..trainer.procgroup import end_process, start_process
from ..trainer.runner import (
    MAX_LOG_BYTES,
    Failure,
    OutputReader,
    RunLines,
    RunLog,
    RunResult,
    RunSpec,
    classify,
    read_until,
    result_of,
)
from . import Executor, LazyRun, LineSink, RunHandle
from .slots import QueuedRun, SlotPool

if TYPE_CHECKING:
    from ..settings import Settings

WORKER_FLAG = "--worker"
READY = re.compile(r"^exprun-worker: ready$")
DONE = re.compile(r"^exprun-worker: done (-?\d+)$")
#: After a failed run the worker exits by itself; how long to give it before ending it.
EXIT_GRACE_S = 2.0


def process_cpu(pid: int) -> float | None:
    """User + system seconds of a running process and of the children it has waited for (Linux's
    /proc; None elsewhere or once it is gone): a run's share is the difference around it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    except (OSError, IndexError, ValueError):
        return None


class _Worker:
    """One warm trainer process and the reader of its output."""

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: Path | None) -> None:
        self.proc = start_process(argv, dict(env), cwd, subprocess.PIPE)
        self.reader: OutputReader | None = None
        self.runs = 0
        self.ready = False  # until it has printed `exprun-worker: ready`

    def read_until(self, marker: re.Pattern[str], log: RunLog, lines: RunLines, timeout: float | None,
                   cancel: threading.Event) -> tuple[str | None, Failure | None]:
        """The worker's output, into this run's log and lines, up to ``marker``."""
        if self.reader is None:
            self.reader = OutputReader(self.proc, log)
        self.reader.log = log
        return read_until(self.reader, lines, time.perf_counter(), timeout, cancel, marker)

    def send(self, argv: Sequence[str]) -> bool:
        """Hand the worker one run; False if it is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"argv": list(argv)}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def stop(self, grace: float) -> int:
        """End the worker and everything it started, after ``grace`` seconds to exit by itself."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # a pipe the worker already broke
                self.proc.stdin.close()  # EOF: an idle worker exits on its own
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        end_process(self.proc)
        if self.reader is not None:
            self.reader.close()
        return self.proc.wait()


class WarmExecutor(Executor):
    """One warm trainer process (``<command> --worker``), runs one after another, lazily."""

    streams_output = True
    eager = False
    timing = "warm worker"

    def __init__(self, command: Sequence[str], gpus: Sequence[str] = ()) -> None:
        """``gpus``: none, the worker sees what the session sees; one, the worker is pinned to it
        (several GPUs are ``WorkerPool``'s, one ``WarmExecutor`` per GPU)."""
        if len(gpus) > 1:
            raise ValueError("a WarmExecutor runs on at most one GPU; use worker_executor() for several")
        self.command = tuple(command)
        self.gpus = tuple(gpus)
        self._worker: _Worker | None = None

    def prestart(self, env: Mapping[str, str], cwd: Path | None = None) -> None:
        """Start the worker now, before the first run is asked for, so that its start-up
        (importing torch, the CUDA warm-up) overlaps what the session does meanwhile.
        ``env`` and ``cwd`` must be what the runs' specs will carry. The first run reads its
        start-up output and reports a failed start; a worker that cannot even be spawned is
        left for that run to try again and report."""
        if self._worker is None:
            with contextlib.suppress(OSError):
                self._worker = _Worker([*self.command, WORKER_FLAG], self._pinned(env), cwd)

    def readiness(self) -> str | None:
        """Not ready before the worker has said ready: the terminal then says it is starting."""
        if self._worker is not None and self._worker.ready:
            return None
        return "starting the warm worker (importing torch)"

    def _pinned(self, env: Mapping[str, str]) -> dict[str, str]:
        return {**env, "CUDA_VISIBLE_DEVICES": self.gpus[0]} if self.gpus else dict(env)

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        return LazyRun(lambda cancel: self.run(spec, on_line, parse_line, cancel))

    def run(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser,
            cancel: threading.Event) -> RunResult:
        spec.output_dir.parent.mkdir(parents=True, exist_ok=True)
        log = RunLog(spec.log_path, MAX_LOG_BYTES)
        lines = RunLines(on_line, parse_line)
        wall_start = time.time()
        start = time.perf_counter()

        def failed(failure: Failure, returncode: int | None, note: str, where: str) -> RunResult:
            if note:
                lines.tail.append(f"[exprun: {note}]")
                log.write(f"[exprun: {note}]\n".encode())
            log.close(lines.tail)
            return result_of(spec, lines, time.perf_counter() - start, returncode, failure, wall_start, where,
                             log=log)

        if tuple(spec.argv[: len(self.command)]) != self.command:
            return failed(Failure.NOT_STARTED, None, (
                f"the warm executor starts '{' '.join(self.command)} {WORKER_FLAG}' and sends each run the "
                "arguments that follow the command, but this run's argv does not start with the command "
                "(changed by a pytest_exprun_build_argv hook?); use --exprun-executor=local"), "")
        if self._worker is None:
            try:
                self._worker = _Worker([*self.command, WORKER_FLAG], self._pinned(spec.env), spec.cwd)
            except OSError as exc:
                return failed(Failure.NOT_STARTED, None, f"{type(exc).__name__}: {exc}", "")
        if not self._worker.ready:  # just started, here or by prestart: its start-up goes to this run's log
            where = f"warm worker {self._worker.proc.pid}, starting"
            ready, stopped = self._worker.read_until(READY, log, lines, spec.timeout, cancel)
            if ready is None:
                code = self._retire(grace=0.0)
                if stopped is not None:
                    return failed(stopped, code, "", where)
                # NOT_STARTED: every later run would fail the same way, so the session stops starting them.
                return failed(Failure.NOT_STARTED, code, (
                    f"the trainer exited before its worker was ready: does it support {WORKER_FLAG}? "
                    "(docs/executors.md describes the protocol; --exprun-executor=local needs none)"), where)
            # Runs are timed from here on: start-up belongs to the worker, not to its first run.
            self._worker.ready = True
            wall_start, start = time.time(), time.perf_counter()

        worker = self._worker
        worker.runs += 1
        where = f"warm worker {worker.proc.pid}, its run {worker.runs}"
        cpu_before = process_cpu(worker.proc.pid)
        if not worker.send(spec.argv[len(self.command):]):
            code = self._retire(grace=0.0)
            return failed(classify(None, code, None) or Failure.WORKER_LOST, code, "", where)
        done, stopped = worker.read_until(DONE, log, lines, spec.timeout, cancel)
        wall_time = time.perf_counter() - start
        cpu_after = process_cpu(worker.proc.pid)
        cpu_time = None if cpu_before is None or cpu_after is None else max(cpu_after - cpu_before, 0.0)
        returncode: int | None
        if done is not None:
            match = DONE.match(done)
            assert match is not None
            returncode = int(match.group(1))
            if returncode != 0:
                self._retire(grace=EXIT_GRACE_S)  # it exits by itself after a failed run
        else:
            # Timed out or cancelled (end it now), or it ended in the middle of the run.
            returncode = self._retire(grace=0.0)
            if stopped is None and returncode == 0:
                stopped = Failure.WORKER_LOST
        log.close(lines.tail)
        failure = classify(stopped, returncode, lines.evals)
        result = result_of(spec, lines, wall_time, returncode, failure, wall_start, where if failure else "", log=log)
        return replace(result, cpu_time=cpu_time)

    def _retire(self, grace: float) -> int | None:
        worker, self._worker = self._worker, None
        return None if worker is None else worker.stop(grace)

    def close(self, cancel: bool) -> None:
        # Idle between runs, the worker has nothing to finish; tearing down CUDA on the way out
        # would only keep the verdict waiting.
        self._retire(grace=0.0)


class WorkerPool(Executor):
    """One warm worker per GPU, each pinned to its GPU; a run goes to whichever is free."""

    streams_output = False  # lines of parallel runs would interleave on the terminal
    eager = True
    timing = WarmExecutor.timing

    def __init__(self, command: Sequence[str], gpus: Sequence[str]) -> None:
        self.lanes = [WarmExecutor(command, (gpu,)) for gpu in gpus]
        self._pool = SlotPool(self.lanes, self._run, lambda lane: f"warm-gpu-{lane.gpus[0]}")

    @staticmethod
    def _run(lane: WarmExecutor, queued: QueuedRun) -> RunResult:
        return lane.run(queued.spec, None, queued.parse_line, queued.cancelled)

    def prestart(self, env: Mapping[str, str], cwd: Path | None = None) -> None:
        for lane in self.lanes:
            lane.prestart(env, cwd)

    def readiness(self) -> str | None:
        return next((note for lane in self.lanes if (note := lane.readiness()) is not None), None)

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        return self._pool.submit(spec, parse_line)

    def close(self, cancel: bool) -> None:
        self._pool.close(cancel)
        for lane in self.lanes:
            lane.close(cancel=False)


def worker_executor(command: Sequence[str], gpus: Sequence[str] = ()) -> WarmExecutor | WorkerPool:
    """The trainer's own worker protocol: one worker, or one per GPU given several."""
    return WorkerPool(command, gpus) if len(gpus) > 1 else WarmExecutor(command, gpus)


def make_warm(settings: Settings, say: Callable[[str], None] | None = None) -> Executor:
    """``--exprun-executor=warm``: the trainer's worker protocol where it speaks it, a fork
    server otherwise (or as ``--exprun-warm-start`` says), ``local`` where neither can be exact."""
    from . import ExecutorError
    from .forkcheck import speaks_worker_protocol
    from .forking import fork_executor
    from .gpus import visible_gpus
    from .options import gpu_ids, warm_start

    how = warm_start(settings.executor_options)
    gpus = gpu_ids(settings.executor_options) or visible_gpus()
    command = settings.argv_prefix()
    if how == "worker" or (how == "auto" and speaks_worker_protocol(settings)):
        fields = " ".join(settings.trainer_io.argv.words)
        if "{seed}" not in fields or "{output_dir}" not in fields:
            raise ExecutorError("--exprun-executor=warm passes each run's seed and output dir as arguments, so "
                                "exprun_argv must contain {seed} and {output_dir}; use --exprun-executor=local")
        return worker_executor(command, gpus)
    return fork_executor(settings, command, gpus, say)
