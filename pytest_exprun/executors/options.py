"""The executors' own options: their rows in the option table, and their checks.

``settings.py`` adds these rows to its table (command line, ini file, ``--help``) and keeps
their raw text in ``Settings.executor_options``; only the executor that is chosen reads and
checks its own, when it is made, so a bad ``--exprun-slurm-time`` matters only with ``slurm``.
This module imports nothing heavy: pytest reads the table at start-up.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import ExecutorError

#: (dest, ini name, default, help) as in ``settings.OPTIONS``.
OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("gpus", "exprun_gpus", "",
     "GPU ids for --exprun-executor=gpus or warm, e.g. 0,1 (default: all visible)"),
    ("warm_start", "exprun_warm_start", "auto",
     "how --exprun-executor=warm keeps start-up off the runs: 'worker' (the trainer's own --worker protocol, "
     "as train_llm.py speaks it), 'fork' (a fork server that imports the trainer's libraries once and forks "
     "each run), or 'auto' (worker when the trainer speaks it, else fork)"),
    ("fork_timeout", "exprun_fork_timeout", "300",
     "seconds the fork server of --exprun-executor=warm may take, from its start, to import the trainer's "
     "libraries; past it (an import that hangs) runs start as local does, and one line says so"),
    ("slurm_partition", "exprun_slurm_partition", "",
     "SLURM partition for --exprun-executor=slurm (default: the cluster's default partition)"),
    ("slurm_time", "exprun_slurm_time", "60", "SLURM time limit of each run's job, in minutes"),
    ("slurm_gpus", "exprun_slurm_gpus", "1", "GPUs per SLURM job (0: ask for none)"),
    ("slurm_extra", "exprun_slurm_extra", "",
     "more sbatch options for each job, shell-split, long form, e.g. '--qos=high --account=lab'"),
    ("slurm_folder", "exprun_slurm_folder", "",
     "folder for submitit's job files, on storage the nodes share (default: <research dir>/.exprun/slurm)"),
    ("ray_address", "exprun_ray_address", "",
     "Ray cluster for --exprun-executor=ray: empty starts a local one for the session (with --exprun-gpus as its "
     "GPUs) and ends it; 'auto' or HOST:PORT joins a cluster this machine is part of (shared filesystem); "
     "ray://HOST:10001 joins from outside and ships the project as a working_dir"),
    ("ray_gpus_per_run", "exprun_ray_gpus_per_run", "",
     "GPUs each Ray run asks for, fractions allowed (default: 1 where the cluster has GPUs, else 0)"),
)
#: The names ``--exprun-executor`` has built in (a plugin may add more).
BUILTIN_NAMES = ("local", "warm", "gpus", "slurm", "ray")
WARM_STARTS = ("auto", "worker", "fork")


class OptionError(ExecutorError):
    """An executor option has a bad value; the message names the option and the fix."""


def _get(options: Mapping[str, str], dest: str) -> str:
    for name, _, default, _ in OPTIONS:
        if name == dest:
            return options.get(dest, default)
    raise KeyError(dest)


def gpu_ids(options: Mapping[str, str]) -> tuple[str, ...]:
    """``--exprun-gpus`` as ids; empty means "all visible"."""
    return tuple(g for g in (p.strip() for p in _get(options, "gpus").split(",")) if g)


def warm_start(options: Mapping[str, str]) -> str:
    value = _get(options, "warm_start").strip().lower()
    if value not in WARM_STARTS:
        raise OptionError(f"--exprun-warm-start must be one of {', '.join(WARM_STARTS)}, got {value!r}")
    return value


def fork_timeout(options: Mapping[str, str]) -> float:
    """``--exprun-fork-timeout`` in seconds: a positive number."""
    text = _get(options, "fork_timeout").strip()
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise OptionError(f"--exprun-fork-timeout must be a positive number of seconds, got {text!r}")
    return value


@dataclass(frozen=True)
class SlurmSettings:
    """How each run becomes a SLURM job; read only by the slurm executor."""

    partition: str | None = None
    time_minutes: int = 60
    gpus_per_job: int = 1
    #: sbatch options as submitit's ``slurm_additional_parameters`` (``qos`` -> ``high``).
    extra: dict[str, str | bool] = field(default_factory=dict)
    folder: Path | None = None


def slurm_settings(options: Mapping[str, str], rootdir: Path, research_dir: Path) -> SlurmSettings:
    """The SLURM options, checked: only when the slurm executor is chosen, like its import."""
    time_text = _get(options, "slurm_time").strip()
    if not time_text.isdigit() or int(time_text) <= 0:
        raise OptionError(f"--exprun-slurm-time must be a positive number of minutes, got {time_text!r}")
    gpus_text = _get(options, "slurm_gpus").strip()
    if not gpus_text.isdigit():
        raise OptionError(f"--exprun-slurm-gpus must be 0 or a positive integer, got {gpus_text!r}")
    folder_text = _get(options, "slurm_folder").strip()
    return SlurmSettings(
        partition=_get(options, "slurm_partition").strip() or None,
        time_minutes=int(time_text),
        gpus_per_job=int(gpus_text),
        extra=parse_sbatch_options(_get(options, "slurm_extra")),
        folder=(rootdir / folder_text) if folder_text else research_dir / ".exprun" / "slurm",
    )


def parse_sbatch_options(text: str) -> dict[str, str | bool]:
    """``--qos=high --exclusive --account lab`` as ``{"qos": "high", "exclusive": True, "account": "lab"}``.

    Only long options: submitit writes each as ``#SBATCH --name=value``, and short ones have no
    name it could write.
    """
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise OptionError(f"--exprun-slurm-extra cannot be split: {exc}") from None
    options: dict[str, str | bool] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or len(word) < 3:
            raise OptionError(f"--exprun-slurm-extra takes long sbatch options like --qos=high, got {word!r}")
        name, eq, value = word[2:].partition("=")
        if eq:
            options[name.replace("-", "_")] = value
        elif i + 1 < len(words) and not words[i + 1].startswith("-"):
            options[name.replace("-", "_")] = words[i + 1]
            i += 1
        else:
            options[name.replace("-", "_")] = True
        i += 1
    return options
