"""The executor and the aside helper started at the earliest moment pytest allows: its configure step.

A warm worker or a fork server spends seconds importing torch before its first run, and the aside
helper seconds importing scipy and matplotlib. Started after collection and the baseline check,
those seconds come after pytest's; started as soon as exprun's settings are read, they overlap
exprun's own imports (the session, the rules, numpy: this module imports none of them), pytest's
header, collection, the lock, the fingerprint and the baseline check. It runs last among the
configure hooks (``trylast``), so the terminal is there for what an executor has to say.

Whether a run will be needed is read cheaply at that moment: a seed the session surely runs (every
baseline seed, the control run, each experiment's first seed) whose record file is not in the
store. Nothing is read into the session or set aside then (the lock is not held yet);
``ProtocolSession.start`` looks again, properly, after collection: it starts what the early look
missed, and closes at once (by its process id, through the executor's ``close``) what was started
although nothing runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import pytest

from . import newhooks, runs, timings
from .executors import Executor
from .names import BASELINE, CONTROL, CONTROL_SEED, SEEDS
from .reports import aside
from .settings import SEQUENTIAL, Settings
from .store import RunStore

if TYPE_CHECKING:
    from .items import SeedRun
    from .session import ProtocolSession


@dataclass(frozen=True)
class Early:
    """What ``start_early`` started, for the session to take over: an executor, an aside helper."""

    executor: Executor | None = None
    helper: aside.Aside | None = None


def surely_run(settings: Settings, with_baseline: bool) -> list[tuple[str, int]]:
    """The (group, seed)s the session runs whatever the rules decide, in the order it runs them."""
    s = settings
    found = [(BASELINE, seed) for seed in s.baseline_seeds] if with_baseline or s.experiments else []
    if found and s.control:
        found.append((CONTROL, CONTROL_SEED))
    first = SEEDS[0] if s.decide == SEQUENTIAL else (s.experiment_seeds[0] if s.experiment_seeds else None)
    return found + ([(e.name, first) for e in s.experiments] if first is not None else [])


def _flags(settings: Settings, group: str) -> tuple[str, ...]:
    return next((tuple(e.flags) for e in settings.experiments if e.name == group), ())


def first_missing(settings: Settings, store: RunStore, with_baseline: bool) -> tuple[str, int, str] | None:
    """The first seed the session surely runs that has no record file in the store: (group, seed, setup key)."""
    keys: dict[str, str] = {}
    for group, seed in surely_run(settings, with_baseline):
        if group not in keys:
            keys[group] = runs.setup_of(settings, _flags(settings, group))[0].key()
        if group == CONTROL or (group == BASELINE and settings.rerun_baseline):
            return group, seed, keys[group]  # never reused from the store
        if not store.record_path(group, keys[group], seed).exists():
            return group, seed, keys[group]
    return None


#: Options with which pytest configures itself but runs no session's tests (or exprun runs none).
NO_RUNS = ("collectonly", "help", "version", "markers", "showfixtures", "show_fixtures_per_test", "exprun_rates",
           "exprun_status")


def start_early(config: pytest.Config, settings: Settings, with_baseline: bool) -> Early:
    """Make the executor and start it (and the aside helper) if a run is surely needed. Anything
    that fails here is left for ``start_for`` to do again and report, in its usual place."""
    if any(getattr(config.option, name, False) for name in NO_RUNS):
        return Early()
    store = RunStore(settings.state_dir, settings.scale)
    try:
        runs.check_trainer(settings)
        needed = first_missing(settings, store, with_baseline)
        if needed is None:
            return Early()
        group, seed, key = needed
        executor = runs.make_executor(config, settings)
        build = functools.partial(newhooks.call, config, "pytest_exprun_build_argv", group=group, seed=seed)
        first = runs.spec_of(settings, group, seed, _flags(settings, group), build, store.log_path(group, key, seed))
    except (pytest.UsageError, OSError):
        return Early()
    with timings.span("start the executor early"):
        executor.prestart(runs.untraced(first.env), first.cwd)
    if not settings.experiments:
        return Early(executor)
    with timings.span("start the aside helper early"):
        return Early(executor, aside.start())


def start_for(session: ProtocolSession, pending: Sequence[SeedRun]) -> None:
    """After collection: start what runs need (unless the early look did), close what nothing needs."""
    prestarted = session.early is not None
    if session.early is None:
        with timings.span("make the executor"):
            session.executor = runs.make_executor(session.config, session.settings)
    else:
        session.executor, session.early = session.early, None
    executor = session.executor
    if pending and session.settings.experiments:
        session.aside.start()  # imports the statistics and plotting while the runs go on
    if pending and not prestarted:  # a warm worker or fork server imports torch meanwhile
        first = session.spec(pending[0].group, pending[0].seed)
        with timings.span("start the executor"):
            executor.prestart(runs.untraced(first.env), first.cwd)
    elif not pending and prestarted:
        with timings.span("close the executor started early: nothing runs"):
            executor.close(cancel=False)


def close_unused(session: ProtocolSession) -> None:
    """At pytest's session finish: what was started early for a session whose runs never began
    (no protocol item, an interrupted collection, a refusal before the executor was taken)."""
    early, session.early = session.early, None
    if early is not None:
        early.close(cancel=True)
    session.aside.close()
