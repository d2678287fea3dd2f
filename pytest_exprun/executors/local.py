"""The default executor: one run at a time, in the calling thread, started when its test runs."""

from __future__ import annotations

from ..trainer.lines import LineParser
from ..trainer.runner import RunSpec, run_trainer
from . import Executor, LazyRun, LineSink, RunHandle


class LocalExecutor(Executor):
    streams_output = True
    eager = False

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        return LazyRun(lambda cancel: run_trainer(spec, on_line, cancel, parse_line))
