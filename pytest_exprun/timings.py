"""Where a protocol session's time goes: its steps as spans, printed when ``EXPRUN_TIMINGS=1``.

A measuring aid for the time a session spends outside its runs (docs/benchmarks.md; read by
``bench/bench_floor.py``). Each step the session takes (collection, the baseline check, the
executor's start, every run awaited, every decision, report, plot and store write) is a span in
seconds since the process started, so pytest's own start-up counts too. When pytest exits, the
spans go to stderr, one a line, nested steps indented under the step that contains them. Unset,
every call is one test of a module global: nothing is recorded and nothing is printed.

Standard library only, so a plain ``pytest`` can import it for free.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import pytest

ENV = "EXPRUN_TIMINGS"
#: The first line of the printed breakdown, which ``bench/bench_floor.py`` looks for.
HEADER = "exprun timings: start, seconds, step (seconds since the process started)"
T = TypeVar("T")


@dataclass(frozen=True)
class Span:
    """One step: when it started and ended (seconds since the process started), and a note."""

    label: str
    start: float
    end: float
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


def process_age() -> float:
    """Seconds since this process started (Linux's ``/proc``; 0 elsewhere, so spans start at import)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class Timings:
    """The spans recorded so far, timed from the process's start."""

    def __init__(self, age: float) -> None:
        self.origin = time.perf_counter() - age
        self.spans: list[Span] = []

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def add(self, label: str, start: float, end: float, note: str = "") -> None:
        self.spans.append(Span(label, start, end, note))

    def lines(self) -> list[str]:
        """The spans in the order they started, each indented by how many earlier spans contain it."""
        ordered = sorted(self.spans, key=lambda s: (s.start, -s.end))
        out = []
        for i, item in enumerate(ordered):
            depth = sum(1 for outer in ordered[:i] if outer.end >= item.end)
            note = f"  ({item.note})" if item.note else ""
            out.append(f"{item.start:8.3f} {item.seconds:7.3f}  {'  ' * depth}{item.label}{note}")
        return out


#: The session's recorder, or None when ``EXPRUN_TIMINGS`` is unset (then nothing is recorded).
RECORDER: Timings | None = Timings(process_age()) if os.environ.get(ENV, "") not in ("", "0") else None


def enabled() -> bool:
    return RECORDER is not None


@contextlib.contextmanager
def span(label: str, note: str = "") -> Iterator[None]:
    """Record the enclosed step as one span (also when it raises)."""
    recorder = RECORDER
    if recorder is None:
        yield
        return
    start = recorder.now()
    try:
        yield
    finally:
        recorder.add(label, start, recorder.now(), note)


def timed(label: str, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)``, recorded as one span."""
    with span(label):
        return func(*args)


def add(label: str, start: float, end: float, note: str = "") -> None:
    """A span measured elsewhere (``start`` and ``end`` from ``now()``)."""
    if RECORDER is not None:
        RECORDER.add(label, start, end, note)


def now() -> float:
    """Seconds since the process started (0 while nothing is recorded)."""
    return 0.0 if RECORDER is None else RECORDER.now()


def write(stream: IO[str]) -> None:
    """The breakdown, with the moment pytest is about to exit as its last line."""
    if RECORDER is None:
        return
    recorder = RECORDER
    stream.write("\n".join([HEADER, *recorder.lines(), f"{recorder.now():8.3f} {0:7.3f}  pytest exits"]) + "\n")
    stream.flush()


class PytestSteps:
    """pytest's own steps as spans: collection, the test loop, each test, the summary; printed at exit."""

    @pytest.hookimpl(wrapper=True)
    def pytest_collection(self) -> Generator[None, object, object]:
        with span("collection"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self) -> Generator[None, object, object]:
        with span("test loop"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        with span(f"test {item.name}"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_terminal_summary(self) -> Generator[None, object, object]:
        with span("terminal summary"):
            return (yield)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        write(sys.stderr)


def register(config: pytest.Config) -> None:
    """With ``EXPRUN_TIMINGS`` set: mark pytest's start-up so far, and follow pytest's own steps."""
    if RECORDER is None:
        return
    RECORDER.add("pytest start to exprun's configure", 0.0, RECORDER.now())
    config.pluginmanager.register(PytestSteps(), "exprun-timings")
