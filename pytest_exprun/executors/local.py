"""The default executor: one run at a time, in the calling thread, started when its test runs."""

from __future__ import annotations

import threading

from ..runner import LineParser, RunResult, RunSpec, run_trainer
from . import Executor, LineSink, RunHandle


class _WhenAsked(RunHandle):
    def __init__(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> None:
        self._spec = spec
        self._on_line = on_line
        self._parse_line = parse_line
        self._cancel = threading.Event()
        self._result: RunResult | None = None

    def result(self) -> RunResult:
        if self._result is None:
            self._result = run_trainer(self._spec, self._on_line, self._cancel, self._parse_line)
        return self._result

    def cancel(self) -> None:
        self._cancel.set()


class LocalExecutor(Executor):
    streams_output = True
    eager = False

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        return _WhenAsked(spec, on_line, parse_line)
