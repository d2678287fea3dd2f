"""The reference protocol's time outside its runs, step by step (``EXPRUN_TIMINGS=1``).

Runs the 5 + 5 session (an A/A experiment: the baseline's own code path, so it lands within 2σ
and runs its extension seeds) ``--repeat`` times with ``--exprun-executor=warm`` and prints, per
step, the median over the sessions of the seconds it took, then the session's wall time (timed
from outside), the runs' own wall times (from their records) and what is left: the time outside
the runs. The first session is left out of the medians unless ``--keep-first`` (it fills the
operating system's file cache, and with ``--bytecode`` the bytecode cache).

    python bench/bench_floor.py                           # the fake trainer: the plugin's own time
    python bench/bench_floor.py --trainer llm --tokens 8192  # train_llm.py, tiny, a few steps
    python bench/bench_floor.py --bytecode                # compiled Python kept between sessions
    python bench/bench_floor.py --keep-cache              # later sessions keep the simulated rates

Each session gets a fresh research dir; with ``--keep-cache`` the store's cache of simulated
rates (``.exprun/simulated``) is carried from one session to the next, as in a later session of
the same design. ``--bytecode`` unsets PYTHONDONTWRITEBYTECODE and points PYTHONPYCACHEPREFIX at
a folder of its own, for pytest, the aside helper and the worker alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "exprun timings: start, seconds, step"
LINE = re.compile(r"^\s*(?P<start>-?[\d.]+)\s+(?P<secs>-?[\d.]+)  (?P<indent>\s*)(?P<label>.*?)(?:  \((?P<note>.*)\))?$")
A_A = ["--experiment=--use_qk_norm false", "--experiment-name=aa_test"]
FAKE_PLAN = {"losses": {"": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99},
                        "--use_qk_norm false": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99}}}
#: Steps grouped as docs/benchmarks.md shows them; a label is matched by its start.
STEPS = (
    ("pytest start to exprun's configure", "pytest start to exprun's configure"),
    ("exprun's imports and settings", "exprun's protocol plugin"),
    ("executor and aside started", "start the "),
    ("collection", "collection"),
    ("fingerprint and baseline check", ("fingerprint the baseline", "baseline check")),
    ("baseline report", "baseline report"),
    ("decisions", ("decide ", "store the decision")),
    ("store writes (records)", "store the record"),
    ("experiment reports, twins, plots, summary", "experiment reports"),
    ("  statistics and plots (aside)", "statistics or plot: "),
    ("  rendering (Jinja2)", "render "),
    ("verdict text and ledger", ("render verdict", "ledger")),
    ("teardown: executor and aside", "close the "),
    ("terminal summary", "terminal summary"),
)


def parse(stderr: str) -> list[dict]:
    lines = stderr.split(HEADER, 1)[-1].splitlines()[1:]
    found = []
    for line in lines:
        match = LINE.match(line)
        if match:
            found.append({"start": float(match["start"]), "secs": float(match["secs"]),
                          "depth": len(match["indent"]) // 2, "label": match["label"], "note": match["note"] or ""})
    return found


def project(work: Path, trainer: str) -> tuple[Path, list[str]]:
    """Where pytest runs and the trainer command: a copy of the fake trainer, or this repository."""
    if trainer == "fake":
        folder = work / "project"
        folder.mkdir()
        shutil.copy(ROOT / "tests" / "fake_trainer.py", folder)
        (folder / "fake_plan.json").write_text(json.dumps(FAKE_PLAN))
        (folder / "pytest.ini").write_text("[pytest]\n")
        return folder, ["--exprun-command=python fake_trainer.py", "--exprun-fingerprint-exclude=fake_plan.json"]
    return ROOT, ["--exprun-command=python train_llm.py --config tiny --eval_tokens 4096", "--noconftest"]


def session(folder: Path, args: list[str], research: Path, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=", *args, *A_A,
           "--exprun-executor=warm", f"--exprun-research-dir={research}",
           f"--exprun-checkpoints-dir={research.parent / 'ckpt'}", "--exprun-accept=neutral"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the session failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(p.read_text()) for p in (research / ".exprun" / "runs").rglob("seed*.json")]
    spans = parse(proc.stderr)
    return {"total": total, "runs": len(records), "run_wall": sum(r["wall_time"] for r in records), "spans": spans}


def breakdown(spans: list[dict], total: float, run_wall: float) -> dict[str, float]:
    """Seconds per step of one session; runs split into their own wall time and the waiting around them."""
    out: dict[str, float] = defaultdict(float)
    for item in spans:
        for name, starts in STEPS:
            if item["label"].startswith(starts):
                out[name] += item["secs"]
                break
        if item["label"].startswith("run "):
            own = float(re.search(r"its own wall time ([\d.]+)s", item["note"])[1])  # type: ignore[index]
            out["runs awaited"] += item["secs"]
            out["  of which waiting (worker start, hand-over)"] += item["secs"] - own
    exit_mark = max((s["start"] for s in spans if s["label"] == "pytest exits"), default=total)
    out["pytest exit (after the breakdown)"] = max(0.0, total - exit_mark)
    out["session, timed from outside"] = total
    out["the runs' own wall times"] = run_wall
    out["outside the runs"] = total - run_wall
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainer", choices=("fake", "llm"), default="fake")
    parser.add_argument("--tokens", type=int, default=8192, help="train tokens per run with --trainer llm")
    parser.add_argument("--repeat", type=int, default=4, help="sessions (default 4; the first is left out)")
    parser.add_argument("--keep-first", action="store_true", help="count the first session in the medians")
    parser.add_argument("--bytecode", action="store_true", help="keep compiled Python between sessions")
    parser.add_argument("--keep-cache", action="store_true", help="carry the simulated rates to later sessions")
    parser.add_argument("--pythonpath", default=str(ROOT),
                        help="where pytest_exprun is imported from (a version without EXPRUN_TIMINGS gives totals only)")
    parser.add_argument("--show", action="store_true", help="print each session's whole breakdown")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["EXPRUN_TIMINGS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (args.pythonpath, env.get("PYTHONPATH", "")) if p)
    rows = []
    with tempfile.TemporaryDirectory(prefix="exprun-floor-") as tmp:
        work = Path(tmp)
        folder, extra = project(work, args.trainer)
        if args.trainer == "llm":
            extra.append(f"--exprun-train-tokens={args.tokens}")
        if args.bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        cache = work / "simulated"
        for rep in range(args.repeat):
            research = work / f"session{rep}" / "research"
            if args.keep_cache and cache.exists():
                shutil.copytree(cache, research / ".exprun" / "simulated")
            found = session(folder, extra, research, env)
            if args.keep_cache and (research / ".exprun" / "simulated").exists():
                shutil.rmtree(cache, ignore_errors=True)
                shutil.copytree(research / ".exprun" / "simulated", cache)
            row = breakdown(found["spans"], found["total"], found["run_wall"])
            rows.append(row)
            print(f"session {rep + 1}: {found['total']:.2f}s, {found['runs']} runs, their wall times "
                  f"{found['run_wall']:.2f}s, outside the runs {row['outside the runs']:.2f}s", flush=True)
            if args.show:
                for item in found["spans"]:
                    print(f"  {item['start']:8.3f} {item['secs']:7.3f}  {'  ' * item['depth']}{item['label']}"
                          + (f"  ({item['note']})" if item["note"] else ""))
    used = rows if args.keep_first or len(rows) == 1 else rows[1:]
    names = [name for name, _ in STEPS]
    order = names + ["runs awaited", "  of which waiting (worker start, hand-over)", "pytest exit (after the breakdown)",
                     "session, timed from outside", "the runs' own wall times", "outside the runs"]
    print(f"\nmedian of {len(used)} session(s), seconds ({args.trainer} trainer"
          f"{', bytecode kept' if args.bytecode else ''}{', simulated rates kept' if args.keep_cache else ''}):")
    print("| step | seconds |\n| --- | --- |")
    for name in order:
        values = [row.get(name, 0.0) for row in used]
        print(f"| {name} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")


if __name__ == "__main__":
    main()
