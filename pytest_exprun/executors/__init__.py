"""Where a run is started. One small interface, one module per way of starting runs.

An executor takes ``RunSpec``s and hands back ``RunHandle``s; the protocol session asks
each handle for its ``RunResult`` in test order. Whether runs happen lazily in the calling
thread (``local``), one after another in a warm trainer process (``warm``), concurrently on several GPUs (``gpus``) or as cluster jobs (``slurm``),
no decision or number of the protocol depends on it.

To add one (say, Ray): subclass ``Executor``, implement ``submit`` (and ``close`` if it holds
resources), and return it from a ``pytest_exprun_make_executor`` hook in a ``conftest.py`` or a
plugin. An eager one also implements ``RunHandle.wait``; docs/executors.md says more.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable

import pytest

from ..trainer.lines import LineParser
from ..trainer.runner import RunResult, RunSpec

if TYPE_CHECKING:
    from ..settings import Settings

LineSink = Callable[[str], None]


class RunHandle(ABC):
    """A submitted run. ``result`` blocks until it has finished, failed or been cancelled."""

    @abstractmethod
    def result(self) -> RunResult: ...

    def cancel(self) -> None:
        """Stop the run if it is still going; its result then reports a cancellation."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once ``result`` would return without waiting.

        Eager executors override this so the session can store runs that finish before
        their test asks for them. The default says "ask ``result``" at once, which for a
        lazy handle is where the run happens.
        """
        return True


class LazyRun(RunHandle):
    """A run that happens in the calling thread, when its result is first asked for."""

    def __init__(self, start: Callable[[threading.Event], RunResult]) -> None:
        self._start = start
        self._cancel = threading.Event()
        self._result: RunResult | None = None

    def result(self) -> RunResult:
        if self._result is None:
            self._result = self._start(self._cancel)
        return self._result

    def cancel(self) -> None:
        self._cancel.set()


class Executor(ABC):
    #: Whether trainer output can be shown live on the terminal while a result is awaited.
    streams_output: bool = False
    #: Whether submitting ahead of time starts work (so the session should submit early).
    eager: bool = False
    #: What a run's wall time covers; runs timed differently are never compared.
    timing: str = "process"

    @abstractmethod
    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle: ...

    def close(self, cancel: bool) -> None:
        """Release resources; with ``cancel``, stop every run still pending or going."""


class ExecutorError(ValueError):
    """An executor cannot be used as configured; the message says what to change."""


class _Builtin:
    """One built-in executor as a default implementation of ``pytest_exprun_make_executor``."""

    def __init__(self, name: str, make: Callable[["Settings"], Executor]) -> None:
        self.name = name
        self.make = make

    @pytest.hookimpl(trylast=True)
    def pytest_exprun_make_executor(self, config: pytest.Config, settings: "Settings") -> Executor | None:
        return self.make(settings) if settings.executor == self.name else None


def _local(settings: "Settings") -> Executor:
    from .local import LocalExecutor

    return LocalExecutor()


def _warm(settings: "Settings") -> Executor:
    from .gpus import visible_gpus
    from .warm import WarmExecutor

    fields = " ".join(settings.trainer_io.argv.words)
    if "{seed}" not in fields or "{output_dir}" not in fields:
        raise ExecutorError("--exprun-executor=warm passes each run's seed and output dir as arguments, so "
                            "exprun_argv must contain {seed} and {output_dir}; use --exprun-executor=local")
    return WarmExecutor(settings.argv_prefix(), gpus=settings.gpus or visible_gpus())


def _gpus(settings: "Settings") -> Executor:
    from .gpus import GpuExecutor

    return GpuExecutor(settings.gpus)


def _slurm(settings: "Settings") -> Executor:
    from .slurm import SlurmExecutor

    return SlurmExecutor(settings.slurm, settings.slurm.folder or settings.state_dir / "slurm")


#: The plugins registered at start-up, one per built-in executor.
BUILTIN = tuple(_Builtin(name, make) for name, make in (
    ("local", _local), ("warm", _warm), ("gpus", _gpus), ("slurm", _slurm)))
