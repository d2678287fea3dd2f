"""A stand-in trainer for testing the plugin's logic in milliseconds.

It accepts the real trainer's protocol arguments plus any experiment flags, and behaves
as ``fake_plan.json`` in the working directory says:

    {"losses": {"": {"42": 2.0, ...}, "--use_x": {"42": 1.9, ...}},   # flags joined by spaces
     "behaviour": {"--use_x 137": "exit3"},                           # flags + seed
     "sleep": 0.0}

Behaviours: exit3, nan, inf, silent (no val_loss), hang, selfkill (SIGKILL itself),
stubborn (notes SIGTERM in ``fake_sigterm.txt`` and carries on),
bigline (one line of 100 MB), flood (about 1 GB of log lines), grandchild (starts a
sleeping child that outlives it unless its process group is ended, and writes both pids
to ``fake_grandchild.pid``), setsid (the same child in a session of its own, and the run
then finishes normally), early_inf (the first evaluation prints inf), step0 (evaluates only
at step 0, then trains on), early_eval (its last evaluation is at step 30 of 50), progress
(a tqdm-style bar redrawn with ``\r``, the evaluations printed over it), shuffled (the final
evaluation is printed first), redirect (sends its own output to ``fake_redirected.txt``), burn
(0.4 s of CPU in a child process it waits for).
A behaviour may be prefixed by how its step lines look, as real trainers' output does:
``ansi+`` (colour and erase-line codes), ``logging+`` (a ``logging`` prefix), ``hydra+``
(Hydra's log prefix), ``glued+`` (a ``\r`` bar left open on stderr before each line on
stdout), ``thousands+`` (steps x100 printed as ``1,000``), ``unreadable+`` (the final
evaluation printed with a decimal comma), ``early_result+`` (also writes ``result.json``
holding the evaluation of step 10, with its step). E.g. ``logging+early_eval``.
Started with ``--worker`` it speaks the warm executor's worker protocol (docs/executors.md):
``exprun-worker: ready``, then one run per JSON line on stdin, each ending with
``exprun-worker: done <code>``; it exits after a failed run and at the end of its input.
``"worker": false`` in the plan makes it a trainer without worker support, and
``"worker_start": "exit2"`` or ``"hang"`` makes its start fail or hang.
Every start is appended to ``fake_started.jsonl`` (seed and pid) so a test can wait for a
given run to be under way; with ``"gate": "FILE"`` in the plan a run waits until FILE
exists before it finishes. Every finished call is appended to ``fake_calls.jsonl`` so
tests can see which seeds ran, when, with which CUDA_VISIBLE_DEVICES and bytecode settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: (step, val_loss above the final value); the last step prints the planned loss exactly.
CURVE = ((10, 0.5), (20, 0.25), (30, 0.12), (40, 0.05), (50, 0.0))


def read_plan() -> dict:
    plan_path = Path("fake_plan.json")
    return json.loads(plan_path.read_text()) if plan_path.exists() else {}


def serve(common: list[str]) -> int:
    """The worker protocol: runs from stdin, one after another in this process."""
    start = read_plan().get("worker_start")
    if start == "exit2":
        print("error: unknown preset 'huge'", flush=True)
        return 2
    if start == "hang":
        time.sleep(3600)
    print("exprun-worker: ready", flush=True)
    for line in sys.stdin:
        try:
            code = main(common + json.loads(line)["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        print(f"exprun-worker: done {code}", flush=True)
        if code:
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan = read_plan()
    if "--worker" in argv and plan.get("worker", True):
        return serve([a for a in argv if a != "--worker"])
    parser = argparse.ArgumentParser()
    parser.add_argument("--train_tokens", type=int, required=True)
    parser.add_argument("-s", "--seed", type=int, required=True)  # a short alias, as many trainers have
    parser.add_argument("--output_dir", required=True)
    args, flags = parser.parse_known_args(argv)
    key = " ".join(flags)
    seed = str(args.seed)
    started = time.time()
    behaviour = plan.get("behaviour", {}).get(f"{key} {seed}".strip(), "")
    style, _, behaviour = behaviour.rpartition("+")

    losses = plan.get("losses", {}).get(key)
    if losses is not None and seed in losses:
        loss = float(losses[seed])
    else:
        # Small seed-dependent noise around 2.0; any flag shifts it a little.
        loss = 2.0 + ((args.seed * 7919) % 101 - 50) / 5000 + 0.001 * len(flags)

    with open("fake_started.jsonl", "a") as handle:
        handle.write(json.dumps({"seed": args.seed, "flags": flags, "pid": os.getpid()}) + "\n")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint.bin").write_bytes(b"\0" * 16)
    metrics = {"device": os.environ.get("FAKE_DEVICE", "cpu"), "data_fingerprint": "fake"}
    (out / "metrics.json").write_text(json.dumps(metrics))
    print(f"fake trainer: seed {args.seed}, flags {flags}, {args.train_tokens} tokens", flush=True)
    time.sleep(float(plan.get("sleep", 0.0)))
    if behaviour == "slow":  # as if another job shared the machine: the same work in more wall time
        time.sleep(1.5)
    gate = plan.get("gate")
    while gate and not Path(gate).exists():
        time.sleep(0.02)

    if behaviour == "burn":  # CPU work in a child it waits for, as a data loader's worker does
        subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.4\n"
                        "while time.process_time() < end: pass"], check=True)
    if behaviour == "exit3":
        print("Traceback (most recent call last):\nRuntimeError: boom", flush=True)
        return 3
    if behaviour == "selfkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if behaviour == "hang":
        print("hanging...", flush=True)
        time.sleep(3600)
    if behaviour == "stubborn":
        # Like a trainer that saves a checkpoint on SIGTERM and takes its time about it.
        def note(signum: int, frame: object) -> None:
            with open("fake_sigterm.txt", "a") as handle:
                handle.write(f"{os.getpid()}\n")

        signal.signal(signal.SIGTERM, note)
        print("stubborn...", flush=True)
        while True:
            time.sleep(1)
    if behaviour in {"grandchild", "setsid"}:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                 start_new_session=behaviour == "setsid")
        with open("fake_grandchild.pid", "a") as handle:
            handle.write(f"{os.getpid()} {child.pid}\n")
        if behaviour == "grandchild":
            time.sleep(3600)
    if behaviour == "redirect":
        redirected = os.open("fake_redirected.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(redirected, 1)
        os.dup2(redirected, 2)
        time.sleep(0.5)  # still training after its output to exprun has ended
    if behaviour == "bigline":
        chunk = "x" * (1 << 20)
        for _ in range(100):
            sys.stdout.write(chunk)
        sys.stdout.write("\n")
    if behaviour == "flood":
        line = ("log line " * 12 + "\n") * 1000
        for _ in range(10_000):
            sys.stdout.write(line)
    if behaviour == "silent":
        print("training finished but I forgot to evaluate", flush=True)
        return 0
    if behaviour in {"nan", "inf"}:
        loss = float(behaviour)

    # A decaying learning curve whose last value is the planned loss; the early steps wobble
    # a little with the seed so that the curve bands in reports have some width.
    wobble = 1 + ((args.seed * 31) % 7 - 3) / 30
    evals = [(step, loss + above * wobble) for step, above in CURVE]
    if behaviour == "early_inf":
        evals[0] = (evals[0][0], math.inf)
    if behaviour == "step0":
        evals = [(0, loss + 3.0)]
    if behaviour == "early_eval":
        evals = evals[:3]
    if behaviour == "shuffled":
        evals = evals[-1:] + evals[:-1]
    end = "\n"
    for step, value in evals:
        if behaviour == "progress":
            for done in range(step - 9, step + 1):
                sys.stdout.write(f"\r{done * 2}%|{'#' * (done // 5):<10}| {done}/50 [00:01<00:01]")
            sys.stdout.write("\r")
            end = "\r"
        shown = f"{value:.4f}".replace(".", ",") if style == "unreadable" and step == evals[-1][0] else f"{value:.4f}"
        sys.stdout.write(styled(style, step, f"| val_loss: {shown} | train_loss: {value + 0.1:.4f} | tok/s: 1,000 | "
                                             f"elapsed: {step / 100:.1f}s") + end)
    if behaviour in {"step0", "early_eval"}:
        for step in range(10, 51, 10):
            print(styled(style, step, f"| train_loss: {loss + 0.1:.4f}"))
    sys.stdout.flush()
    if style == "early_result":
        (out / "result.json").write_text(json.dumps({"eval_loss": evals[0][1], "global_step": evals[0][0]}))
    with open("fake_calls.jsonl", "a") as handle:
        handle.write(json.dumps({
            "seed": args.seed, "flags": flags, "output_dir": args.output_dir,
            "start": started, "end": time.time(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pycache_prefix": sys.pycache_prefix, "dont_write_bytecode": sys.flags.dont_write_bytecode,
        }) + "\n")
    return 0


def styled(style: str, step: int, rest: str) -> str:
    """A step line (``Step N <rest>``) dressed as ``style`` says; a glued one first leaves a bar open on stderr."""
    number = f"{step * 100:,}" if style == "thousands" else str(step)
    line = f"Step {number} {rest}"
    if style == "ansi":
        return f"\x1b[2K\x1b[1;32mStep {number}\x1b[0m \x1b[33m{rest}\x1b[0m"
    if style == "logging":
        return f"2026-12-04 10:00:00,123 INFO trainer: {line}"
    if style == "hydra":
        return f"[2026-12-04 10:00:00,123][trainer][INFO] - {line}"
    if style == "glued":
        sys.stdout.flush()
        sys.stderr.write(f"\r{step * 2}%|{'#' * (step // 5):<10}| {step}/50 [00:01<00:01]")
        sys.stderr.flush()
    return line


if __name__ == "__main__":
    sys.exit(main())
