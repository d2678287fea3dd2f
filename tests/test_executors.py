"""The gpus executor, on CPU: pinning, one run per GPU at a time, overlap, and same reports as local."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Project

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
NEUTRAL = {"--use_x": {"42": 2.00, "137": 2.01, "256": 1.99, "512": 2.00, "1024": 2.01}}


def _intervals_overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_each_run_sees_only_its_own_gpu(project: Project) -> None:
    project.plan(sleep=0.3)
    result = project.run("-m", "baseline", "--exprun-executor=gpus", "--exprun-gpus=0,1")
    result.assert_outcomes(passed=5)
    calls = project.calls()
    assert sorted(c["seed"] for c in calls) == [42, 137, 256, 512, 1024]
    assert {c["cuda_visible_devices"] for c in calls} == {"0", "1"}


def test_runs_on_one_gpu_never_overlap(project: Project) -> None:
    project.plan(sleep=0.3)
    project.run("-m", "baseline", "--exprun-executor=gpus", "--exprun-gpus=0,1").assert_outcomes(passed=5)
    calls = project.calls()
    for gpu in ("0", "1"):
        on_gpu = [c for c in calls if c["cuda_visible_devices"] == gpu]
        assert on_gpu
        for i, a in enumerate(on_gpu):
            for b in on_gpu[i + 1:]:
                assert not _intervals_overlap(a, b), f"two runs shared GPU {gpu} at once"


def test_runs_on_different_gpus_overlap(project: Project) -> None:
    project.plan(sleep=0.3)
    project.run("-m", "baseline", "--exprun-executor=gpus", "--exprun-gpus=0,1").assert_outcomes(passed=5)
    calls = project.calls()
    first = [c for c in calls if c["cuda_visible_devices"] == "0"]
    second = [c for c in calls if c["cuda_visible_devices"] == "1"]
    assert any(_intervals_overlap(a, b) for a in first for b in second)


def test_failure_on_one_gpu_does_not_stop_the_others(project: Project) -> None:
    project.plan(behaviour={"137": "exit3"}, sleep=0.3)
    result = project.run("-m", "baseline", "--exprun-executor=gpus", "--exprun-gpus=0,1")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*baseline[[]seed137[]]: trainer exited with a non-zero code (3)*"])
    assert sorted(project.seeds_run()) == [42, 256, 512, 1024]


def test_no_visible_gpu_is_a_usage_error_before_any_run(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi to find
    result = project.run("-m", "baseline", "--exprun-executor=gpus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --exprun-executor=gpus found no GPU*pass --exprun-gpus=0,1,...*"])
    assert project.calls() == []


def test_results_finishing_out_of_order_are_kept_for_resume(project: Project) -> None:
    # Seed 42 hangs until its time-out on one GPU while the other GPU finishes every other
    # seed; -x then stops the session before any of their tests asked for them.
    project.plan(behaviour={"42": "hang"})
    first = project.run("-m", "baseline", "-x", "--exprun-timeout=1", "--exprun-executor=gpus", "--exprun-gpus=0,1")
    first.assert_outcomes(failed=1)
    assert sorted(project.seeds_run()) == [137, 256, 512, 1024]
    project.plan()
    result = project.run("-m", "baseline")
    result.assert_outcomes(passed=1, skipped=4)
    assert sorted(project.seeds_run()) == [42, 137, 256, 512, 1024]


@pytest.mark.parametrize("losses", [WINNER, NEUTRAL], ids=["winner", "neutral-with-extension"])
def test_gpus_executor_writes_the_same_reports_as_local(project: Project, losses: dict) -> None:
    project.plan(losses)
    local, local_reports = project.reports_from_scratch("--experiment=use_x")
    parallel, parallel_reports = project.reports_from_scratch(
        "--experiment=use_x", "--exprun-executor=gpus", "--exprun-gpus=0,1,2")
    assert parallel.parseoutcomes() == local.parseoutcomes()
    assert sorted(parallel_reports) == sorted(local_reports) and len(local_reports) == 3  # baseline, experiment, summary
    assert parallel_reports == local_reports


def test_extra_sbatch_options_become_submitit_parameters() -> None:
    from pytest_exprun.executors.options import parse_sbatch_options

    assert parse_sbatch_options("--qos=high --account lab --exclusive --mail-type=END") == {
        "qos": "high", "account": "lab", "exclusive": True, "mail_type": "END",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exprun-slurm-time=0"], "--exprun-slurm-time must be a positive number of minutes, got '0'"),
        (["--exprun-slurm-gpus=two"], "--exprun-slurm-gpus must be 0 or a positive integer, got 'two'"),
        (["--exprun-slurm-extra=-A lab"], "--exprun-slurm-extra takes long sbatch options like --qos=high, got '-A'"),
    ],
)
def test_bad_slurm_options_stop_before_any_run(project: Project, args: list[str], message: str) -> None:
    result = project.run("-m", "baseline", "--exprun-executor=slurm", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert project.calls() == []


THIRD_PARTY = '''
import threading
from pytest_exprun.executors import Executor, RunHandle
from pytest_exprun.trainer.runner import run_trainer

class Handle(RunHandle):
    """Eager: the run starts in a thread as soon as it is submitted."""
    def __init__(self, spec, parse_line):
        self.cancelled = threading.Event()
        self.done = threading.Event()
        def go():
            self.value = run_trainer(spec, None, self.cancelled, parse_line)
            self.done.set()
        threading.Thread(target=go, daemon=True).start()
    def result(self):
        self.done.wait()
        return self.value
    def wait(self, timeout):
        return self.done.wait(timeout)
    def cancel(self):
        self.cancelled.set()

class Threads(Executor):
    eager = True
    timing = "threads"
    def __init__(self):
        self.prestarted = []
    def prestart(self, env, cwd=None):
        print("prestart with", sorted(k for k in env if k.startswith("EXPRUN_SEED")), cwd is not None)
    def submit(self, spec, on_line, parse_line):
        return Handle(spec, parse_line)

def pytest_exprun_make_executor(config, settings):
    return Threads() if settings.executor == "threads" else None
'''


def test_a_third_party_executor_implementing_the_protocol_works_through_the_hook(project: Project) -> None:
    project.plan()
    project.pytester.makeconftest(THIRD_PARTY)
    result = project.run("-m", "baseline", "--exprun-executor=threads", "-s")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["prestart with ['EXPRUN_SEED'] True"])
    records = list((project.research / ".exprun" / "runs").rglob("seed*.json"))
    assert len(records) == 5
    assert all('"timing": "threads"' in p.read_text() for p in records)
    assert sorted(project.seeds_run()) == [42, 137, 256, 512, 1024]


def test_an_executor_missing_members_of_the_protocol_is_one_line(project: Project) -> None:
    project.pytester.makeconftest(
        "class Bare:\n"
        "    def submit(self, spec, on_line, parse_line): ...\n"
        "def pytest_exprun_make_executor(config, settings):\n"
        "    return Bare() if settings.executor == 'bare' else None\n"
    )
    result = project.run("-m", "baseline", "--exprun-executor=bare")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: the executor made for --exprun-executor=bare (Bare) lacks close, prestart, "
                                 "readiness, streams_output, eager, timing: subclass "
                                 "pytest_exprun.executors.Executor to get the defaults"])
    assert len(result.stderr.lines) <= 2 and "Traceback" not in result.stderr.str()
    assert project.calls() == []


def test_an_unknown_executor_name_is_one_line_listing_the_known_ones(project: Project) -> None:
    result = project.run("-m", "baseline", "--exprun-executor=kubeflow")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: no executor is called 'kubeflow': the built-in ones are local, warm, gpus, "
                                 "slurm, ray; "
                                 "another comes from a plugin or conftest.py implementing pytest_exprun_make_executor"])
    assert "Traceback" not in result.stderr.str() and project.calls() == []


def test_settings_name_no_executor() -> None:
    source = (Path(__file__).resolve().parent.parent / "pytest_exprun" / "settings.py").read_text()
    for name in ("slurm", "gpus", "warm"):
        assert f'"{name}"' not in source and f"'{name}'" not in source
