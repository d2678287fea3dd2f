"""Each run as one SLURM job, submitted through submitit.

The job calls ``run_trainer`` on its node and returns the ``RunResult``, so the log file
(on storage the nodes share) and every number are exactly those of a local run. A job
that fails, is cancelled or hits its time limit fails its seed with a ``Failure`` naming
the job id. Job states are read with ``squeue`` (and ``sacct`` where accounting exists),
not only submitit's ``sacct`` watcher, so clusters without accounting work too.
"""

from __future__ import annotations

import subprocess
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..trainer import bytecode
from ..trainer.lines import LineParser, log_lines, parse_step_line
from ..trainer.runner import (
    EVALUATION_FAILURES,
    TAIL_LINES,
    evaluated_again,
    Failure,
    RunResult,
    RunSpec,
    parse_lines,
    run_trainer,
)
from . import Executor, ExecutorError, LineSink, RunHandle

if TYPE_CHECKING:
    from ..settings import Settings
    from .options import SlurmSettings

#: States of a job that may still produce a result.
ACTIVE_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
})
#: How a job that ended without a result fails its seed.
ENDED_AS = {
    "CANCELLED": Failure.CANCELLED,
    "TIMEOUT": Failure.TIMEOUT,
    "DEADLINE": Failure.TIMEOUT,
    "OUT_OF_MEMORY": Failure.SIGNAL,
    "NODE_FAIL": Failure.SIGNAL,
    "PREEMPTED": Failure.SIGNAL,
    "BOOT_FAIL": Failure.NOT_STARTED,
}
STATE_POLL_S = 1.0
#: A job that left the queue may take a moment before its result file is visible here.
RESULT_GRACE_S = 10.0


def run_on_node(spec: RunSpec) -> RunResult:
    """The job's body: the same trainer run as the local executor's, on the node."""
    return run_trainer(spec)


def job_state(job_id: str) -> str | None:
    """The job's SLURM state (e.g. RUNNING, CANCELLED), or None once SLURM has forgotten it."""
    for command in (
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
    ):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        words = out.split()
        if words:
            return words[0].rstrip("+").upper()  # sacct writes "CANCELLED by 0"
    return None


def _log_tail(path: Path) -> tuple[str, ...]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return tuple(line.rstrip("\n") for line in deque(handle, maxlen=TAIL_LINES))
    except OSError:
        return ()


def reparse(result: RunResult, parse_line: LineParser) -> RunResult:
    """Apply a project's own line parser (it may hold pytest objects, so it stays on this side).

    The node parsed with the default parser; the log it wrote is read again here and the
    val_loss and failure are decided by the same rules as in ``run_trainer``.
    """
    if parse_line is parse_step_line or result.failure not in (None, *EVALUATION_FAILURES):
        return result
    try:
        evals = parse_lines(log_lines(result.spec.log_path), parse_line)
    except OSError:
        return result
    return evaluated_again(result, evals)


class _Job(RunHandle):
    """One submitted job; ``result`` maps whatever happened to it onto a ``RunResult``."""

    def __init__(self, spec: RunSpec, parse_line: LineParser, job: Any, time_minutes: int) -> None:
        self.spec = spec
        self.job = job
        self._parse_line = parse_line
        self._time_minutes = time_minutes
        self._submitted = time.time()
        self._ended: str | None = None  # the state a job ended in without a result
        self._left_queue_at: float | None = None
        self._checked_at = 0.0
        self._result: RunResult | None = None

    @property
    def where(self) -> str:
        return f"SLURM job {self.job.job_id}, files in {self.job.paths.folder}"

    def _has_result(self) -> bool:
        return Path(self.job.paths.result_pickle).exists()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._result is not None or self._ended is not None or self._has_result():
                return True
            if time.monotonic() - self._checked_at >= STATE_POLL_S:
                self._checked_at = time.monotonic()
                self._look_at_state()
                if self._ended is not None:
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.1, remaining))

    def _look_at_state(self) -> None:
        state = job_state(str(self.job.job_id))
        if state in ACTIVE_STATES:
            self._left_queue_at = None
            return
        # Finished (or forgotten) without a result file yet: allow shared storage to catch up.
        self._left_queue_at = self._left_queue_at or time.monotonic()
        if state in ENDED_AS or time.monotonic() - self._left_queue_at > RESULT_GRACE_S:
            self._ended = state or "UNKNOWN"

    def result(self) -> RunResult:
        while not self.wait(5.0):
            pass
        if self._result is None:
            self._result = self._collect()
        return self._result

    def _collect(self) -> RunResult:
        if self._has_result():
            try:
                outcome: RunResult = self.job.result()
            except Exception as exc:  # noqa: BLE001 - submitit re-raises whatever happened on the node
                last = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
                return self._failed(Failure.NOT_STARTED, f"{self.where}; on the node: {last[0]}")
            outcome = replace(reparse(outcome, self._parse_line), where=f"SLURM job {self.job.job_id}")
            if outcome.ok:
                return outcome
            # scancel or the time limit signal the trainer, which the node then reports as
            # an ordinary signal: SLURM's own word for what happened is the clearer one.
            state = self._final_state()
            if state not in ENDED_AS:
                return outcome
            self._ended = state
        state = self._ended or "UNKNOWN"
        failure = ENDED_AS.get(state, Failure.NOT_STARTED)
        what = {
            Failure.CANCELLED: f"job cancelled ({state})",
            Failure.TIMEOUT: f"job reached its time limit ({state}, --exprun-slurm-time={self._time_minutes} min)",
        }.get(failure, f"job ended as {state} without a result; see its stderr")
        return self._failed(failure, f"{self.where}: {what}")

    def _final_state(self) -> str | None:
        deadline = time.monotonic() + RESULT_GRACE_S
        while True:
            state = job_state(str(self.job.job_id))
            if state not in ACTIVE_STATES or time.monotonic() > deadline:
                return state
            time.sleep(STATE_POLL_S / 2)

    def _failed(self, failure: Failure, where: str) -> RunResult:
        # The spec's own time-out did not fire here; keep it out of the message.
        spec = replace(self.spec, timeout=None)
        return RunResult(spec, None, time.time() - self._submitted, (), None, failure,
                         _log_tail(self.spec.log_path), self._submitted, where)

    def cancel(self) -> None:
        if self._result is None and self._ended is None and not self._has_result():
            try:
                self.job.cancel(check=False)
            except (OSError, subprocess.SubprocessError):
                pass


class _NotSubmitted(RunHandle):
    """sbatch refused the job: the seed fails at once, with sbatch's reason."""

    def __init__(self, spec: RunSpec, reason: str) -> None:
        self._result = RunResult(spec, None, 0.0, (), None, Failure.NOT_STARTED, (), time.time(),
                                 f"sbatch refused the job: {reason}")

    def result(self) -> RunResult:
        return self._result


class SlurmExecutor(Executor):
    streams_output = False
    eager = True

    def __init__(self, options: "SlurmSettings", folder: Path) -> None:
        try:
            import submitit
        except ImportError:
            raise ExecutorError(
                "--exprun-executor=slurm needs submitit: pip install 'pytest-exprun[slurm]'"
            ) from None
        self.options = options
        self.folder = folder
        self._executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=0)
        parameters: dict[str, Any] = {
            "time": options.time_minutes,
            "job_name": "exprun",
            "nodes": 1,
            "ntasks_per_node": 1,
            "additional_parameters": dict(options.extra),
        }
        if options.partition:
            parameters["partition"] = options.partition
        if options.gpus_per_job:
            parameters["gpus_per_node"] = options.gpus_per_job
        self._executor.update_parameters(**parameters)
        self._jobs: list[_Job] = []

    @classmethod
    def from_settings(cls, settings: "Settings") -> "SlurmExecutor":
        """The executor for ``--exprun-executor=slurm``; its options are checked here (one line if bad)."""
        from .options import slurm_settings

        options = slurm_settings(settings.executor_options, settings.rootdir, settings.research_dir)
        return cls(options, options.folder or settings.state_dir / "slurm")

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        # on_line is ignored: the trainer's lines are on the node, in the shared log file.
        # A node keeps its own Python's bytecode: this machine's cache folder may not exist there.
        spec = replace(spec, env=bytecode.without_cache(spec.env))
        try:
            job = self._executor.submit(run_on_node, spec)
        except Exception as exc:  # noqa: BLE001 - submitit wraps sbatch's error in several types
            return _NotSubmitted(spec, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__)
        handle = _Job(spec, parse_line, job, self.options.time_minutes)
        self._jobs.append(handle)
        return handle

    def close(self, cancel: bool) -> None:
        if cancel:
            for job in self._jobs:
                job.cancel()
