"""The executor and the aside helper started at the earliest moment pytest allows: its session start.

A warm worker or a fork server spends seconds importing torch before its first run, and the aside
helper seconds importing scipy and matplotlib. Started after collection and the baseline check,
those seconds come after pytest's; started when pytest's session starts, they overlap pytest's
header, collection, the lock, the fingerprint and the baseline check. Whether a run will be
needed is read cheaply at that moment: a seed the session surely runs (every baseline seed, the
control run, each experiment's first seed) whose record file is not in the store. Nothing is
read into the session or set aside then (the lock is not held yet); ``ProtocolSession.start``
looks again, properly, after collection: it starts what the early look missed, and closes at once
(by its process id, through the executor's ``close``) what was started although nothing runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import pytest

from . import runs, timings
from .names import BASELINE, CONTROL, CONTROL_SEED, SEEDS
from .settings import SEQUENTIAL

if TYPE_CHECKING:
    from .items import SeedRun
    from .session import ProtocolSession


def surely_run(session: ProtocolSession, with_baseline: bool) -> list[tuple[str, int]]:
    """The (group, seed)s the session runs whatever the rules decide, in the order it runs them."""
    s = session.settings
    found = [(BASELINE, seed) for seed in s.baseline_seeds] if with_baseline or s.experiments else []
    if found and s.control:
        found.append((CONTROL, CONTROL_SEED))
    first = SEEDS[0] if s.decide == SEQUENTIAL else (s.experiment_seeds[0] if s.experiment_seeds else None)
    return found + ([(e.name, first) for e in s.experiments] if first is not None else [])


def first_missing(session: ProtocolSession, with_baseline: bool) -> tuple[str, int] | None:
    """The first seed the session surely runs that has no record file in the store, if any."""
    s = session.settings
    for group, seed in surely_run(session, with_baseline):
        if group == CONTROL or (group == BASELINE and s.rerun_baseline):
            return group, seed  # never reused from the store
        if not session.store.record_path(group, session.setup(group).key(), seed).exists():
            return group, seed
    return None


def start_early(session: ProtocolSession, with_baseline: bool) -> None:
    """At pytest's session start: make the executor and start it (and the aside helper) if a run is
    surely needed. Anything that fails here is left for ``start_for`` to do again and report."""
    try:
        runs.check_trainer(session.settings)
        needed = first_missing(session, with_baseline)
        if needed is None:
            return
        executor = runs.make_executor(session.config, session.settings)
        first = session.spec(*needed)
    except (pytest.UsageError, OSError):
        return
    session.early = executor
    with timings.span("start the executor early"):
        executor.prestart(runs.untraced(first.env), first.cwd)
    if session.settings.experiments:
        with timings.span("start the aside helper early"):
            session.aside.start()


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
