"""Faults injected for real: killed, hung and broken trainers, Ctrl-C, crashes mid-write,
two sessions at once, damaged or hand-edited state, hostile input, huge output, many seeds.

Whatever happens, no finished run is lost, no file is left half-written, and no verdict is
computed from data that is wrong or incomplete.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Project, pid_alive, wait_for

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
RECORDS = Path("docs/research/.exprun/runs/1M")


def stored_seeds(project: Project, group: str = "baseline") -> list[int]:
    return sorted(int(p.stem[4:]) for p in (project.path / RECORDS / group).glob("*/seed*.json"))


def started_seeds(project: Project, flags: list[str] | None = None) -> list[int]:
    return [s["seed"] for s in project.started() if s["flags"] == (flags or [])]


# ------------------------------------------------------------------ 1. broken trainers
@pytest.mark.parametrize(
    ("behaviour", "message", "last_line"),
    [
        ("exit3", "trainer exited with a non-zero code (3)", "RuntimeError: boom"),
        ("selfkill", "trainer was killed by a signal (SIGKILL)", "fake trainer: seed 137*"),
        ("silent", "trainer printed no val_loss (expected lines like 'Step 240 | val_loss: 1.9876 | ...')",
         "training finished but I forgot to evaluate"),
        ("nan", "trainer printed a non-finite val_loss (nan); the run diverged", "Step 20 | val_loss: nan*"),
        ("inf", "trainer printed a non-finite val_loss (inf); the run diverged", "Step 20 | val_loss: inf*"),
    ],
)
def test_failed_seed_says_what_happened_and_only_it_runs_again(
    project: Project, behaviour: str, message: str, last_line: str
) -> None:
    project.plan(WINNER, behaviour={"--use_x 137": behaviour})
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=7, failed=2, skipped=2)
    result.stdout.fnmatch_lines([
        f"*use_x[[]seed137[]]: {message} after *s",
        "*last * lines of *seed137.log:",
        f"    {last_line}",
        "*no verdict for use_x: use_x seed 137 not measured*only the missing seeds will run*",
    ])
    assert stored_seeds(project, "use_x") == [42, 256]
    assert not (project.research / "experiment_use_x_1M.md").exists()
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=2, skipped=9)
    assert started_seeds(project, ["--use_x"]) == [42, 137, 256, 137]
    assert started_seeds(project) == [42, 137, 256, 512, 1024]


def test_trainer_killed_from_outside_mid_run_fails_that_seed_only(project: Project) -> None:
    project.plan(behaviour={"256": "hang"})
    proc = project.popen("-m", "baseline", "-rf")
    victim = wait_for(lambda: [s["pid"] for s in project.started() if s["seed"] == 256], what="seed 256 to start")[0]
    wait_for(lambda: "hanging" in (project.research / ".exprun").joinpath(*_log_parts(project, 256)).read_text(),
             what="seed 256 to print")
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1
    out = (project.path / "pytest_out.txt").read_text()
    assert "baseline[seed256]: trainer was killed by a signal (SIGKILL)" in out
    assert "    hanging..." in out
    assert "4 passed" in out and "1 failed" in out
    assert stored_seeds(project) == [42, 137, 512, 1024]
    assert not (project.research / "baseline_variance_1M.md").exists()


def _log_parts(project: Project, seed: int) -> tuple[str, ...]:
    (log,) = wait_for(lambda: list((project.research / ".exprun" / "runs" / "1M" / "baseline").glob(f"*/seed{seed}.log")),
                      what=f"the log of seed {seed}")
    return log.relative_to(project.research / ".exprun").parts


def test_timeout_ends_the_whole_process_group_grandchild_included(project: Project) -> None:
    project.plan(behaviour={"137": "grandchild"})
    result = project.run("-m", "baseline", "--exprun-timeout=1")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([
        "*baseline[[]seed137[]]: trainer timed out after 1s (--exprun-timeout); its process group was ended after *s",
        "    fake trainer: seed 137*",
    ])
    trainer, grandchild = map(int, (project.path / "fake_grandchild.pid").read_text().split())
    assert not pid_alive(trainer)
    assert not pid_alive(grandchild)
    assert stored_seeds(project) == [42, 256, 512, 1024]
    project.plan()
    project.run("-m", "baseline").assert_outcomes(passed=1, skipped=4)
    assert project.seeds_run() == [42, 256, 512, 1024, 137]


# ------------------------------------------------------------------------ 2. Ctrl-C
def test_ctrl_c_stops_the_trainer_keeps_finished_runs_and_resumes(project: Project) -> None:
    project.plan(behaviour={"256": "grandchild"})
    proc = project.popen("-m", "baseline")
    wait_for(lambda: (project.path / "fake_grandchild.pid").exists()
             and (project.path / "fake_grandchild.pid").read_text().endswith("\n"), what="the 3rd seed to start")
    trainer, grandchild = map(int, (project.path / "fake_grandchild.pid").read_text().split())
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == pytest.ExitCode.INTERRUPTED
    out = (project.path / "pytest_out.txt").read_text()
    assert "KeyboardInterrupt" in out
    assert not pid_alive(trainer) and not pid_alive(grandchild)
    assert all(not pid_alive(s["pid"]) for s in project.started())
    assert stored_seeds(project) == [42, 137]
    assert not (project.research / "baseline_variance_1M.md").exists()

    project.plan()
    result = project.run("-m", "baseline")
    result.assert_outcomes(passed=3, skipped=2)
    assert project.seeds_run() == [42, 137, 256, 512, 1024]
    assert "| 256 | 1.9800 |" in (project.research / "baseline_variance_1M.md").read_text()
