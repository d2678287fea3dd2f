"""A baseline measured again (``--exprun-rerun-baseline``) without losing the one in force.

The new runs are stored apart (``.exprun/remeasure/``) while they are measured. Only when
every baseline seed is stored are they moved into place, the old runs, snapshot and report
set aside (nothing is deleted). A session that ends before that (a crash, a failed seed,
Ctrl-C, ``-k`` selecting some seeds) leaves the old baseline in force and says so in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from .model import RunRecord
from .names import BASELINE
from .reports import render as report
from .store import RunStore, set_aside


class Remeasure:
    """The staging store of a baseline being measured again, and the step that puts it in force."""

    def __init__(self, store: RunStore, key: str, report_path: Path, rel: Callable[[Path], str]) -> None:
        self.store = store
        self.key = key
        self.report_path = report_path
        self.rel = rel
        self.staging = RunStore(store.root / "remeasure", store.scale)
        self.had_baseline = store.snapshot() is not None
        leftover = self.staging.folder(BASELINE, key)
        if leftover.exists():  # an earlier re-measure that never finished: measured again, kept aside
            set_aside(leftover, "unfinished")

    def store_for(self, group: str) -> RunStore:
        """Where a run of ``group`` is stored: the baseline's apart until it is complete."""
        return self.staging if group == BASELINE else self.store

    def commit(self, seeds: Iterable[int], say: Callable[[str], None]) -> dict[int, RunRecord]:
        """Put the new runs in force: old runs, snapshot and report set aside, the new runs moved in.

        The caller stores the new snapshot right after. Returns the runs of ``seeds`` as now stored
        (their logs moved with them).
        """
        kept, report_path, rel = "", self.report_path, self.rel
        if report_path.exists() or report_path.is_symlink():
            unedited = report.unchanged_since_written(report_path, self.store.report_digest(report_path))
            moved = set_aside(report_path, "replaced" if unedited else "bak")
            kept = f"; the previous report is kept as {moved.name}"
        self.store.discard_records(BASELINE, self.key)
        self.store.discard_snapshot()
        target = self.store.folder(BASELINE, self.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.staging.folder(BASELINE, self.key), target)
        moved_seeds = [int(p.stem[4:]) for p in target.glob("seed*.json") if p.stem[4:].isdigit()]
        for seed, record in self.store.records(BASELINE, self.key, moved_seeds).items():  # logs moved with them
            self.store.save_record(replace(record, log=rel(self.store.log_path(BASELINE, self.key, seed))))
        say(f"the re-measured baseline is complete and now in force{kept}")
        return self.store.records(BASELINE, self.key, seeds)

    def unfinished(self, have: int, need: int) -> str:
        """The one line a session whose re-measure did not complete ends with."""
        kept = (f"the baseline in {self.rel(self.report_path)} stays in force" if self.had_baseline
                else "there is no baseline in force")
        return (f"re-measure of the baseline not completed ({have} of {need} seeds measured); {kept}; "
                "run the same command again to re-measure it")
