"""Sweep train_llm.py recipes: each variant on several seeds, runs in parallel, final val_loss.

    python bench/sweep_trainer.py --parallel 4 --seeds 2 --common "--config small --data input.txt" \
        "--lr 1e-3" "--lr 2e-3 --warmup_frac 0.2" "--optimizer muon"

Throughput under --parallel > 1 is shared, so only val_loss is reported; time with bench_trainer.py.
With --worker every run goes through one `train_llm.py --worker` process (each run exactly as a
fresh process would train it), which on a GPU turns seconds of start-up per run into one.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TRAINER = Path(__file__).resolve().parent.parent / "train_llm.py"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="+", help="trainer arguments for each variant, one quoted string each")
    p.add_argument("--common", default="", help="trainer arguments shared by every variant")
    p.add_argument("--seeds", type=int, default=2, help="seeds per variant (default: 2)")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (default: 1)")
    p.add_argument("--worker", action="store_true", help="all runs through one warm worker, one at a time")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(v, s, Path(tmp) / f"{i}_{s}") for i, v in enumerate(args.variants) for s in range(args.seeds)]
        if args.worker:
            losses = through_worker(args.common, jobs)
            report(args, losses)
            return

        def run(job):
            variant, seed, out = job
            cmd = [sys.executable, str(TRAINER), *shlex.split(args.common), *shlex.split(variant),
                   "--seed", str(seed), "--output_dir", str(out), "--save_checkpoint", "false"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                return float("nan")
            return json.loads((out / "metrics.json").read_text())["val_loss"]

        with ThreadPoolExecutor(args.parallel) as pool:
            losses = list(pool.map(run, jobs))
    report(args, losses)


def through_worker(common: str, jobs: list[tuple[str, int, Path]]) -> list[float]:
    """Every job fed to one worker; a failed job ends the worker, so that case restarts it."""
    losses: list[float] = []
    while len(losses) < len(jobs):
        rest = jobs[len(losses):]
        lines = "".join(json.dumps({"argv": [*shlex.split(v), "--seed", str(s), "--output_dir", str(out),
                                             "--save_checkpoint", "false"]}) + "\n" for v, s, out in rest)
        subprocess.run([sys.executable, str(TRAINER), *shlex.split(common), "--worker"], input=lines,
                       capture_output=True, text=True)
        for _, _, out in rest:
            metrics = out / "metrics.json"
            if not metrics.exists():
                losses.append(float("nan"))  # this job failed (or the worker never started); go on after it
                break
            losses.append(json.loads(metrics.read_text())["val_loss"])
    return losses


def report(args: argparse.Namespace, losses: list[float]) -> None:
    print(f"{'median val_loss':>15} | seeds | variant (common: {args.common})")
    for i, variant in enumerate(args.variants):
        mine = losses[i * args.seeds:(i + 1) * args.seeds]
        print(f"{statistics.median(mine):15.4f} | {' '.join(f'{x:.3f}' for x in mine)} | {variant}", flush=True)


if __name__ == "__main__":
    main()
