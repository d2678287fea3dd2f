"""Hook specifications a project's ``conftest.py`` can implement to adapt exprun to its trainer,
and how exprun calls them (a bug in a user's hook is one line naming it, not a traceback)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .executors import Executor
    from .model import Decision, DecisionMode, ExperimentDesign, RunRecord
    from .settings import Settings


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


@pytest.hookspec(firstresult=True)
def pytest_exprun_decide(config: pytest.Config, mode: "DecisionMode", design: "ExperimentDesign",
                         baseline: "Sequence[RunRecord]",
                         runs: "Mapping[str, Sequence[RunRecord]]") -> "Decision | None":
    """Decide one experiment (``design.name``) from its stored runs, or return None to leave it to the next rule.

    ``baseline`` holds the baseline's stored runs; ``runs`` each experiment's of the family, by
    name (in the fixed mode only this one's: its first seeds, and the extension seeds when the
    extension rule ran them). Return ``pytest_exprun.model.Decision.made(design, baseline,
    mine, verdict, reason=...)``; the verdict item passes or fails by it and the reports render
    it. exprun's fixed and sequential rules are default (trylast) implementations, one per
    ``mode``; no I/O belongs here.
    """


@pytest.hookspec
def pytest_exprun_run_finished(config: pytest.Config, record: "RunRecord") -> None:
    """Called once a run's result has been stored (e.g. to upload it to a tracker)."""


def call(config: pytest.Config, name: str, **kwargs: Any) -> Any:
    """Call one of exprun's hooks; an exception in a user's implementation becomes a ``ProtocolFailure``."""
    from .names import ProtocolFailure

    try:
        return getattr(config.hook, name)(config=config, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any error in user code is reported, with where it is
        raise ProtocolFailure(f"{name} raised {type(exc).__name__}: {exc} ({_where(exc, name)})") from None


def _where(exc: BaseException, hook: str) -> str:
    """File and line of the user's hook implementation that raised, for a one-line message."""
    tb = exc.__traceback__
    found = last = None
    while tb is not None:
        last = tb
        if tb.tb_frame.f_code.co_name == hook:
            found = tb
        tb = tb.tb_next
    frame = found or last
    if frame is None:
        return "no traceback"
    return f"in {frame.tb_frame.f_code.co_filename}, line {frame.tb_lineno}"
