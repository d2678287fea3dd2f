"""Where a run is started. One declared interface, one module per way of starting runs.

An executor takes ``RunSpec``s and hands back ``RunHandle``s; the protocol session asks
each handle for its ``RunResult`` in test order. Whether runs happen lazily in the calling
thread (``local``), in a warm trainer process or forked from a warm interpreter (``warm``),
concurrently on several GPUs (``gpus``) or as cluster jobs (``slurm``), no decision or number
of the protocol depends on it.

The interface is two ``typing.Protocol``s, ``Executor`` and ``RunHandle``. Their optional parts
(``prestart``, ``readiness``, a handle's ``wait`` and ``cancel``) are declared with defaults, so a
class that subclasses them gets those defaults and the session calls them without probing.

To add one (say, Ray): subclass ``Executor``, implement ``submit`` (and ``close`` if it holds
resources), and return it from a ``pytest_exprun_make_executor`` hook in a ``conftest.py`` or a
plugin. docs/executors.md says more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pytest

if TYPE_CHECKING:
    from ..settings import Settings
    from ..trainer.lines import LineParser
    from ..trainer.runner import RunResult, RunSpec

LineSink = Callable[[str], None]


@runtime_checkable
class RunHandle(Protocol):
    """A submitted run. ``result`` blocks until it has finished, failed or been cancelled."""

    def result(self) -> RunResult: ...

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once ``result`` would return without waiting.

        Eager executors override this so the session can store runs that finish before
        their test asks for them. The default says "ask ``result``" at once, which for a
        lazy handle is where the run happens.
        """
        return True

    def cancel(self) -> None:
        """Stop the run if it is still going; its result then reports a cancellation."""
        return None


@runtime_checkable
class Executor(Protocol):
    """How a session's runs are started.

    The three attributes are facts about the executor, fixed per class: a session reads them
    to decide whether to echo output, to submit ahead of time, and how a run's time is labelled.
    """

    #: Whether trainer output can be shown live on the terminal while a result is awaited.
    streams_output: bool = False
    #: Whether submitting ahead of time starts work (so the session should submit early).
    eager: bool = False
    #: What a run's wall time covers; runs timed differently are never compared.
    timing: str = "process"

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle: ...

    def close(self, cancel: bool) -> None:
        """Release resources; with ``cancel``, stop every run still pending or going."""
        return None

    def prestart(self, env: Mapping[str, str], cwd: Path | None = None) -> None:
        """Begin start-up work (a warm process importing its libraries) before the first run is
        asked for, so it overlaps what the session does meanwhile. ``env`` and ``cwd`` are the
        first run's. The default does nothing."""
        return None

    def readiness(self) -> str | None:
        """None when the next run starts at once; otherwise one line saying what it waits for
        (shown on the terminal before that run). The default: always ready."""
        return None

    @property
    def worker_ready(self) -> bool:
        """``readiness() is None``; the name sessions before the declared interface asked for."""
        return self.readiness() is None


class ExecutorError(ValueError):
    """An executor cannot be used as configured; the message says what to change."""


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


#: What an executor must have; the rest of ``Executor`` has defaults for its subclasses.
_REQUIRED = ("submit", "close", "prestart", "readiness", "streams_output", "eager", "timing")


def checked(executor: object, name: str) -> Executor:
    """``executor`` if it has every member of ``Executor``, else a one-line ``ExecutorError``.

    A class that subclasses ``Executor`` always passes; one that only looks like it must
    declare the optional members too, so the session never has to probe for them.
    """
    missing = [member for member in _REQUIRED if not hasattr(executor, member)]
    if missing:
        raise ExecutorError(
            f"the executor made for --exprun-executor={name} ({type(executor).__name__}) lacks "
            f"{', '.join(missing)}: subclass pytest_exprun.executors.Executor to get the defaults")
    return executor  # type: ignore[return-value]


class _Builtin:
    """One built-in executor as a default implementation of ``pytest_exprun_make_executor``."""

    def __init__(self, name: str, make: Callable[[pytest.Config, Settings], Executor]) -> None:
        self.name = name
        self.make = make

    @pytest.hookimpl(trylast=True)
    def pytest_exprun_make_executor(self, config: pytest.Config, settings: Settings) -> Executor | None:
        return self.make(config, settings) if settings.executor == self.name else None


class _Contract:
    """Wraps every ``pytest_exprun_make_executor`` call: a name nobody makes is one line naming the
    known ones, and what a plugin returns is checked against ``Executor`` before the session uses it."""

    name = "contract"

    @pytest.hookimpl(wrapper=True)
    def pytest_exprun_make_executor(self, config: pytest.Config, settings: Settings) -> Generator[None, Any, Any]:
        made = yield
        if made is None:
            known = ", ".join(builtin.name for builtin in BUILTIN if isinstance(builtin, _Builtin))
            raise ExecutorError(
                f"no executor is called {settings.executor!r}: the built-in ones are {known}; another comes "
                "from a plugin or conftest.py implementing pytest_exprun_make_executor")
        return checked(made, settings.executor)


def _local(config: pytest.Config, settings: Settings) -> Executor:
    from .local import LocalExecutor

    return LocalExecutor()


def _warm(config: pytest.Config, settings: Settings) -> Executor:
    from ..terminal import Terminal
    from .warm import make_warm

    return make_warm(settings, Terminal(config, settings.rootdir).say)


def _gpus(config: pytest.Config, settings: Settings) -> Executor:
    from .gpus import GpuExecutor
    from .options import gpu_ids

    return GpuExecutor(gpu_ids(settings.executor_options))


def _slurm(config: pytest.Config, settings: Settings) -> Executor:
    from .slurm import SlurmExecutor

    return SlurmExecutor.from_settings(settings)


#: The plugins registered at start-up: one per built-in executor, and the contract around them all.
def _ray(config: pytest.Config, settings: Settings) -> Executor:
    from .ray import make_ray

    return make_ray(settings)


BUILTIN: tuple[_Builtin | _Contract, ...] = (
    *(_Builtin(name, make) for name, make in (("local", _local), ("warm", _warm), ("gpus", _gpus),
                                              ("slurm", _slurm), ("ray", _ray))),
    _Contract(),
)
