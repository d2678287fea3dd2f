"""What a protocol session shows: pytest's verbosity levels, counters, and -n refused in one line."""

from __future__ import annotations

import pytest

from conftest import Project

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
NEUTRAL = {"--use_x": {"42": 2.00, "137": 1.99, "256": 2.01, "512": 2.00, "1024": 2.00}}


def test_default_output_shows_evaluation_lines_but_not_the_trainers_chatter(project: Project) -> None:
    result = project.run("-m", "baseline", "-k", "seed42")
    out = result.stdout.str()
    assert "Step 50 | val_loss: 2.0000" in out
    assert "fake trainer: seed 42" not in out  # the trainer's banner is in the run's log only


def test_verbose_output_echoes_every_line(project: Project) -> None:
    result = project.run("-m", "baseline", "-k", "seed42", "-v")
    assert "fake trainer: seed 42" in result.stdout.str()


def test_quiet_output_is_one_line_per_run(project: Project) -> None:
    result = project.run("-m", "baseline", "-q")
    lines = [line for line in result.stdout.lines if "exprun: run " in line]
    assert len(lines) == 5 and all(" done in " in line for line in lines)
    assert "val_loss: 2.0000 |" not in result.stdout.str()


def test_the_counter_says_how_many_runs_may_follow(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    project.plan(NEUTRAL)
    result = project.run("--experiment=use_x")
    result.stdout.fnmatch_lines(["exprun: run 1 of 3-5: use_x[[]seed42[]] started",
                                 "exprun: run 4 of 5: use_x[[]seed512[]] started"])


def test_xdist_is_refused_in_one_line(project: Project) -> None:
    pytest.importorskip("xdist", reason="needs pytest-xdist: pip install -e '.[dev]'")
    result = project.run("--experiment=use_x", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: exprun runs the protocol in one pytest process*drop -n*"])
    assert project.calls() == []


def test_plain_unit_tests_still_run_under_xdist(project: Project) -> None:
    pytest.importorskip("xdist", reason="needs pytest-xdist: pip install -e '.[dev]'")
    project.pytester.makepyfile(test_unit="def test_one():\n    assert True\n")
    project.run("-n", "2").assert_outcomes(passed=1)


HEADER = "| true effect (σ) | P(WINNER) | P(LOSER) | expected experiment seeds |"


def test_rates_print_one_table_per_mode_without_a_run(project: Project) -> None:
    result = project.run("--exprun-rates")
    assert result.ret == 0
    out = result.stdout.str()
    assert out.count(HEADER) == 2
    assert "decision mode: fixed" in out and "decision mode: sequential" in out
    result.stdout.fnmatch_lines(["| 0 | 3.0% | 3.0% | 4.90 |", "| 2 | 61.8% | 0.0% | 3.89 |"])
    assert project.calls() == []


def test_rates_for_the_chosen_mode_only(project: Project) -> None:
    result = project.run("--exprun-rates", "--exprun-decide=sequential")
    assert result.ret == 0
    out = result.stdout.str()
    assert out.count(HEADER) == 1 and "decision mode: sequential" in out and "decision mode: fixed" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exprun-decide=bogus"], "ERROR: --exprun-decide must be 'fixed' or 'sequential', got 'bogus'"),
        (["--exprun-decide=sequential", "--exprun-alpha=nan"], "ERROR: --exprun-alpha must be a finite number, got 'nan'"),
        (["--exprun-decide=sequential", "--exprun-min-effect=inf"],
         "ERROR: --exprun-min-effect must be a finite number of baseline sigma, got 'inf'"),
    ],
)
def test_rates_with_a_bad_option_print_only_the_error(project: Project, args: list[str], message: str) -> None:
    result = project.run("--exprun-rates", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line.strip()] == [message]
    assert not [line for line in result.outlines if line.strip()]  # no session header, no "no tests ran"
