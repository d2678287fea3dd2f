"""Reuse or refuse a stored baseline, before any run.

A scale's baseline is the snapshot in the run store: the setup it was measured with, its
seeds, and (through the setup key) its run records. It is reused while the setup is
unchanged; a changed setup, other seeds, or a report whose numbers were edited by hand is
refused with the remedy. The report itself is never read as data: only whether exprun
wrote it and whether its tables were changed since.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .reports import render as report
from .decide.protocol import BASELINE
from . import runs
from .store import RunStore, Setup

#: The kind under which the baseline snapshot is stored (see ``RunStore.save_result``).
SNAPSHOT = "baseline"
RERUN = "re-measure with --exprun-rerun-baseline (the current file is kept aside)"


class BaselineRefused(Exception):
    """The stored baseline cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Snapshot:
    """What a finished baseline was measured with; the report is rendered from it and the records."""

    setup: dict[str, Any]
    setup_key: str
    seeds: tuple[int, ...]
    git_commit: str | None
    measured_at: str

    def to_json(self) -> dict[str, Any]:
        return {"setup": self.setup, "setup_key": self.setup_key, "seeds": list(self.seeds),
                "git_commit": self.git_commit, "measured_at": self.measured_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Snapshot":
        return cls(dict(data["setup"]), str(data["setup_key"]), tuple(int(s) for s in data["seeds"]),
                   None if data.get("git_commit") is None else str(data["git_commit"]), str(data["measured_at"]))


def load_snapshot(store: RunStore) -> Snapshot | None:
    data = store.load_result(SNAPSHOT, BASELINE)
    if data is None:
        return None
    try:
        return Snapshot.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def save_snapshot(store: RunStore, snapshot: Snapshot) -> None:
    store.save_result(SNAPSHOT, BASELINE, snapshot.to_json())


def prepare(store: RunStore, setup: Setup, seeds: tuple[int, ...], report_path: Path, rerun: bool,
            measuring: bool, say: Callable[[str], None], rootdir: Path) -> Snapshot | None:
    """The snapshot to reuse, or None when the baseline is (still) to be measured.

    ``measuring``: baseline seeds are selected to run in this session; ``--exprun-rerun-baseline``
    re-measures only then, so ``-k verdict`` never discards a valid one; the old baseline is set
    aside only once the new one is complete (``remeasure``).
    """
    snapshot = load_snapshot(store)
    if rerun:
        if not measuring:
            say("--exprun-rerun-baseline ignored: no baseline seed is selected to run in this session")
        else:
            # provenance: the old baseline stays in force until the new one is complete (see remeasure.py)
            if snapshot is not None:
                say("re-measuring the baseline; the current one stays in force until every seed is measured")
            return None
    if snapshot is None:
        if report_path.exists():
            _refuse_unbacked_report(report_path)
        return None
    stored = Setup.from_json(snapshot.setup)
    changes = setup.differences(stored)
    if not changes:  # provenance: what the baseline's runs read while they ran, checked again now
        changes = runs.traced_changes(snapshot.setup, rootdir)
    if changes:
        raise BaselineRefused(
            f"{report_path} was measured with a different setup ({'; '.join(changes)}); "
            f"it is not reused for a changed trainer: {RERUN}"
        )
    if sorted(snapshot.seeds) != sorted(seeds):
        raise BaselineRefused(f"{report_path} holds seeds {sorted(snapshot.seeds)} but the protocol needs "
                              f"{sorted(seeds)}; {RERUN}")
    if report_path.exists():
        _refuse_edited_numbers(report_path)
    return snapshot


def _refuse_unbacked_report(path: Path) -> None:
    """A report with no snapshot behind it: written by hand, by an older exprun, or its store was removed."""
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
