"""A baseline measured again (``--exprun-rerun-baseline``) without losing the one in force.

The new runs are stored apart (``.exprun/remeasure/``) while they are measured. Only when
every baseline seed is stored are they moved into place, the old runs, snapshot and report
set aside (nothing is deleted). A session that ends before that (a crash, a failed seed,
Ctrl-C, ``-k`` selecting some seeds) leaves the old baseline in force and says so in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .decide.protocol import BASELINE
from .reports import render as report
from .store import RunStore, set_aside

#: The kind under which the baseline snapshot is stored (``baseline.SNAPSHOT``).
SNAPSHOT = "baseline"


class Remeasure:
    """The staging store of a baseline being measured again, and the step that puts it in force."""

    def __init__(self, store: RunStore, key: str) -> None:
        self.store = store
        self.key = key
        self.staging = RunStore(store.root / "remeasure", store.scale)
        self.had_baseline = store.load_result(SNAPSHOT, BASELINE) is not None
        leftover = self.staging.folder(BASELINE, key)
        if leftover.exists():  # an earlier re-measure that never finished: measured again, kept aside
            set_aside(leftover, "unfinished")

    def commit(self, report_path: Path, rel: Callable[[Path], str]) -> str:
        """Put the new runs in force: old runs, snapshot and report set aside, the new runs moved in.

        The caller stores the new snapshot right after; returns the line to show.
        """
        kept = ""
        if report_path.exists() or report_path.is_symlink():
            moved = set_aside(report_path, "replaced" if report.is_ours_unedited(report_path) else "bak")
            kept = f"; the previous report is kept as {moved.name}"
        self.store.discard(BASELINE, self.key)
        self.store.discard_result(SNAPSHOT, BASELINE)
        target = self.store.folder(BASELINE, self.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.staging.folder(BASELINE, self.key), target)
        for path in sorted(target.glob("seed*.json")):
            record = self.store.load(BASELINE, self.key, int(path.stem[4:])) if path.stem[4:].isdigit() else None
            if record is not None:  # its log moved with it
                record.log = rel(self.store.log_path(BASELINE, self.key, record.seed))
                self.store.save(record)
        return f"the re-measured baseline is complete and now in force{kept}"

    def unfinished(self, have: int, need: int, report_path: Path, rel: Callable[[Path], str]) -> str:
        """The one line a session whose re-measure did not complete ends with."""
        kept = (f"the baseline in {rel(report_path)} stays in force" if self.had_baseline
                else "there is no baseline in force")
        return (f"re-measure of the baseline not completed ({have} of {need} seeds measured); {kept}; "
                "run the same command again to re-measure it")
