"""Each run as one Ray task, on a local Ray cluster, an existing one, or KubeRay.

The task runs ``run_trainer`` on its node exactly as ``local`` does (``ray_node``), so the log,
the numbers and the reports are those of a local run; its lines stream back while it runs.
Runs are submitted up front and take ``--exprun-ray-gpus-per-run`` GPUs each, so Ray places
one run per GPU (with ``CUDA_VISIBLE_DEVICES`` set by Ray). Code reaches the nodes through a
shared filesystem, or, for a ``ray://`` address (a driver outside the cluster), as a Ray
``working_dir`` holding the project, with this package as a ``py_modules`` entry.

Nothing waits forever: a request no node can hold fails its seed at once, a run that stays
queued while none of this session's runs is running fails after ``PENDING_TIMEOUT_S``, and a
task lost with its worker or node is run once more, then fails its seed in one line.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any


from ..trainer import bytecode
from ..trainer.lines import LineParser, parse_step_line
from ..trainer.runner import EVALUATION_FAILURES, Failure, RunLines, RunResult, RunSpec, evaluated_again
from . import Executor, ExecutorError, LineSink, RunHandle
from .ray_cluster import LOCAL, Cluster
from .ray_node import RUN_MARKER_ENV, Shipped, Started, end_leftovers, run_task

if TYPE_CHECKING:
    from ..settings import Settings

#: A run still queued this long, while none of the session's runs is running, fails its seed.
PENDING_TIMEOUT_S = 600.0
#: After a cancel: how long the task gets to end its trainer's group before its worker is killed.
CANCEL_GRACE_S = 15.0
#: How long past its time-out ``wait`` goes on reading what a task has already sent.
DRAIN_S = 0.5
#: Folders never shipped in a working_dir (besides what .gitignore leaves out).
NOT_SHIPPED = (".git", ".venv", "venv", ".ci-venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache")


def gpus_per_run(text: str) -> float | None:
    """``--exprun-ray-gpus-per-run``: empty means "1 if the cluster has GPUs, else 0"."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value > 1 and not value.is_integer()):
        raise ExecutorError(f"--exprun-ray-gpus-per-run must be 0, a fraction below 1 (e.g. 0.5) or a whole "
                            f"number of GPUs, got {text!r}")
    return value


def make_ray(settings: "Settings") -> Executor:
    """``--exprun-executor=ray``, from its two options in ``settings.executor_options``."""
    from .options import gpu_ids

    def get(name: str) -> str:
        return settings.executor_options.get(name, "")

    per_run = gpus_per_run(get("ray_gpus_per_run"))
    address = get("ray_address").strip()
    ship = address.startswith("ray://")
    runtime_env = shipped_project(settings) if ship else None
    gpus = gpu_ids(settings.executor_options) if address == LOCAL else ()
    return RayExecutor(Cluster(address, gpus, runtime_env), per_run, ship)


def shipped_project(settings: "Settings") -> dict[str, Any]:
    """The runtime_env for a driver outside the cluster: the project as working_dir, this package as a module.

    Ray zips the folder (files .gitignore names left out, and the research and checkpoints dirs,
    which stay here) and refuses a package over 512 MiB.
    """
    root = settings.rootdir
    excludes = list(NOT_SHIPPED)
    for folder in (settings.research_dir, settings.checkpoints_dir):
        if folder.is_relative_to(root):
            excludes.append(str(folder.relative_to(root)))
    return {"working_dir": str(root), "excludes": excludes, "py_modules": [str(Path(__file__).parents[1])]}


class RayExecutor(Executor):
    streams_output = False  # parallel runs' lines would interleave; each run's log has them all
    eager = True
    timing = "process"  # run_trainer times the whole trainer process on its node, as local does

    def __init__(self, cluster: Cluster, gpus_per_run: float | None, ship: bool = False) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ExecutorError("--exprun-executor=ray needs ray: pip install 'pytest-exprun[ray]'") from None
        self.cluster = cluster
        self.ship = ship
        self.ray = cluster.connect()
        try:
            has_gpus = self.ray.cluster_resources().get("GPU", 0) > 0
            self.gpus_per_run = gpus_per_run if gpus_per_run is not None else (1.0 if has_gpus else 0.0)
            # No retry by Ray: a streaming task's retry would skip the lines already read; see _lost.
            self._task = self.ray.remote(run_task).options(num_cpus=1, num_gpus=self.gpus_per_run, max_retries=0)
        except BaseException:
            cluster.disconnect()  # the session never saw this executor, so it would never close it
            raise
        self.runs: list[_RayRun] = []
        self._checked_at = -math.inf
        self._unfit: str | None = None

    def running(self) -> int:
        return sum(run.is_running for run in self.runs)

    def unfit(self) -> str | None:
        """Why no node could ever take a run (checked against the alive nodes, at most every 10 s)."""
        if time.monotonic() - self._checked_at > 10.0:
            self._checked_at = time.monotonic()
            nodes = [node.get("Resources", {}) for node in self.ray.nodes() if node.get("Alive")]
            if not any(r.get("GPU", 0) >= self.gpus_per_run and r.get("CPU", 0) >= 1 for r in nodes):
                most = max((r.get("GPU", 0) for r in nodes), default=0)
                self._unfit = (f"no node of {self.cluster.describe()} has {self.gpus_per_run:g} GPU(s) and a CPU for one "
                               f"run (the most GPUs on one node: {most:g}); lower --exprun-ray-gpus-per-run")
            else:
                self._unfit = None
        return self._unfit

    def start(self, spec: RunSpec) -> Any:
        if not self.cluster.started_here:  # other nodes keep their own Python's bytecode
            spec = replace(spec, env=bytecode.without_cache(spec.env))
        return self._task.remote(spec, self.ship, sys.executable)

    def submit(self, spec: RunSpec, on_line: LineSink | None, parse_line: LineParser) -> RunHandle:
        run = _RayRun(self, spec, parse_line)
        self.runs.append(run)
        return run

    def close(self, cancel: bool) -> None:
        for run in self.runs:
            run.cancel()
        deadline = time.monotonic() + CANCEL_GRACE_S
        for run in self.runs:
            run.wait(max(deadline - time.monotonic(), 0.0))
        for run in self.runs:
            run.kill()
        self.cluster.disconnect()
        if self.cluster.started_here:
            for run in self.runs:  # the same machine: a trainer whose worker died, ended for sure
                for marker in run.abandoned:
                    end_leftovers(marker)


class _RayRun(RunHandle):
    """One run's task (and its one retry); ``wait`` reads what the task has sent so far."""

    def __init__(self, executor: RayExecutor, spec: RunSpec, parse_line: LineParser) -> None:
        self.executor = executor
        self.spec = spec
        self.marker = ""  # the current attempt's (see ray_node.RUN_MARKER_ENV)
        #: Markers of attempts whose worker died or was killed: what they started may still run.
        self.abandoned: list[str] = []
        self._parse_line = parse_line
        self._submitted = time.time()
        self._queued_since = time.monotonic()
        self._attempt = 0
        self._result: RunResult | None = None
        self._cancelled = False
        self._task: Any = None
        self._started: Started | None = None
        self._lines = RunLines(None, parse_line)
        self._shipped: Shipped | None = None
        unfit = executor.unfit()
        if unfit is not None:
            self._result = self._failed(Failure.NOT_STARTED, unfit)
        else:
            self._launch()

    @property
    def is_running(self) -> bool:
        return self._result is None and self._started is not None

    def _launch(self) -> None:
        self._attempt += 1
        self._started = None
        self._lines = RunLines(None, self._parse_line)
        self._queued_since = time.monotonic()
        self.marker = uuid.uuid4().hex
        env = {**self.spec.env, RUN_MARKER_ENV: self.marker}
        self._task = self.executor.start(replace(self.spec, env=env))

    def wait(self, timeout: float) -> bool:
        ray = self.executor.ray
        deadline = time.monotonic() + timeout
        while self._result is None:
            ready, _ = ray.wait([self._task], timeout=max(min(deadline - time.monotonic(), 0.5), 0.0))
            if ready:
                self._take_next()
                if time.monotonic() < deadline + DRAIN_S:
                    continue  # what is ready is read at once, so a chatty run never falls behind
            elif self._started is None and not self._cancelled:
                self._check_queued()
            if self._result is None and time.monotonic() >= deadline:
                return False
        return True

    def _take_next(self) -> None:
        ray = self.executor.ray
        try:
            item = ray.get(next(self._task))
        except StopIteration:
            self._result = self._failed(Failure.NOT_STARTED, "the Ray task ended without a result")
        except ray.exceptions.TaskCancelledError:
            self._result = self._failed(Failure.CANCELLED, "Ray task cancelled")
        except ray.exceptions.RayTaskError as exc:  # raised by exprun's code on the node: the same every time
            cause = exc.cause if exc.cause is not None else exc
            if isinstance(cause, ray.exceptions.TaskCancelledError) or isinstance(cause, KeyboardInterrupt):
                self._result = self._failed(Failure.CANCELLED, "Ray task cancelled")
            else:
                self._result = self._failed(Failure.NOT_STARTED, f"on the node: {type(cause).__name__}: {cause}")
        except ray.exceptions.RayError as exc:  # the worker or its node died, or the object was lost
            self._lost(exc)
        else:
            self._note(item)

    def _note(self, item: object) -> None:
        if isinstance(item, Started):
            self._started = item
        elif isinstance(item, list):
            self._lines(item)
        elif isinstance(item, Shipped):
            self._shipped = item
        elif isinstance(item, RunResult):
            self._result = self._finished(item)

    def _lost(self, exc: BaseException) -> None:
        what = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        self.abandoned.append(self.marker)
        if self._started is not None and self._started.node_id:
            self._end_leftovers_on(self._started.node_id)
        if self._cancelled:
            self._result = self._failed(Failure.CANCELLED, "Ray task cancelled")
        elif self._attempt < 2:
            self._launch()
        else:
            self._result = self._failed(
                Failure.WORKER_LOST, f"Ray task lost with its worker or node twice, the second time as "
                f"{type(exc).__name__} ({what}); the next session runs it again")

    def _end_leftovers_on(self, node_id: str) -> None:
        """A trainer outlives its killed worker: end it on that node (if the node is still there)."""
        ray = self.executor.ray
        try:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            ray.remote(end_leftovers).options(
                num_cpus=0, max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(self.marker)
        except Exception:  # noqa: BLE001 - a node that is gone has nothing left to end
            pass

    def _finished(self, result: RunResult) -> RunResult:
        """The node's result, with the project's own line parser applied to the lines that came back."""
        if self._shipped is not None:
            self._unpack(self._shipped)
        if self._parse_line is not parse_step_line and result.failure in (None, *EVALUATION_FAILURES):
            result = evaluated_again(result, self._lines.evals)
        if not result.ok and self._started is not None:
            result = replace(result, where=result.where or self._where())
        return result

    def _unpack(self, shipped: Shipped) -> None:
        """A shipped run's log and small output files, written where a local run leaves them."""
        _write(self.spec.log_path, shipped.log)
        for name, data in shipped.files.items():
            target = (self.spec.output_dir / name).resolve()
            if target.is_relative_to(self.spec.output_dir.resolve()):
                _write(target, data)

    def _check_queued(self) -> None:
        if self.executor.running() == 0 and time.monotonic() - self._queued_since > PENDING_TIMEOUT_S:
            self.kill()
            self._result = self._failed(Failure.NOT_STARTED, (
                f"queued {PENDING_TIMEOUT_S:g}s on {self.executor.cluster.describe()} while none of this session's "
                f"runs ran: no node had {self.executor.gpus_per_run:g} GPU(s) and a CPU free "
                f"(free now: {_free(self.executor.ray)})"))
        elif self.executor.running():
            self._queued_since = time.monotonic()

    def _where(self) -> str:
        s = self._started
        assert s is not None
        gpus = f", CUDA_VISIBLE_DEVICES={s.gpus}" if s.gpus is not None else ""
        return f"Ray task on {s.host}, pid {s.pid}{gpus}, attempt {self._attempt}"

    def _failed(self, failure: Failure, what: str) -> RunResult:
        where = f"{self._where()}: {what}" if self._started is not None else what
        spec = replace(self.spec, timeout=None)  # the run's own time-out did not fire
        return RunResult(spec, None, time.time() - self._submitted, (), None, failure, tuple(self._lines.tail),
                         self._submitted, where)

    def result(self) -> RunResult:
        while not self.wait(5.0):
            pass
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Ask the task to stop: Ray raises KeyboardInterrupt in it, which ends the trainer's group."""
        if self._result is None and not self._cancelled and self._task is not None:
            self._cancelled = True
            try:
                self.executor.ray.cancel(self._task)
            except Exception:  # noqa: BLE001 - a task that already ended cannot be cancelled
                pass

    def kill(self) -> None:
        """Stop a task that ignored its cancel: its worker is killed, and what it left is ended."""
        if self._result is not None or self._task is None:
            return
        try:
            self.executor.ray.cancel(self._task, force=True)
        except Exception:  # noqa: BLE001 - a task that already ended cannot be cancelled
            pass
        self.abandoned.append(self.marker)
        if self._started is not None and self._started.node_id:
            self._end_leftovers_on(self._started.node_id)
        self._result = self._failed(Failure.CANCELLED, "Ray task cancelled")


def _free(ray: Any) -> str:
    free = ray.available_resources()
    return ", ".join(f"{key} {free[key]:g}" for key in ("GPU", "CPU") if key in free) or "nothing"


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: written beside, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
