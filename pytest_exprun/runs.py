"""What a run is given and what it leaves behind: its output dir, its environment, and the record
made from a finished ``RunResult`` (with what the trainer's ``metrics.json`` says)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import pytest

from . import names
from .executors import Executor, ExecutorError
from .model import BaselineSnapshot, RunRecord, Setup
from .settings import Settings
from .trainer import bytecode, fingerprint, provenance
from .trainer.interface import run_environment
from .trainer.provenance import Provenance
from .trainer.runner import RunResult, RunSpec


def read_metrics(output_dir: Path) -> tuple[dict[str, object], float]:
    """What machine, framework, data and preset a run used, and its one-time work in seconds,
    if the trainer wrote a ``metrics.json`` (``train_llm.py`` does; other trainers need not)."""
    try:
        metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}, 0.0
    if not isinstance(metrics, dict):
        return {}, 0.0
    from .decide.protocol import ENVIRONMENT_KEYS  # the rules (and numpy) only once a run is read back

    found = {key: metrics[key] for key in ENVIRONMENT_KEYS if isinstance(metrics.get(key), (str, int, float))}
    config = metrics.get("config")
    if isinstance(config, dict) and isinstance(config.get("preset"), str):
        found["preset"] = config["preset"]  # a tiny baseline never judges a small experiment
    one_time = metrics.get("one_time_s")
    if isinstance(one_time, (int, float)) and not isinstance(one_time, bool) and 0 <= one_time < float("inf"):
        return found, float(one_time)
    return found, 0.0


def research_tag(research_dir: Path) -> str:
    """A folder name unique to a research dir, so two research dirs never share checkpoint dirs."""
    digest = hashlib.sha256(str(research_dir.resolve()).encode()).hexdigest()[:8]
    return f"{names.safe_name(research_dir.name) or 'research'}-{digest}"


def output_dir(settings: Settings, group: str, seed: int) -> Path:
    """A run's own folder: unique per research dir, group, scale and seed (emptied before each run)."""
    return settings.checkpoints_dir / research_tag(settings.research_dir) / f"{group}_{settings.scale}_seed{seed}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        return None
    return float(value)


def read_measures(output_dir: Path) -> dict[str, float]:
    """CPU time, GPU time and tokens/s as the trainer's ``metrics.json`` reports them (any it has)."""
    try:
        metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    found = {}
    for key, names_ in (("cpu_time", ("cpu_time", "cpu_time_s")), ("gpu_time", ("gpu_time", "gpu_time_s")),
                        ("tokens_per_second", ("tokens_per_second", "tokens_per_s"))):
        value = next((v for n in names_ if (v := _number(metrics.get(n))) is not None), None)
        if value is not None:
            found[key] = value
    return found


def measures_of(result: RunResult, wall_time: float) -> tuple[float | None, float | None, float | None]:
    """A run's CPU time (its process tree's, else the trainer's own), GPU time and throughput (tokens/s).

    Throughput is what the trainer reports, else the train tokens over the run's wall time.
    """
    reported = read_measures(result.spec.output_dir)
    cpu = result.cpu_time if result.cpu_time is not None else reported.get("cpu_time")
    speed = reported.get("tokens_per_second")
    tokens = _number(_int_or_none(result.spec.env.get("EXPRUN_TRAIN_TOKENS")))
    if speed is None and tokens is not None and wall_time > 0:
        speed = tokens / wall_time
    return cpu, reported.get("gpu_time"), speed


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def record_of(result: RunResult, setup_key: str, timing: str, log: str, settings: Settings) -> RunRecord:
    """The stored form of one successful run; one-time work is not counted in its wall time."""
    from .decide.protocol import TIMING_KEY

    assert result.val_loss is not None
    environment, one_time = read_metrics(result.spec.output_dir)
    environment[TIMING_KEY] = timing
    # One-time work (building a corpus cache the later runs reuse) is not this run's cost.
    wall_time = max(result.wall_time - min(one_time, result.wall_time), 0.0)
    cpu_time, gpu_time, tokens_per_second = measures_of(result, wall_time)
    return RunRecord(
        group=result.spec.group,
        seed=result.spec.seed,
        val_loss=result.val_loss,
        wall_time=wall_time,
        setup_key=setup_key,
        curve=[tuple(p) for p in result.curve],  # type: ignore[misc]
        argv=list(result.spec.argv),
        log=log,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(result.started_at + result.wall_time)),
        extra={"environment": environment, "one_time_s": one_time},
        cpu_time=cpu_time, gpu_time=gpu_time, tokens_per_second=tokens_per_second,
        traced=traced_json(result.spec.log_path, settings),
    )


def check_trainer(settings: Settings) -> None:
    """The trainer command names a program that exists (and its script, if it names one): before any run."""
    argv = settings.argv_prefix()
    program = argv[0]
    if shutil.which(program) is None and not (
        Path(program).is_file() and Path(program).stat().st_mode & 0o111
    ):
        raise pytest.UsageError(
            f"trainer command {program!r} is not an executable program; "
            "fix --exprun-command (or exprun_command in your ini file)"
        )
    for arg in settings.command[1:]:
        if arg.endswith(".py") and not arg.startswith("-"):
            path = Path(arg) if Path(arg).is_absolute() else settings.rootdir / arg
            if not path.is_file():
                raise pytest.UsageError(
                    f"trainer file {path} does not exist; fix --exprun-command "
                    f"(currently {' '.join(settings.command)!r})"
                )


def setup_of(settings: Settings, flags: tuple[str, ...]) -> tuple[Setup, fingerprint.Fingerprint]:
    """What defines a group's runs: the command, its trainer I/O, the tokens, the flags and the files' hashes."""
    s = settings
    found = fingerprint.setup_files(s.command, flags, s.rootdir, s.fingerprint_include, s.fingerprint_exclude,
                                    env_names=s.fingerprint_env)
    # Non-default trainer I/O settings change what a run measures: part of the setup.
    setup = Setup(command=(*s.command, *s.trainer_io.identity()), train_tokens=s.train_tokens, flags=flags,
                  fingerprint=found.to_json())
    return setup, found


def spec_of(settings: Settings, group: str, seed: int, flags: tuple[str, ...],
            build_argv: Callable[..., Any], log_path: Path) -> RunSpec:
    """What one seed's run is given: its argv (``pytest_exprun_build_argv`` may rewrite it), dirs and env.

    The env includes the tracer's (``provenance_env``): what the run's Python processes read joins its record.
    """
    s = settings
    out = output_dir(s, group, seed)
    template = s.trainer_io.argv
    argv = [*s.argv_prefix(), *template.render(seed=seed, train_tokens=s.train_tokens, output_dir=out), *flags]
    custom = build_argv(argv=list(argv))
    if custom is not None:
        argv = [str(a) for a in custom]
    return RunSpec(
        label=f"{group}[seed{seed}]", group=group, seed=seed, argv=tuple(argv), output_dir=out, log_path=log_path,
        timeout=s.timeout, cwd=s.rootdir,
        env={**run_environment(seed, s.train_tokens, out, template.steps(s.train_tokens)), **bytecode.environment(s.bytecode_cache),
             **provenance_env(s, out, log_path)},
    )


def make_executor(config: pytest.Config, settings: Settings) -> Executor:
    """The executor a ``pytest_exprun_make_executor`` implementation returns for ``settings.executor``."""
    try:
        executor = config.hook.pytest_exprun_make_executor(config=config, settings=settings)
    except ExecutorError as exc:
        raise pytest.UsageError(str(exc)) from None
    if executor is None:  # the executors' own hook wrapper names the known executors; this is a fall-back
        raise pytest.UsageError(f"no executor is called {settings.executor!r}; one comes from a plugin or "
                                "conftest.py implementing pytest_exprun_make_executor")
    return executor  # type: ignore[no-any-return]


# ------------------------------------------------------------ run-time provenance
def provenance_env(settings: Settings, output_dir: Path, log_path: Path) -> dict[str, str]:
    """The environment that traces what a run's Python processes read (see ``trainer.provenance``)."""
    skip = (output_dir, settings.checkpoints_dir, settings.research_dir)
    return provenance.environment(provenance.trace_path(log_path), settings.rootdir, skip, os.environ)


def untraced(env: dict[str, str]) -> dict[str, str]:
    """The environment of a process that outlives its runs (a warm worker, a fork server): untraced.

    Started with the first run's trace file, it would write every later run's reads into that
    one trace; its runs are not traced per run instead (docs/reliability.md).
    """
    return {k: v for k, v in env.items() if k != provenance.TRACE_ENV}


def clear_trace(log_path: Path) -> None:
    """Before a run: a trace left by an earlier attempt at the same seed must not be appended to."""
    with contextlib.suppress(FileNotFoundError):
        provenance.trace_path(log_path).unlink()


def traced_json(log_path: Path, settings: Settings) -> dict[str, Any] | None:
    """A record's ``traced`` field: what its run read; None when nothing was traced.

    ``exprun_fingerprint_exclude`` applies here too: a file the trainer reads that is not part of
    its setup (its own earlier results, a notes file) can be left out by name.
    """
    found = provenance.read_trace(provenance.trace_path(log_path), settings.rootdir, settings.fingerprint_exclude)
    return None if found is None else found.to_json()


def traced_of(record: RunRecord) -> Provenance | None:
    return provenance.of_json(record.traced)


def unless_stale(record: RunRecord | None, rootdir: Path, say: Callable[[str], None]) -> RunRecord | None:
    """A stored run to reuse, or None (saying why) when what it read while it ran is different now."""
    traced = None if record is None else traced_of(record)
    changed = [] if traced is None else provenance.changes(traced, rootdir)
    if record is None or not changed:
        return record
    say(f"{record.group}[seed{record.seed}]: the stored run is not reused, what it read changed "
        f"({'; '.join(changed)}); it runs again")
    return None


def new_snapshot(setup: Setup, records: Iterable[RunRecord], git_commit: str | None,
                 measured_at: str) -> tuple[BaselineSnapshot, str | None]:
    """A finished baseline's snapshot with what its runs read, and one line naming what only the runs revealed."""
    records = list(records)
    traced = provenance.merge(traced_of(r) for r in records)
    snapshot = BaselineSnapshot(setup.to_json(), setup.key(), tuple(r.seed for r in records), git_commit,
                                measured_at, None if traced is None else traced.to_json())
    if traced is None:
        return snapshot, None
    extra = provenance.runtime_only(traced, dict(setup.fingerprint.get("files", {})))
    line = (f"traced at run time: {provenance.describe(traced)}"
            + (f"; found only at run time (not by the static scan): {', '.join(extra)}" if extra else ""))
    return snapshot, line


def read_otherwise(label: str, record: RunRecord, others: Iterable[RunRecord]) -> str | None:
    """Why a run is not recorded: it read files in another version than ``others`` (the baseline's runs).

    A file edited during a session, between two runs, would otherwise mix two setups in one
    comparison; the static files are checked around every run, these only after it.
    """
    mine = traced_of(record)
    if mine is None:
        return None
    found: dict[str, None] = {}
    for other in others:
        theirs = traced_of(other)
        if other.seed == record.seed and other.group == record.group or theirs is None:
            continue
        digests = {f.name: f.sha256 for f in theirs.files}
        for f in mine.files:
            if digests.get(f.name, f.sha256) != f.sha256:
                found[f"{f.name} (sha256 {digests[f.name][:12]} → {f.sha256[:12]})"] = None
    if not found:
        return None
    return (f"{label}: it read {'; '.join(found)} in another version than the baseline's runs (changed during "
            "the session?); its result is not recorded, as runs of two versions are never mixed: re-measure "
            "the baseline with --exprun-rerun-baseline")
