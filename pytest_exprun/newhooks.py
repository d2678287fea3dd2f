"""Hook specifications a project's ``conftest.py`` can implement to adapt exprun to its trainer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .executors import Executor
    from .settings import Settings
    from .store import RunRecord


@pytest.hookspec(firstresult=True)
def pytest_exprun_make_executor(config: pytest.Config, settings: "Settings") -> "Executor | None":
    """Return the executor that starts this session's runs, or None if ``settings.executor`` is not yours.

    The built-in ``local``, ``warm``, ``gpus`` and ``slurm`` executors are default (trylast)
    implementations, so a ``conftest.py`` or another plugin can add one (say ``ray``) without
    editing exprun: check ``settings.executor == "ray"`` and return your ``Executor``.
    """


@pytest.hookspec(firstresult=True)
def pytest_exprun_build_argv(config: pytest.Config, group: str, seed: int, argv: list[str]) -> list[str] | None:
    """Return the argv to run for one seed instead of ``argv`` (exprun's own), or None to keep it.

    ``group`` is ``"baseline"`` or the experiment's name.
    """


@pytest.hookspec(firstresult=True)
def pytest_exprun_parse_line(config: pytest.Config, line: str) -> tuple[int, float] | None:
    """Parse one line of trainer output into ``(step, val_loss)``, or None if it carries none.

    exprun's own implementation, which reads ``Step N | val_loss: X | ...`` lines, runs last:
    implement this when your trainer prints something else. Returning None lets the next
    implementation try the line.
    """


@pytest.hookspec
def pytest_exprun_run_finished(config: pytest.Config, record: "RunRecord") -> None:
    """Called once a run's result has been stored (e.g. to upload it to a tracker)."""
