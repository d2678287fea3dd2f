"""Issue 26's table in one run: the reference protocol and nanoGPT's train.py, as users type them.

    python bench/bench_table.py                                   # from the repository root, any machine
    python bench/bench_table.py --tokens 20000 --repeat 1         # a quick CPU proof
    python bench/bench_table.py --nanogpt ~/nanoGPT --repeat 3    # with nanoGPT's rows

Where exprun is not pip-installed (the GPU image), run it from the repository root with
``PYTHONPATH=.``: each session then loads the plugin with ``-p pytest_exprun.plugin``.

Every session runs in a fresh temporary copy of the project (``train_llm.py``, ``pyproject.toml``,
``conftest.py``; no research dir), as ``python -m pytest -v <the user's arguments>``; ``-v`` only
makes the terminal echo every trainer line, so that the first one of each run is seen. Rows:

- ``--experiment=use_qk_norm --exprun-executor=warm``: the reference protocol as it decides
  (5 + 3, or 5 + 5 when it extends), the first session on a fresh machine (an empty user cache:
  exprun's bytecode cache and train_llm.py's corpus cache) and a later one (both filled);
- 5 + 5 forced as bench_protocol.py forces it (an A/A test, ``--use_qk_norm false``, which lands
  within 2 sigma and so runs both extension seeds), ``warm`` and ``local``, first and later;
- nanoGPT's own ``train.py`` through the plugin, 5 + 5 (``--experiment=bias=False``, nanoGPT's
  default, with five experiment seeds and no extension), ``local`` and ``warm`` (the fork
  server), in a copy of the checkout given by ``--nanogpt`` (or ``$NANOGPT``), holding its
  prepared ``data/shakespeare_char``; the adapter's ``pytest-gpu.ini`` where CUDA is available,
  else its CPU ``pytest.ini``. Its seed line is changed in the copy as examples/nanogpt/README.md
  says, if the checkout has not done so. Without a checkout these rows are skipped, saying so.

Per row, medians over ``--repeat`` sessions (ranges beside them): the session's wall time as
the user waits for it, the time inside the runs (the sum of the stored records' wall times, as
each executor times a run) and outside them (the rest: pytest, the worker's or fork server's
start, reports), and the time from a run's start to its first output line (the echo's clock).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("train_llm.py", "pyproject.toml", "conftest.py")
ECHO = re.compile(r"^\s*\[\d+ of [\d-]+ (?P<label>\S+)\s+(?P<elapsed>\d+\.\d)s\] ")
SEEDS = "42,137,256,512,1024"
NANOGPT_SEED_LINE = "torch.manual_seed(1337 + seed_offset)"
NANOGPT_SEEDED = 'torch.manual_seed(int(os.environ.get("EXPRUN_SEED", 1337)) + seed_offset)'


@dataclass(frozen=True)
class Row:
    """One line of the table: a session's arguments, in which project, with a cold or warm cache."""

    name: str
    trainer: str  # "train_llm" or "nanogpt"
    args: tuple[str, ...]
    first: bool  # the first session on a fresh machine: empty user caches


ROWS = (
    Row("use_qk_norm, warm, as it decides, first session", "train_llm",
        ("--experiment=use_qk_norm", "--exprun-executor=warm"), True),
    Row("use_qk_norm, warm, as it decides, later session", "train_llm",
        ("--experiment=use_qk_norm", "--exprun-executor=warm"), False),
    Row("5 + 5, warm, first session", "train_llm",
        ("--experiment=--use_qk_norm false", "--experiment-name=aa_test", "--exprun-executor=warm"), True),
    Row("5 + 5, warm, later session", "train_llm",
        ("--experiment=--use_qk_norm false", "--experiment-name=aa_test", "--exprun-executor=warm"), False),
    Row("5 + 5, local, first session", "train_llm",
        ("--experiment=--use_qk_norm false", "--experiment-name=aa_test", "--exprun-executor=local"), True),
    Row("5 + 5, local, later session", "train_llm",
        ("--experiment=--use_qk_norm false", "--experiment-name=aa_test", "--exprun-executor=local"), False),
    Row("nanoGPT train.py 5 + 5, local", "nanogpt",
        ("--experiment=bias=False", f"--exprun-experiment-seeds={SEEDS}", "--exprun-extension-seeds=",
         "--exprun-executor=local"), False),
    Row("nanoGPT train.py 5 + 5, warm (fork server)", "nanogpt",
        ("--experiment=bias=False", f"--exprun-experiment-seeds={SEEDS}", "--exprun-extension-seeds=",
         "--exprun-executor=warm"), False),
)


@dataclass
class Session:
    """What one pytest session took, read from outside (wall time, echo) and from its store."""

    wall: float
    runs: int
    inside: float
    first_lines: list[float] = field(default_factory=list)
    verdict: str = ""

    @property
    def outside(self) -> float:
        return self.wall - self.inside


def plugin_args() -> list[str]:
    """Load exprun by name where it is not installed (a checkout on PYTHONPATH), else by its entry point."""
    from importlib.metadata import entry_points

    installed = any(ep.name == "exprun" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_exprun.plugin"]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def copy_project(work: Path) -> Path:
    project = work / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, project / name)
    return project


def nanogpt_problem(checkout: Path | None) -> str | None:
    """Why nanoGPT's rows cannot run, or None."""
    if checkout is None:
        return "no nanoGPT checkout given (--nanogpt DIR or $NANOGPT)"
    if not (checkout / "train.py").is_file():
        return f"{checkout} holds no train.py"
    if not (checkout / "data" / "shakespeare_char" / "train.bin").is_file():
        return f"{checkout}/data/shakespeare_char is not prepared (python data/shakespeare_char/prepare.py)"
    source = (checkout / "train.py").read_text()
    if "EXPRUN_SEED" not in source and NANOGPT_SEED_LINE not in source:
        return f"{checkout}/train.py has neither its seed line nor exprun's (examples/nanogpt/README.md)"
    return None


def copy_nanogpt(checkout: Path, work: Path) -> Path:
    project = work / "nanogpt"
    shutil.copytree(checkout, project, ignore=shutil.ignore_patterns(".git", "out*", "__pycache__"))
    source = (project / "train.py").read_text()
    if "EXPRUN_SEED" not in source:  # the adapter's one-line change (examples/nanogpt/README.md)
        (project / "train.py").write_text(source.replace(NANOGPT_SEED_LINE, NANOGPT_SEEDED))
    ini = "pytest-gpu.ini" if cuda_available() else "pytest.ini"
    shutil.copy(ROOT / "examples" / "nanogpt" / ini, project / "pytest.ini")
    return project


def run_session(project: Path, row: Row, tokens: int | None, caches: Path, log: Path,
                command: str | None = None) -> Session:
    """One ``pytest`` session as the user types it, with the user's caches under ``caches``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "PYTHONPYCACHEPREFIX"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["XDG_CACHE_HOME"] = str(caches)  # exprun's bytecode cache goes here by default
    env["TRAIN_LLM_CACHE"] = str(caches / "train_llm")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", *plugin_args(), *row.args]
    if tokens is not None:
        cmd.append(f"--exprun-train-tokens={tokens}")
    if command is not None:
        cmd.append(f"--exprun-command={command}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log.write_text(" ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
    records = [json.loads(p.read_text()) for p in (project / "docs" / "research" / ".exprun" / "runs").rglob("seed*.json")]
    if proc.returncode not in (0, 1) or not records:  # 1: a verdict other than WINNER fails its test
        raise SystemExit(f"{row.name}: the session failed (exit code {proc.returncode}); its output is in {log}:\n"
                         + (proc.stdout + proc.stderr)[-3000:])
    first: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        match = ECHO.match(line)
        if match and match["label"] not in first:
            first[match["label"]] = float(match["elapsed"])
    verdict = next((line.split(" → ")[0].replace("exprun: ", "").strip() for line in proc.stdout.splitlines()
                    if re.search(r"\b(WINNER|NEUTRAL|LOSER)\b", line) and "→" in line), "")
    return Session(wall, len(records), sum(r["wall_time"] for r in records), list(first.values()), verdict)


def spread(values: list[float]) -> str:
    """The median, and the range when there is more than one value."""
    mid = statistics.median(values)
    return f"{mid:.1f} s" if len(values) == 1 else f"{mid:.1f} s ({min(values):.1f}-{max(values):.1f})"


def table(results: dict[Row, list[Session]], skipped: dict[Row, str]) -> list[str]:
    lines = ["| case | sessions | session | runs | inside the runs | outside the runs | run start to first line "
             "(median, max) | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in ROWS:
        if row in skipped:
            lines.append(f"| {row.name} | skipped: {skipped[row]} | | | | | | |")
            continue
        if row not in results:
            continue
        sessions = results[row]
        firsts = [t for s in sessions for t in s.first_lines]
        first = f"{statistics.median(firsts):.1f} s, {max(firsts):.1f} s" if firsts else "no echo"
        runs = sorted({s.runs for s in sessions})
        lines.append(f"| {row.name} | {len(sessions)} | {spread([s.wall for s in sessions])} | "
                     f"{'/'.join(map(str, runs))} | {spread([s.inside for s in sessions])} | "
                     f"{spread([s.outside for s in sessions])} | {first} | {sessions[-1].verdict or '-'} |")
    return lines


def ratio(results: dict[Row, list[Session]], a: Row, b: Row) -> str | None:
    if a not in results or b not in results:
        return None
    return f"{statistics.median(s.wall for s in results[a]) / statistics.median(s.wall for s in results[b]):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=None,
                        help="train tokens per run of train_llm.py (default: the plugin's, 1M)")
    parser.add_argument("--command", default=None,
                        help="train_llm.py's trainer command instead of the default (e.g. 'python train_llm.py "
                        "--num_threads 1' on a busy CPU); default: none given, as a user types it")
    parser.add_argument("--nanogpt-tokens", type=int, default=None,
                        help="train tokens per nanoGPT run (default: the adapter ini's)")
    parser.add_argument("--repeat", type=int, default=3, help="sessions per row; medians are printed")
    parser.add_argument("--nanogpt", type=Path, default=Path(os.environ["NANOGPT"]) if os.environ.get("NANOGPT") else None,
                        help="a nanoGPT checkout with data/shakespeare_char prepared (default: $NANOGPT)")
    parser.add_argument("--rows", default="", help="only rows whose name contains one of these, comma-separated")
    parser.add_argument("--json", type=Path, default=None, help="write every session's numbers here")
    parser.add_argument("--logs", type=Path, default=None, help="keep each session's output in this folder")
    args = parser.parse_args()

    wanted = [row for row in ROWS if not args.rows or any(w.strip() in row.name for w in args.rows.split(","))]
    problem = nanogpt_problem(args.nanogpt.expanduser().resolve() if args.nanogpt else None)
    skipped = {row: problem for row in wanted if row.trainer == "nanogpt" and problem is not None}
    if skipped:
        print(f"nanoGPT's rows are skipped: {problem}", file=sys.stderr)
    results: dict[Row, list[Session]] = {}
    with tempfile.TemporaryDirectory(prefix="exprun-table-") as tmp:
        logs = args.logs or Path(tmp) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for rep in range(args.repeat):
            # One fresh machine per repetition: its first session fills the user caches that its
            # later sessions find; every other first session gets empty caches of its own.
            warm_caches: Path | None = None
            for i, row in enumerate(r for r in wanted if r not in skipped):
                caches = Path(tmp) / f"caches-{rep}-{i}"
                if not row.first and warm_caches is not None:
                    caches = warm_caches
                work = Path(tempfile.mkdtemp(dir=tmp))
                if row.trainer == "nanogpt":
                    assert args.nanogpt is not None
                    project, tokens = copy_nanogpt(args.nanogpt.expanduser().resolve(), work), args.nanogpt_tokens
                    command = None
                else:
                    project, tokens, command = copy_project(work), args.tokens, args.command
                if not row.first and warm_caches is None:  # a later session follows a first one
                    run_session(project, row, tokens, caches, logs / f"warm-up-{rep}-{i}.log", command)
                    shutil.rmtree(project / "docs", ignore_errors=True)
                warm_caches = warm_caches or caches
                session = run_session(project, row, tokens, caches, logs / f"{rep}-{i}.log", command)
                results.setdefault(row, []).append(session)
                print(f"{row.name}: {session.wall:.1f} s, {session.runs} runs, {session.inside:.1f} s inside them",
                      file=sys.stderr, flush=True)
                shutil.rmtree(work, ignore_errors=True)
    import platform

    device = "CUDA" if cuda_available() else "CPU only"
    print(f"\n{device}; python {platform.python_version()}, {os.cpu_count()} CPUs; train tokens "
          f"{args.tokens or 'default (1M)'}; trainer {args.command or 'default (python train_llm.py)'}; "
          f"{args.repeat} session(s) a row, each in a fresh copy\n")
    print("\n".join(table(results, skipped)))
    nano = ratio(results, ROWS[7], ROWS[6])
    if nano is not None:
        print(f"\nnanoGPT through the plugin, warm / local: {nano}x")
    if args.json is not None:
        args.json.write_text(json.dumps({row.name: [vars(s) for s in sessions] for row, sessions in results.items()},
                                        indent=1))


if __name__ == "__main__":
    main()
