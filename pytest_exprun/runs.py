"""What a run is given and what it leaves behind: its output dir, its environment, and the record
made from a finished ``RunResult`` (with what the trainer's ``metrics.json`` says)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from .decide import protocol
from .decide.protocol import ENVIRONMENT_KEYS, TIMING_KEY
from .trainer.runner import RunResult
from .settings import Settings
from .model import RunRecord


def read_metrics(output_dir: Path) -> tuple[dict[str, object], float]:
    """What machine, framework, data and preset a run used, and its one-time work in seconds,
    if the trainer wrote a ``metrics.json`` (``train_llm.py`` does; other trainers need not)."""
    try:
        metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}, 0.0
    if not isinstance(metrics, dict):
        return {}, 0.0
    found = {key: metrics[key] for key in ENVIRONMENT_KEYS if isinstance(metrics.get(key), (str, int, float))}
    config = metrics.get("config")
    if isinstance(config, dict) and isinstance(config.get("preset"), str):
        found["preset"] = config["preset"]  # a tiny baseline never judges a small experiment
    one_time = metrics.get("one_time_s")
    ok = isinstance(one_time, (int, float)) and not isinstance(one_time, bool) and 0 <= one_time < float("inf")
    return found, float(one_time) if ok else 0.0


def bytecode_cache_env(settings: Settings) -> dict[str, str]:
    """With ``--exprun-bytecode-cache``: compiled Python kept in the checkpoints dir between runs.

    An empty PYTHONDONTWRITEBYTECODE turns that setting off (Python reads only non-empty values).
    """
    if not settings.bytecode_cache:
        return {}
    return {"PYTHONPYCACHEPREFIX": str(settings.checkpoints_dir / ".pycache"), "PYTHONDONTWRITEBYTECODE": ""}


def research_tag(research_dir: Path) -> str:
    """A folder name unique to a research dir, so two research dirs never share checkpoint dirs."""
    digest = hashlib.sha256(str(research_dir.resolve()).encode()).hexdigest()[:8]
    return f"{protocol.safe_name(research_dir.name) or 'research'}-{digest}"


def output_dir(settings: Settings, group: str, seed: int) -> Path:
    """A run's own folder: unique per research dir, group, scale and seed (emptied before each run)."""
    return settings.checkpoints_dir / research_tag(settings.research_dir) / f"{group}_{settings.scale}_seed{seed}"


def record_of(result: RunResult, setup_key: str, timing: str, log: str) -> RunRecord:
    """The stored form of one successful run; one-time work is not counted in its wall time."""
    assert result.val_loss is not None
    environment, one_time = read_metrics(result.spec.output_dir)
    environment[TIMING_KEY] = timing
    return RunRecord(
        group=result.spec.group,
        seed=result.spec.seed,
        val_loss=result.val_loss,
        # One-time work (building a corpus cache the later runs reuse) is not this run's cost.
        wall_time=max(result.wall_time - min(one_time, result.wall_time), 0.0),
        setup_key=setup_key,
        curve=[tuple(p) for p in result.curve],  # type: ignore[misc]
        argv=list(result.spec.argv),
        log=log,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(result.started_at + result.wall_time)),
        extra={"environment": environment, "one_time_s": one_time},
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
