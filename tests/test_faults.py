"""Faults injected for real: killed, hung and broken trainers, Ctrl-C, crashes mid-write,
two sessions at once, damaged or hand-edited state, hostile input, huge output, many seeds.

Whatever happens, no finished run is lost, no file is left half-written, and no verdict is
computed from data that is wrong or incomplete.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import BASELINE_LOSSES, Project, pid_alive, wait_for

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


def run_log(project: Project, seed: int) -> Path:
    """The log of a baseline seed's run, once the run has started."""
    found = wait_for(lambda: list((project.path / RECORDS / "baseline").glob(f"*/seed{seed}.log")),
                     what=f"the log of seed {seed}")
    return found[0]


def grandchild_pids(project: Project) -> tuple[int, int]:
    """(trainer, its child) once the ``grandchild`` trainer has started its child."""
    pid_file = project.path / "fake_grandchild.pid"
    text = wait_for(lambda: pid_file.exists() and pid_file.read_text().endswith("\n") and pid_file.read_text(),
                    what="the grandchild trainer to start its child")
    trainer, child = map(int, text.split())
    return trainer, child


def test_trainer_killed_from_outside_mid_run_fails_that_seed_only(project: Project) -> None:
    project.plan(behaviour={"256": "hang"})
    proc = project.popen("-m", "baseline")
    log = run_log(project, 256)
    wait_for(lambda: "hanging" in log.read_text(), what="seed 256 to print")
    (victim,) = [s["pid"] for s in project.started() if s["seed"] == 256]
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=60) == pytest.ExitCode.TESTS_FAILED
    out = (project.path / "pytest_out.txt").read_text()
    assert "baseline[seed256]: trainer was killed by a signal (SIGKILL)" in out
    assert "    hanging..." in out
    assert "4 passed" in out and "1 failed" in out
    assert stored_seeds(project) == [42, 137, 512, 1024]
    assert not (project.research / "baseline_variance_1M.md").exists()


def test_timeout_ends_the_whole_process_group_grandchild_included(project: Project) -> None:
    project.plan(behaviour={"137": "grandchild"})
    result = project.run("-m", "baseline", "--exprun-timeout=1")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([
        "*baseline[[]seed137[]]: trainer timed out after 1s (--exprun-timeout); its process group was ended after *s",
        "    fake trainer: seed 137*",
    ])
    trainer, grandchild = grandchild_pids(project)
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
    trainer, grandchild = grandchild_pids(project)  # the 3rd seed's trainer is running
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


# ------------------------------------------------------------------ 3. atomic writes
def _write_then_crash(tmp_path: Path, patch: str) -> subprocess.CompletedProcess[str]:
    """In a child process, overwrite ``report.md`` with ``os.<patch>`` replaced by an instant exit."""
    script = textwrap.dedent(f"""
        import os, pathlib
        from pytest_exprun.store import atomic_write_text
        real = os.{patch}
        os.{patch} = lambda *a, **k: os._exit(9)
        atomic_write_text(pathlib.Path("report.md"), "new " * 100_000)
    """)
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("patch", ["fsync", "replace"])
def test_crash_mid_write_leaves_the_old_file_whole(tmp_path: Path, patch: str) -> None:
    (tmp_path / "report.md").write_text("old report\n")
    assert _write_then_crash(tmp_path, patch).returncode == 9
    assert (tmp_path / "report.md").read_text() == "old report\n"
    # A crash cannot clean up after itself; what is left is a hidden temp file beside it.
    assert all(p.name.startswith(".report.md.") and p.name.endswith(".tmp")
               for p in tmp_path.iterdir() if p.name != "report.md")


def test_writer_killed_at_random_instants_never_leaves_a_torn_file(tmp_path: Path) -> None:
    versions = {"a" * 2_000_000 + "\n", "b" * 3_000_000 + "\n"}
    script = textwrap.dedent("""
        import pathlib, sys
        from pytest_exprun.store import atomic_write_text
        path = pathlib.Path("report.md")
        texts = ["a" * 2_000_000 + "\\n", "b" * 3_000_000 + "\\n"]
        atomic_write_text(path, texts[0])
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            atomic_write_text(path, texts[i % 2])
    """)
    for attempt in range(15):
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        # Let it run a varying while; the kill lands somewhere inside a write.
        try:
            proc.wait(timeout=0.01 + 0.013 * attempt)
        except subprocess.TimeoutExpired:
            pass
        proc.kill()
        proc.wait()
        proc.stdout.close()
        assert (tmp_path / "report.md").read_text() in versions


def test_full_disk_while_writing_keeps_the_old_file_and_no_temp(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_exprun.store import atomic_write_text

    path = tmp_path / "seed42.json"
    path.write_text('{"old": true}\n')

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        atomic_write_text(path, '{"new": true}\n')
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["seed42.json"]


def test_full_disk_during_a_session_fails_the_seed_clearly_and_keeps_the_report(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    report = project.research / "baseline_variance_1M.md"
    before = report.read_text()

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    result = project.run("-m", "baseline", "--exprun-rerun-baseline", "-k", "seed42")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*baseline[[]seed42[]]: could not store the result (*No space left on device*)*"])
    assert "Traceback" not in result.stdout.str()
    # The re-measure did not complete, so the old baseline stays in force: its report untouched, never torn.
    result.stdout.fnmatch_lines(["*re-measure of the baseline not completed (0 of 5 seeds measured)*stays in force*"])
    assert report.read_text() == before
    assert not list(project.research.glob("baseline_variance_1M.md.replaced-*"))
    assert not list(project.research.rglob("*.tmp"))


# --------------------------------------------------------------- 4. two sessions at once
def test_two_sessions_at_once_run_each_seed_exactly_once(project: Project) -> None:
    project.plan(gate="gate_open")
    first = project.popen("-m", "baseline", "-rs", output="first.txt")
    second = project.popen("-m", "baseline", "-rs", output="second.txt")
    outputs = [project.path / "first.txt", project.path / "second.txt"]
    waiting = wait_for(lambda: [p for p in outputs if "waiting for it to finish" in p.read_text()],
                       what="one session to wait for the other")
    (project.path / "gate_open").touch()
    assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    assert started_seeds(project) == [42, 137, 256, 512, 1024]
    (waiter,) = waiting
    text = waiter.read_text()
    assert "exprun: another exprun session (pid " in text
    assert "5 skipped" in text and "baseline reused from docs/research/baseline_variance_1M.md" in text
    assert stored_seeds(project) == [42, 137, 256, 512, 1024]
    assert not list(project.research.rglob("*.tmp")) and not list(project.research.rglob("*.corrupt-*"))


def test_second_session_refuses_at_once_with_lock_wait_zero(project: Project) -> None:
    project.plan(gate="gate_open")
    first = project.popen("-m", "baseline", output="first.txt")
    wait_for(lambda: project.started(), what="the first session's first run")
    result = project.run_subprocess("-m", "baseline", "--exprun-lock-wait=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: another exprun session is using *docs/research (lock *lock); "
                                 "wait for it or raise --exprun-lock-wait"])
    (project.path / "gate_open").touch()
    assert first.wait(timeout=120) == 0
    assert started_seeds(project) == [42, 137, 256, 512, 1024]


def test_baseline_report_missing_after_all_runs_stored_is_written_from_the_store(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    report = project.research / "baseline_variance_1M.md"
    expected = report.read_text().split("- Measured:")[0]
    report.unlink()  # as if the session stopped between the last record and the report
    project.run("-m", "baseline").assert_outcomes(skipped=5)
    assert report.read_text().split("- Measured:")[0] == expected
    assert len(started_seeds(project)) == 5


# ------------------------------------------------- 5. corrupt or hand-edited state
def _record(project: Project, seed: int, group: str = "baseline") -> Path:
    (path,) = (project.path / RECORDS / group).glob(f"*/seed{seed}.json")
    return path


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda text: text[: len(text) // 2], "not a valid run record (*)"),
        (lambda text: "\x00\xff garbage \x9c", "not a valid run record (*)"),
        (lambda text: "", "not a valid run record (*)"),
        (lambda text: text.replace('"val_loss": 2.0', '"val_loss": Infinity', 1), "not a valid run record (*finite*)"),
        (lambda text: text.replace('"seed": 42', '"seed": 137', 1), "not a valid run record (*does not match its location)"),
    ],
    ids=["truncated", "garbage", "empty", "infinite", "moved"],
)
def test_damaged_run_record_is_set_aside_and_only_its_seed_reruns(project: Project, damage, why: str) -> None:
    project.run("-m", "baseline", "-k", "seed42 or seed137").assert_outcomes(passed=2)
    path = _record(project, 42)
    original = path.read_bytes()
    path.write_bytes(damage(original.decode()).encode("utf-8", "surrogateescape"))
    damaged = path.read_bytes()
    result = project.run_subprocess("-m", "baseline")
    result.assert_outcomes(passed=4, skipped=1)
    result.stderr.fnmatch_lines([f"*{path}*{why}; kept as seed42.json.corrupt-*, seed 42 will be run again*"])
    assert started_seeds(project) == [42, 137, 42, 256, 512, 1024]
    (kept,) = path.parent.glob("seed42.json.corrupt-*")
    assert kept.read_bytes() == damaged
    assert json.loads(path.read_text())["val_loss"] == 2.0


def _baseline(project: Project) -> Path:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    return project.research / "baseline_variance_1M.md"


def _refused(project: Project, *patterns: str, args: tuple[str, ...] = ("--experiment=use_x",)) -> None:
    before = len(project.started())
    result = project.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(list(patterns))
    assert "Traceback" not in result.stderr.str()
    assert len(project.started()) == before


def test_baseline_report_with_four_seeds_is_refused(project: Project) -> None:
    project.run("-m", "baseline", "--exprun-baseline-seeds=42,137,256,512").assert_outcomes(passed=4)
    _refused(project, "ERROR: *baseline_variance_1M.md holds seeds [[]42, 137, 256, 512[]] but the protocol "
                      "needs [[]42, 137, 256, 512, 1024[]]; re-measure with --exprun-rerun-baseline*")


def test_baseline_report_with_edited_seed_numbers_is_refused(project: Project) -> None:
    report = _baseline(project)
    text = report.read_text()
    report.write_text(text.replace("| 137 | 2.0200 |", "| 137 | 1.9000 |"))
    _refused(project, "ERROR: *baseline_variance_1M.md was changed since exprun wrote it *: move it aside (rename "
                      "it) *or re-measure with --exprun-rerun-baseline*")


def test_baseline_report_with_edited_summary_numbers_is_refused(project: Project) -> None:
    report = _baseline(project)
    text = report.read_text()
    report.write_text(text.replace("| val_loss | 2.0000 | 0.0158 |", "| val_loss | 2.0000 | 0.0010 |"))
    _refused(project, "ERROR: *baseline_variance_1M.md was changed since exprun wrote it*re-measure with "
                      "--exprun-rerun-baseline*")


def test_an_earlier_versions_store_edited_numbers_are_refused_by_the_data_block(project: Project) -> None:
    """A store without the report's digest (written by an earlier version): the data block decides, as then."""
    report = _baseline(project)
    (project.research / ".exprun/results/1M/reports/baseline_variance_1M.md.json").unlink()
    report.write_text(report.read_text().replace("| 137 | 2.0200 |", "| 137 | 1.9000 |"))
    _refused(project, "ERROR: *baseline_variance_1M.md was edited by hand: *restore it (e.g. from git) or "
                      "re-measure with --exprun-rerun-baseline*")


def test_an_earlier_versions_store_keeps_a_baseline_report_with_only_prose_added(project: Project) -> None:
    report = _baseline(project)
    (project.research / ".exprun/results/1M/reports/baseline_variance_1M.md.json").unlink()
    text = report.read_text().replace("## Per-Seed Results", "Measured on the old cluster; see notes.\n\n## Per-Seed Results")
    report.write_text(text)
    project.plan(WINNER)
    result = project.run("--experiment=use_x", "-rs")
    result.assert_outcomes(passed=4, skipped=7)
    result.stdout.fnmatch_lines(["*baseline reused from docs/research/baseline_variance_1M.md*"])
    assert report.read_text() == text
    assert started_seeds(project) == [42, 137, 256, 512, 1024]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("# Baseline 1M\n\n| Metric | Mean | Std | Min | Max |\n|---|---|---|---|---|\n"
         "| val_loss | 2.0000 | 0.0158 | 1.9800 | 2.0200 |\n", "has no exprun data block*"),
        ("# Baseline\n\n<!-- exprun-data: {\"kind\": \"baseline\", \"runs\": [} -->\n", "its exprun data block is damaged*"),
        ("# Baseline\n\n<!-- exprun-data: {\"kind\": \"baseline\"} -->\n", "has no run records behind it*"),
        (b"# Baseline \xff\xfe\n", "is not UTF-8 text*"),
    ],
    ids=["short-format", "damaged-json", "missing-fields", "binary"],
)
def test_hand_written_or_damaged_baseline_is_refused_then_kept_aside_on_rerun(
    project: Project, content: str | bytes, pattern: str
) -> None:
    report = project.research / "baseline_variance_1M.md"
    report.parent.mkdir(parents=True)
    raw = content if isinstance(content, bytes) else content.encode()
    report.write_bytes(raw)
    _refused(project, f"ERROR: *baseline_variance_1M.md*{pattern}")
    assert report.read_bytes() == raw
    result = project.run("-m", "baseline", "--exprun-rerun-baseline")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["exprun: the re-measured baseline is complete and now in force; the previous report "
                                 "is kept as baseline_variance_1M.md.bak-*"])
    (kept,) = project.research.glob("baseline_variance_1M.md.bak-*")
    assert kept.read_bytes() == raw
    assert "<!-- exprun-data:" in report.read_text()


def test_hand_edited_experiment_report_is_kept_aside_when_rewritten(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    report = project.research / "experiment_use_x_1M.md"
    mine = report.read_text() + "\nMy conclusions: ship it.\n"
    report.write_text(mine)
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=1, skipped=10)
    result.stdout.fnmatch_lines(["*experiment_use_x_1M.md was not written by exprun or was edited; kept as experiment_use_x_1M.md.bak-*"])
    (kept,) = project.research.glob("experiment_use_x_1M.md.bak-*")
    assert kept.read_text() == mine
    assert "My conclusions" not in report.read_text()


# ------------------------------------------------------------------ 6. stale baseline
def test_baseline_from_another_trainer_command_is_refused_saying_what_changed(project: Project) -> None:
    _baseline(project)
    (project.path / "fake_trainer2.py").write_text((project.path / "fake_trainer.py").read_text())
    _refused(
        project,
        "ERROR: *baseline_variance_1M.md was measured with a different setup (trainer command "
        "'python fake_trainer.py' → 'python fake_trainer2.py'; fake_trainer.py is no longer part of the setup "
        "(was sha256 *); fake_trainer2.py is new in the setup (sha256 *)); it is not reused for a changed trainer: "
        "re-measure with --exprun-rerun-baseline*",
        args=("--experiment=use_x", "--exprun-command=python fake_trainer2.py"),
    )


def test_baseline_from_an_edited_trainer_is_refused_before_any_experiment_run(project: Project) -> None:
    _baseline(project)
    with open(project.path / "fake_trainer.py", "a") as handle:
        handle.write("LEARNING_RATE = 3e-4  # tuned\n")
    _refused(project, "ERROR: *was measured with a different setup (fake_trainer.py changed (sha256 * → *))*")


# ------------------------------------------------------------------- 7. hostile input
HOSTILE = [
    ("--note $(touch pwned)", ["--note", "$(touch", "pwned)"]),
    ("--note=`touch pwned_too`", ["--note=`touch", "pwned_too`"]),
    ("note=; rm -rf important", ["--note", "; rm -rf important"]),
    ("../../escape", ["--../../escape"]),
    ("/etc/passwd=1", ["--/etc/passwd", "1"]),
    ("msg=line one\nline two", ["--msg", "line one\nline two"]),
    ("größe=ü✓", ["--größe", "ü✓"]),
    ("x" * 300, ["--" + "x" * 300]),
]


def _tree(root: Path, skip: set[str]) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] not in skip}


def test_hostile_experiment_flags_reach_the_trainer_verbatim_and_write_only_where_allowed(project: Project) -> None:
    (project.path / "important").write_text("keep me\n")
    skip = {"docs", "checkpoints", "fake_calls.jsonl", "fake_started.jsonl"}
    before = _tree(project.path, skip)
    args = [f"--experiment={spec}" for spec, _ in HOSTILE]
    result = project.run(*args, "--exprun-baseline-seeds=42,137", "--exprun-allow-small-baseline", "--exprun-experiment-seeds=42,137",
                         "--exprun-extension-seeds=", "--exprun-keep-checkpoints")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert "Traceback" not in result.stdout.str()
    flags_run = [c["flags"] for c in project.calls() if c["flags"]]
    assert flags_run == [flags for _, flags in HOSTILE for _seed in (42, 137)]
    assert _tree(project.path, skip) == before
    assert not list(project.path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))
    reports = [p.name for p in project.research.glob("experiment_*")]
    assert len([name for name in reports if name.endswith(".md")]) == len(HOSTILE)
    for name in reports + [p.name for p in (project.path / "checkpoints").iterdir()]:
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,120}", name), name
        assert ".." not in name
    for path in project.research.rglob("*"):
        assert path.resolve().is_relative_to(project.research.resolve())


@pytest.mark.parametrize("name", ["../../../outside", "/srv/evil", "a/b\\c", "$(touch pwned)", "\n", "..", "名前"])
def test_hostile_experiment_name_still_makes_a_safe_report_name(project: Project, name: str) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x", f"--experiment-name={name}").assert_outcomes(passed=9, skipped=2)
    (report,) = project.research.glob("experiment_*.md")
    assert re.fullmatch(r"experiment_[A-Za-z0-9_.-]+_1M\.md", report.name) and ".." not in report.name
    assert not list(project.path.rglob("pwned*"))
    assert not list(project.path.parent.glob("outside*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exprun-train-tokens=0"], "--exprun-train-tokens must be a positive integer, got 0"),
        (["--exprun-train-tokens=-1000"], "--exprun-train-tokens must be a positive integer, got -1000"),
        (["--exprun-train-tokens=lots"], "--exprun-train-tokens must be a positive integer, got 'lots'"),
        (["--exprun-baseline-seeds=,"], "--exprun-baseline-seeds is empty*"),
        (["--exprun-baseline-seeds=42"], "--exprun-baseline-seeds needs at least 2 seeds*"),
        (["--exprun-baseline-seeds=42,42,137"], "--exprun-baseline-seeds lists seed(s) [[]42[]] more than once"),
        (["--exprun-baseline-seeds=42,-1"], "--exprun-baseline-seeds must be non-negative integers*"),
        (["--exprun-baseline-seeds=4;2"], "--exprun-baseline-seeds must be comma-separated integers*"),
        (["--exprun-experiment-seeds= "], "--exprun-experiment-seeds is empty*"),
        (["--exprun-experiment-seeds=1,2", "--exprun-extension-seeds=2,3"], "seed(s) [[]2[]] are both experiment and extension seeds*"),
        (["--exprun-command=python no_such_trainer.py"], "trainer file *no_such_trainer.py does not exist*"),
        (["--exprun-command=./train.sh"], "trainer command './train.sh' is not an executable program*"),
        (["--exprun-command=no-such-program-anywhere"], "trainer command 'no-such-program-anywhere' is not an executable program*"),
        (["--exprun-command="], "--exprun-command is empty*"),
        (["--exprun-command=python 'unclosed"], "--exprun-command cannot be split: *"),
        (["--exprun-timeout=-5"], "--exprun-timeout must be 0 (no limit) or positive, got -5"),
        (["--exprun-lock-wait=soon"], "--exprun-lock-wait must be a number, got 'soon'"),
        (["--experiment=has space=1"], "--experiment='has space=1': expected NAME or NAME=VALUE*"),
        (["--exprun-research-dir=train.sh/research"], "cannot use *train.sh/research as the research dir (*Not a directory*)*"),
        (["--experiment=--x 'unclosed"], "cannot split --experiment=*"),
        (["--experiment=--output_dir /etc"], "--experiment='--output_dir /etc' passes --output_dir, which would "
                                             "override --output_dir: exprun sets --train_tokens, --seed, --output_dir*"),
        (["--experiment=seed=1"], "--experiment='seed=1' passes --seed, which would override --seed*"),
        (["--experiment=--lr 1e-3 --see=7"], "*passes --see, which would override --seed*"),
        (["--experiment=--train_tokens=5"], "*passes --train_tokens, which would override --train_tokens*"),
    ],
)
def test_bad_input_is_a_one_line_error_before_any_run(project: Project, args: list[str], message: str) -> None:
    (project.path / "train.sh").write_text("#!/bin/sh\necho 'Step 1 | val_loss: 2.0'\n")  # not executable
    result = project.run("-m", "baseline", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, errors
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert project.started() == []


def test_atomic_write_keeps_permissions_like_a_plain_write(tmp_path: Path) -> None:
    from pytest_exprun.store import atomic_write_text

    plain, atomic = tmp_path / "plain.md", tmp_path / "atomic.md"
    plain.write_text("x")
    atomic_write_text(atomic, "x")
    assert atomic.stat().st_mode == plain.stat().st_mode
    atomic.chmod(0o640)
    atomic_write_text(atomic, "y")
    assert atomic.stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------- 8. huge output
PEAK_RSS = textwrap.dedent("""
    import resource, subprocess, sys
    with open("pytest_out.txt", "wb") as out:
        rc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *sys.argv[1:]],
                            stdout=out, stderr=subprocess.STDOUT).returncode
    print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def _run_measuring_memory(project: Project, *args: str) -> tuple[int, int]:
    """Exit code and peak RSS in MB of a pytest process (and its trainers) run from the outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], cwd=project.path, env=env,
                         capture_output=True, text=True, timeout=600, check=True).stdout
    rc, kilobytes = map(int, out.split())
    return rc, kilobytes // 1024


def _check_huge_output_run(project: Project, seed: int, peak_mb: int) -> None:
    assert peak_mb < 300, f"peak RSS {peak_mb} MB"
    record = json.loads(_record(project, seed).read_text())
    assert record["val_loss"] == float(BASELINE_LOSSES[str(seed)])
    log = _record(project, seed).with_suffix(".log")
    assert log.stat().st_size < 64 * 1024 * 1024 + 64 * 1024
    assert "[exprun: log truncated here; the last lines follow]" in log.read_text(errors="replace")
    assert log.read_text(errors="replace").rstrip().endswith(f"val_loss: {BASELINE_LOSSES[str(seed)]:.4f} "
                                                              "| train_loss: " f"{BASELINE_LOSSES[str(seed)] + 0.1:.4f} "
                                                              "| tok/s: 1,000 | elapsed: 0.5s")


def test_one_line_of_100_mb_costs_bounded_memory_and_is_parsed(project: Project) -> None:
    project.plan(behaviour={"42": "bigline"})
    rc, peak_mb = _run_measuring_memory(project, "-m", "baseline", "-k", "seed42")
    assert rc == 0
    _check_huge_output_run(project, 42, peak_mb)
    shown = (project.path / "pytest_out.txt").read_text()
    assert len(shown) < 100_000 and max(len(line) for line in shown.splitlines()) < 1000


@pytest.mark.slow
def test_a_gigabyte_of_output_costs_bounded_memory_and_terminal_space(project: Project) -> None:
    project.plan(behaviour={"137": "flood"})
    # -v echoes every line the trainer prints, the case where throttling must hold the terminal back.
    rc, peak_mb = _run_measuring_memory(project, "-m", "baseline", "-k", "seed137", "-v")
    assert rc == 0
    _check_huge_output_run(project, 137, peak_mb)
    shown = (project.path / "pytest_out.txt").read_text()
    assert len(shown) < 2_000_000
    assert "lines not shown here; every line is in the run's log]" in shown
    assert re.search(r"^exprun: run 1 of 1: baseline\[seed137\] done in", shown, re.M), shown[-2000:]


# ------------------------------------------------------------------------- 9. load
QUICK_TRAINER = """#!/bin/sh
seed=0
while [ $# -gt 0 ]; do
  case "$1" in --seed) seed="$2"; shift 2 ;; *) shift ;; esac
done
echo "$seed" >> quick_calls.txt
echo "Step 1 | val_loss: 2.$((seed % 97 + 100)) | train_loss: 2.5"
"""


def test_two_hundred_seeds_all_run_once_and_all_are_kept(project: Project) -> None:
    trainer = project.path / "quick.sh"
    trainer.write_text(QUICK_TRAINER)
    trainer.chmod(0o755)
    seeds = ",".join(str(s) for s in range(200))
    result = project.run("-q", "-m", "baseline", f"--exprun-baseline-seeds={seeds}", "--exprun-command=./quick.sh")
    result.assert_outcomes(passed=200)
    assert sorted(map(int, (project.path / "quick_calls.txt").read_text().split())) == list(range(200))
    assert stored_seeds(project) == list(range(200))
    text = (project.research / "baseline_variance_1M.md").read_text()
    assert "| 199 | 2.1050 |" in text and "Seeds used: 0, 1, 2," in text
    project.run("-q", "-m", "baseline", f"--exprun-baseline-seeds={seeds}",
                "--exprun-command=./quick.sh").assert_outcomes(skipped=200)
    assert len((project.path / "quick_calls.txt").read_text().split()) == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_pytest_terminated_ends_its_trainer_too(project: Project, sig: signal.Signals) -> None:
    project.plan(behaviour={"137": "grandchild"})
    proc = project.popen("-m", "baseline")
    trainer, grandchild = grandchild_pids(project)  # the 2nd seed's trainer is running
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == pytest.ExitCode.INTERRUPTED
    assert f"KeyboardInterrupt: stopped by {sig.name}" in (project.path / "pytest_out.txt").read_text()
    assert not pid_alive(trainer) and not pid_alive(grandchild)
    assert stored_seeds(project) == [42]


def test_second_ctrl_c_kills_a_trainer_that_ignores_sigterm_at_once(project: Project) -> None:
    project.plan(behaviour={"42": "stubborn"})
    proc = project.popen("-m", "baseline")
    log = run_log(project, 42)
    wait_for(lambda: "stubborn" in log.read_text(), what="the trainer to start")
    (trainer,) = [s["pid"] for s in project.started()]
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: (project.path / "fake_sigterm.txt").exists(), what="exprun to send SIGTERM")
    proc.send_signal(signal.SIGINT)  # the impatient second Ctrl-C, within the grace period
    assert proc.wait(timeout=3) == pytest.ExitCode.INTERRUPTED
    assert not pid_alive(trainer)


def test_a_log_that_cannot_be_written_fails_the_run_and_keeps_its_last_lines(tmp_path: Path) -> None:
    from pytest_exprun.trainer.runner import Failure, RunSpec, run_trainer

    trainer = tmp_path / "trainer.py"
    trainer.write_text("print('Step 20 | val_loss: 2.0000 | train_loss: 2.1')\n")
    spec = RunSpec(label="baseline[seed42]", group="baseline", seed=42, argv=(sys.executable, str(trainer)),
                   output_dir=tmp_path / "out", log_path=Path("/dev/full"))  # every write: ENOSPC
    result = run_trainer(spec)
    assert result.failure is Failure.LOG_CUT_SHORT and result.val_loss == 2.0
    assert result.tail[-2:] == ("Step 20 | val_loss: 2.0000 | train_loss: 2.1",
                                "[exprun: the log file could not be written: No space left on device]")


# ------------------------------------------------------- 10. what a run records
def test_an_early_inf_then_a_finite_final_value_keeps_the_run(project: Project) -> None:
    project.plan(behaviour={"137": "early_inf"})
    result = project.run("-m", "baseline")
    result.assert_outcomes(passed=5)
    assert "Traceback" not in result.stdout.str()
    record = json.loads(_record(project, 137).read_text())
    assert record["val_loss"] == 2.02
    assert [step for step, _ in record["curve"]] == [20, 30, 40, 50]


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("step0", "trainer evaluated only at step 0, before any training (an untrained model's loss); make the "
                  "trainer evaluate after its last step*"),
        ("early_eval", "trainer did not evaluate at its final step (its last val_loss is at step 30, but it "
                       "reported step 50); exprun records the final evaluation*"),
    ],
)
def test_a_run_without_a_final_evaluation_fails_in_one_line(project: Project, behaviour: str, message: str) -> None:
    project.plan(behaviour={"256": behaviour})
    result = project.run("-m", "baseline")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([f"baseline[[]seed256[]]: {message} after *s"])
    assert stored_seeds(project) == [42, 137, 512, 1024]
    assert not (project.research / "baseline_variance_1M.md").exists()


@pytest.mark.parametrize("behaviour", ["progress", "shuffled"])
def test_the_final_evaluation_is_recorded_whatever_the_output_looks_like(project: Project, behaviour: str) -> None:
    project.plan(behaviour={"42": behaviour})
    project.run("-m", "baseline", "-k", "seed42").assert_outcomes(passed=1)
    record = json.loads(_record(project, 42).read_text())
    assert record["val_loss"] == 2.0
    assert record["curve"][-1] == [50, 2.0]


def test_a_grandchild_in_a_session_of_its_own_does_not_outlive_its_run(project: Project) -> None:
    project.plan(behaviour={"42": "setsid"})
    project.run("-m", "baseline", "-k", "seed42").assert_outcomes(passed=1)
    trainer, grandchild = grandchild_pids(project)
    assert not pid_alive(trainer)
    wait_for(lambda: not pid_alive(grandchild), timeout=10, what="the setsid grandchild to be ended")


def test_a_trainer_that_redirects_its_output_is_not_told_it_was_killed(project: Project) -> None:
    project.plan(behaviour={"42": "redirect"})
    result = project.run("-m", "baseline", "-k", "seed42")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["baseline[[]seed42[]]: trainer printed no val_loss (expected lines like*"])
    assert "killed by a signal" not in result.stdout.str()
    assert "Step 50 | val_loss: 2.0000" in (project.path / "fake_redirected.txt").read_text()


# --------------------------------------------------- 11. inputs refused before any run
SHELL_TRAINER_WITH_HELP = """#!/bin/sh
if [ "$1" = "--help" ]; then
  echo "usage: train.sh [-h] [-S SEED] [--train_tokens N] [--output_dir DIR]"
  echo "  -S SEED, --seed SEED  the seed"
  exit 0
fi
echo "Step 1 | val_loss: 2.0"
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment=use_x\0"], "--experiment='use_x\\x00' contains a NUL byte, which no program argument can "
                                   "hold; remove it"),
        (["--experiment=use_x", "--exprun-command=python fake_trainer.py\0"],
         "--exprun-command contains a NUL byte*"),
        (["--experiment=use_x", "--experiment-name=a\0b"], "--experiment-name contains a NUL byte*"),
        (["--exprun-timeout=nan"], "--exprun-timeout must be a finite number of seconds, got 'nan'"),
        (["--exprun-timeout=inf"], "--exprun-timeout must be a finite number of seconds, got 'inf'"),
        (["--exprun-timeout=-0.5"], "--exprun-timeout must be 0 (no limit) or positive, got -0.5"),
        (["--exprun-lock-wait=nan"], "--exprun-lock-wait must be a finite number of seconds, got 'nan'"),
        (["--exprun-experiment-seeds=42"], "--exprun-experiment-seeds needs at least 2 seeds*"),
        (["--experiment=-s 7"], "--experiment='-s 7' passes -s, which would override --seed*"),
        (["--experiment=-s7"], "*passes -s7, which would override --seed*"),
        (["--experiment=--lr 1e-3 -s=7"], "*passes -s, which would override --seed*"),
        (["--experiment=summary"], "an experiment cannot be named 'summary': exprun uses that name for its own "
                                   "files; pass --experiment-name"),
        (["--experiment=use_x", "--experiment-name=Baseline"], "an experiment cannot be named 'Baseline'*"),
        (["--experiment=Use_x", "--experiment=use_x"], "--experiment='use_x' and --experiment='Use_x' both make the "
                                                        "report name*"),
        (["--exprun-fingerprint-include=/etc/passwd"], "--exprun-fingerprint-include: '/etc/passwd' must be a path "
                                                        "or glob inside the rootdir*"),
        (["--exprun-fingerprint-exclude=../x"], "--exprun-fingerprint-exclude: '../x' must be a path or glob*"),
    ],
)
def test_hostile_input_is_refused_in_one_line_before_any_run(project: Project, args: list[str], message: str) -> None:
    result = project.run(*args) if any(a.startswith("--experiment") for a in args) else project.run("-m", "baseline", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, errors
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert project.started() == []


def test_a_negative_value_is_not_taken_for_a_short_option(project: Project) -> None:
    project.plan(behaviour={})
    result = project.run("--experiment=--lr -1e-3", "-k", "seed42", "-m", "experiment")
    assert result.ret != pytest.ExitCode.USAGE_ERROR
    assert [c["flags"] for c in project.calls() if c["flags"]] == [["--lr", "-1e-3"]]


def test_short_options_of_a_trainer_that_is_not_python_come_from_its_help(project: Project) -> None:
    trainer = project.path / "train.sh"
    trainer.write_text(SHELL_TRAINER_WITH_HELP)
    trainer.chmod(0o755)
    _refused(project, "ERROR: --experiment='-S 3' passes -S, which would override --seed*",
             args=("--experiment=-S 3", "--exprun-command=./train.sh"))


def test_names_that_differ_keep_their_own_reports(project: Project) -> None:
    project.plan({"--better yes": {"42": 1.9, "137": 1.91, "256": 1.89},
                  "--better-yes": {"42": 2.1, "137": 2.11, "256": 2.09}})
    result = project.run("--experiment=better=yes", "--experiment=better-yes")
    result.assert_outcomes(passed=12, failed=1, skipped=4)  # one WINNER, one LOSER
    reports = sorted(p.name for p in project.research.glob("experiment_*.md"))
    assert len(reports) == 2 and "experiment_better-yes_1M.md" in reports
    assert "WINNER" in (project.research / "experiment_better-yes_1M.md").read_text()


@pytest.mark.parametrize(
    ("first", "second"),
    [("better=yes", "better-yes"), ("better=yes", "--better=yes"), ("a=b-c", "a-b=c"), ("x=1", "--x 1 --y"),
     ("lr=3e-3", "--lr-3e 3"), ("note=a b", "note=a_b")],
)
def test_experiment_names_of_different_flags_differ(first: str, second: str) -> None:
    from pytest_exprun.decide.protocol import experiment_flags, experiment_name

    a, b = experiment_flags(first), experiment_flags(second)
    assert a != b and experiment_name(a) != experiment_name(b)
