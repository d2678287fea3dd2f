"""``pytest --exprun-status``: the research program at a glance, from the store, without a run.

The baseline (seeds, mean ± σ, setup, age), every experiment judged against it (verdict, Δ and
its interval, seeds, seconds spent) and, under ``--exprun-program-alpha``, the error budget left.
Fast: the standard library only, the interval taken from the ledger's line for the decision;
scipy is imported only when a decision has no line there (a deleted ledger).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from ..model import Decision, Verdict
from ..names import BASELINE
from ..program_ledger import parse_stamp, utc_stamp
from ..settings import Settings
from ..store import RunStore

#: ζ(1.5), the normaliser of LOND's spending sequence (``decide.program.gamma``), kept here so
#: that the status needs no scipy; a test checks it against scipy.
ZETA_1_5 = 2.612375348685488


def _age(stamp: str) -> str:
    then = parse_stamp(stamp).timestamp()
    if then <= 0:
        return "age unknown"
    hours = max(0.0, time.time() - then) / 3600
    return f"{hours * 60:.0f} min old" if hours < 1 else f"{hours:.1f} h old" if hours < 48 else f"{hours / 24:.0f} days old"


def _ledger(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """The ledger's lines by (report, decided_at); unreadable lines are skipped."""
    from .ledger import LedgerError, read_line

    found: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        text = (settings.research_dir / "verdicts.jsonl").read_text(encoding="utf-8")
    except OSError:
        return found
    for raw in text.splitlines():
        try:
            obj = read_line(raw)
        except LedgerError:
            continue
        found[(str(obj["report"]), str(obj["decided_at"]))] = obj
    return found


def lines(settings: Settings) -> list[str]:
    """What ``--exprun-status`` prints."""
    store = RunStore(settings.state_dir, settings.scale)
    snapshot = store.snapshot()
    out = [f"exprun status at {settings.scale} ({settings.train_tokens} train tokens), {_rel(settings.research_dir, settings)}"]
    if snapshot is None:
        return [*out, "no baseline measured yet: pytest -m baseline measures it"]
    base = store.records(BASELINE, snapshot.setup_key, snapshot.seeds)
    values = [r.val_loss for r in base.values()]
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    setup = snapshot.setup
    out.append(f"baseline: {len(values)} seeds {list(snapshot.seeds)}, {settings.trainer_io.metric_name} {statistics.fmean(values):.4f}{spread}, "
               f"setup {snapshot.setup_key} ({' '.join(str(a) for a in setup.get('command', []))}"
               f"{' ' + ' '.join(setup.get('flags', [])) if setup.get('flags') else ''}), measured "
               f"{snapshot.measured_at} ({_age(snapshot.measured_at)})")
    decisions = [d for d in store.decisions() if d.baseline_key == snapshot.setup_key]
    decisions.sort(key=lambda d: (d.program.index if d.program else 0, d.decided_at, d.name))
    if not decisions:
        return [*out, "no experiment decided on this baseline yet"]
    ledger = _ledger(settings)
    total = 0.0
    for d in decisions:
        line, spent = _experiment(settings, store, d, ledger)
        out.append(line)
        total += spent
    out.append(f"{len(decisions)} decision(s), {total:.0f} s of experiment runs in all")
    out.append(_budget(settings, decisions))
    return out


def _rel(path: Path, settings: Settings) -> str:
    try:
        return path.relative_to(settings.rootdir).as_posix()
    except ValueError:
        return str(path)


def _experiment(settings: Settings, store: RunStore, d: Decision, ledger: dict[tuple[str, str], dict[str, Any]]
                ) -> tuple[str, float]:
    base = store.records(BASELINE, d.baseline_key, d.baseline_seeds)
    runs = store.records(d.name, d.setup_key, d.seeds)
    verdict = "?" if d.verdict is None else d.verdict.value
    if len(base) != len(d.baseline_seeds) or len(runs) != len(d.seeds):
        return f"  {d.name}: {verdict} (its runs were set aside; it no longer stands on records)", 0.0
    b, e = [r.val_loss for r in base.values()], [r.val_loss for r in runs.values()]
    delta = statistics.fmean(e) - statistics.fmean(b)
    report = _rel(settings.experiment_report(d.name), settings)
    entry = ledger.get((report, utc_stamp(d.decided_at)))
    if entry is not None and entry["ci"]["low"] is not None:
        ci = f"[{entry['ci']['low']:+.4f}, {entry['ci']['high']:+.4f}]"
    else:
        from ..decide import stats  # only without a ledger line: scipy

        interval = stats.welch_interval(b, e)
        ci = "[n/a]" if interval.low is None else f"[{interval.low:+.4f}, {interval.high:+.4f}]"
    spent = float(sum(r.wall_time for r in runs.values()))
    step = f", step {d.program.index} at level {d.program.level:.2g}" if d.program else ""
    margin = f", margin ±{d.margin.metric_units:.4g}" if d.margin else ""
    return (f"  {d.name}: {verdict} Δ={delta:+.4f} {ci}, seeds {len(b)}+{len(e)}, {spent:.1f} s{margin}{step} "
            f"→ {report}", spent)


def _budget(settings: Settings, decisions: list[Decision]) -> str:
    """The error budget left under LOND, or the count without control."""
    alpha = settings.program_alpha
    controlled = [d for d in decisions if d.program is not None]
    if alpha is None:
        alpha = controlled[0].program.alpha if controlled and controlled[0].program else None
    if alpha is None:
        return (f"no program-wide control: {len(decisions)} decisions, each one more chance of a false WINNER "
                "(the reports state the rate; --exprun-program-alpha bounds it)")
    n = len(controlled)
    winners = sum(d.verdict is Verdict.WINNER for d in controlled)
    spent = sum(j ** -1.5 for j in range(1, n + 1)) / ZETA_1_5
    raw = min(alpha * (n + 1) ** -1.5 / ZETA_1_5 * (winners + 1), alpha)
    level = 10.0 ** (math.floor(math.log10(raw) * 20 + 1e-9) / 20)  # program.round_level, without scipy
    return (f"program: false-discovery rate ≤ {alpha:g} (LOND); {n} controlled decision(s), {winners} WINNER(s); "
            f"{spent:.0%} of the no-WINNER budget spent, {1 - spent:.0%} left; the next decision is tested at a "
            f"false-WINNER level of about {level:.2g}")


def show(settings: Settings, write: Any) -> int:
    for line in lines(settings):
        write(line)
    return 0

