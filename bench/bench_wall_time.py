"""Wall time's two stated rules, measured through the real code (``decide/wall_time.py``).

1. Welch's t on log wall time at α = 0.05: how often it calls a difference when nothing changed
   (5 baseline runs, 3 experiment runs; log wall time normal, and heavy-tailed t with 3 degrees
   of freedom), and how often it calls a true 10% slow-down.
2. The loaded-machine rule (a run under 0.7x its group's median throughput): how often quiet
   runs trip it (the false alarm rate) at run-to-run spreads of 2% to 20%, and how often it
   catches one run slowed 1.5x or 2x by another job.

Each figure is printed with its trial count and Monte Carlo standard error; fixed seed; no
training runs:

    python bench/bench_wall_time.py            # about 1 minute on 2 shared, busy cores
    python bench/bench_wall_time.py --quick    # 10 times fewer trials
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from pytest_exprun.decide import wall_time
from pytest_exprun.decide.wall_time import Timing


def rate(hits: int, trials: int) -> str:
    p = hits / trials
    return f"{p:7.2%} ± {math.sqrt(max(p * (1 - p), 1 / trials) / trials):.2%} ({trials} trials)"


def group(times: np.ndarray) -> list[Timing]:
    return [Timing(i, float(t)) for i, t in enumerate(times)]


def noise(rng: np.random.Generator, n: int, spread: float, tails: str) -> np.ndarray:
    if tails == "t3":  # scaled to the same standard deviation as the normal case
        return 100 * np.exp(spread * rng.standard_t(3, n) / math.sqrt(3))
    return 100 * np.exp(spread * rng.standard_normal(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    trials = 2_000 if parser.parse_args().quick else 20_000
    rng = np.random.default_rng(2024)

    print(f"Welch's t on log wall time at α = {wall_time.ALPHA}, 5 baseline vs 3 experiment runs, spread 5%:")
    for tails in ("normal", "t3"):
        for slowdown in (1.0, 1.1):
            hits = sum(bool(wall_time.compare(group(noise(rng, 5, 0.05, tails)),
                                              group(slowdown * noise(rng, 3, 0.05, tails))).significant)
                       for _ in range(trials))
            what = "false alarm (nothing changed)" if slowdown == 1.0 else "calls a true 10% slow-down"
            print(f"  {tails:6s} {what:32s} {rate(hits, trials)}")

    print(f"\nLoaded-machine rule (a run under {wall_time.LOADED_FRACTION}x its group's median throughput), "
          "5 vs 3 runs, normal log noise:")
    for spread in (0.02, 0.05, 0.10, 0.20):
        hits = sum(bool(wall_time.compare(group(noise(rng, 5, spread, "normal")),
                                          group(noise(rng, 3, spread, "normal"))).loaded)
                   for _ in range(trials))
        print(f"  quiet runs, spread {spread:4.0%}: false alarm {rate(hits, trials)}")
    for slowed in (1.5, 2.0):
        hits = 0
        for _ in range(trials):
            base = noise(rng, 5, 0.05, "normal")
            base[rng.integers(5)] *= slowed
            hits += bool(wall_time.compare(group(base), group(noise(rng, 3, 0.05, "normal"))).loaded)
        print(f"  one baseline run slowed {slowed}x (spread 5%): caught {rate(hits, trials)}")


if __name__ == "__main__":
    main()
