"""Benchmark train_llm.py as users run it: whole fresh processes, timed from outside.

    python bench/bench_trainer.py --runs 5                                  # CPU, tiny, stdlib corpus
    python bench/bench_trainer.py --data tinyshakespeare.txt --runs 5 -- --config small --device cuda

Prints one row per run and the medians: wall time of the whole process (time.perf_counter
around subprocess.run), the trainer's own tokens/s over the whole run and in steady state
(from its first evaluation to its last), start-up (process start to the first step), model FLOPs utilisation on a GPU, and val_loss.
Arguments after `--` go to the trainer unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINER = Path(__file__).resolve().parent.parent / "train_llm.py"
PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16, the datasheet figure MFU is quoted against


def run_once(trainer_args: list[str], output_dir: Path) -> dict:
    cmd = [sys.executable, str(TRAINER), "--output_dir", str(output_dir), *trainer_args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"trainer exited with code {proc.returncode}: {proc.stderr.strip()[-500:]}")
    metrics = json.loads((output_dir / "metrics.json").read_text())
    first, last = metrics["history"][0], metrics["history"][-1]
    tokens_per_step = metrics["train_tokens"] // metrics["steps"]
    steady = ((last["step"] - first["step"]) * tokens_per_step / (last["train_time_s"] - first["train_time_s"])
              if last["step"] > first["step"] else metrics["tokens_per_s"])
    on_gpu = metrics["device"] != "cpu"
    return dict(wall_s=wall, startup_s=metrics["startup_s"], tok_s=metrics["tokens_per_s"], steady_tok_s=steady,
                mfu=steady * metrics["flops_per_token"] / PEAK_BF16_FLOPS if on_gpu else None,
                val_loss=metrics["val_loss"], device=metrics["device"], torch=metrics["torch_version"],
                params=metrics["n_params"], train_tokens=metrics["train_tokens"])


def main() -> None:
    argv = sys.argv[1:]
    trainer_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="passed to the trainer as --data (default: its stdlib corpus)")
    p.add_argument("--runs", type=int, default=5, help="fresh processes to time (default: 5)")
    p.add_argument("--label", default="", help="a name for this row in the summary")
    args = p.parse_args(own)
    if args.data:
        trainer_args = ["--data", args.data, *trainer_args]
    trainer_args = ["--save_checkpoint", "false", *trainer_args] if "--save_checkpoint" not in trainer_args \
        else trainer_args
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            seed = [] if "--seed" in trainer_args else ["--seed", str(i)]  # medians over seeds
            row = run_once([*trainer_args, *seed], Path(tmp) / f"run{i}")
            rows.append(row)
            mfu = f" | MFU {row['mfu']:.1%}" if row["mfu"] is not None else ""
            print(f"run {i + 1}: wall {row['wall_s']:.2f}s | start-up {row['startup_s']:.2f}s | tok/s {row['tok_s']:,.0f} | steady tok/s "
                  f"{row['steady_tok_s']:,.0f}{mfu} | val_loss {row['val_loss']:.4f}", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "startup_s", "tok_s", "steady_tok_s", "val_loss")}
    mfu = f" | MFU {statistics.median(r['mfu'] for r in rows):.1%}" if rows[0]["mfu"] is not None else ""
    print(f"MEDIAN {args.label or ' '.join(trainer_args)} ({args.runs} runs, {rows[0]['device']}, torch "
          f"{rows[0]['torch']}, {rows[0]['params'] / 1e6:.2f}M params, {rows[0]['train_tokens']:,} tokens): "
          f"wall {med['wall_s']:.2f}s | start-up {med['startup_s']:.2f}s | tok/s {med['tok_s']:,.0f} | steady tok/s {med['steady_tok_s']:,.0f}"
          f"{mfu} | val_loss {med['val_loss']:.4f}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
