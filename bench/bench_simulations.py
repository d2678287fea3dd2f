"""What a session simulates for its reports, each figure timed: first simulated, then read back
from the store's cache of simulated figures (``simcache``), as a later session reads it.

The calls are the ones a default fixed-mode and a default sequential-mode session make (the
2σ rule's rates, its power and minimum detectable effect, its false-WINNER rate under other
noise, the program's family-wise rate; the sequential design's calibration, its operating
table, its rates under other noise, its interval coverage, power and family-wise rate), in the
order a session makes them, so a figure that shares draws with an earlier one is timed as a
session pays for it.

    python bench/bench_simulations.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pytest_exprun import simcache
from pytest_exprun.decide import evidence, program, rates, sequential_design, sequential_figures, simulated
from pytest_exprun.decide import sequential_rates


def calls() -> list[tuple[str, Callable[[], Any]]]:
    fixed = rates.Design(5, 3, 2)
    seq: list[sequential_design.Design] = []

    def design() -> sequential_design.Design:
        if not seq:
            seq.append(sequential_design.make_design())
        return seq[0]

    return [
        ("fixed: 2σ rule's rates (rates.design_rates)", lambda: rates.design_rates(fixed)),
        ("fixed: false WINNER at no effect (rates.design_power)", lambda: rates.design_power(0.0, fixed)),
        ("fixed: minimum detectable effect (rates.design_mde)", lambda: rates.design_mde(fixed)),
        ("fixed: false WINNER under t3 and skewed noise", lambda: evidence.noise_rates(fixed, 0.03)),
        ("fixed: family-wise rate (program.uncontrolled_familywise)", lambda: program.uncontrolled_familywise(2)),
        ("fixed: bootstrap coverage, at sizes its table lacks", lambda: rates.bootstrap_coverage(5, 5)),
        ("sequential: the design's calibration (make_design)", design),
        ("sequential: operating table", lambda: sequential_rates.operating_table(design())),
        ("sequential: rates under t3 and skewed noise", lambda: sequential_rates.noise_rates(design())),
        ("sequential: interval coverage", lambda: sequential_figures.interval_coverage(design())),
        ("sequential: power at the min effect", lambda: sequential_figures.power_at(design(), 1.0)),
        ("sequential: family-wise rate of 2", lambda: sequential_figures.familywise_false_winner(design(), 2)),
    ]


def clear() -> None:
    """Every in-memory cache of the rules emptied, as in a new process."""
    simulated._KNOWN.clear()
    simulated._NEW.clear()
    for module in (evidence, program, rates, sequential_design, sequential_figures, sequential_rates):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


def timed(pairs: list[tuple[str, Callable[[], Any]]]) -> list[tuple[str, float]]:
    out = []
    for name, call in pairs:
        start = time.perf_counter()
        call()
        out.append((name, time.perf_counter() - start))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="exprun-sim-") as tmp:
        state = Path(tmp)
        clear()
        cold = timed(calls())
        simcache.write(state, simulated.taken())
        clear()
        start = time.perf_counter()
        simulated.preload(simcache.read(state))
        read = time.perf_counter() - start
        warm = timed(calls())
        size = simcache.cache_path(state).stat().st_size
    print("| figure | simulated | from the store |\n| --- | --- | --- |")
    for (name, first), (_, again) in zip(cold, warm):
        print(f"| {name} | {first:.2f} s | {again * 1000:.1f} ms |")
    total = sum(t for _, t in cold)
    print(f"| **all** | **{total:.2f} s** | **{sum(t for _, t in warm) * 1000:.1f} ms** "
          f"(+ {read * 1000:.1f} ms to read {size:,} bytes) |")


if __name__ == "__main__":
    main()
