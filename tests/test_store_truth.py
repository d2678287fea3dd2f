"""The run store is the one source of truth: reports are rendered from it, never read back as data."""

from __future__ import annotations

import json
import re

import pytest

from conftest import Project

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
NEUTRAL = {"--use_x": {"42": 2.00, "137": 1.99, "256": 2.01, "512": 2.00, "1024": 2.00}}


def reports(project: Project) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(project.research.glob("*")) if p.is_file()}


@pytest.mark.parametrize("losses", [WINNER, NEUTRAL], ids=["winner", "neutral-extended"])
def test_deleted_reports_are_rendered_again_from_the_store_without_a_run(project: Project, losses: dict) -> None:
    project.plan(losses)
    first = project.run("--experiment=use_x")
    written = reports(project)
    assert {"baseline_variance_1M.md", "experiment_use_x_1M.md", "experiment_use_x_1M.json",
            "summary_1M.md"} <= set(written)
    calls = len(project.calls())
    for path in project.research.glob("*"):
        if path.is_file():
            path.unlink()
    again = project.run("--experiment=use_x")
    assert len(project.calls()) == calls  # not a single trainer run
    assert again.parseoutcomes().get("failed", 0) == first.parseoutcomes().get("failed", 0)
    assert reports(project) == written
    verdicts = [line for line in again.stdout.lines if line.startswith("use_x: ")]
    assert verdicts and verdicts[0].split(" (")[0] == [
        line for line in first.stdout.lines if line.startswith("use_x: ")][0].split(" (")[0]


def _edit_data_block(path, change) -> None:  # type: ignore[no-untyped-def]
    text = path.read_text()
    match = re.search(r"<!-- exprun-data: (\{.*\}) -->", text, re.DOTALL)
    assert match
    data = change(json.loads(match.group(1)))
    path.write_text(text[: match.start(1)] + json.dumps(data) + text[match.end(1):])


def test_editing_a_reports_data_block_changes_no_verdict(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)

    def lie(data: dict) -> dict:
        data.update(verdict="LOSER", runs=[{"seed": 42, "val_loss": 9.0, "wall_time": 1.0}], kind="baseline")
        return data

    _edit_data_block(project.research / "experiment_use_x_1M.md", lie)
    result = project.run("--experiment=use_x", "--exprun-rerun-baseline", "-k", "verdict")
    result.assert_outcomes(passed=1, deselected=10)
    result.stdout.fnmatch_lines(["use_x: WINNER *"])
    assert "## Verdict: WINNER" in (project.research / "experiment_use_x_1M.md").read_text()
    # the baseline's: an edit like any other (its digest no longer matches), refused in one line, never read
    _edit_data_block(project.research / "baseline_variance_1M.md", lie)
    result = project.run("--experiment=use_x", "-k", "verdict")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *baseline_variance_1M.md was changed since exprun wrote it*"])
    assert "LOSER" not in result.stdout.str() + result.stderr.str()


def test_not_baseline_marker_expression_does_not_start_the_protocol(project: Project) -> None:
    project.pytester.makepyfile(test_unit="def test_one():\n    assert True\n")
    for expression in ("not baseline", "not slow", "not (experiment or verdict)"):
        result = project.run("-m", expression, "--exprun-train-tokens=not-a-number")
        result.assert_outcomes(passed=1)
        assert "exprun::" not in result.stdout.str()
    assert project.calls() == []


def test_baseline_marker_expression_still_starts_it(project: Project) -> None:
    result = project.run("-m", "baseline and not slow")
    result.assert_outcomes(passed=5)


def test_a_report_name_is_never_reused_for_other_flags(project: Project) -> None:
    project.plan({"--better": {"42": 1.90, "137": 1.91, "256": 1.89}})
    project.run("--experiment=better", "--experiment-name=idea").assert_outcomes(passed=9, skipped=2)
    kept = (project.research / "experiment_idea_1M.md").read_text()
    result = project.run("--experiment=worse", "--experiment-name=idea")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*the report name 'idea' already holds the experiment '--better', not '--worse'*"])
    assert (project.research / "experiment_idea_1M.md").read_text() == kept
