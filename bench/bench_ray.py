"""The ray executor's cost against local: the 5 + 5 protocol with the fake trainer, side by side.

    python bench/bench_ray.py                  # 3 repetitions
    python bench/bench_ray.py --repeat 5 --gpus 0,1

Each repetition runs ``pytest --experiment=use_x`` twice in a fresh folder, first with
``--exprun-executor=local`` and then with ``--exprun-executor=ray`` (a local Ray cluster started
and ended by the session), alternating which goes first. The fake trainer's losses put the
experiment within 2 sigma of the baseline, so it is extended to 5 seeds: 10 runs per session.
Medians of the whole sessions' wall times are printed, and the Ray session's difference.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAKE_TRAINER = Path(__file__).resolve().parents[1] / "tests" / "fake_trainer.py"
#: Baseline and experiment 1 sigma apart: the experiment is extended to 5 seeds (5 + 5 runs).
PLAN = {"losses": {"": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99},
                   "--use_x": {"42": 2.00, "137": 2.01, "256": 1.99, "512": 2.00, "1024": 2.01}},
        "behaviour": {}, "sleep": 0.0}


def session(folder: Path, *extra: str) -> float:
    """One protocol session from scratch; its wall time."""
    shutil.rmtree(folder / "docs", ignore_errors=True)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--experiment=use_x", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if "9 passed, 1 skipped" not in proc.stdout and "10 passed" not in proc.stdout:
        sys.exit(f"unexpected outcome ({' '.join(extra)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are reported (default 3)")
    parser.add_argument("--gpus", default="", help="logical GPUs for the local Ray cluster, e.g. 0,1 (default none)")
    args = parser.parse_args()
    ray_args = ["--exprun-executor=ray", *([f"--exprun-gpus={args.gpus}"] if args.gpus else [])]
    local, ray = [], []
    print(f"{'rep':>3} {'local s':>9} {'ray s':>9}")
    for rep in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="exprun-bench-ray-") as tmp:
            folder = Path(tmp)
            shutil.copy(FAKE_TRAINER, folder / "fake_trainer.py")
            (folder / "fake_plan.json").write_text(json.dumps(PLAN))
            (folder / "pytest.ini").write_text("[pytest]\nexprun_command = python fake_trainer.py\n")
            order = [("local", ["--exprun-executor=local"]), ("ray", ray_args)]
            times = {name: session(folder, *extra) for name, extra in (order if rep % 2 else order[::-1])}
        local.append(times["local"])
        ray.append(times["ray"])
        print(f"{rep:>3} {times['local']:9.2f} {times['ray']:9.2f}", flush=True)
    lm, rm = statistics.median(local), statistics.median(ray)
    paired = statistics.median(r - loc for r, loc in zip(ray, local))
    print(f"\nmedian of {args.repeat}: local {lm:.2f} s, ray {rm:.2f} s; the ray session's extra time "
          f"(median of the pairs) {paired:+.2f} s, Ray's start and end included")


if __name__ == "__main__":
    main()
