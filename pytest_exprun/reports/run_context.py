"""What a report shows of its runs: where they ran, the argv they received, their times and throughput.

Pure functions from stored ``RunRecord`` objects to template values; ``publish.py`` puts them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..decide import stats, wall_time
from ..model import Decided, RunRecord


def context_std(records: Sequence[RunRecord]) -> float | None:
    """The baseline's std, which sets how many decimals its report needs (None under 2 runs)."""
    return stats.summarize([r.val_loss for r in records]).std if len(records) > 1 else None


def shared_environment(records: list[RunRecord]) -> dict[str, Any]:
    """What every run reported about where it ran (device, versions, data): the values they all share."""
    envs = [r.extra.get("environment", {}) for r in records]
    if not envs:
        return {}
    return {k: v for k, v in sorted(envs[0].items()) if all(e.get(k) == v for e in envs[1:])}


#: How ``TrainerIO.identity`` marks the trainer I/O settings it appends to a setup's command.
_IO_MARKS = ("argv:", "tokens_per_step:", "line_pattern:", "result:")


def measured_with(setup_command: Sequence[str], *groups: Sequence[RunRecord]) -> dict[str, Any]:
    """What "Measured With" shows: the argv each group's first seed received (from its record),
    and the trainer I/O settings, which the setup keeps after its command, as settings."""
    command = list(setup_command)
    cut = next((i for i, part in enumerate(command) if part.startswith(_IO_MARKS)), len(command))
    argvs = []
    for records in groups:
        first = min(records, key=lambda r: r.seed, default=None)
        if first is not None and first.argv:
            argvs.append({"label": f"{first.group}[seed{first.seed}]", "argv": first.argv})
    return {"command": command[:cut], "io": command[cut:], "argvs": argvs}


def baseline_wall_clock(records: Sequence[RunRecord]) -> dict[str, Any]:
    """The baseline's CPU time and throughput, and its runs the loaded-machine rule flags."""
    loaded = wall_time.loaded_runs("baseline", [wall_time.timing_of(r) for r in records])
    return {**_group_timing(records), "loaded": [f"seed {r.seed} {r.why}" for r in loaded],
            "loaded_fraction": wall_time.LOADED_FRACTION}


def _group_timing(records: Sequence[RunRecord]) -> dict[str, Any]:
    """One group's wall time, CPU time, GPU time, throughput and CPU use (None where a run lacks it)."""
    def summary(values: list[float | None]) -> stats.Summary | None:
        known = [v for v in values if v is not None]
        return stats.summarize(known) if known and len(known) == len(values) else None

    return {"wall": stats.summarize([r.wall_time for r in records]),
            "cpu": summary([r.cpu_time for r in records]), "gpu": summary([r.gpu_time for r in records]),
            "speed": summary([r.tokens_per_second for r in records]),
            "usage": summary([None if r.cpu_time is None or r.wall_time <= 0 else r.cpu_time / r.wall_time
                              for r in records])}


def wall_clock_context(decided: Decided, test: wall_time.WallTimeTest) -> dict[str, Any]:
    """The wall-clock section's numbers: each group's times, CPU use and throughput, and the test."""
    return {"baseline": _group_timing(decided.baseline), "experiment": _group_timing(decided.runs), "test": test,
            "finding": test.finding(), "distrust": test.distrust(), "loaded_fraction": wall_time.LOADED_FRACTION}
