"""The ray executor: against a real local Ray cluster with logical GPUs (slow: a Ray start takes
10-20 s on two cores), and its node side and options without Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from conftest import Project, normalised_report, wait_for

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
RAY = ("--exprun-executor=ray", "--exprun-gpus=0,1")  # a local cluster with two logical GPUs


@pytest.fixture
def ray_installed() -> None:
    pytest.importorskip("ray", reason="the ray executor needs the 'ray' extra: pip install -e '.[ray]'")


def _stat(pid: int) -> tuple[int, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[1]), fields[19]) if fields[0] != "Z" else None


def _descendants(root: int) -> dict[int, str]:
    stats = {int(n): s for n in os.listdir("/proc") if n.isdigit() and (s := _stat(int(n))) is not None}
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, start) in stats.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def run_watched(project: Project, *args: str, during: object = None, timeout: float = 240) -> tuple[str, dict[int, str]]:
    """Run a pytest session in its own process; its output, and every process seen below it (pid: start time)."""
    proc = project.popen("-q", *args)
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        seen.update(_descendants(proc.pid))
        if callable(during):
            during()
        assert time.monotonic() < deadline, "the session did not end in time"
        time.sleep(0.05)
    return (project.path / "pytest_out.txt").read_text(), seen


def assert_all_ended(seen: dict[int, str]) -> None:
    """Nothing the session started is still running: checked by pid and start time (a reused pid is another process)."""
    left = [pid for pid, start in seen.items() if (_stat(pid) or (0, ""))[1] == start]
    names = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80] for pid in left]
    assert not left, f"left running: {names}"


@pytest.mark.slow
def test_ray_runs_one_per_gpu_with_the_verdict_and_reports_of_local_and_leaves_no_process(
        project: Project, ray_installed: None, with_plots: None) -> None:
    project.plan(WINNER, sleep=0.3)
    local = project.run_subprocess("--experiment=use_x")
    local_reports = {p.name: normalised_report(p) for p in project.research.glob("*.md")}
    for path in project.research.glob("*.md"):
        path.unlink()
    shutil.rmtree(project.research / ".exprun")
    (project.path / "fake_calls.jsonl").unlink()

    out, seen = run_watched(project, "--experiment=use_x", *RAY)
    assert f"{local.parseoutcomes()['passed']} passed, {local.parseoutcomes()['skipped']} skipped" in out, out
    assert {p.name: normalised_report(p) for p in project.research.glob("*.md")} == local_reports
    assert len(local_reports) == 3  # baseline, experiment, summary
    calls = project.calls()
    assert len(calls) == 8 and {c["cuda_visible_devices"] for c in calls} == {"0", "1"}
    for gpu in ("0", "1"):  # Ray gave each run a GPU of its own: runs on one GPU never overlap
        on_gpu = sorted((c["start"], c["end"]) for c in calls if c["cuda_visible_devices"] == gpu)
        assert all(a[1] <= b[0] for a, b in zip(on_gpu, on_gpu[1:])), f"two runs shared GPU {gpu}"
    assert len(seen) > 5  # Ray's daemons, its workers and the trainers were seen
    assert_all_ended(seen)


@pytest.mark.slow
def test_a_task_lost_twice_fails_its_seed_in_one_line_and_runs_again_next_session(
        project: Project, ray_installed: None) -> None:
    project.plan(behaviour={"137": "hang"})
    killed: list[int] = []

    def kill_the_worker_of_seed_137() -> None:
        # SIGKILL the Ray worker running seed 137 (as if its node went away), once per attempt.
        starts = [s for s in project.started() if s["seed"] == 137]
        if len(starts) > len(killed) and (stat := _stat(starts[-1]["pid"])) is not None:
            os.kill(stat[0], signal.SIGKILL)
            killed.append(stat[0])

    args = ("-m", "baseline", "--exprun-baseline-seeds=42,137", "--exprun-allow-small-baseline", *RAY)
    out, seen = run_watched(project, *args, during=kill_the_worker_of_seed_137)
    assert "1 failed, 1 passed" in out, out
    assert len(killed) == 2 and len({s["pid"] for s in project.started() if s["seed"] == 137}) == 2
    message = [line for line in out.splitlines() if "seed137" in line and "Ray task lost" in line]
    assert message and "lost with its worker or node twice" in message[0] and "runs it again" in message[0], out
    assert_all_ended(seen)  # the two hanging trainers whose workers were killed too

    project.plan()
    out, seen = run_watched(project, *args)
    assert "1 passed, 1 skipped" in out, out
    assert sorted(project.seeds_run()) == [42, 137]
    assert_all_ended(seen)


@pytest.mark.slow
def test_more_gpus_per_run_than_any_node_has_fails_at_once_instead_of_waiting(
        project: Project, ray_installed: None) -> None:
    args = ("-m", "baseline", "--exprun-baseline-seeds=42,137", "--exprun-allow-small-baseline", *RAY,
            "--exprun-ray-gpus-per-run=3")
    started = time.monotonic()
    out, seen = run_watched(project, *args, timeout=180)
    assert "2 failed" in out, out
    assert ("no node of a local Ray cluster started for this session has 3 GPU(s) and a CPU for one run "
            "(the most GPUs on one node: 2); lower --exprun-ray-gpus-per-run") in out
    assert time.monotonic() - started < 150 and project.started() == []
    assert_all_ended(seen)


@pytest.mark.slow
def test_ctrl_c_cancels_every_task_and_ends_every_process(project: Project, ray_installed: None) -> None:
    project.plan(behaviour={"42": "hang", "137": "hang", "256": "hang"})
    proc = project.popen("-q", "-m", "baseline", "--exprun-baseline-seeds=42,137,256", *RAY)
    seen: dict[int, str] = {}

    def two_trainers_running() -> bool:
        seen.update(_descendants(proc.pid))
        return len(project.started()) >= 2

    wait_for(two_trainers_running, timeout=180, what="two trainers started by Ray tasks")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == pytest.ExitCode.INTERRUPTED
    assert "KeyboardInterrupt" in (project.path / "pytest_out.txt").read_text()
    assert {s["seed"] for s in project.started()} <= {42, 137, 256} and project.calls() == []
    assert_all_ended(seen)  # the trainers, the tasks' workers, and Ray's own daemons


# ------------------------------------------------------------------ without Ray
@pytest.mark.parametrize("value", ["-1", "1.5", "nan", "two"])
def test_bad_gpus_per_run_is_one_line_before_any_run(project: Project, value: str) -> None:
    result = project.run("-m", "baseline", "--exprun-executor=ray", f"--exprun-ray-gpus-per-run={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --exprun-ray-gpus-per-run must be 0, a fraction below 1*"])
    assert project.started() == []


def test_gpus_per_run_takes_fractions_whole_numbers_and_a_default() -> None:
    from pytest_exprun.executors.ray import gpus_per_run

    assert (gpus_per_run(""), gpus_per_run("0"), gpus_per_run("0.25"), gpus_per_run("2")) == (None, 0.0, 0.25, 2.0)


def test_a_spec_moves_onto_a_nodes_copy_of_the_project(tmp_path: Path) -> None:
    from pytest_exprun.executors.ray_node import moved_spec
    from pytest_exprun.trainer.runner import RunSpec

    root, here, scratch = tmp_path / "project", tmp_path / "node" / "copy", tmp_path / "node" / "scratch"
    out = root / "checkpoints" / "r" / "baseline_1M_seed42"
    spec = RunSpec("baseline[seed42]", "baseline", 42,
                   ("/driver/venv/bin/python", "train.py", "--output_dir", str(out), "--data", str(root / "data")),
                   out, Path("/elsewhere/research/.exprun/runs/seed42.log"), None,
                   {"EXPRUN_OUTPUT_DIR": str(out), "HOME_NOT_MOVED": "/home/me"}, root)
    moved = moved_spec(spec, here, scratch, "/driver/venv/bin/python")
    moved_out = here / "checkpoints" / "r" / "baseline_1M_seed42"
    assert moved.argv == (sys.executable, "train.py", "--output_dir", str(moved_out), "--data", str(here / "data"))
    assert moved.env == {"EXPRUN_OUTPUT_DIR": str(moved_out), "HOME_NOT_MOVED": "/home/me"}
    assert (moved.cwd, moved.output_dir, moved.log_path) == (here, moved_out, scratch / "log" / "seed42.log")


def test_a_shipped_run_streams_its_lines_and_sends_back_its_log_and_small_files(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task body on its own (no Ray): what a node without the shared filesystem sends."""
    from pytest_exprun.executors.ray_node import RUN_MARKER_ENV, Shipped, Started, run_task
    from pytest_exprun.trainer.runner import RunResult, RunSpec

    node = tmp_path / "node"
    shutil.copytree(project.path, node)
    monkeypatch.chdir(node)
    out = project.path / "checkpoints" / "seed42"
    spec = RunSpec("baseline[seed42]", "baseline", 42, (sys.executable, "fake_trainer.py", "--train_tokens", "100",
                   "--seed", "42", "--output_dir", str(out)), out, project.research / "seed42.log", None,
                   {RUN_MARKER_ENV: "m1"}, project.path)
    items = list(run_task(spec, True, sys.executable))
    assert isinstance(items[0], Started) and items[0].pid == os.getpid()
    lines = [line for item in items if isinstance(item, list) for line in item]
    assert lines[0].startswith("fake trainer: seed 42") and lines[-1].startswith("Step 50 | val_loss: 2.0000")
    shipped, result = items[-2], items[-1]
    assert isinstance(shipped, Shipped) and isinstance(result, RunResult)
    assert result.ok and result.val_loss == 2.0 and result.spec == spec
    assert shipped.log.decode().splitlines() == lines
    assert json.loads(shipped.files["metrics.json"]) == {"device": "cpu", "data_fingerprint": "fake"}
    assert "checkpoint.bin" in shipped.files  # 16 bytes here: small files come back, big ones stay
    assert not out.exists() and not (node / "checkpoints" / "seed42").exists()  # nothing written here; the node's copy removed
    calls = [json.loads(line) for line in (node / "fake_calls.jsonl").read_text().splitlines()]
    assert [c["output_dir"] for c in calls] == [str(node / "checkpoints" / "seed42")]
