"""The warm executor with the fake trainer: one process for many runs, and every way it can go wrong.

The real trainer's side of the protocol (bit-identical val_loss against a process per run)
is tested in test_trainer.py.
"""

from __future__ import annotations

import signal

import pytest

from conftest import Project, pid_alive, wait_for

WARM = "--exprun-executor=warm"
WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
NEUTRAL = {"--use_x": {"42": 2.00, "137": 2.01, "256": 1.99, "512": 2.00, "1024": 2.01}}


def worker_pids(project: Project) -> list[int]:
    """The pid that ran each run, in start order."""
    return [s["pid"] for s in project.started()]


def test_one_worker_runs_every_seed_in_order(project: Project) -> None:
    project.plan(WINNER)
    result = project.run("--experiment=use_x", WARM)
    result.assert_outcomes(passed=9, skipped=2)
    pids = worker_pids(project)
    assert len(pids) == 8 and len(set(pids)) == 1
    assert [c["seed"] for c in project.calls()] == [42, 137, 256, 512, 1024, 42, 137, 256]
    assert not pid_alive(pids[0])  # ended with the session


@pytest.mark.parametrize("losses", [WINNER, NEUTRAL], ids=["winner", "neutral-with-extension"])
def test_warm_executor_writes_the_same_reports_as_local(project: Project, losses: dict) -> None:
    project.plan(losses)
    local, local_reports = project.reports_from_scratch("--experiment=use_x")
    warm, warm_reports = project.reports_from_scratch("--experiment=use_x", WARM)
    assert warm.parseoutcomes() == local.parseoutcomes()
    assert sorted(warm_reports) == sorted(local_reports) and len(local_reports) == 3
    assert warm_reports == local_reports


def test_run_output_goes_to_its_own_log_and_the_terminal(project: Project) -> None:
    result = project.run("-m", "baseline", WARM, "-s")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*fake trainer: seed 137*", "*Step 50 | val_loss: 2.0200*"])
    logs = sorted((project.research / ".exprun" / "runs" / "1M" / "baseline").glob("*/seed*.log"))
    assert len(logs) == 5
    for log in logs:
        text = log.read_text()
        seed = log.stem[4:]
        assert f"fake trainer: seed {seed}," in text and text.count("fake trainer:") == 1
        assert text.rstrip().endswith("exprun-worker: done 0")


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("exit3", "trainer exited with a non-zero code (3)"),
        ("selfkill", "trainer was killed by a signal (SIGKILL)"),
        ("nan", "trainer printed a non-finite val_loss (nan); the run diverged"),
        ("silent", "trainer printed no val_loss*"),
    ],
)
def test_a_failed_run_fails_its_seed_only_and_a_fresh_worker_takes_over(
    project: Project, behaviour: str, message: str
) -> None:
    project.plan(behaviour={"137": behaviour})
    result = project.run("-m", "baseline", WARM)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([f"*baseline[[]seed137[]]: {message} after *s (warm worker *, its run 2)"])
    pids = worker_pids(project)
    if behaviour in {"exit3", "selfkill"}:  # a failed run ends its worker; the next run gets a new one
        assert pids[0] == pids[1] != pids[2] == pids[3] == pids[4]
    else:  # the trainer finished normally: its worker stays
        assert len(set(pids)) == 1
    assert sorted(c["seed"] for c in project.calls() if c["seed"] != 137) == [42, 256, 512, 1024]


def test_timeout_ends_the_worker_and_the_next_seed_gets_a_new_one(project: Project) -> None:
    project.plan(behaviour={"256": "hang"})
    result = project.run("-m", "baseline", WARM, "--exprun-timeout=2")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*baseline[[]seed256[]]: trainer timed out after 2s (--exprun-timeout)*"])
    pids = worker_pids(project)
    assert pids[0] == pids[2] != pids[3]
    assert not pid_alive(pids[2])


def test_a_trainer_without_worker_support_says_so_per_seed(project: Project) -> None:
    project.plan()
    (project.path / "fake_plan.json").write_text('{"worker": false}')
    result = project.run("-m", "baseline", WARM)
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines([
        "*baseline[[]seed42[]]: trainer exited with a non-zero code (2)*",
        "*the trainer exited before its worker was ready: does it support --worker?*",
    ])
    assert project.calls() == []


def test_a_worker_that_hangs_at_start_times_out(project: Project) -> None:
    (project.path / "fake_plan.json").write_text('{"worker_start": "hang"}')
    result = project.run("-m", "baseline", WARM, "--exprun-timeout=1", "-x")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*baseline[[]seed42[]]: trainer timed out after 1s*(warm worker *, starting)*"])


def test_ctrl_c_ends_the_worker_and_keeps_finished_runs(project: Project) -> None:
    project.plan(behaviour={"256": "hang"})
    proc = project.popen("-m", "baseline", WARM)
    wait_for(lambda: [s for s in project.started() if s["seed"] == 256], what="seed 256 to start")
    pid = project.started()[0]["pid"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    wait_for(lambda: not pid_alive(pid), timeout=10, what="the worker to end")
    project.plan()
    result = project.run("-m", "baseline", WARM)
    result.assert_outcomes(passed=3, skipped=2)


def test_baseline_timed_as_processes_does_not_judge_warm_runs(project: Project) -> None:
    project.plan(WINNER)
    project.run("-m", "baseline").assert_outcomes(passed=5)
    result = project.run("--experiment=use_x", WARM)
    result.stdout.fnmatch_lines([
        "*no verdict for use_x: the runs were not measured in the same environment "
        "(timing: process vs warm worker)*--exprun-rerun-baseline*",
    ])
    rerun = project.run("--experiment=use_x", WARM, "--exprun-rerun-baseline")
    rerun.assert_outcomes(passed=6, skipped=5)  # the baseline again, warm; the experiment's runs are kept
    rerun.stdout.fnmatch_lines(["*use_x: WINNER*"])
