"""The Ray executor's node side: one run as one Ray task, the same trainer run as ``local``'s.

The task body is a generator (a Ray streaming task): it says where it started, then yields the
trainer's lines in batches while ``run_trainer`` runs in a thread, then the ``RunResult``. The
driver reads the lines as they come (for the project's own line parser and a failure's last
lines) without any actor or shared file. Nothing here imports pytest or ray: a node needs only
this package and the trainer's own environment.

With a shared filesystem the spec runs unchanged. With the project shipped as a Ray
``working_dir`` the spec is moved onto the node's copy (``moved_spec``), and the log and the
output dir's small files travel back with the result.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ..trainer.procgroup import strays, terminate_then_kill
from ..trainer.runner import RunResult, RunSpec, run_trainer

#: Set in every Ray run attempt's environment, so that a trainer whose worker died (and which
#: lives on in its own process group, unseen) can be found and ended on its node.
RUN_MARKER_ENV = "EXPRUN_RAY_RUN"
#: How often the task sends what the trainer printed meanwhile.
BATCH_S = 0.2
#: Output-dir files brought back from a node without a shared filesystem (metrics, result file).
SMALL_FILE_BYTES = 1 << 20
SMALL_FILES_TOTAL = 16 << 20
STRAY_GRACE_S = 3.0


@dataclass(frozen=True)
class Started:
    """The first thing a task yields: where its trainer runs."""

    node_id: str
    host: str
    pid: int
    gpus: str | None


@dataclass(frozen=True)
class Shipped:
    """What a node without the shared filesystem sends back besides the result."""

    log: bytes
    files: dict[str, bytes]


def moved_spec(spec: RunSpec, here: Path, scratch: Path, driver_python: str) -> RunSpec:
    """The spec as it runs on a node's copy of the project (``here`` stands for the rootdir).

    Paths under the rootdir (in the argv, the environment, the output dir and the log) move under
    ``here``; the output dir and log, if outside the rootdir, move under ``scratch``; the driver's
    Python becomes the node's.
    """
    root = str(spec.cwd) if spec.cwd is not None else None

    def move(word: str) -> str:
        if word == driver_python:
            return sys.executable
        if root and (word == root or word.startswith(root + os.sep)):
            return str(here) + word[len(root):]
        for old, new in moved.items():
            if word == old or word.startswith(old + os.sep):
                return new + word[len(old):]
        return word

    moved = {}
    for path, name in ((spec.output_dir, "output"), (spec.log_path.parent, "log")):
        if not (root and str(path).startswith(root + os.sep)):
            moved[str(path)] = str(scratch / name)
    return replace(
        spec,
        argv=tuple(move(word) for word in spec.argv),
        env={key: move(value) for key, value in spec.env.items()},
        cwd=here,
        output_dir=Path(move(str(spec.output_dir))),
        log_path=Path(move(str(spec.log_path))),
    )


def small_files(folder: Path) -> dict[str, bytes]:
    """The output dir's small files by relative path (metrics, a result file; not checkpoints)."""
    found: dict[str, bytes] = {}
    total = 0
    for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            if path.is_symlink() or not path.is_file() or path.stat().st_size > SMALL_FILE_BYTES:
                continue
            data = path.read_bytes()
            if total + len(data) > SMALL_FILES_TOTAL:
                break
            found[str(path.relative_to(folder))] = data
            total += len(data)
    return found


def end_leftovers(marker: str) -> None:
    """End the processes of one run attempt still running here (its worker died or was killed)."""
    entry = f"{RUN_MARKER_ENV}={marker}".encode()
    terminate_then_kill(lambda: strays(entry), STRAY_GRACE_S)


def run_task(spec: RunSpec, ship: bool, driver_python: str) -> Iterator[object]:
    """The Ray task: ``Started``, batches of lines (lists of str), [``Shipped``], the ``RunResult``."""
    marker = spec.env.get(RUN_MARKER_ENV, "")
    ray = sys.modules.get("ray")  # imported by the Ray worker running this; never started from here
    node_id = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""
    yield Started(node_id, socket.gethostname(), os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    here = Path.cwd()
    run = moved_spec(spec, here, here / ".exprun-ray" / marker, driver_python) if ship else spec
    if ship:
        shutil.rmtree(run.output_dir, ignore_errors=True)
        run.output_dir.mkdir(parents=True, exist_ok=True)
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    cancel = threading.Event()
    outcome: list[RunResult | BaseException] = []

    def body() -> None:
        try:
            outcome.append(run_trainer(run, lines.put, cancel))
        except BaseException as exc:  # noqa: BLE001 - raised again in the task, where Ray reports it
            outcome.append(exc)
        finally:
            lines.put(None)

    worker = threading.Thread(target=body, name="exprun-ray-run", daemon=True)
    worker.start()
    try:
        yield from _batches(lines)
    except BaseException:
        # Cancelled (Ray raises KeyboardInterrupt here) or the driver went away: end the trainer's group.
        cancel.set()
        worker.join()
        raise
    worker.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    result = outcome[0]
    if ship:
        log = b""
        with contextlib.suppress(OSError):
            log = run.log_path.read_bytes()
        yield Shipped(log, small_files(run.output_dir))
        shutil.rmtree(run.output_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run.log_path.unlink()
    yield replace(result, spec=spec)


def _batches(lines: queue.SimpleQueue[str | None]) -> Iterator[list[str]]:
    """What the trainer printed, every ``BATCH_S`` seconds, until its run is over."""
    batch: list[str] = []
    deadline = time.monotonic() + BATCH_S
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            pass
        else:
            if line is None:
                if batch:
                    yield batch
                return
            batch.append(line)
            if time.monotonic() < deadline:
                continue
        if batch:
            yield batch
            batch = []
        deadline = time.monotonic() + BATCH_S
