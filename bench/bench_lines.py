"""Throughput of reading a trainer's output: split, cleaned and parsed lines per second.

    python bench/bench_lines.py            # 40k lines as train_llm.py and a tqdm bar print them
    python bench/bench_lines.py --lines 200000

Every line a run prints goes through the splitter and the evaluation rules (evaluation,
progress step, epoch, rank, unparsed val_loss), so this bounds how fast a trainer may print
before exprun, not the trainer, is the limit. Prints the best of --repeat timings.
"""
from __future__ import annotations

import argparse
import time

from pytest_exprun.trainer.evaluations import parse_lines
from pytest_exprun.trainer.lines import _LineSplitter


def output(lines: int) -> bytes:
    """Training lines, tqdm redraws and an evaluation every 100 steps, about ``lines`` in all."""
    printed = []
    for step in range(1, lines // 2 + 1):
        printed.append(f"step {step:>5} | train_loss: 2.{step % 9999:04d} | lr: 3.0e-04 | tok/s: 16,512 | 12.3ms")
        printed.append(f" 45%|#####     | {step}/{lines} [00:10<00:12, 1890.12it/s, loss=2.31]")
        if step % 100 == 0:
            printed.append(f"Step {step} | val_loss: 2.{step % 9999:04d} | train_loss: 2.1")
    return ("\n".join(printed) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = output(args.lines)
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        splitter = _LineSplitter()
        lines = [*splitter.feed(data), *splitter.flush()]
        evals = parse_lines(lines)
        best = min(best, time.perf_counter() - start)
    print(f"{len(lines)} lines in {best:.3f}s: {len(lines) / best / 1000:.0f}k lines/s (final evaluation {evals.final})")


if __name__ == "__main__":
    main()
