"""Time to verdict: the whole protocol through pytest, against a bare shell loop and the compute floor.

For each case (5 baseline + 3 experiment seeds, and 5 + 5) and each executor, this runs

  1. ``pytest --experiment=...`` from the repository root, timed from outside (the time a
     researcher waits for the verdict), and
  2. the very same trainer invocations (argv read back from the run records) as a bare
     ``bash`` loop (for ``--executors warm``: the same runs fed by hand to one bare
     ``train_llm.py --worker``), right after it, so the two are measured side by side,

then reports the plugin's overhead (protocol − loop) / protocol, the sum of pure training time
(first to last step, from each run's metrics.json) against the whole, and the fixed cost per run
(process start to end, minus training) with what the trainer says it consists of.

The 5 + 3 case forces three experiment seeds with ``--exprun-extension-seeds=``; the 5 + 5 case is
an A/A test (``--use_qk_norm false``, the baseline's own code path), which always lands within 2σ
and so runs the two extension seeds.

    python bench/bench_protocol.py --config tiny                       # CPU
    python bench/bench_protocol.py --config small --executors local,gpus --data input.txt
    python bench/bench_protocol.py --config small --executors local,warm --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "5+3": ["--experiment=use_qk_norm", "--exprun-extension-seeds="],
    "5+5": ["--experiment=--use_qk_norm false", "--experiment-name=aa_test"],
    # As a user types it: the protocol decides; use_qk_norm lands within 2σ and extends to 5 + 5.
    "user": ["--experiment=use_qk_norm"],
}


def plugin_args() -> list[str]:
    """Load exprun by name where it is not installed (a checkout on PYTHONPATH), else by its entry point."""
    from importlib.metadata import entry_points
    installed = any(ep.name == "exprun" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_exprun.plugin"]


def run_protocol(case: str, executor: str, trainer: str, tokens: int, work: Path, autoload: bool) -> dict:
    # --noconftest: this repository's conftest files serve its own test suite (tests/conftest.py
    # imports pytester's helpers); a researcher's project brings its own, not these.
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=", "--noconftest",
        *(plugin_args() if autoload else ["-p", "pytest_exprun.plugin"]),
        *CASES[case],
        f"--exprun-command={trainer}",
        f"--exprun-train-tokens={tokens}",
        f"--exprun-executor={executor}",
        f"--exprun-research-dir={work / 'research'}",
        f"--exprun-checkpoints-dir={work / 'ckpt'}",
        "--exprun-keep-checkpoints",
        "--exprun-accept=neutral",
    ]
    start = time.perf_counter()
    env = dict(os.environ)
    if not autoload:  # only exprun: what the plugin costs, apart from whatever else is installed
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    total = time.perf_counter() - start
    (work / "pytest.log").write_text(proc.stdout + proc.stderr)
    records = [json.loads(p.read_text()) for p in sorted((work / "research" / ".exprun" / "runs").rglob("seed*.json"))]
    records.sort(key=lambda r: r["finished_at"])
    runs = []
    for record in records:
        out_dir = Path(record["argv"][record["argv"].index("--output_dir") + 1])
        metrics = json.loads((out_dir / "metrics.json").read_text())
        runs.append({"group": record["group"], "seed": record["seed"], "val_loss": record["val_loss"],
                     "wall_time": record["wall_time"], "train_time": metrics["train_time_s"],
                     "timings": phases_of(record["wall_time"], metrics), "argv": record["argv"]})
    verdict = next((line.split(" → ")[0] for line in proc.stdout.splitlines()
                    if ": WINNER" in line or ": NEUTRAL" in line or ": LOSER" in line), "no verdict line")
    return {"total": total, "runs": runs, "returncode": proc.returncode, "verdict": verdict.strip()}


def phases_of(wall_time: float, metrics: dict) -> dict:
    """Split one run's wall time into what the trainer reports: start-up, training, the rest."""
    startup = metrics.get("startup_s")
    inside = metrics.get("wall_time_s")
    if startup is None or inside is None:
        return {}
    return {
        "process start or hand-over": wall_time - inside,  # until the run's first line of Python (a warm worker: the hand-over)
        "imports, data, model": startup,  # to the first training step
        "training": metrics["train_time_s"],
        "evaluation, saving, exit": inside - startup - metrics["train_time_s"],
    }


def run_loop(runs: list[dict], work: Path) -> float:
    """The same invocations as a plain shell loop: what a researcher would script by hand."""
    script = "\n".join(shlex.join(r["argv"]) + " > /dev/null" for r in runs)
    (work / "loop.sh").write_text("set -e\n" + script + "\n")
    start = time.perf_counter()
    subprocess.run(["bash", str(work / "loop.sh")], cwd=ROOT, check=True)
    return time.perf_counter() - start


def pytest_alone(work: Path, autoload: bool, repeats: int = 5) -> float:
    """A session of pytest itself (same interpreter and plugins, exprun not loaded, nothing
    collected): the start and exit any pytest plugin's user pays anyway. Median of ``repeats``."""
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ)
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--noconftest", "-p", "no:exprun", "--co"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=empty, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_worker_loop(runs: list[dict], work: Path, trainer: str) -> tuple[float, float]:
    """The same runs through one bare warm worker (``--worker``, jobs on stdin): the warm executor's
    plain alternative, started and fed by hand."""
    command = shlex.split(trainer)
    command[0] = sys.executable
    jobs = "".join(json.dumps({"argv": r["argv"][len(command):]}) + "\n" for r in runs)
    start = time.perf_counter()
    proc = subprocess.run([*command, "--worker"], input=jobs, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or proc.stdout.count("exprun-worker: done 0") != len(runs):
        raise SystemExit(f"the bare worker failed:\n{proc.stdout[-3000:]}")
    # Each job's own wall time, from the metrics.json it just wrote over the protocol's: the
    # rest is the worker's start-up, warm-up and exit, which the warm executor pays too.
    jobs = 0.0
    for r in runs:
        out_dir = Path(r["argv"][r["argv"].index("--output_dir") + 1])
        jobs += json.loads((ROOT / out_dir / "metrics.json").read_text())["wall_time_s"]
    return elapsed, elapsed - jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--train-tokens", type=int, default=1_000_000)
    parser.add_argument("--data", default=None, help="trainer --data (default: its embedded corpus)")
    parser.add_argument("--cases", default="5+3,5+5")
    parser.add_argument("--executors", default="local")
    parser.add_argument("--trainer-args", default="", help="extra trainer arguments")
    parser.add_argument("--reps", type=int, default=1, help="repetitions; medians are reported")
    parser.add_argument("--json", default=None, help="write every number here")
    parser.add_argument("--no-loop", action="store_true",
                        help="skip the plain way's side-by-side run (half the time; no overhead column)")
    parser.add_argument("--no-autoload", action="store_true",
                        help="load no pytest plugin but exprun (PYTEST_DISABLE_PLUGIN_AUTOLOAD=1)")
    args = parser.parse_args()

    trainer = f"python train_llm.py --config {args.config} {args.trainer_args}".strip()
    if args.data:
        trainer += f" --data {shlex.quote(args.data)}"
    results = []
    with tempfile.TemporaryDirectory(prefix="exprun-bench-") as tmp:
        alone = pytest_alone(Path(tmp), not args.no_autoload)
    for case in args.cases.split(","):
        for executor in args.executors.split(","):
            totals, loops, worker_fixed = [], [], []
            for _ in range(args.reps):  # protocol then loop, alternating, so both see the same machine
                with tempfile.TemporaryDirectory(prefix="exprun-bench-") as tmp:
                    work = Path(tmp)
                    proto = run_protocol(case, executor, trainer, args.train_tokens, work, not args.no_autoload)
                    if proto["returncode"] not in (0, 1) or len(proto["runs"]) < 8:
                        print((work / "pytest.log").read_text()[-4000:], file=sys.stderr)
                        raise SystemExit(f"protocol run failed for {case} / {executor}")
                    totals.append(proto["total"])
                    if args.no_loop:
                        pass
                    elif executor == "local":
                        loops.append(run_loop(proto["runs"], work))
                    elif executor == "warm":
                        elapsed, fixed_part = run_worker_loop(proto["runs"], work, trainer)
                        loops.append(elapsed)
                        worker_fixed.append(fixed_part)
            proto["total"] = statistics.median(totals)
            loop = statistics.median(loops) if loops else None
            runs = proto["runs"]
            train = sum(r["train_time"] for r in runs)
            outside = proto["total"] - sum(r["wall_time"] for r in runs)
            # exprun's own time: outside the runs, less pytest's own start and exit and (warm)
            # the worker's start-up, warm-up and exit measured on the bare worker.
            own = outside - alone - (statistics.median(worker_fixed) if worker_fixed else 0.0)
            fixed = [r["wall_time"] - r["train_time"] for r in runs]
            phases = {}
            for r in runs:
                for name, value in r["timings"].items():
                    phases.setdefault(name, []).append(value)
            results.append({
                "case": case, "executor": executor, "runs": len(runs), "time_to_verdict_s": proto["total"],
                "time_to_verdict_each_s": totals,
                "bare_loop_s": loop, "plugin_overhead_pct": None if loop is None else (proto["total"] - loop) / proto["total"] * 100,
                "sum_run_wall_s": sum(r["wall_time"] for r in runs), "outside_runs_s": outside,
                "pytest_alone_s": alone, "exprun_own_s": own, "exprun_own_pct": own / proto["total"] * 100,
                "sum_train_time_s": train, "compute_floor_share_pct": train / proto["total"] * 100,
                "fixed_cost_per_run_median_s": statistics.median(fixed),
                "phases_median_s": {k: statistics.median(v) for k, v in phases.items()},
                "per_run": [{k: r[k] for k in ("group", "seed", "val_loss", "wall_time", "train_time")} for r in runs],
                "verdict": proto["verdict"],
            })
            print(json.dumps(results[-1]), flush=True)

    plugins = "only exprun" if args.no_autoload else "every installed pytest plugin"
    print(f"pytest alone (start and exit, nothing collected): {alone:.2f}s; 'own' = outside runs - that"
          " - (warm) the bare worker's start-up, warm-up and exit")
    print(f"\nmachine: {os.cpu_count()} CPUs | trainer: {trainer} | train tokens {args.train_tokens} | {plugins}")
    print(f"{'case':5} {'executor':8} {'runs':>4} {'verdict s':>10} {'loop s':>8} {'overhead':>9} "
          f"{'outside':>8} {'own':>12} {'train s':>8} {'floor':>6} {'fixed/run':>9}")
    for r in results:
        loop = "-" if r["bare_loop_s"] is None else f"{r['bare_loop_s']:.1f}"
        over = "-" if r["plugin_overhead_pct"] is None else f"{r['plugin_overhead_pct']:+.1f}%"
        print(f"{r['case']:5} {r['executor']:8} {r['runs']:>4} {r['time_to_verdict_s']:>10.1f} {loop:>8} {over:>9} "
              f"{r['outside_runs_s']:>7.1f}s {r['exprun_own_s']:>5.2f}s {r['exprun_own_pct']:>4.1f}% {r['sum_train_time_s']:>8.1f} {r['compute_floor_share_pct']:>5.0f}% {r['fixed_cost_per_run_median_s']:>8.2f}s")
        if r["phases_median_s"]:
            print("      fixed cost per run (median): " + ", ".join(f"{k} {v:.2f}s" for k, v in r["phases_median_s"].items()))
        walls = ", ".join(f"{x['wall_time']:.2f}" for x in r["per_run"])
        each = ", ".join(f"{t:.1f}s" for t in r["time_to_verdict_each_s"])
        print(f"      {r['verdict']} | each session: {each} | run wall times: {walls}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
