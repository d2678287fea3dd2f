"""The plugin's own cost per run: N runs of a trivial trainer through pytest-exprun, against
the same N trainer invocations as a bare loop of subprocesses, measured side by side.

    python bench/bench_overhead.py                 # 200 seeds, 5 repetitions
    python bench/bench_overhead.py --seeds 50 --repeat 3

The trivial trainer is a shell script that prints one val_loss line and exits, so what is
left after subtracting the bare loop is exprun's work: starting pytest, collecting the
seed items, the process group, reading and logging output, one fsynced record per run,
and the report. Each repetition runs the three measurements back to back in a fresh
folder: the bare loop, the protocol session, and a session that only collects (pytest's
and the plugin's fixed start-up cost). Medians over the repetitions are printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINER = """#!/bin/sh
# Prints one evaluation line for its seed and exits: the cheapest possible trainer.
seed=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --output_dir) mkdir -p "$2"; shift 2 ;;
    *) shift ;;
  esac
done
echo "Step 1 | val_loss: 2.$((seed % 97 + 100)) | train_loss: 2.5"
"""


def make_project(folder: Path) -> Path:
    trainer = folder / "trainer.sh"
    trainer.write_text(TRAINER)
    trainer.chmod(0o755)
    (folder / "pytest.ini").write_text("[pytest]\nexprun_command = ./trainer.sh\n")
    return trainer


def bare_loop(folder: Path, trainer: Path, seeds: list[int]) -> float:
    """The same invocations as exprun makes, output captured, one after another."""
    start = time.perf_counter()
    for seed in seeds:
        out = folder / "bare" / f"seed{seed}"
        proc = subprocess.run([str(trainer), "--train_tokens", "1000000", "--seed", str(seed),
                               "--output_dir", str(out)], capture_output=True, check=True)
        assert b"val_loss" in proc.stdout
    return time.perf_counter() - start


def pytest_session(folder: Path, seeds: list[int], *extra: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "baseline",
           f"--exprun-baseline-seeds={','.join(map(str, seeds))}", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"pytest exited with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="runs per session (default 200)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions; medians are reported (default 5)")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    rows = []
    print(f"{'rep':>3} {'bare loop s':>12} {'exprun s':>10} {'collect-only s':>15} {'overhead ms/run':>16}")
    for rep in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="exprun-bench-") as tmp:
            folder = Path(tmp)
            trainer = make_project(folder)
            bare = bare_loop(folder, trainer, seeds)
            session = pytest_session(folder, seeds)
            records = list((folder / "docs" / "research" / ".exprun" / "runs").rglob("seed*.json"))
            assert len(records) == len(seeds), f"{len(records)} records for {len(seeds)} runs"
            startup = pytest_session(folder, seeds, "--co")
        per_run = (session - startup - bare) / len(seeds)
        rows.append((bare, session, startup, per_run))
        print(f"{rep:>3} {bare:12.2f} {session:10.2f} {startup:15.2f} {per_run * 1000:16.2f}")
    bare, session, startup, per_run = (statistics.median(col) for col in zip(*rows))
    print(f"\nmedian of {args.repeat}, {args.seeds} runs each:")
    print(f"  bare loop          {bare:8.2f} s  ({bare / args.seeds * 1000:.2f} ms per trainer invocation)")
    print(f"  through exprun     {session:8.2f} s  ({session / args.seeds * 1000:.2f} ms per run, all included)")
    print(f"  session start-up   {startup:8.2f} s  (pytest, plugin, collecting {args.seeds} items)")
    print(f"  exprun overhead    {per_run * 1000:8.2f} ms per run (exprun - start-up - bare loop) / runs")


if __name__ == "__main__":
    main()
