"""The runner on its own: which value a run records, and that nothing it started outlives it.

Trainers here are small real scripts in a temporary folder, run through ``run_trainer``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import pid_alive, wait_for
from pytest_exprun.trainer.lines import _LineSplitter, log_lines, parse_step_line
from pytest_exprun.trainer.evaluations import MAX_CURVE_POINTS, Evaluations, Failure, parse_lines
from pytest_exprun.trainer.runner import RunResult, RunSpec, run_trainer


def run_script(tmp_path: Path, body: str, timeout: float | None = None):  # type: ignore[no-untyped-def]
    trainer = tmp_path / "trainer.py"
    trainer.write_text(textwrap.dedent(body))
    spec = RunSpec(label="baseline[seed42]", group="baseline", seed=42, argv=(sys.executable, str(trainer)),
                   output_dir=tmp_path / "out", log_path=tmp_path / "seed42.log", timeout=timeout, cwd=tmp_path)
    return run_trainer(spec)


# ------------------------------------------------------------------ splitting lines
def test_carriage_returns_end_lines_like_newlines() -> None:
    splitter = _LineSplitter()
    assert splitter.feed(b" 10%|#   | 1/10\r 20%|##  | 2/10\rStep 10 | val_loss: 2.0\r\nnext") == [
        " 10%|#   | 1/10", " 20%|##  | 2/10", "Step 10 | val_loss: 2.0"]
    assert splitter.flush() == ["next"]


def test_a_crlf_split_across_two_reads_is_one_line_end() -> None:
    splitter = _LineSplitter()
    assert splitter.feed(b"a\r") == ["a"]
    assert splitter.feed(b"\nb\n\n") == ["b", ""]


def test_the_real_trainers_line_still_parses() -> None:
    line = "Step 244 | val_loss: 1.8876 | train_loss: 1.9012 | tok/s: 16,512 | elapsed: 61.2s"
    assert parse_step_line(line) == (244, 1.8876)
    assert parse_lines([line]).problem() is None


# --------------------------------------------------------------- the recorded value
def test_the_value_at_the_highest_step_is_recorded_not_the_last_printed() -> None:
    evals = parse_lines(["Step 100 | val_loss: 2.5", "Step 200 | val_loss: 2.1", "Step 150 | val_loss: 2.3"])
    assert (evals.eval_step, evals.val_loss) == (200, 2.1)
    assert evals.problem() is None


def test_a_repeated_final_step_records_its_last_value() -> None:
    evals = parse_lines(["Step 200 | val_loss: 2.2", "Step 200 | val_loss: 2.1"])
    assert evals.val_loss == 2.1


def test_an_evaluation_before_the_final_step_fails_the_run() -> None:
    evals = parse_lines(["Step 250 | val_loss: 2.2", "step 300: train loss 2.0", "iter 999: loss 1.9"])
    assert (evals.eval_step, evals.final_step, evals.problem()) == (250, 999, Failure.NOT_FINAL)


def test_an_evaluation_within_one_percent_of_the_final_step_counts_as_final() -> None:
    assert parse_lines(["Step 995 | val_loss: 2.0", "Step 1000 | train_loss: 1.9"]).problem() is None
    assert parse_lines(["Step 989 | val_loss: 2.0", "Step 1000 | train_loss: 1.9"]).problem() is Failure.NOT_FINAL
    assert parse_lines(["Step 9 | val_loss: 2.0", "Step 10 | train_loss: 1.9"]).problem() is None


def test_an_evaluation_only_at_step_zero_fails_the_run() -> None:
    assert parse_lines(["Step 0 | val_loss: 5.5"]).problem() is Failure.ONLY_STEP_ZERO


def test_a_non_finite_intermediate_value_is_left_out_and_the_run_stands() -> None:
    evals = parse_lines(["Step 10 | val_loss: inf", "Step 20 | val_loss: nan", "Step 30 | val_loss: 2.0"])
    assert evals.problem() is None and evals.val_loss == 2.0
    assert evals.curve == ((30, 2.0),)
    json.dumps(evals.curve, allow_nan=False)  # what a run record needs


def test_a_non_finite_final_value_still_fails() -> None:
    evals = parse_lines(["Step 10 | val_loss: 2.5", "Step 20 | val_loss: nan"])
    assert evals.problem() is Failure.NON_FINITE and math.isnan(evals.val_loss or 0.0)
    assert evals.curve == ((10, 2.5),)


def test_a_million_evaluations_keep_a_bounded_evenly_thinned_curve() -> None:
    evals = Evaluations()
    for step in range(1, 1_000_001):
        evals.add(step, 1.0 + 1.0 / step)
    curve = evals.curve
    assert MAX_CURVE_POINTS // 2 <= len(curve) <= MAX_CURVE_POINTS + 1
    gaps = {b[0] - a[0] for a, b in zip(curve, curve[1:-1])}
    assert len(gaps) == 1  # evenly spaced
    assert curve[0][0] == 1 and curve[-1] == (1_000_000, 1.0 + 1e-6)


def test_a_log_read_again_gives_the_same_evaluations(tmp_path: Path) -> None:
    log = tmp_path / "seed42.log"
    log.write_bytes(b"Step 10 | val_loss: 2.5\rStep 20 | val_loss: 2.0\r\n" + b"x" * 100_000 + b"\n")
    evals = parse_lines(log_lines(log))
    assert (evals.eval_step, evals.val_loss) == (20, 2.0)


# ----------------------------------------------------------------- real processes
def test_a_progress_bar_with_carriage_returns_does_not_hide_the_final_evaluation(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        import sys
        for i in range(1, 101):
            sys.stdout.write(f"\\r{i}%|{'#' * (i // 10)}| {i}/100")
            if i == 50:
                sys.stdout.write("\\rStep 50 | val_loss: 2.5000 | train_loss: 2.6")
        sys.stdout.write("\\rStep 100 | val_loss: 2.0000 | train_loss: 2.1")
        sys.stdout.flush()
    """)
    assert result.ok, result.describe_failure()
    assert result.val_loss == 2.0 and result.curve == ((50, 2.5), (100, 2.0))


def test_an_early_inf_then_a_finite_final_value_keeps_the_run(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        print("Step 10 | val_loss: inf | train_loss: inf")
        print("Step 20 | val_loss: 2.0000 | train_loss: 2.1")
    """)
    assert result.ok and result.val_loss == 2.0 and result.curve == ((20, 2.0),)


def test_a_trainer_that_evaluates_only_at_step_zero_fails_saying_so(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        print("step 0: train loss 5.5451, val loss 5.5460")
        print("Step 0 | val_loss: 5.5460")
        for i in range(1, 6):
            print(f"iter {i}: loss {5.5 - i / 10:.4f}")
    """)
    assert result.failure is Failure.ONLY_STEP_ZERO
    assert "trainer evaluated only at step 0, before any training (an untrained model's loss)" in result.describe_failure()


def test_a_trainer_whose_last_evaluation_is_early_fails_saying_which_steps(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        for step in range(1, 1001):
            if step % 250 == 0 and step < 1000:
                print(f"Step {step} | val_loss: {3 - step / 1000:.4f}")
            if step % 100 == 0:
                print(f"Step {step} | train_loss: {3 - step / 1000:.4f}")
    """)
    assert result.failure is Failure.NOT_FINAL
    assert ("trainer did not evaluate at its final step (its last val_loss is at step 750, but it reported "
            "step 1000)") in result.describe_failure()


def test_a_trainer_that_redirects_its_own_output_is_not_killed(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        import os, time
        out = os.open("trainer_output.txt", os.O_WRONLY | os.O_CREAT)
        os.dup2(out, 1)
        os.dup2(out, 2)
        time.sleep(1.0)  # trains on after exprun's pipe saw the end of its output
        print("Step 20 | val_loss: 2.0000", flush=True)
        open("finished", "w").close()
    """)
    assert (tmp_path / "finished").exists()
    assert result.returncode == 0
    assert result.failure is Failure.NO_VAL_LOSS  # its lines went to its own file, not "killed by a signal"


def test_a_redirected_trainer_that_hangs_still_times_out(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        import os, time
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        time.sleep(3600)
    """, timeout=1.0)
    assert result.failure is Failure.TIMEOUT and result.wall_time < 10


SETSID_CHILD = textwrap.dedent("""
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open("child.pid", "w") as handle:
        handle.write(f"{child.pid}\\n")
""")


def test_a_grandchild_that_left_the_process_group_does_not_outlive_a_finished_run(tmp_path: Path) -> None:
    result = run_script(tmp_path, SETSID_CHILD + 'print("Step 20 | val_loss: 2.0000")\n')
    assert result.ok
    child = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: not pid_alive(child), timeout=10, what="the setsid grandchild to be ended")


def test_a_grandchild_that_left_the_process_group_is_ended_on_time_out(tmp_path: Path) -> None:
    result = run_script(tmp_path, SETSID_CHILD + "time.sleep(3600)\n", timeout=1.0)
    assert result.failure is Failure.TIMEOUT
    child = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: not pid_alive(child), timeout=10, what="the setsid grandchild to be ended")


def test_a_grandchild_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        import subprocess, sys
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(3600)"
        child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
        child.stdout.readline()
        open("child.pid", "w").write(f"{child.pid}\\n")
        print("Step 20 | val_loss: 2.0000")
    """)
    assert result.ok
    child = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: not pid_alive(child), timeout=15, what="the stubborn grandchild to be killed")


@pytest.fixture(autouse=True)
def _end_leftover_children(tmp_path: Path):  # type: ignore[no-untyped-def]
    """After a failed test, end the grandchild it left behind (by its recorded pid)."""
    yield
    pid_file = tmp_path / "child.pid"
    if pid_file.exists() and pid_file.read_text().strip():
        pid = int(pid_file.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _own_parser(line: str) -> tuple[int, float] | None:
    """A project's own line format: ``at STEP loss VALUE``."""
    parts = line.split()
    if len(parts) == 4 and parts[0] == "at" and parts[2] == "loss":
        return int(parts[1]), float(parts[3])
    return None


def test_a_log_read_again_on_the_submitting_side_says_why_it_failed_as_a_local_run_does(tmp_path: Path) -> None:
    """SLURM and Ray runs are parsed again with the project's parser; their failure keeps its detail."""
    from pytest_exprun.executors.slurm import reparse

    log = tmp_path / "run.log"
    log.write_text("at 10 loss 2.5\nat 50 loss 2.0\nat 50 loss 2.25\n", encoding="utf-8")
    spec = RunSpec(label="baseline[seed42]", group="baseline", seed=42, argv=("train",), output_dir=tmp_path,
                   log_path=log)
    result = RunResult(spec=spec, val_loss=None, wall_time=1.0, curve=(), returncode=0,
                       failure=Failure.NO_VAL_LOSS, tail=())
    again = reparse(result, _own_parser)
    assert again.failure is Failure.CONFLICTING
    assert "2.25" in again.detail and "2" in again.detail

    log.write_text("at 10 loss 2.5\nat 50 loss 2.0\n", encoding="utf-8")
    fine = reparse(result, _own_parser)
    assert (fine.failure, fine.val_loss, fine.detail) == (None, 2.0, "")
