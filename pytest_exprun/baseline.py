"""Reuse or refuse a stored baseline, before any run.

A scale's baseline is the snapshot in the run store: the setup it was measured with, its
seeds, and (through the setup key) its run records. It is reused while the setup is
unchanged; a changed setup, other seeds, or a report edited by hand is refused with the
remedy. The report is never read back as data: the store keeps the SHA-256 and size of the
report exprun wrote (``RunStore.report_digest``), and the file on disk either matches them
(rewritten freely) or was changed since (refused: nothing a person wrote is silently replaced).

A store written by an earlier version has no digest; for it alone the report's own data block
decides, as it did then (a report whose table rows changed is refused, added prose is kept),
until exprun writes the report again and records its digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .reports import render as report
from .model import BaselineSnapshot, Setup
from .store import RunStore
from .trainer import provenance

RERUN = "re-measure with --exprun-rerun-baseline (the current file is kept aside)"


class BaselineRefused(Exception):
    """The stored baseline cannot be used; the message says why and what to do."""


def prepare(store: RunStore, setup: Setup, seeds: tuple[int, ...], report_path: Path, rerun: bool,
            measuring: bool, say: Callable[[str], None], rootdir: Path) -> BaselineSnapshot | None:
    """The snapshot to reuse, or None when the baseline is (still) to be measured.

    ``measuring``: baseline seeds are selected to run in this session; ``--exprun-rerun-baseline``
    re-measures only then, so ``-k verdict`` never discards a valid one; the old baseline is set
    aside only once the new one is complete (``remeasure``).
    """
    snapshot = store.snapshot()
    if rerun:
        if not measuring:
            say("--exprun-rerun-baseline ignored: no baseline seed is selected to run in this session")
        else:
            # The old baseline stays in force until the new one is complete (see remeasure.py).
            if snapshot is not None:
                say("re-measuring the baseline; the current one stays in force until every seed is measured")
            return None
    if snapshot is None:
        if report_path.exists():
            _refuse_unbacked_report(report_path, store.report_digest(report_path))
        return None
    stored = Setup.from_json(snapshot.setup)
    changes = setup.differences(stored)
    if not changes:  # what the baseline's runs read while they ran, checked again now
        changes = provenance.stored_changes(snapshot.traced, rootdir)
    if changes:
        raise BaselineRefused(
            f"{report_path} was measured with a different setup ({'; '.join(changes)}); "
            f"it is not reused for a changed trainer: {RERUN}"
        )
    if sorted(snapshot.seeds) != sorted(seeds):
        raise BaselineRefused(f"{report_path} holds seeds {sorted(snapshot.seeds)} but the protocol needs "
                              f"{sorted(seeds)}; {RERUN}")
    if report_path.exists():
        _refuse_edited(report_path, store.report_digest(report_path))
    return snapshot


#: What to do with a report changed since exprun wrote it.
EDITED = ("move it aside (rename it) to keep your edits and have exprun write it again from the store, or "
          "re-measure with --exprun-rerun-baseline")


def _refuse_edited(path: Path, digest: tuple[tuple[str, int], ...] | None) -> None:
    """Refuse a report that is no longer the file exprun wrote; an earlier version's store: its data block."""
    if digest is None:
        _refuse_edited_numbers(path)
    elif not report.unchanged_since_written(path, digest):
        raise BaselineRefused(f"{path} was changed since exprun wrote it (its SHA-256 differs from the one stored "
                              f"when it was written), and exprun does not overwrite edits: {EDITED}")


def _refuse_unbacked_report(path: Path, digest: tuple[tuple[str, int], ...] | None) -> None:
    """A report with no snapshot behind it: written by hand, by an older exprun, or its store was removed."""
    if digest is not None:
        whose = "exprun wrote it" if report.unchanged_since_written(path, digest) else "it was changed since exprun wrote it"
        raise BaselineRefused(f"{path} has no baseline snapshot behind it in {path.parent / '.exprun'} ({whose}): "
                              f"exprun reuses a baseline only from its own records; {RERUN}")
    try:
        read = report.read_report(path)
    except (OSError, report.ReportError) as exc:
        raise BaselineRefused(f"{exc}; {RERUN}") from None
    if read.data is None:
        raise BaselineRefused(
            f"{path} has no exprun data block (written by hand, or in the short format): "
            f"exprun cannot tell what it was measured with, so it will not reuse it; {RERUN}"
        )
    raise BaselineRefused(
        f"{path} has no run records behind it in {path.parent / '.exprun'} (removed, or written elsewhere): "
        f"exprun reuses a baseline only from its own records; {RERUN}"
    )


def _refuse_edited_numbers(path: Path) -> None:
    try:
        read = report.read_report(path)
    except (OSError, report.ReportError) as exc:
        raise BaselineRefused(f"{exc}; {RERUN}") from None
    data = read.data
    if data is None:
        raise BaselineRefused(f"{path} was replaced by a file exprun did not write; restore it (e.g. from git) "
                              f"or {RERUN}")
    if read.edited and data.get("tables_sha256") != report.tables_digest(read.body):
        raise BaselineRefused(
            f"{path} was edited by hand: the numbers in its tables no longer match what was measured "
            f"(added prose is fine, changed table rows are not); restore it (e.g. from git) or {RERUN}"
        )
