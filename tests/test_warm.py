"""The warm executor with the fake trainer: one process for many runs, and every way it can go wrong.

The real trainer's side of the protocol (bit-identical val_loss against a process per run)
is tested in test_trainer.py.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from conftest import Project, pid_alive, wait_for
from pytest_exprun.executors.warm import WarmExecutor, worker_executor
from pytest_exprun.trainer.lines import parse_step_line
from pytest_exprun.trainer.runner import RunSpec

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
    result = project.run("-m", "baseline", WARM, "-s", "-v")  # -v: every line, not only evaluations
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


def test_a_trainer_without_worker_support_says_so_once_and_starts_no_other_seed(project: Project) -> None:
    project.plan()
    (project.path / "fake_plan.json").write_text('{"worker": false}')
    result = project.run("-m", "baseline", WARM)
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines([
        "*baseline[[]seed42[]]: trainer could not be started*",
        "*the trainer exited before its worker was ready: does it support --worker?*",
    ])
    # The failure sections only: pytest's short summary repeats whole messages when CI is set.
    failures = result.stdout.str().split("= FAILURES =", 1)[1].split("short test summary info", 1)[0]
    assert failures.count("does it support --worker?") == 1
    assert failures.count("not started, as every run would fail the same way") == 4
    assert len(project.started()) <= 1
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


# The executor on its own, as the session drives it: prestart, then runs submitted in order.

def fake_command() -> list[str]:
    return [sys.executable, "fake_trainer.py"]


def fake_spec(project: Project, seed: int) -> RunSpec:
    out = project.path / "checkpoints" / f"seed{seed}"
    argv = (*fake_command(), "--train_tokens", "1000000", "--seed", str(seed), "--output_dir", str(out))
    return RunSpec(label=f"baseline[seed{seed}]", group="baseline", seed=seed, argv=argv, output_dir=out,
                   log_path=project.path / "logs" / f"seed{seed}.log", env=dict(os.environ), cwd=project.path)


def test_prestarted_worker_is_up_before_the_first_run_and_runs_it(project: Project) -> None:
    project.plan()
    executor = WarmExecutor(fake_command())
    executor.prestart(dict(os.environ), project.path)
    try:
        assert executor._worker is not None  # spawned now, not at the first run
        pid = executor._worker.proc.pid
        assert pid_alive(pid) and project.started() == []
        assert not executor.worker_ready  # nobody has read its `ready` yet: the first run will
        results = [executor.submit(fake_spec(project, seed), None, parse_step_line).result() for seed in (42, 137)]
    finally:
        executor.close(cancel=False)
    assert [r.failure for r in results] == [None, None]
    assert [r.val_loss for r in results] == [2.00, 2.02]
    assert not executor.worker_ready  # closed
    assert [s["pid"] for s in project.started()] == [pid, pid]
    assert "fake trainer: seed 42," in (project.path / "logs" / "seed42.log").read_text()
    assert not pid_alive(pid)


def test_prestart_of_a_trainer_without_worker_support_fails_the_first_run_as_before(project: Project) -> None:
    project.plan()
    (project.path / "fake_plan.json").write_text('{"worker": false}')
    executor = WarmExecutor(fake_command())
    executor.prestart(dict(os.environ), project.path)
    result = executor.submit(fake_spec(project, 42), None, parse_step_line).result()
    executor.close(cancel=False)
    assert result.failure is not None and result.returncode == 2
    assert any("does it support --worker?" in line for line in result.tail)


def test_one_worker_per_gpu_each_pinned_to_its_gpu(project: Project) -> None:
    """Two fake GPUs: two workers run at once, each with its own CUDA_VISIBLE_DEVICES, and every
    run on one GPU goes through that GPU's one worker."""
    project.plan(sleep=0.3)
    executor = worker_executor(fake_command(), gpus=("0", "1"))
    executor.prestart(dict(os.environ), project.path)
    seeds = (42, 137, 256, 512, 1024, 7)
    try:
        handles = [executor.submit(fake_spec(project, seed), None, parse_step_line) for seed in seeds]
        results = [h.result() for h in handles]
    finally:
        executor.close(cancel=False)
    assert executor.eager and not executor.streams_output
    assert [r.failure for r in results] == [None] * len(seeds)
    calls = project.calls()
    assert sorted(c["seed"] for c in calls) == sorted(seeds)
    pid_of = {s["seed"]: s["pid"] for s in project.started()}
    gpu_of_pid: dict[int, set[str]] = {}
    for call in calls:
        gpu_of_pid.setdefault(pid_of[call["seed"]], set()).add(call["cuda_visible_devices"])
    assert sorted(g for gpus in gpu_of_pid.values() for g in gpus) == ["0", "1"]  # two workers, one GPU each
    assert all(len(gpus) == 1 for gpus in gpu_of_pid.values())
    first = sorted(calls, key=lambda c: c["start"])[:2]
    assert first[1]["start"] < first[0]["end"]  # the two GPUs worked at once
    assert not any(pid_alive(pid) for pid in gpu_of_pid)


def test_one_gpu_pins_its_worker_and_stays_lazy(project: Project) -> None:
    project.plan()
    executor = WarmExecutor(fake_command(), gpus=("3",))
    result = executor.submit(fake_spec(project, 42), None, parse_step_line).result()
    executor.close(cancel=False)
    assert not executor.eager and result.failure is None
    assert [c["cuda_visible_devices"] for c in project.calls()] == ["3"]


def test_cancelled_queued_runs_on_several_gpus_never_start(project: Project) -> None:
    project.plan(behaviour={"42": "hang", "137": "hang"})
    executor = worker_executor(fake_command(), gpus=("0", "1"))
    handles = [executor.submit(fake_spec(project, seed), None, parse_step_line) for seed in (42, 137, 256)]
    wait_for(lambda: len(project.started()) == 2, what="both GPUs' first runs to start")
    executor.close(cancel=True)
    results = [h.result() for h in handles]
    assert all(r.failure is not None for r in results)
    assert 256 not in [s["seed"] for s in project.started()]
