"""A report edited by hand is told from an untouched one by the digest the store kept when exprun
wrote it, never by reading the report back: an edited one is refused or kept aside, an untouched
one is written again freely."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import Project

from pytest_exprun.reports.render import unchanged_since_written
from pytest_exprun.store import RunStore

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.92}}


def digest_file(project: Project, report: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((project.research / f".exprun/results/1M/reports/{report}.json").read_text())
    return data


def test_each_report_written_has_its_digest_in_the_store(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    for name in ("baseline_variance_1M.md", "experiment_use_x_1M.md", "summary_1M.md"):
        raw = (project.research / name).read_bytes()
        recorded = digest_file(project, name)
        assert (recorded["version"], recorded["report"], recorded["size"], recorded["sha256"]) == (
            1, name, len(raw), hashlib.sha256(raw).hexdigest())


def test_a_crash_between_recording_and_writing_leaves_a_report_still_known(tmp_path: Path) -> None:
    """The digest is recorded before the report is renamed into place; the version before stays known."""
    store = RunStore(tmp_path / ".exprun", "1M")
    report = tmp_path / "baseline_variance_1M.md"
    assert store.report_digest(report) is None  # nothing recorded: an earlier version's store
    report.write_text("first\n")
    store.report_digest(report, "first\n")
    store.report_digest(report, "second\n")  # ... and the crash comes before the rename
    assert unchanged_since_written(report, store.report_digest(report))
    report.write_text("second\n")
    assert unchanged_since_written(report, store.report_digest(report))
    report.write_text("second, edited\n")
    assert not unchanged_since_written(report, store.report_digest(report))
    store.report_digest(report, "third\n")  # only the last two versions stay known
    report.write_text("first\n")
    assert not unchanged_since_written(report, store.report_digest(report))


def test_a_hand_edited_baseline_report_is_refused_in_one_line_and_nothing_is_lost(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    report = project.research / "baseline_variance_1M.md"
    mine = report.read_text().replace("## Per-Seed Results", "Measured on the old cluster.\n\n## Per-Seed Results")
    report.write_text(mine)
    snapshot = (project.research / ".exprun/results/1M/baseline/baseline.json").read_bytes()
    started = len(project.started())
    project.plan(WINNER)
    result = project.run("--experiment=use_x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (error,) = [line for line in result.stderr.lines if line.strip()]
    assert error.startswith("ERROR: ") and "baseline_variance_1M.md was changed since exprun wrote it" in error
    assert "move it aside (rename it)" in error and "--exprun-rerun-baseline" in error
    assert report.read_text() == mine and not list(project.research.glob("baseline_variance_1M.md.*"))
    assert (project.research / ".exprun/results/1M/baseline/baseline.json").read_bytes() == snapshot
    assert len(project.started()) == started

    # moved aside as the line says: the edits are kept, the report comes back from the store, nothing runs again
    kept = report.rename(report.with_name("baseline_variance_1M.notes.md"))
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=4, skipped=7)  # the baseline's 5 seeds reused, not run again
    assert kept.read_text() == mine and "<!-- exprun-data:" in report.read_text()
    assert "Measured on the old cluster" not in report.read_text()
    assert sorted(project.seeds_run([])) == [42, 137, 256, 512, 1024]


def test_an_untouched_report_is_rewritten_whatever_its_data_block_says(project: Project) -> None:
    """The file exprun last wrote is replaced without a copy kept aside, even when its visible text no
    longer matches its own data block (which an earlier version read back to decide)."""
    project.run("-m", "baseline").assert_outcomes(passed=5)
    report = project.research / "baseline_variance_1M.md"
    fresh = report.read_text()
    older = fresh.replace("| 137 | 2.0200 |", "| 137 | 1.9000 |")  # as an earlier exprun might have written it
    report.write_text(older)
    RunStore(project.research / ".exprun", "1M").report_digest(report, older)  # recorded when it was written
    project.plan(WINNER)
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=4, skipped=7)
    assert report.read_text() == fresh
    assert not list(project.research.glob("baseline_variance_1M.md.*"))
    assert digest_file(project, "baseline_variance_1M.md")["sha256"] == hashlib.sha256(fresh.encode()).hexdigest()


def test_an_untouched_experiment_report_is_rewritten_and_an_edited_one_kept_aside(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    report = project.research / "experiment_use_x_1M.md"
    fresh = report.read_text()
    older = fresh.replace("## Verdict: WINNER", "## Verdict: WINNER (as first written)")
    report.write_text(older)
    RunStore(project.research / ".exprun", "1M").report_digest(report, older)
    project.run("--experiment=use_x").assert_outcomes(passed=1, skipped=10)
    assert report.read_text() == fresh and not list(project.research.glob("experiment_use_x_1M.md.*"))

    report.write_text(fresh + "\nMy conclusions: ship it.\n")
    result = project.run("--experiment=use_x")
    result.stdout.fnmatch_lines(["*experiment_use_x_1M.md was not written by exprun or was edited; kept as *"])
    (kept,) = project.research.glob("experiment_use_x_1M.md.bak-*")
    assert kept.read_text().endswith("My conclusions: ship it.\n") and report.read_text() == fresh
