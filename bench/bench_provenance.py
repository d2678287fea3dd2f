"""What tracing the files a run reads costs: traced and untraced side by side, medians of several runs.

    python bench/bench_provenance.py                      # all four parts, 5 repetitions
    python bench/bench_provenance.py --parts protocol,startup --repeat 7
    python bench/bench_provenance.py --parts train --train-repeat 3

Parts:

- ``protocol``: a whole ``pytest --experiment=use_x`` session with the fake trainer (5 baseline
  + 5 experiment seeds: its losses keep it within 2 sigma, so it extends), traced as exprun does
  and with the tracer left out (a ``conftest.py`` in the bench project gives runs no tracer).
  The fake trainer runs in milliseconds, so this is the worst case: the tracer's fixed cost
  per process against almost nothing else.
- ``startup``: ``python -c "import torch"`` with and without the tracer: the fixed cost of
  the audit hook in a process that imports a large framework (thousands of module imports).
- ``train``: one real ``train_llm.py`` run at its default settings (1M tokens, ``--config
  auto``), traced and untraced, alternated so drift of a shared machine hits both alike.
- ``bigfile``: a 1 GB data file read by a run: reading the trace back (the file is hashed
  once), checking it again with an unchanged stat (the fast path every later session takes),
  and checking it after a ``touch`` (stat differs: hashed again, found unchanged).

Each repetition alternates traced and untraced; medians are printed, with the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_exprun.trainer import provenance  # noqa: E402

FAKE = ROOT / "tests" / "fake_trainer.py"
#: The experiment sits 1 sigma from the baseline: within 2 sigma after 3 seeds, so it runs all 5.
PLAN = {"losses": {"": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99},
                   "--use_x": {"42": 1.99, "137": 2.00, "256": 1.97, "512": 2.00, "1024": 1.98}},
        "behaviour": {}, "sleep": 0.0}
UNTRACED = "import pytest_exprun.runs as runs\nruns.provenance_env = lambda *args: {}\n"


class Timer:
    """Wall time and the CPU time (user + system) of the child processes waited for meanwhile.

    On a shared machine the wall clock swings by more than the tracer costs; CPU time is what
    the tracer itself spends, and is far steadier.
    """

    def __enter__(self) -> "Timer":
        self._wall = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cpu = usage.ru_utime + usage.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = usage.ru_utime + usage.ru_stime - self._cpu
        self.wall = time.perf_counter() - self._wall


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):8.3f} s (range {min(values):.3f}-{max(values):.3f})"


def _report(name: str, traced: list[Timer], untraced: list[Timer], per: str) -> None:
    print(f"{name}, median of {len(traced)} {per}:")
    for what in ("wall", "cpu"):
        t = [getattr(x, what) for x in traced]
        u = [getattr(x, what) for x in untraced]
        mt, mu = statistics.median(t), statistics.median(u)
        print(f"  {what:4} untraced {_median(u)}   traced {_median(t)}   "
              f"tracing adds {mt - mu:+.3f} s ({(mt - mu) / mu * 100:+.2f}%)")
    print()


# ---------------------------------------------------------------------- protocol
def _session(folder: Path, traced: bool) -> Timer:
    shutil.rmtree(folder / "docs", ignore_errors=True)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    conftest = folder / "conftest.py"
    conftest.write_text("" if traced else UNTRACED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--experiment=use_x",
           "--exprun-fingerprint-exclude=fake_plan.json"]
    with Timer() as elapsed:
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, check=False)
    runs = list((folder / "docs" / "research" / ".exprun" / "runs").rglob("seed*.json"))
    if "use_x: NEUTRAL" not in proc.stdout or len(runs) != 10:  # NEUTRAL fails its verdict test: expected
        sys.exit(f"session failed ({proc.returncode}, {len(runs)} records):\n{proc.stdout[-3000:]}")
    has_trace = any((folder / "docs" / "research" / ".exprun" / "runs").rglob("seed*.trace"))
    assert has_trace == traced, "the untraced session was traced, or the traced one was not"
    return elapsed


def protocol(repeat: int) -> None:
    traced: list[Timer] = []
    untraced: list[Timer] = []
    with tempfile.TemporaryDirectory(prefix="exprun-bench-") as tmp:
        folder = Path(tmp)
        shutil.copy(FAKE, folder / "fake_trainer.py")
        (folder / "fake_plan.json").write_text(json.dumps(PLAN))
        (folder / "pytest.ini").write_text("[pytest]\nexprun_command = python fake_trainer.py\n")
        _session(folder, True)  # warm the file cache once, not counted
        for _ in range(repeat):
            untraced.append(_session(folder, False))
            traced.append(_session(folder, True))
    _report("protocol: 5 + 5 runs of the fake trainer through pytest-exprun", traced, untraced, "sessions")


# ---------------------------------------------------------------------- one process
def _process(argv: list[str], cwd: Path, trace: Path | None) -> Timer:
    env = dict(os.environ)
    if trace is not None:
        trace.unlink(missing_ok=True)
        env.update(provenance.environment(trace, cwd, [cwd / "out"], os.environ))
    with Timer() as elapsed:
        subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return elapsed


def startup(repeat: int) -> None:
    traced: list[Timer] = []
    untraced: list[Timer] = []
    with tempfile.TemporaryDirectory(prefix="exprun-bench-") as tmp:
        cwd, trace = Path(tmp), Path(tmp) / "run.trace"
        argv = [sys.executable, "-c", "import torch"]
        _process(argv, cwd, trace)
        for _ in range(repeat):
            untraced.append(_process(argv, cwd, None))
            traced.append(_process(argv, cwd, trace))
        lines = trace.read_text().splitlines()
    _report("start-up: python -c 'import torch'", traced, untraced, "processes")
    print(f"  ({len(lines)} trace lines: {sum(1 for x in lines if x.startswith('p'))} package, "
          f"{sum(1 for x in lines if x.startswith('r'))} file)\n")


def train(repeat: int) -> None:
    traced: list[Timer] = []
    untraced: list[Timer] = []
    with tempfile.TemporaryDirectory(prefix="exprun-bench-") as tmp:
        cwd, trace = Path(tmp), Path(tmp) / "run.trace"
        shutil.copy(ROOT / "train_llm.py", cwd / "train_llm.py")
        argv = [sys.executable, "train_llm.py", "--seed", "42", "--train_tokens", "1000000", "--output_dir", "out"]
        for rep in range(1, repeat + 1):
            untraced.append(_process(argv, cwd, None))
            traced.append(_process(argv, cwd, trace))
            print(f"  train_llm.py run pair {rep}: untraced wall {untraced[-1].wall:.1f} s cpu {untraced[-1].cpu:.1f} s, "
                  f"traced wall {traced[-1].wall:.1f} s cpu {traced[-1].cpu:.1f} s", flush=True)
        found = provenance.read_trace(trace, cwd)
    _report("train_llm.py at its default settings (1M tokens), one whole process", traced, untraced, "runs")
    if found is not None:
        print(f"  traced: {provenance.describe(found)}: "
              + ", ".join([f.name for f in found.files] + [f"{n} {v}" for n, v in found.packages]) + "\n")


# ---------------------------------------------------------------------- a 1 GB file
def bigfile(folder: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="exprun-bench-", dir=folder) as tmp:
        cwd = Path(tmp)
        data = cwd / "corpus.bin"
        block = os.urandom(1 << 20)
        with open(data, "wb") as handle:
            for _ in range(1024):
                handle.write(block)
        trace = cwd / "run.trace"
        code = "f = open('corpus.bin', 'rb'); f.read(1 << 20); f.close()"  # a trainer reads what it needs
        subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True,
                       env={**os.environ, **provenance.environment(trace, cwd, [], os.environ)})
        start = time.perf_counter()
        found = provenance.read_trace(trace, cwd)
        first = time.perf_counter() - start
        assert found is not None and [f.name for f in found.files] == ["corpus.bin"]
        fast = []
        for _ in range(5):
            start = time.perf_counter()
            assert provenance.changes(found, cwd) == []
            fast.append(time.perf_counter() - start)
        touched = []
        for i in range(3):
            os.utime(data, ns=(i + 1, i + 1))
            provenance.content_digest.cache_clear()  # a later session: nothing is remembered
            start = time.perf_counter()
            assert provenance.changes(found, cwd) == []
            touched.append(time.perf_counter() - start)
    print("a 1 GB data file read by a run:")
    print(f"  after the run, reading the trace (the file hashed once)   {first:8.3f} s")
    print(f"  checking it again, stat unchanged (every later session)   {statistics.median(fast) * 1e6:8.1f} µs")
    print(f"  checking it after a touch (stat differs: hashed again)     {statistics.median(touched):8.3f} s\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="protocol,startup,train,bigfile")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of protocol and startup (default 5)")
    parser.add_argument("--train-repeat", type=int, default=3, help="train_llm.py runs each way (default 3)")
    parser.add_argument("--bigfile-dir", type=Path, default=None, help="where to write the 1 GB file (default: temp)")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} at the start\n")
    parts = args.parts.split(",")
    if "protocol" in parts:
        protocol(args.repeat)
    if "startup" in parts:
        startup(args.repeat * 2)
    if "bigfile" in parts:
        bigfile(args.bigfile_dir)
    if "train" in parts:
        train(args.train_repeat)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
