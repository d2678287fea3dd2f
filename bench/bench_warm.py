"""``local`` against ``warm`` for a trainer without the worker protocol (the fork server), side by side.

    python bench/bench_warm.py                      # fake trainer and the Hugging Face example, 3 repetitions
    python bench/bench_warm.py --trainers fake --repeat 5
    python bench/bench_warm.py --trainers hf --first-line 3

Two measurements per trainer, medians over the repetitions:

- fork to first output line: how long after a run is asked for its trainer prints its first
  line, as a fresh process (``local``) and forked from a ready fork server (``warm``);
- a 5 + 5 session (``-m baseline`` seeds 42..1024 and ``--experiment`` on the same five seeds),
  typed as a user types it, each in a fresh folder: wall time of the whole ``pytest`` call.

``fake`` is tests/fake_trainer.py forced onto the fork server (``--exprun-warm-start=fork``;
it also speaks the worker protocol); ``hf`` is examples/hf_trainer, which imports torch and
transformers and does not. Figures are whatever machine this runs on: CPU only unless a GPU is
visible to the trainers.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_exprun.executors.forkcheck import preload_modules  # noqa: E402
from pytest_exprun.executors.forking import ForkServer  # noqa: E402

SEEDS = "42,137,256,512,1024"
LOSSES = {"": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99},
          "--use_x": {"42": 1.90, "137": 1.91, "256": 1.89, "512": 1.90, "1024": 1.92}}


def make_project(trainer: str, folder: Path) -> tuple[list[str], str, list[str]]:
    """A project folder for ``trainer``: its command, the experiment to run, one run's arguments."""
    if trainer == "fake":
        shutil.copy(ROOT / "tests" / "fake_trainer.py", folder / "fake_trainer.py")
        (folder / "fake_plan.json").write_text(json.dumps({"losses": LOSSES}))
        (folder / "pytest.ini").write_text("[pytest]\nexprun_command = python fake_trainer.py\n")
        return ([sys.executable, "fake_trainer.py"], "--experiment=use_x",
                ["--train_tokens", "1000", "--seed", "42", "--output_dir", str(folder / "out")])
    for path in (ROOT / "examples" / "hf_trainer").iterdir():
        if path.is_file():
            shutil.copy(path, folder / path.name)
    return ([sys.executable, "train_hf.py"], "--experiment=learning_rate=3e-3",
            ["--seed", "42", "--max_steps", "1", "--output_dir", str(folder / "out")])


def first_line_local(command: list[str], run_args: list[str], folder: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen([*command, *run_args], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    proc.stdout.readline()
    took = time.perf_counter() - start
    proc.kill()
    proc.wait()
    return took


def first_line_forked(server: ForkServer, command: list[str], run_args: list[str], folder: Path) -> float:
    start = time.perf_counter()
    proc = server.fork([command[1], *run_args], {**os.environ, "PYTHONUNBUFFERED": "1"}, folder)
    proc.stdout.readline()
    took = time.perf_counter() - start
    os.killpg(proc.pid, 9)
    proc.wait()
    proc.stdout.close()
    return took


def session(folder: Path, experiment: str, executor: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", experiment,
                           f"--exprun-baseline-seeds={SEEDS}", f"--exprun-experiment-seeds={SEEDS}",
                           "--exprun-extension-seeds=", *executor], cwd=folder, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: the experiment's verdict test fails on NEUTRAL or LOSER
        raise SystemExit(f"session failed ({proc.returncode}):\n{proc.stdout[-2000:]}")
    return took


def bench(trainer: str, repeat: int, first_lines: int) -> dict[str, tuple[float, float]]:
    rows: dict[str, tuple[list[float], list[float]]] = {"fork to first output line": ([], []),
                                                         "5 + 5 session": ([], [])}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        command, _, run_args = make_project(trainer, folder)
        settings = _Settings(command, folder)
        server = ForkServer([sys.executable], "script", command[1], preload_modules(settings),  # type: ignore[arg-type]
                            {}, folder)
        why = server.wait_ready(600)
        if why is not None:
            raise SystemExit(f"the fork server refused {trainer}: {why}")
        for _ in range(first_lines):
            rows["fork to first output line"][0].append(first_line_local(command, run_args, folder))
            rows["fork to first output line"][1].append(first_line_forked(server, command, run_args, folder))
        server.stop()
    for _ in range(repeat):
        for i, executor in enumerate((["--exprun-executor=local"],
                                      ["--exprun-executor=warm", "--exprun-warm-start=fork"])):
            with tempfile.TemporaryDirectory() as tmp:
                _, experiment, _ = make_project(trainer, Path(tmp))
                rows["5 + 5 session"][i].append(session(Path(tmp), experiment, executor))
    return {name: (statistics.median(local), statistics.median(warm)) for name, (local, warm) in rows.items()
            if local and warm}


class _Settings:
    """What ``preload_modules`` reads of ``Settings``."""

    def __init__(self, command: list[str], folder: Path) -> None:
        self.command = tuple(command)
        self.rootdir = folder
        self.fingerprint_include: tuple[str, ...] = ()
        self.fingerprint_exclude: tuple[str, ...] = ()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainers", default="fake,hf")
    parser.add_argument("--repeat", type=int, default=3, help="sessions per executor and trainer (0: none)")
    parser.add_argument("--first-line", type=int, default=5, help="first-line timings per executor and trainer")
    args = parser.parse_args()
    print(f"{'trainer':8} {'measurement':28} {'local':>9} {'warm':>9} {'warm/local':>10}")
    for trainer in args.trainers.split(","):
        for name, (local, warm) in bench(trainer, args.repeat, args.first_line).items():
            print(f"{trainer:8} {name:28} {local:8.2f}s {warm:8.2f}s {warm / local:10.2f}")
    print(f"(medians; first line of {args.first_line}, sessions of {args.repeat}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {'GPU visible' if shutil.which('nvidia-smi') else 'no GPU'})")


if __name__ == "__main__":
    main()
