"""Hostile files and environments: nothing is written outside the research and checkpoint dirs,
nothing finished is lost, and every problem is one line, never a traceback wall."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import BASELINE_LOSSES, Project

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and "INTERNALERROR" not in text


def _baseline(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)


def test_a_link_planted_at_a_runs_log_path_is_refused_and_its_target_untouched(project: Project) -> None:
    _baseline(project)
    victim = project.path / "outside.txt"
    victim.write_text("precious")
    project.plan(WINNER)
    project.run("--experiment=use_x", "-k", "seed42 and use_x")
    (log,) = (project.research / ".exprun" / "runs" / "1M" / "use_x").glob("*/seed42.log")
    log.unlink()
    os.symlink(victim, log)
    (log.parent / "seed42.json").unlink()
    result = project.run("--experiment=use_x", "-k", "seed42 and use_x")
    result.assert_outcomes(failed=1, deselected=10)
    result.stdout.fnmatch_lines(["*seed42*is a symbolic link; exprun does not write through links*"])
    assert victim.read_text() == "precious"
    no_traceback(result.stdout.str())


def test_a_link_planted_at_the_lock_is_not_followed(project: Project) -> None:
    victim = project.path / "outside_lock.txt"
    victim.write_text("precious")
    lock = project.research / ".exprun" / "lock"
    lock.parent.mkdir(parents=True)
    os.symlink(victim, lock)
    result = project.run("-m", "baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cannot use *research* as the research dir*"])
    assert victim.read_text() == "precious"


def test_a_link_planted_at_a_report_is_replaced_not_followed(project: Project) -> None:
    victim = project.path / "outside_report.md"
    victim.write_text("precious")
    project.research.mkdir(parents=True)
    os.symlink(victim, project.research / "summary_1M.md")
    project.plan(WINNER)
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=9, skipped=2)
    assert victim.read_text() == "precious"
    assert not (project.research / "summary_1M.md").is_symlink()


def test_a_linked_checkpoint_dir_is_never_followed_or_emptied(project: Project) -> None:
    outside = project.path / "outside_dir"
    outside.mkdir()
    (outside / "keep.bin").write_text("precious")
    project.run("-m", "baseline", "-k", "seed42", "--exprun-keep-checkpoints")
    (output,) = {c["output_dir"] for c in project.calls()}
    import shutil

    shutil.rmtree(output)
    os.symlink(outside, output)
    shutil.rmtree(project.research / ".exprun" / "runs")
    project.run("-m", "baseline", "-k", "seed42").assert_outcomes(passed=1)
    assert (outside / "keep.bin").read_text() == "precious"


@pytest.mark.parametrize(
    "content",
    ["[" * 100_000 + "]" * 100_000, json.dumps({"version": 1, "group": "baseline", "seed": 42, "val_loss": 2.0,
                                                "wall_time": 1.0, "setup_key": "KEY", "extra": {"environment": [1, 2]}}),
     json.dumps({"version": 1, "group": "baseline", "seed": 42, "val_loss": 2.0, "wall_time": 1.0,
                 "setup_key": "KEY", "extra": "nope"})],
    ids=["deeply-nested", "environment-a-list", "extra-a-string"],
)
def test_a_damaged_record_is_set_aside_and_only_its_seed_reruns(project: Project, content: str) -> None:
    _baseline(project)
    (record,) = (project.research / ".exprun" / "runs" / "1M" / "baseline").glob("*/seed42.json")
    record.write_text(content.replace("KEY", record.parent.name))
    for _ in range(2):  # every later session too
        result = project.run("-m", "baseline")
        no_traceback(result.stdout.str() + result.stderr.str())
    assert sorted(project.seeds_run()) == sorted([42, 137, 256, 512, 1024, 42])
    assert list(record.parent.glob("seed42.json.corrupt-*"))


def test_a_failed_control_run_fails_the_verdict_too(project: Project) -> None:
    _baseline(project)
    project.plan({**WINNER, "": {**BASELINE_LOSSES, "42": 2.05}})
    result = project.run("--experiment=use_x", "--exprun-control")
    result.stdout.fnmatch_lines(["*FAILED exprun::control[[]seed42[]]*", "*FAILED exprun::use_x[[]verdict[]]*"])
    assert "the control run failed, so this verdict does not pass" in result.stdout.str()


def test_a_step_summary_in_a_missing_folder_is_one_line(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.path / "no" / "such" / "folder" / "summary.md"))
    project.plan(WINNER)
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=9, skipped=2)
    result.stdout.fnmatch_lines(["exprun: could not append to GITHUB_STEP_SUMMARY=*; the report is written"])
    no_traceback(result.stdout.str())


def test_a_json_twin_that_cannot_be_written_fails_the_verdict_in_one_line(project: Project) -> None:
    project.plan(WINNER)
    project.research.mkdir(parents=True)
    (project.research / "experiment_use_x_1M.json").mkdir()  # a folder where the file should go
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=8, failed=1, skipped=2)
    result.stdout.fnmatch_lines(["*could not write docs/research/experiment_use_x_1M.json (*)*"])
    no_traceback(result.stdout.str())
    assert len(list((project.research / ".exprun" / "runs" / "1M" / "use_x").glob("*/seed*.json"))) == 3


def test_rerun_baseline_without_a_baseline_seed_selected_keeps_the_baseline(project: Project) -> None:
    _baseline(project)
    before = sorted(p.name for p in project.research.rglob("*"))
    project.plan(WINNER)
    result = project.run("--experiment=use_x", "--exprun-rerun-baseline", "-k", "not baseline")
    result.stdout.fnmatch_lines(["exprun: --exprun-rerun-baseline ignored: no baseline seed is selected*"])
    assert project.seeds_run() == [42, 137, 256, 512, 1024]
    assert set(before) <= {p.name for p in project.research.rglob("*")}


def test_hook_error_is_one_line_naming_the_hook(project: Project) -> None:
    project.pytester.makeconftest(
        "def pytest_exprun_parse_line(config, line):\n"
        "    if 'val_loss' in line:\n"
        "        raise KeyError('oops')\n"
    )
    result = project.run("-m", "baseline", "-k", "seed42")
    result.assert_outcomes(failed=1, deselected=4)
    result.stdout.fnmatch_lines(["*pytest_exprun_parse_line raised KeyError: 'oops' (in *conftest.py, line 3)*"])
    no_traceback(result.stdout.str())


def test_a_custom_executor_comes_from_a_conftest_hook(project: Project) -> None:
    project.pytester.makeconftest(
        "from pytest_exprun.executors.local import LocalExecutor\n"
        "class Counting(LocalExecutor):\n"
        "    def submit(self, spec, on_line, parse_line):\n"
        "        print('custom executor ran', spec.label)\n"
        "        return super().submit(spec, on_line, parse_line)\n"
        "def pytest_exprun_make_executor(config, settings):\n"
        "    return Counting() if settings.executor == 'counting' else None\n"
    )
    result = project.run("-m", "baseline", "-k", "seed42", "--exprun-executor=counting", "-s")
    result.assert_outcomes(passed=1, deselected=4)
    result.stdout.fnmatch_lines(["*custom executor ran baseline[[]seed42[]]*"])
    unknown = project.run("-m", "baseline", "--exprun-executor=nosuch")
    unknown.stderr.fnmatch_lines(["ERROR: no executor is called 'nosuch'*pytest_exprun_make_executor*"])


def test_nothing_is_written_outside_the_research_and_checkpoint_dirs(project: Project) -> None:
    before = {p for p in project.path.rglob("*")}
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    new = {p for p in project.path.rglob("*")} - before
    allowed = (project.research, project.path / "checkpoints")
    stray = [p for p in new if not any(p == a or a in p.parents or p in a.parents for a in allowed)
             and p.name not in {"fake_calls.jsonl", "fake_started.jsonl"}]
    assert stray == []


def test_the_same_command_twice_writes_nothing_new(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x")
    stamp = {p: p.stat().st_mtime_ns for p in project.research.glob("*") if p.is_file()}
    project.run("--experiment=use_x").assert_outcomes(passed=1, skipped=10)
    assert {p: p.stat().st_mtime_ns for p in project.research.glob("*") if p.is_file()} == stamp
    assert Path(project.research / "experiment_use_x_1M.md").exists()


def test_editing_the_trainer_mid_session_fails_that_run_instead_of_mixing_versions(project: Project) -> None:
    from conftest import wait_for

    gate = project.path / "go"
    project.plan(gate=str(gate))
    proc = project.popen("-m", "baseline")
    wait_for(lambda: project.started(), what="the first run to start")
    with open(project.path / "fake_trainer.py", "a") as handle:
        handle.write("\nLEARNING_RATE = 3e-4  # edited while the session runs\n")
    gate.write_text("")
    assert proc.wait(timeout=120) != 0
    out = (project.path / "pytest_out.txt").read_text()
    assert "the setup changed while it ran (fake_trainer.py changed" in out
    assert "the setup changed during this session" in out  # the later seeds are not started
    assert not list((project.research / ".exprun" / "runs").rglob("seed*.json"))
    no_traceback(out)
