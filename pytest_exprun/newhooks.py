"""Hook specifications a project's ``conftest.py`` can implement to adapt exprun to its trainer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .store import RunRecord


@pytest.hookspec(firstresult=True)
def pytest_exprun_build_argv(config: pytest.Config, group: str, seed: int, argv: list[str]) -> list[str] | None:
    """Return the argv to run for one seed instead of ``argv`` (exprun's own), or None to keep it.

    ``group`` is ``"baseline"`` or the experiment's name.
    """


@pytest.hookspec(firstresult=True)
def pytest_exprun_parse_line(config: pytest.Config, line: str) -> tuple[int, float] | None:
    """Parse one line of trainer output into ``(step, val_loss)``, or None if it carries none.

    Implement this when your trainer does not print ``Step N | val_loss: X | ...`` lines;
    the last pair parsed is the run's final val_loss.
    """


@pytest.hookspec
def pytest_exprun_run_finished(config: pytest.Config, record: "RunRecord") -> None:
    """Called once a run's result has been stored (e.g. to upload it to a tracker)."""
