"""A warm start for any Python trainer: a fork server that has imported its libraries.

A trainer that does not speak the worker protocol still spends most of a short run starting:
a fresh interpreter, ``import torch``, ``import transformers``. Here one process (the fork
server, ``_forkserver.py``) imports the trainer's third-party imports once, as the
trainer-file scan finds them (never the project's own modules, which may change during a
session), and forks one child per run that runs the script as ``__main__`` with the run's
argv, environment, working directory and output pipe. The child's output is read and its
process group ended exactly as the local executor does with a process it started.

It refuses, with one line and a fall-back to ``local``, where forking could not be exact:
a command that is not ``python script.py`` or ``python -m module``; a trainer whose files name
the ``spawn`` or ``forkserver`` start method, or ``torch.multiprocessing.spawn``; and, found
by the server itself, an import that started a thread, initialised CUDA or chose such a
start method. What cannot be seen: a start method chosen from a variable or inside a library
at run time, and library state read at import time from variables a run changes (the
server is started with the first run's environment; ``CUDA_VISIBLE_DEVICES`` and ``EXPRUN_*``
are read later, when a run uses them).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
import warnings
from dataclasses import replace
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from ..trainer.lines import LineParser
from ..trainer.procgroup import RUN_TOKEN_ENV, remember_token
from ..trainer.runner import (
    MAX_LOG_BYTES,
    RunLines,
    RunLog,
    RunResult,
    RunSpec,
    classify,
    follow,
    not_started,
    result_of,
    run_trainer,
)
from . import Executor, LazyRun, LineSink, RunHandle
from .forkcheck import ForkRefused, preload_modules, python_invocation
from .forkproc import READY_TIMEOUT_S, ForkServer
from .forkproc import ForkedProcess as ForkedProcess  # where callers before the split found it
from .gpus import pinned
from .slots import QueuedRun, SlotPool

if TYPE_CHECKING:
    from ..settings import Settings


class FallbackWarning(pytest.PytestWarning):
    """``--exprun-executor=warm`` runs this trainer as ``local`` does, and says why."""


def run_forked(server: ForkServer, target: str, spec: RunSpec, prefix: int, on_line: LineSink | None,
               cancel: threading.Event | None, parse_line: LineParser) -> RunResult:
    """One run forked from ``server``: read, timed and ended as ``run_trainer`` does a process.

    ``prefix``: how many words of ``spec.argv`` the interpreter, its options and the script take;
    the child's ``sys.argv`` is the script followed by the rest."""
    spec.output_dir.parent.mkdir(parents=True, exist_ok=True)
    log = RunLog(spec.log_path, MAX_LOG_BYTES)
    lines = RunLines(on_line, parse_line)
    wall_start = time.time()
    start = time.perf_counter()
    token = uuid.uuid4().hex
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env, RUN_TOKEN_ENV: token}
    try:
        proc = server.fork([target, *spec.argv[prefix:]], env, spec.cwd)
    except OSError as exc:
        return not_started(spec, log, lines, f"[exprun: the fork server could not start this run: {exc}]", str(exc),
                           wall_start)
    popen = cast("subprocess.Popen[bytes]", proc)
    remember_token(popen, token)
    stopped, returncode = follow(popen, log, lines, start, spec.timeout, cancel)
    wall_time = time.perf_counter() - start
    log.close(lines.tail)
    result = result_of(spec, lines, wall_time, returncode, classify(stopped, returncode, lines.evals), wall_start,
                       "" if stopped is None and returncode == 0 else f"forked from fork server {server.proc.pid}",
                       log=log)
    return replace(result, cpu_time=proc.cpu_time)


# ------------------------------------------------------------------ the executors
class ForkExecutor(Executor):
    """Runs forked one after another from one fork server, lazily, output streamed as with ``local``."""

    streams_output = True
    eager = False

    def __init__(self, command: Sequence[str], preload: Sequence[str], refused: str | None = None,
                 gpu: str | None = None, say: Callable[[str], None] | None = None,
                 ready_timeout: float = READY_TIMEOUT_S) -> None:
        """``gpu``: every run is pinned to it (``CUDA_VISIBLE_DEVICES``), as the worker is given one GPU.
        ``say``: where the one line goes when runs fall back to ``local`` (else a warning).
        ``ready_timeout``: seconds from the server's start to its ready line, past which runs go as local does."""
        self.command = tuple(command)
        self.ready_timeout = ready_timeout
        self._say = say
        self.gpu = gpu
        self.preload = tuple(preload)
        self._server: ForkServer | None = None
        #: Why runs go as ``local`` does (said once, as a warning); None while forking.
        self.fallback: str | None = None
        self._lock = threading.Lock()
        try:
            self._interpreter, self._kind, self._target, self._prefix = python_invocation(self.command)
        except ForkRefused as exc:
            refused = refused or str(exc)
        if refused is not None:
            self._fall_back(refused)

    @property
    def timing(self) -> str:  # type: ignore[override]
        """Forked runs start without the interpreter's start-up, so they are timed apart from local runs."""
        return "process" if self.fallback is not None else "fork server"

    def _fall_back(self, why: str) -> None:
        if self.fallback is None:
            self.fallback = why
            line = f"--exprun-executor=warm runs each seed as local does: {why}"
            if self._say is not None:
                self._say(line)
            else:
                warnings.warn(FallbackWarning(line), stacklevel=2)

    def prestart(self, env: Mapping[str, str], cwd: Path | None = None) -> None:
        """Start the server now: it imports the trainer's libraries while the session goes on."""
        with self._lock:
            self._start(env, cwd)

    def _start(self, env: Mapping[str, str], cwd: Path | None) -> None:
        if self._server is None and self.fallback is None:
            try:
                self._server = ForkServer(self._interpreter, self._kind, self._target, self.preload, env, cwd)
            except OSError as exc:
                self._fall_back(f"the fork server could not be started ({exc})")

    def readiness(self) -> str | None:
        if self.fallback is not None or (self._server is not None and self._server.ready):
            return None
        return "starting the fork server (importing the trainer's libraries)"

    def _ready_server(self, spec: RunSpec, cancel: threading.Event | None) -> ForkServer | None:
        """The ready server (started here if need be), or None when runs go as local does."""
        with self._lock:
            self._start(spec.env, spec.cwd)
            server = self._server
            if server is None:
                return None
            why = server.wait_ready(self.ready_timeout, cancel)
            if why is not None and not (cancel is not None and cancel.is_set()):
                self._fall_back(why)
                self._server = None
                server.stop()
                return None
            return server if why is None else None

    def run(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser,
            cancel: threading.Event | None) -> RunResult:
        if self.gpu is not None:
            spec = pinned(spec, self.gpu)
        if tuple(spec.argv[: len(self.command)]) != self.command:
            self._fall_back("this run's argv does not start with the trainer command (changed by a "
                            "pytest_exprun_build_argv hook?)")
        server = None if self.fallback is not None else self._ready_server(spec, cancel)
        if server is None:
            return run_trainer(spec, on_line, cancel, parse_line)
        # The script's own arguments in the command (``train.py --num_threads 1``) go to it too.
        return run_forked(server, self._target, spec, self._prefix, on_line, cancel, parse_line)

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        return LazyRun(lambda cancel: self.run(spec, on_line, parse_line, cancel))

    def close(self, cancel: bool) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()


class ForkPool(ForkExecutor):
    """Runs forked from one server onto several GPUs at once, one run per GPU at a time."""

    streams_output = False  # lines of parallel runs would interleave on the terminal
    eager = True

    def __init__(self, command: Sequence[str], preload: Sequence[str], gpus: Sequence[str],
                 refused: str | None = None, say: Callable[[str], None] | None = None,
                 ready_timeout: float = READY_TIMEOUT_S) -> None:
        super().__init__(command, preload, refused, None, say, ready_timeout)
        self._pool = SlotPool(tuple(gpus), self._run_on, lambda gpu: f"fork-gpu-{gpu}")

    def _run_on(self, gpu: str, queued: QueuedRun) -> RunResult:
        return self.run(pinned(queued.spec, gpu), None, queued.parse_line, queued.cancelled)

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        return self._pool.submit(spec, parse_line)

    def close(self, cancel: bool) -> None:
        self._pool.close(cancel)
        super().close(cancel)


def fork_executor(settings: Settings, command: Sequence[str], gpus: Sequence[str],
                  say: Callable[[str], None] | None = None) -> ForkExecutor:
    """The fork server for this trainer, or (with one line saying why) runs as local does."""
    from .options import fork_timeout

    timeout = fork_timeout(settings.executor_options)
    refused = None
    preload: list[str] = []
    try:
        python_invocation(command)
        preload = preload_modules(settings)
    except ForkRefused as exc:
        refused = str(exc)
    if len(gpus) > 1:
        return ForkPool(command, preload, gpus, refused, say, timeout)
    return ForkExecutor(command, preload, refused, gpus[0] if gpus else None, say, timeout)
