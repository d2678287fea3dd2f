"""What exprun's default bytecode cache saves a fresh trainer process: ``import torch`` without and with it.

    python bench/bench_bytecode.py                     # import torch, 5 runs of each
    python bench/bench_bytecode.py --module numpy --runs 9

Each run is a fresh interpreter (``python -c "import torch"``) with ``PYTHONDONTWRITEBYTECODE``
unset, timed from outside:

- cold: ``PYTHONPYCACHEPREFIX`` an empty folder each time: every module is compiled from source
  and written there (a first session on a fresh machine whose image ships no ``.pyc`` files);
- warm: the same prefix every time, filled by one run beforehand (every later session);
- as is: the environment as this machine has it (``PYTHONDONTWRITEBYTECODE`` and any prefix as
  set), for comparison; on an image without ``.pyc`` files it is as slow as cold, less the writing.

It also prints the size of the warm cache (what ``--exprun-bytecode-cache`` puts in the user's cache
dir for these imports). Medians, with the range, over ``--runs``.
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


def timed_import(module: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True)
    return time.perf_counter() - start


def size_of(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*.pyc") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", default="torch", help="what to import (default: torch)")
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per case")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    times: dict[str, list[float]] = {"cold": [], "warm": [], "as is": []}
    with tempfile.TemporaryDirectory(prefix="exprun-pyc-") as tmp:
        warm = Path(tmp) / "warm"
        timed_import(args.module, {**base, "PYTHONPYCACHEPREFIX": str(warm)})  # fills it
        for i in range(args.runs):  # the cases alternate, so each sees the same machine
            cold = Path(tmp) / f"cold-{i}"
            times["cold"].append(timed_import(args.module, {**base, "PYTHONPYCACHEPREFIX": str(cold)}))
            times["warm"].append(timed_import(args.module, {**base, "PYTHONPYCACHEPREFIX": str(warm)}))
            times["as is"].append(timed_import(args.module, dict(os.environ)))
        size, count = size_of(warm)
    print(f"fresh interpreter, `import {args.module}`; python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"PYTHONDONTWRITEBYTECODE here: {os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')}")
    print("| case | median | range |")
    print("| --- | --- | --- |")
    for case, values in times.items():
        print(f"| {case} | {statistics.median(values):.2f} s | {min(values):.2f}-{max(values):.2f} s |")
    print(f"warm cache: {size / 1e6:.1f} MB in {count} .pyc files")


if __name__ == "__main__":
    main()
