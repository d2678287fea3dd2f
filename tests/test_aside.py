"""The helper process that computes statistics and plots: same results as in-process, and
whatever happens to it, the verdict still comes (computed in-process)."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import Project, normalised_report, pid_alive
from pytest_exprun.reports import aside
from pytest_exprun.decide import evidence, stats
from pytest_exprun.decide.stats import summarize

BASE = {42: 2.00, 137: 2.02, 256: 1.98, 512: 2.01, 1024: 1.99}
EXP = {42: 1.90, 137: 1.91, 256: 1.89}
WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}


def evaluate_args() -> tuple:
    return BASE, EXP, summarize(list(BASE.values())), summarize(list(EXP.values()))


def test_the_helper_computes_exactly_what_the_session_would(with_aside: None) -> None:
    helper = aside.start()
    assert helper is not None
    try:
        assert helper.call(evidence.evaluate, *evaluate_args()) == evidence.evaluate(*evaluate_args())
    finally:
        helper.close()


def test_a_dead_helper_falls_back_to_computing_in_process(with_aside: None) -> None:
    helper = aside.start()
    assert helper is not None and helper._proc is not None
    proc = helper._proc
    proc.kill()
    proc.wait()
    assert helper.call(evidence.evaluate, *evaluate_args()) == evidence.evaluate(*evaluate_args())
    assert helper._proc is None  # not asked again


def test_an_error_in_the_helper_is_raised_in_process(with_aside: None) -> None:
    helper = aside.start()
    assert helper is not None
    try:
        with pytest.raises(ValueError, match="invalid literal"):
            helper.call(int, "not a number")
        assert helper.call(stats.holm_adjust, [0.01, 0.04]) == stats.holm_adjust([0.01, 0.04])
    finally:
        helper.close()


def test_output_printed_in_the_helper_does_not_break_replies(with_aside: None) -> None:
    helper = aside.start()
    assert helper is not None
    try:
        assert helper.call(print, "noise on stdout") is None
        assert helper.call(os.path.join, "a", "b") == os.path.join("a", "b")
    finally:
        helper.close()


def test_close_leaves_no_helper_behind(with_aside: None) -> None:
    helper = aside.start()
    assert helper is not None and helper._proc is not None
    pid = helper._proc.pid
    helper.close()
    assert not pid_alive(pid)


def test_reports_and_plots_are_the_same_with_and_without_the_helper(
    project: Project, with_plots: None, with_aside: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    helped = {p.name: normalised_report(p) for p in project.research.glob("*.md")}
    pngs = sorted(p.name for p in project.research.glob("*.png"))
    assert len(pngs) == 4 and "summary_1M_forest.png" in pngs  # three for the report, the summary's forest plot
    assert all(p.stat().st_size > 10_000 for p in project.research.glob("*.png"))
    for path in [*project.research.glob("*.md"), *project.research.glob("*.png")]:
        path.unlink()
    shutil.rmtree(project.research / ".exprun")
    monkeypatch.setattr("pytest_exprun.reports.aside.start", lambda: None)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    assert {p.name: normalised_report(p) for p in project.research.glob("*.md")} == helped
    assert sorted(p.name for p in project.research.glob("*.png")) == pngs
