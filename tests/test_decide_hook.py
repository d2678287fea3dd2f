"""A project's own decision rule, as a conftest.py implementation of ``pytest_exprun_decide``."""

from __future__ import annotations

import json

from conftest import Project

WELCH_RULE = '''
import pytest
from scipy import stats

from pytest_exprun.model import Decision, Verdict

ALPHA = 0.01


@pytest.hookimpl
def pytest_exprun_decide(design, baseline, runs):
    mine = runs[design.name]
    test = stats.ttest_ind([r.val_loss for r in mine], [r.val_loss for r in baseline], equal_var=False)
    if test.pvalue >= ALPHA:
        verdict = Verdict.NEUTRAL
    else:
        verdict = Verdict.WINNER if test.statistic < 0 else Verdict.LOSER
    return Decision.made(design, baseline, mine, verdict,
                         reason=f"Welch's t-test gives p = {test.pvalue:.3f}, not below alpha {ALPHA}.")
'''

#: 3.2 baseline sigma better on average, but so spread out that Welch's test cannot tell at alpha 0.01.
WIDE = {"--use_x": {"42": 1.90, "137": 2.00, "256": 1.95}}


def test_exprun_rule_calls_a_wide_improvement_a_winner(project: Project) -> None:
    project.plan(WIDE)
    result = project.run("--experiment=use_x")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: WINNER *"])


def test_a_conftest_rule_decides_the_verdict_and_the_report_renders_its_reason(project: Project) -> None:
    project.plan(WIDE)
    project.pytester.makeconftest(WELCH_RULE)
    result = project.run("--experiment=use_x")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: NEUTRAL*", "*Welch's t-test gives p = 0.2*, not below alpha 0.01.*"])
    result.assert_outcomes(passed=8, failed=1, skipped=2)
    report = (project.research / "experiment_use_x_1M.md").read_text()
    assert "Welch's t-test gives p = 0.2" in report and "NEUTRAL" in report
    twin = json.loads((project.research / "experiment_use_x_1M.json").read_text())
    assert twin["verdict"] == "NEUTRAL" and not twin["accepted"]
    summary = (project.research / "summary_1M.md").read_text()
    assert "| NEUTRAL |" in summary and "| WINNER |" not in summary
    # The stored decision is the rule's: the same command again renders it and runs nothing.
    calls = len(project.calls())
    again = project.run("--experiment=use_x")
    again.stdout.fnmatch_lines(["use_x: NEUTRAL*"])
    assert len(project.calls()) == calls


def test_a_rule_that_returns_something_else_fails_the_verdict_in_one_line(project: Project) -> None:
    project.plan(WIDE)
    project.pytester.makeconftest("def pytest_exprun_decide(design):\n    return 'WINNER'\n")
    result = project.run("--experiment=use_x")
    result.stdout.fnmatch_lines(["*pytest_exprun_decide returned 'WINNER', not a Decision on use_x; build one with*"])
    result.assert_outcomes(passed=8, failed=1, skipped=2)
    assert "Traceback" not in result.stdout.str()


def test_a_rule_that_decides_on_runs_it_was_not_given_gets_no_verdict(project: Project) -> None:
    project.plan(WIDE)
    project.pytester.makeconftest(
        "import dataclasses\n"
        "from pytest_exprun.model import Decision, Verdict\n\n"
        "def pytest_exprun_decide(design, baseline, runs):\n"
        "    made_up = [dataclasses.replace(r, seed=r.seed + 1) for r in runs[design.name]]\n"
        "    return Decision.made(design, baseline, made_up, Verdict.WINNER)\n"
    )
    result = project.run("--experiment=use_x")
    assert ("no verdict for use_x: the decision names runs that are not stored (baseline seeds [42, 137, 256, 512, "
            "1024], seeds [43, 138, 257]); a decision rule decides on the runs it is given") in result.stdout.lines
    result.assert_outcomes(passed=8, failed=1, skipped=2)
    assert "Traceback" not in result.stdout.str()
    assert not (project.research / "experiment_use_x_1M.md").exists()
