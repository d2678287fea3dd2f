"""Where a warm worker's start goes, and what each of its runs costs beyond training.

Two measurements, each in fresh processes, so every one pays what the worker pays:

  * ``--phases``: one process walks through a worker's start-up step by step (the imports,
    the CUDA context, the corpus, the model, the first eager steps, the CUDA graph's capture,
    the first replay, the first evaluation, a checkpoint) and prints the seconds of each, the
    GPU synchronised at every mark, so a slow first use lands on the step that pays it;
  * ``--ready`` (the default): ``train_llm.py --worker`` as the warm executor starts it, timed
    from outside: spawn to ``exprun-worker: ready``, then each job's hand-over to ``done``, and
    what each job spent beyond training and evaluation (from the metrics.json it wrote).

    python bench/profile_worker.py --ready --runs 3 -- --config small
    python bench/profile_worker.py --phases -- --config small --data tinyshakespeare.txt
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


def ready_and_jobs(trainer_args: list[str], seeds: list[int], work: Path) -> dict:
    """Start one worker, send it one job per seed, time each line it prints from outside."""
    proc = subprocess.Popen([sys.executable, str(TRAINER), *trainer_args, "--worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    start = time.perf_counter()
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    ready = time.perf_counter() - start
    if not line.startswith("exprun-worker: ready"):
        raise SystemExit(f"worker did not become ready: {line}{proc.stdout.read()[-2000:]}")
    jobs = []
    for seed in seeds:
        out = work / f"seed{seed}"
        sent = time.perf_counter()
        proc.stdin.write(json.dumps({"argv": ["--seed", str(seed), "--output_dir", str(out)]}) + "\n")
        proc.stdin.flush()
        while not (line := proc.stdout.readline()).startswith("exprun-worker: done"):
            if not line:
                raise SystemExit("worker ended in the middle of a job")
        handed = time.perf_counter() - sent
        metrics = json.loads((out / "metrics.json").read_text())
        evals = sum(h.get("eval_time_s", 0.0) for h in metrics["history"])
        jobs.append(dict(seed=seed, outside_s=handed, wall_s=metrics["wall_time_s"], train_s=metrics["train_time_s"],
                         eval_s=evals, beyond_s=handed - metrics["train_time_s"] - evals,
                         val_loss=metrics["val_loss"]))
    proc.stdin.close()
    proc.wait()
    return dict(ready_s=ready, jobs=jobs)


def phases(trainer_args: list[str]) -> None:
    """A worker's start-up, one step at a time; run in a fresh process."""
    t0 = time.perf_counter()
    marks: list[tuple[str, float]] = []

    def mark(name: str) -> None:
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
            sys.modules["torch"].cuda.synchronize()
        marks.append((name, time.perf_counter()))

    import numpy as np  # noqa: F401
    mark("import numpy")
    import torch
    mark("import torch")
    torch.zeros(1, device="cuda" if torch.cuda.is_available() else "cpu")
    mark("CUDA context (torch.zeros on the GPU)")
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_llm", TRAINER)
    assert spec is not None and spec.loader is not None
    tl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tl)
    mark("exec train_llm.py (its own code)")
    args = tl.parse_args([*trainer_args, "--output_dir", tempfile.mkdtemp()])
    args.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache = Path(os.environ.get("TRAIN_LLM_CACHE") or Path.home() / ".cache" / "train_llm")
    train, val, vocab, _, one_time = tl.load_data(args.data, cache)
    tl.fingerprint_of(train, val)
    mark(f"corpus (built {one_time:.2f}s of it) and fingerprint")
    torch.manual_seed(0)
    cfg = tl.GPTConfig(vocab, args.block_size, args.n_layer, args.n_head, args.n_embd)
    model = tl.GPT(cfg).to(args.device)
    mark("model built and moved")
    graphed = args.device.type == "cuda" and args.cuda_graph
    step = tl.TrainStep(model, tl.make_optimizers(model, args, graphed), args, graphed)
    offsets = np.random.default_rng(0).integers(0, len(train) - args.block_size - 1, size=(8, args.batch_size))
    for i in range(6):
        step(tl.get_batch(train, offsets[i], args.block_size, args.device)).item()
        mark(["first step (eager)", "second step", "third step", "capture + first replay", "second replay",
              "third replay"][i])
    val_offsets = np.linspace(0, len(val) - args.block_size - 1, max(1, args.eval_tokens // args.block_size))
    tl.evaluate(model, val, val_offsets.astype(np.int64), args)
    mark("first evaluation")
    tl.evaluate(model, val, val_offsets.astype(np.int64), args)
    mark("second evaluation")
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(dict(model=model.state_dict()), Path(tmp) / "ckpt.pt")
        mark("checkpoint")
        torch.save(dict(model=model.state_dict()), Path(tmp) / "ckpt.pt")
        mark("second checkpoint")
    last = t0
    for name, t in marks:
        print(f"  {t - last:7.3f}s  {name}")
        last = t
    print(f"  {last - t0:7.3f}s  in all (after the interpreter's own start)")


def main() -> None:
    argv = sys.argv[1:]
    trainer_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phases", action="store_true", help="the step-by-step start-up, in this process")
    p.add_argument("--ready", action="store_true", help="time workers from outside (the default)")
    p.add_argument("--runs", type=int, default=3, help="fresh workers to time (default: 3)")
    p.add_argument("--seeds", default="42,137,256", help="one job per seed in each worker")
    args = p.parse_args(own)
    if args.phases:
        phases(trainer_args)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            row = ready_and_jobs(trainer_args, seeds, Path(tmp))
        rows.append(row)
        jobs = " | ".join(f"{j['outside_s']:.2f}s (train {j['train_s']:.2f}, eval {j['eval_s']:.2f}, "
                          f"beyond {j['beyond_s']:.2f}, val {j['val_loss']:.4f})" for j in row["jobs"])
        print(f"worker {i + 1}: ready after {row['ready_s']:.2f}s | jobs: {jobs}", flush=True)
    every = [j for r in rows for j in r["jobs"]]
    print(f"MEDIAN ({args.runs} workers, {len(every)} jobs, {' '.join(trainer_args)}): ready "
          f"{statistics.median(r['ready_s'] for r in rows):.2f}s | job {statistics.median(j['outside_s'] for j in every):.2f}s"
          f" | training {statistics.median(j['train_s'] for j in every):.2f}s | evaluation "
          f"{statistics.median(j['eval_s'] for j in every):.2f}s | beyond both "
          f"{statistics.median(j['beyond_s'] for j in every):.2f}s", flush=True)


if __name__ == "__main__":
    main()
