"""The verdict ledger on disk: ``docs/research/verdicts.jsonl``, one line per decision, for agents.

A line is appended when a decision is stored, once: a decision made again from the same runs
keeps its time (``verdicts.Judge._store``) and is not appended twice, and a re-render never
touches the file. The ledger is derived from the store like every report: when it is missing,
the next decision writes it again from every stored decision (at every scale) in the order they
were made, and its own line with them. Each line is validated against the shipped schema
(``reports/verdicts.schema.json``) before it is written.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from .model import Decided
from .names import BASELINE, ProtocolFailure
from .reports import ledger
from .store import RunStore, StoreWarning, atomic_write_text, refuse_links


@dataclass(frozen=True)
class Line:
    """One decision as the ledger and the closing grep line state it."""

    scale: str
    decided: Decided
    report: str  # relative to the rootdir
    low: float | None
    high: float | None
    index: int = 1  # the n-th decision on its baseline
    familywise: float | None = None  # without program control: the uncontrolled rate so far

    def entry(self) -> ledger.LedgerEntry:
        d = self.decided.decision
        cmp = d.comparison
        assert cmp is not None and d.verdict is not None
        margin = d.margin
        program = d.program
        return ledger.LedgerEntry(
            experiment=d.name, flags=d.flags, verdict=d.verdict.value, delta=cmp.val_loss.delta,
            ci=(self.low, self.high), d=cmp.val_loss.cohens_d, baseline_seeds=len(d.baseline_seeds),
            experiment_seeds=len(d.seeds), mode=d.mode.value,
            margin=None if margin is None else ledger.MarginEntry(margin.value, margin.unit, margin.metric_units),
            baseline=d.baseline_key, report=self.report,
            seconds=float(sum(r.wall_time for r in (*self.decided.baseline, *self.decided.runs))),
            decided_at=parse_stamp(d.decided_at),
            program=ledger.ProgramEntry(self.index, familywise=self.familywise) if program is None else
            ledger.ProgramEntry(program.index, program.level, program.alpha))

    def grep_line(self) -> str:
        """``exprun: NAME VERDICT Δ=… [low, high] d=… seeds B+E Ns → report``: one line an agent can grep."""
        d = self.decided.decision
        cmp = d.comparison
        assert cmp is not None and d.verdict is not None
        ci = "[n/a]" if self.low is None or self.high is None else f"[{self.low:+.4f}, {self.high:+.4f}]"
        effect = "n/a" if cmp.val_loss.cohens_d is None else f"{cmp.val_loss.cohens_d:+.2f}"
        seconds = sum(r.wall_time for r in (*self.decided.baseline, *self.decided.runs))
        return (f"exprun: {d.name} {d.verdict.value} Δ={cmp.val_loss.delta:+.4f} {ci} d={effect} "
                f"seeds {len(d.baseline_seeds)}+{len(d.seeds)} {seconds:.0f}s → {self.report}")


def parse_stamp(stamp: str) -> datetime:
    """A stored decision's time (``store.now``: local time and its zone's name) as an aware datetime."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone()
    except ValueError:
        pass
    try:
        return datetime.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S").astimezone()  # read as local time
    except ValueError:
        return datetime.fromtimestamp(0, timezone.utc)


def utc_stamp(stamp: str) -> str:
    """A stored decision's time as the ledger writes it (``2026-01-31T12:00:00Z``)."""
    return parse_stamp(stamp).astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def line_of(decided: Decided, scale: str, report: Path, rootdir: Path, family: Sequence[Decided]) -> Line:
    """The ledger's view of a decision with its runs (its interval: Welch's 95% t-interval of Δ), in
    its ``family`` (every decision on its baseline)."""
    from .decide import stats
    from .reports.program_view import uncontrolled

    interval = stats.welch_interval([r.val_loss for r in decided.baseline], [r.val_loss for r in decided.runs])
    try:
        where = report.relative_to(rootdir).as_posix()
    except ValueError:
        where = report.name
    position, rate = uncontrolled(family, decided, lambda f, *a: f(*a))
    return Line(scale, decided, where, interval.low, interval.high, position,
                None if decided.decision.program else rate.familywise)


def stored_lines(state_dir: Path, research_dir: Path, rootdir: Path) -> list[Line]:
    """Every stored decision that still stands on its records, at every scale, in the order made."""
    from .decide.decision import restore

    lines = []
    results = state_dir / "results"
    for folder in sorted(p for p in results.glob("*") if p.is_dir()) if results.is_dir() else []:
        store = RunStore(state_dir, folder.name)
        standing = []
        for decision in store.decisions():
            base = store.records(BASELINE, decision.baseline_key, decision.baseline_seeds)
            runs = store.records(decision.name, decision.setup_key, decision.seeds)
            if len(base) != len(decision.baseline_seeds) or len(runs) != len(decision.seeds):
                continue
            standing.append(restore(decision, [base[s] for s in decision.baseline_seeds],
                                    [runs[s] for s in decision.seeds]))
        for decided in standing:
            family = [d for d in standing if d.decision.baseline_key == decided.decision.baseline_key]
            report = research_dir / f"experiment_{decided.name}_{folder.name}.md"
            lines.append(line_of(decided, folder.name, report, rootdir, family))
    return sorted(lines, key=lambda ln: (ln.decided.decision.decided_at, ln.report))


def _key(obj: dict[str, object]) -> tuple[str, str]:
    return str(obj.get("report")), str(obj.get("decided_at"))


def record(path: Path, fresh: Line, rebuild: Callable[[], Sequence[Line]] = tuple,
           inside: Path | None = None) -> None:
    """Append ``fresh`` unless the ledger already holds it; a missing ledger is written from ``rebuild``
    (every stored decision, ``fresh`` among them) first."""
    text = ledger.to_json_line(fresh.entry())
    key = _key(ledger.read_line(text))
    try:
        if not path.exists():
            lines = [ledger.to_json_line(ln.entry()) for ln in rebuild()]
            if key not in {_key(ledger.read_line(t)) for t in lines}:
                lines.append(text)
            atomic_write_text(path, "".join(f"{t}\n" for t in lines), inside=inside)
            return
        if inside is not None:
            refuse_links(path, inside)
        held = path.read_text(encoding="utf-8")
        keys = set()
        for number, raw in enumerate(held.splitlines(), start=1):
            try:
                keys.add(_key(ledger.read_line(raw)))
            except ledger.LedgerError as exc:
                warnings.warn(StoreWarning(f"{path} line {number} is not a ledger line ({exc}); it is left as it is"))
        if key in keys:
            return
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(("" if held.endswith("\n") or not held else "\n") + text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, ledger.LedgerError) as exc:
        raise ProtocolFailure(f"could not add {fresh.decided.name} to the ledger {path.name} ({exc}); the decision and "
                              "its report are stored: delete the ledger and run the same command to write it again "
                              "from the store") from None
