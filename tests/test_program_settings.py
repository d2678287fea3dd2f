"""--exprun-margin and --exprun-program-alpha: read from the command line or the ini file,
validated before anything runs, and exposed on ``Settings``."""

from __future__ import annotations

import pytest

from conftest import Project

SHOW = """
from pytest_exprun import settings

def test_show(request):
    loaded = settings.load(request.config)
    print("MARGIN", loaded.margin, "PROGRAM", loaded.program_alpha)
"""


def _shown(project: Project, *args: str) -> str:
    project.pytester.makepyfile(test_show=SHOW)
    result = project.run("-s", "test_show.py", *args)
    result.assert_outcomes(passed=1)
    return next(line for line in result.outlines if "MARGIN" in line)


def test_without_the_options_nothing_changes(project: Project) -> None:
    assert "MARGIN None PROGRAM None" in _shown(project)


def test_options_from_the_command_line(project: Project) -> None:
    line = _shown(project, "--exprun-margin=0.5sigma", "--exprun-program-alpha=0.05")
    assert "Margin(value=0.5, unit=<Unit.SIGMA: 'sigma'>) PROGRAM 0.05" in line


def test_options_from_the_ini_file(project: Project) -> None:
    project.pytester.makeini("[pytest]\nexprun_command = python fake_trainer.py\nexprun_margin = 0.01\n"
                             "exprun_program_alpha = 0.1\n")
    assert "Margin(value=0.01, unit=<Unit.METRIC: 'metric'>) PROGRAM 0.1" in _shown(project)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exprun-margin=sigma"], ("ERROR: --exprun-margin needs a positive number in val_loss units (0.01) or in "
                                    "baseline sigma (0.5sigma), got 'sigma'")),
        (["--exprun-margin=-0.01"], ("ERROR: --exprun-margin must be a positive finite number (0.01 or 0.5sigma), "
                                    "got '-0.01'")),
        (["--exprun-margin=5%"], ("ERROR: --exprun-margin must be a number in val_loss units (0.01) or baseline sigma "
                                 "(0.5sigma), got '5%'")),
        (["--exprun-program-alpha=0"], ("ERROR: --exprun-program-alpha is the program's false-discovery rate and must "
                                       "lie between 0 and 0.5 (e.g. 0.05), got 0")),
        (["--exprun-program-alpha=nan"], "ERROR: --exprun-program-alpha must be a finite number, got 'nan'"),
        (["--exprun-program-alpha=five"], "ERROR: --exprun-program-alpha must be a number, got 'five'"),
    ],
)
def test_a_bad_value_is_one_line_error_before_anything_runs(project: Project, args: list[str], message: str) -> None:
    result = project.run("--exprun-rates", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line.strip()] == [message]
    assert project.calls() == []
