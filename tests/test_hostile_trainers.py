"""Trainers written as users write them, output as real libraries print it: each variant is either
recorded with its final evaluation or fails the run in one line. A wrong value is never recorded.

Lines: rank prefixes and ranks that disagree, JSON lines and printed dicts in either key order,
progress steps in other words, values ``float()`` would misread, megabyte lines, and evaluations
that print no step (a pattern without a ``step`` group). Files: what the run-time tracer must see
(folders walked, model caches, memory-mapped weights) and what it must not (version-control
metadata, listings made by the import system, hidden entries a tool adds to a listed folder).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Project
from pytest_exprun.trainer import provenance
from pytest_exprun.trainer.evaluations import Evaluations, Failure, parse_lines, same_value
from pytest_exprun.trainer.fingerprint import setup_files
from pytest_exprun.trainer.interface import line_parser
from pytest_exprun.trainer.lines import LineParser, _LineSplitter, parse_step_line
from pytest_exprun.trainer.runner import RunResult, RunSpec, run_trainer


def split(data: bytes) -> list[str]:
    """Lines as a pipe delivers them: in 64 KiB reads."""
    splitter = _LineSplitter()
    lines = []
    for at in range(0, len(data), 1 << 16):
        lines += splitter.feed(data[at:at + (1 << 16)])
    return lines + splitter.flush()


def outcome(evals: Evaluations) -> float | Failure:
    problem = evals.problem()
    if problem is not None:
        return problem
    assert evals.val_loss is not None
    return evals.val_loss


EARLIER = b"Step 40 | val_loss: 2.1000\n"

#: (output after an evaluation at step 40, what the run records): the default parser.
DEFAULT_PARSER = {
    "scientific notation": (b"Step 50 | val_loss: 2.0000e+00\n", 2.0),
    "capital E, negative exponent": (b"Step 50 | val_loss: 1.2300E-01\n", 0.123),
    "a negative loss": (b"Step 50 | val_loss: -0.5\n", -0.5),
    "JSON line, step first": (b'{"step": 50, "val_loss": 2.0}\n', 2.0),
    "JSON line, val_loss first": (b'{"val_loss": 2.0, "step": 50}\n', 2.0),
    "printed dict with global_step": (b"{'val_loss': 2.0, 'global_step': 50, 'epoch': 3.0}\n", 2.0),
    "printed dict with quoted values (transformers 5)": (b"{'val_loss': '2.0', 'global_step': '50'}\n", 2.0),
    "val_loss_ema before the val_loss": (b"Step 50 | val_loss_ema: 1.9 | val_loss: 2.0\n", 2.0),
    "key=value pairs, space separated": (b"2026-12-05 10:00:00 step=50 lr=3e-4 val_loss=2.0\n", 2.0),
    "step in brackets": (b"Step [50/50] | val_loss: 2.0\n", 2.0),
    "a rank-0 prefix": (b"[rank0]: Step 50 | val_loss: 2.0\n", 2.0),
    "every rank prints, rank 1 last": (b"[rank0]: Step 50 | val_loss: 2.0\n[rank1]: Step 50 | val_loss: 2.3\n", 2.0),
    "torchrun --tee, default1 last": (b"[default0]:Step 50 | val_loss: 2.0\n[default1]:Step 50 | val_loss: 2.3\n",
                                      2.0),
    "Lightning's rank prefix, rank 1 last": (b"[rank: 0] Step 50 | val_loss: 2.0\n[rank: 1] Step 50 | val_loss: 2.3\n",
                                             2.0),
    "mpirun --tag-output, rank 1 last": (b"[1,0]<stdout>:Step 50 | val_loss: 2.0\n[1,1]<stdout>:Step 50 | val_loss: 2.3\n",
                                         2.0),
    "an epoch in brackets is no rank": (b"[Epoch 3]: Step 50 | val_loss: 2.0\n", 2.0),
    "every rank prints, no prefix, values differ": (b"Step 50 | val_loss: 2.0\nStep 50 | val_loss: 2.3\n",
                                                    Failure.CONFLICTING),
    "the final value printed again, rounded": (b"Step 50 | val_loss: 1.98765\nStep 50 | val_loss: 1.9877\n",
                                               1.9877),
    "an underscore float() would read as 20": (b"Step 50 | val_loss: 2_0\n", Failure.UNPARSED),
    "a decimal comma": (b"Step 50 | val_loss: 2,05\n", Failure.UNPARSED),
    "a percentage": (b"Step 50 | val_loss: 2.0%\n", Failure.UNPARSED),
    "nan": (b"Step 50 | val_loss: nan\n", Failure.NON_FINITE),
    "overflowing to inf": (b"Step 50 | val_loss: 1e400\n", Failure.NON_FINITE),
    "colour inside the key": (b"Step 50 | val_\x1b[1mloss\x1b[0m: 2.0\n", 2.0),
    "colour inside the number": (b"Step 50 | val_loss: 2.\x1b[31m00\x1b[0m\n", 2.0),
    "colour inside the step": (b"Step 5\x1b[1m0\x1b[0m | val_loss: 2.0\n", 2.0),
    "OSC 8 hyperlink ended by BEL": (b"\x1b]8;id=1;http://x\x07Step 50\x1b]8;;\x07 | val_loss: 2.0\n", 2.0),
    "two evaluations on one redrawn line": (b"Step 45 | val_loss: 2.1 \x1b[1A\x1b[2KStep 50 | val_loss: 2.0\n",
                                            2.0),
    "evaluation behind 1 MB of bar without a line end": (b"#" * (1 << 20) + b" Step 50 | val_loss: 2.0", 2.0),
    "evaluation in the middle of a 1 MB line": (b"#" * (1 << 19) + b" Step 50 | val_loss: 2.0 " + b"#" * (1 << 19)
                                                + b"\n", 2.0),
    "non-UTF-8 bytes around it": (b"\xff\xfe Step 50 | val_loss: 2.0 \xe9\n", 2.0),
    "Windows line ends, doubled": (b"Step 50 | val_loss: 2.0\r\r\n", 2.0),
    "a later evaluation whose step is a float": (b"Step 50.0 | val_loss: 2.0\n", Failure.UNPARSED),
    "a later evaluation glued to a word": (b"trainingStep 50 | val_loss: 2.0\n", Failure.UNPARSED),
    "a summary of the final value, rounded": (b"Step 50 | val_loss: 1.9987\ndone: val_loss 2.00 | 12.1s\n", 1.9987),
    "a bar postfix repeating the final value": (b"Step 50 | val_loss: 1.9987\n100%|##| 50/50 [00:10, val_loss=2]\n",
                                                1.9987),
    "progress as it 100/1000": (b"Step 50 | val_loss: 2.0\nit 100/1000 loss=2.1\n", Failure.NOT_FINAL),
    "progress as Step [100/1000]": (b"Step 50 | val_loss: 2.0\nStep [100/1000] loss=2.1\n", Failure.NOT_FINAL),
    "progress as Iter [100/1000]": (b"Step 50 | val_loss: 2.0\nIter [100/1000] loss=2.1\n", Failure.NOT_FINAL),
    "progress as a JSON step": (b'Step 50 | val_loss: 2.0\n{"step": 100, "loss": 2.1}\n', Failure.NOT_FINAL),
}


@pytest.mark.parametrize("variant", list(DEFAULT_PARSER))
def test_the_default_parser_records_the_final_evaluation_or_fails(variant: str) -> None:
    output, expected = DEFAULT_PARSER[variant]
    assert outcome(parse_lines(split(EARLIER + output))) == expected


#: (pattern, output, what the run records): patterns without a ``step`` group.
UNSTEPPED = {
    "Hugging Face printed dicts": (
        r"'eval_loss': (?P<value>[^,}]+)",
        b"{'loss': 2.4, 'epoch': 1.0}\n{'eval_loss': 2.3, 'epoch': 1.0}\n{'loss': 2.1, 'epoch': 2.96}\n"
        b"{'eval_loss': 2.0, 'eval_runtime': 0.1, 'epoch': 3.0}\n{'train_runtime': 9.0, 'epoch': 3.0}\n", 2.0),
    "Hugging Face, last evaluation at epoch 1 of 3": (
        r"'eval_loss': (?P<value>[^,}]+)",
        b"{'eval_loss': 2.3, 'epoch': 1.0}\n{'loss': 2.1, 'epoch': 2.0}\n{'loss': 2.0, 'epoch': 3.0}\n",
        Failure.NOT_FINAL),
    "transformers 5 quotes its values": (
        r"'eval_loss': '?(?P<value>[^,'}]+)",
        b"{'loss': '2.4', 'epoch': '1.0'}\n{'eval_loss': '2.3', 'epoch': '1.0'}\n{'loss': '2.1', 'epoch': '3.0'}\n"
        b"{'eval_loss': '2.0', 'eval_runtime': '0.1', 'epoch': '3.0'}\nfinal eval_loss 2.0 at step 12\n", 2.0),
    "transformers 5, last evaluation at epoch 1 of 3": (
        r"'eval_loss': '?(?P<value>[^,'}]+)",
        b"{'eval_loss': '2.3', 'epoch': '1.0'}\n{'loss': '2.1', 'epoch': '2.0'}\n{'loss': '2.0', 'epoch': '3.0'}\n",
        Failure.NOT_FINAL),
    "Lightning's bar postfix": (
        r"val_loss=(?P<value>[^,\]\s]+)",
        b"Epoch 0: 100%|###| 10/10 [00:01<00:00, v_num=0, val_loss=2.30, train_loss=2.4]\r"
        b"Epoch 1:  50%|#  | 5/10 [00:01<00:00, v_num=0, val_loss=2.30, train_loss=2.2]\r"
        b"Epoch 1: 100%|###| 10/10 [00:02<00:00, v_num=0, val_loss=2.00, train_loss=2.1]\n", 2.0),
    "Keras": (
        r"- val_loss: (?P<value>\S+)",
        b"Epoch 1/2\n10/10 [====] - 1s 5ms/step - loss: 2.4 - val_loss: 2.3000\n"
        b"Epoch 2/2\n10/10 [====] - 0s 5ms/step - loss: 2.1 - val_loss: 2.0000\n", 2.0),
    "an evaluation followed by more steps": (
        r"eval: (?P<value>\S+)", b"Step 100 | loss 2.2\neval: 2.1\nStep 200 | loss 2.0\n", Failure.NOT_FINAL),
    "an evaluation after the last step": (
        r"eval: (?P<value>\S+)", b"Step 100 | loss 2.2\neval: 2.1\nStep 200 | loss 2.0\neval: 2.0\n", 2.0),
}


@pytest.mark.parametrize("variant", list(UNSTEPPED))
def test_a_pattern_without_a_step_reads_evaluations_that_print_none(variant: str) -> None:
    pattern, output, expected = UNSTEPPED[variant]
    evals = parse_lines(split(output), line_parser(pattern))
    assert outcome(evals) == expected
    if expected is Failure.NOT_FINAL:
        assert "but training went on to" in evals.detail()


def test_a_run_whose_evaluation_stops_at_an_early_epoch_says_so_in_one_line(tmp_path: Path) -> None:
    result = run(tmp_path, """
        for epoch in (1, 2, 3):
            print({'loss': 2.5 - epoch / 10, 'epoch': float(epoch)})
            if epoch == 1:
                print({'eval_loss': 2.3, 'epoch': 1.0})
    """, line_parser(r"'eval_loss': (?P<value>[^,}]+)"))
    assert result.failure is Failure.NOT_FINAL
    assert result.describe_failure().splitlines()[0].startswith(
        "baseline[seed42]: trainer did not evaluate at its final step (its last val_loss was printed at epoch 1, "
        "but training went on to epoch 3; exprun records the final evaluation")


def test_ranks_that_disagree_fail_the_run_naming_both_values(tmp_path: Path) -> None:
    result = run(tmp_path, """
        import subprocess, sys
        code = "import sys; print(f'Step 50 | val_loss: {2.0 + int(sys.argv[1]) / 10:.4f}', flush=True)"
        for rank in (0, 1):
            subprocess.run([sys.executable, "-c", code, str(rank)], check=True)
    """)
    assert result.failure is Failure.CONFLICTING and result.val_loss is not None
    assert "(2.0 and 2.1 at step 50: each process of a distributed run printing its own?" in \
        result.describe_failure().splitlines()[0]


@pytest.mark.parametrize(("first", "other", "same"), [
    (2.0, 2.0, True), (1.98765, 1.9877, True), (1.9877, 1.98765, True), (2.0, 2.03, False),
    (2.5, 2.54, False), (1.9876, 1.9877, False), (float("nan"), float("nan"), True), (float("nan"), 2.0, False)])
def test_two_values_at_one_step_agree_only_when_one_is_the_other_rounded(first: float, other: float,
                                                                         same: bool) -> None:
    assert same_value(first, other) is same


def test_an_overlong_line_keeps_its_head_its_tail_and_every_late_mention_between() -> None:
    (line,) = split(b"head " + b"#" * 300_000 + b" Step 50 | val_loss: 2.0 " + b"#" * 300_000 + b" tail\n")
    assert line.startswith("head ") and line.endswith(" tail [line truncated]")
    assert "Step 50 | val_loss: 2.0" in line and len(line) < 10_000


# ------------------------------------------------------------ real processes, two streams
def run(tmp_path: Path, body: str, parse_line: LineParser = parse_step_line) -> RunResult:
    trainer = tmp_path / "trainer.py"
    trainer.write_text(textwrap.dedent(body))
    spec = RunSpec(label="baseline[seed42]", group="baseline", seed=42, argv=(sys.executable, str(trainer)),
                   output_dir=tmp_path / "out", log_path=tmp_path / "seed42.log", cwd=tmp_path, timeout=60)
    return run_trainer(spec, parse_line=parse_line)


def test_the_last_evaluation_by_step_wins_whichever_stream_printed_it_first(tmp_path: Path) -> None:
    result = run(tmp_path, """
        import sys, time
        print("Step 50 | val_loss: 2.0000", flush=True)
        time.sleep(0.2)
        sys.stderr.write("Step 40 | val_loss: 2.1000\\n")
    """)
    assert result.ok and (result.eval_step, result.val_loss) == (50, 2.0)


@pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="needs rich: pip install -e '.[hf]'")
def test_a_rich_live_progress_redrawn_around_the_evaluations_hides_none(tmp_path: Path) -> None:
    result = run(tmp_path, """
        from rich.console import Console
        from rich.progress import Progress
        console = Console(force_terminal=True, color_system="truecolor", width=120)
        with Progress(console=console, refresh_per_second=1000) as bar:
            task = bar.add_task("train", total=50)
            for step in range(1, 51):
                bar.update(task, advance=1, description=f"step {step}")
                if step % 10 == 0:
                    bar.console.print(f"[green]Step {step}[/] | val_loss: [bold]{3 - step / 50:.4f}[/]")
    """)
    assert result.ok, result.describe_failure()
    assert (result.eval_step, result.val_loss) == (50, 2.0)


def test_a_trainer_printing_its_stepless_evaluations_is_judged_through_the_plugin(project: Project) -> None:
    (project.path / "train.py").write_text(textwrap.dedent("""
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--seed", type=int); parser.add_argument("--train_tokens"); parser.add_argument("--output_dir")
        args = parser.parse_args()
        for epoch in (1, 2, 3):
            print({"loss": 2.5 - epoch / 10, "epoch": float(epoch)}, flush=True)
            print({"eval_loss": round(2.3 - epoch / 10 + args.seed % 5 / 1000, 4), "epoch": float(epoch)}, flush=True)
    """))
    project.pytester.makeini("[pytest]\nexprun_command = python train.py\n"
                             "exprun_line_pattern = 'eval_loss': (?P<eval_loss>[^,}]+)\n")
    result = project.run("-m", "baseline", "-k", "seed42 or seed137")
    result.assert_outcomes(passed=2)
    stored = sorted(json.loads(p.read_text())["val_loss"]
                    for p in (project.path / "docs/research/.exprun/runs").glob("*/baseline/*/seed*.json"))
    assert stored == [2.002, 2.002]


# ------------------------------------------------------------------ files read at run time
def traced(root: Path, body: str, env: dict[str, str] | None = None) -> provenance.Provenance:
    """What a trainer in ``root`` read, as the run-time tracer records it."""
    (root / "train.py").write_text(textwrap.dedent(body))
    trace = root / "run.trace"
    trace.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base.update(env or {})
    base.update(provenance.environment(trace, root, (root / "out",), base))
    base["PYTHONPATH"] += os.pathsep + str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "train.py"], cwd=root, env=base, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found = provenance.read_trace(trace, root)
    assert found is not None
    return found


#: (files, trainer body, what to change afterwards, whether the change must refuse the baseline).
RUN_TIME_INPUTS = {
    "a folder walked with os.walk, a shard added": (
        {"data/a/0.bin": "0"}, "import os\nfor top, _, names in os.walk('data'):\n    for n in names: "
        "open(os.path.join(top, n), 'rb').read()\n", "data/a/1.bin", True),
    "a folder globbed with pathlib, a shard added": (
        {"data/0.bin": "0"}, "import pathlib\n[p.read_bytes() for p in pathlib.Path('data').glob('*.bin')]\n",
        "data/1.bin", True),
    "a folder globbed, a hidden entry added by a tool": (
        {"data/0.bin": "0"}, "import glob\n[open(p, 'rb').read() for p in glob.glob('data/*.bin')]\n",
        "data/.cache", False),
    "the project root listed by the trainer, a file added": (
        {"0.bin": "0"}, "import os\nprint(sorted(os.listdir('.')))\n", "notes.md", True),
    "the project root scanned by importlib.metadata, a file added": (
        {}, "import importlib.metadata\nimportlib.metadata.version('pytest')\nimportlib.metadata.entry_points()\n",
        "notes.md", False),
    "the project root scanned by the import system, a file added": (
        {}, "try:\n    import not_a_module_anywhere\nexcept ImportError:\n    pass\n", "notes.md", False),
    "git metadata read to log the commit, a commit made": (
        {".git/HEAD": "ref: refs/heads/main\n", ".git/refs/heads/main": "a" * 40}, "open('.git/HEAD').read()\n"
        "open('.git/refs/heads/main').read()\n", ".git/refs/heads/main", False),
    "a config named by an environment variable, edited": (
        {"conf/run.yaml": "lr: 1\n"}, "import os\nopen(os.environ['RUN_CONFIG']).read()\n", "conf/run.yaml", True),
}


@pytest.mark.parametrize("variant", list(RUN_TIME_INPUTS))
def test_what_a_trainer_reads_at_run_time_is_its_setup_and_nothing_else_is(tmp_path: Path, variant: str) -> None:
    files, body, change, refused = RUN_TIME_INPUTS[variant]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = traced(tmp_path, body, {"RUN_CONFIG": "conf/run.yaml"})
    assert provenance.changes(found, tmp_path) == []
    (tmp_path / change).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / change).write_text((tmp_path / change).read_text() + " changed" if (tmp_path / change).exists()
                                   else "new")
    assert bool(provenance.changes(found, tmp_path)) is refused, provenance.changes(found, tmp_path)


def test_a_downloaded_model_in_the_hub_cache_is_part_of_the_setup(tmp_path: Path) -> None:
    hub = tmp_path / "home" / ".cache" / "huggingface" / "hub" / "models--tiny" / "snapshots" / "abc"
    hub.mkdir(parents=True)
    (hub / "config.json").write_text('{"n_layer": 2}')
    (tmp_path / "proj").mkdir()
    found = traced(tmp_path / "proj", f"open({str(hub / 'config.json')!r}).read()\n",
                   {"HOME": str(tmp_path / "home"), "HF_HOME": "", "XDG_CACHE_HOME": ""})
    assert [f.name for f in found.files if f.name != "train.py"] == [str(hub / "config.json")]
    (hub / "config.json").write_text('{"n_layer": 4}')
    assert provenance.changes(found, tmp_path / "proj")[0].startswith(f"{hub / 'config.json'} (read by the trainer")


@pytest.mark.skipif(importlib.util.find_spec("safetensors") is None or importlib.util.find_spec("numpy") is None,
                    reason="needs safetensors and numpy: pip install -e '.[hf]'")
def test_weights_a_c_extension_maps_without_an_audit_event_are_traced_at_exit(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", "import numpy as np; from safetensors.numpy import save_file; "
                    "save_file({'w': np.ones(4, dtype='float32')}, 'w.safetensors')"], cwd=tmp_path, check=True)
    found = traced(tmp_path, "from safetensors import safe_open\nhandle = safe_open('w.safetensors', 'np')\n"
                             "handle.get_tensor('w')\n")
    assert "w.safetensors" in [f.name for f in found.files]


def test_a_file_only_a_non_python_tool_reads_is_named_by_an_absolute_include(tmp_path: Path) -> None:
    outside = tmp_path / "corpus" / "shard.txt"
    outside.parent.mkdir()
    outside.write_text("data")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "train.py").write_text("import subprocess\nsubprocess.run(['cat', 'shard.txt'])\n")
    before = setup_files(["python", "train.py"], [], tmp_path / "proj", include=[str(tmp_path / "corpus" / "*.txt")])
    assert str(outside) in dict(before.files)
    outside.write_text("other data")
    after = setup_files(["python", "train.py"], [], tmp_path / "proj", include=[str(tmp_path / "corpus" / "*.txt")])
    assert after.differences(before) == [f"{outside} changed (sha256 {dict(before.files)[str(outside)][:12]} → "
                                         f"{dict(after.files)[str(outside)][:12]})"]


# ------------------------------------------------------------------ whole sessions
SESSION_TRAINER = """
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int); parser.add_argument("--train_tokens"); parser.add_argument("--output_dir")
parser.add_argument("--better", action="store_true")
args = parser.parse_args()
{body}
"""


def session_trainer(project: Project, body: str, ini: str = "") -> None:
    (project.path / "train.py").write_text(SESSION_TRAINER.format(body=textwrap.dedent(body)))
    project.pytester.makeini(f"[pytest]\nexprun_command = python train.py\n{ini}")


def test_a_data_file_edited_between_the_baselines_runs_and_the_experiments_is_never_mixed(project: Project) -> None:
    (project.path / "data").mkdir()
    (project.path / "data" / "level.txt").write_text("0.0")
    # A shell started by the experiment's first run stands for a user editing the data while the session runs.
    session_trainer(project, """
        import subprocess
        if args.better and args.seed == 42:
            subprocess.run(["sh", "-c", "echo 0.2 > data/level.txt"], check=True)
        level = float(open(os.path.join("data", "level.txt")).read())
        loss = 2.0 + level + args.seed % 5 / 1000 - (0.1 if args.better else 0.0)
        print(f"Step 20 | val_loss: {loss:.4f}")
    """)
    result = project.run("--experiment=better")
    assert result.ret != 0
    for seed in (42, 137, 256):
        result.stdout.fnmatch_lines([f"*better[[]seed{seed}[]]: it read data/level.txt (sha256 * → *) in another "
                                     "version than the baseline's runs*--exprun-rerun-baseline*"])
    result.stdout.no_fnmatch_line("*better: WINNER*")
    result.stdout.no_fnmatch_line("*better: LOSER*")


@pytest.mark.parametrize(("body", "message"), [
    ("print('Step 20 | train_loss: 2.0')", "*trainer printed no val_loss (expected lines like 'Step 240 | val_loss*"),
    ("print('Step 20 | val_loss: 2.0'); sys.exit(3)", "*trainer exited with a non-zero code (3)*"),
    ("import signal; print('Step 20 | val_loss: 2.0', flush=True); os.kill(os.getpid(), signal.SIGKILL)",
     "*trainer was killed by a signal (SIGKILL)*"),
], ids=["exit-0-without-evaluation", "non-zero-exit-after-a-valid-evaluation", "killed-by-a-signal"])
def test_a_run_that_ends_badly_fails_in_one_line_and_records_nothing(project: Project, body: str,
                                                                     message: str) -> None:
    session_trainer(project, body)
    result = project.run("-m", "baseline", "-k", "seed42")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert not list((project.path / "docs/research/.exprun/runs").glob("*/baseline/*/seed42.json"))


def test_a_trainer_that_writes_its_final_evaluation_only_to_a_file_is_read_from_it(project: Project) -> None:
    session_trainer(project, """
        os.makedirs(args.output_dir, exist_ok=True)
        for step in (10, 20):
            print(f"Step {step} | train_loss: {2.5 - step / 100}", flush=True)
        with open(os.path.join(args.output_dir, "final.json"), "w") as f:
            json.dump({"metrics": {"val": {"loss": 1.95}}, "global_step": 20}, f)
    """, "exprun_result = final.json:metrics.val.loss\n")
    result = project.run("-m", "baseline", "-k", "seed42")
    result.assert_outcomes(passed=1)
    (stored,) = (project.path / "docs/research/.exprun/runs").glob("*/baseline/*/seed42.json")
    assert json.loads(stored.read_text())["val_loss"] == 1.95


@pytest.mark.skipif(importlib.util.find_spec("huggingface_hub") is None,
                    reason="needs huggingface_hub: pip install -e '.[hf]'")
def test_a_new_revision_of_a_cached_hub_model_refuses_the_baseline(tmp_path: Path) -> None:
    model = tmp_path / "hf" / "hub" / "models--org--tiny"
    for commit, layers in (("1" * 40, 2), ("2" * 40, 4)):
        (model / "snapshots" / commit).mkdir(parents=True)
        (model / "snapshots" / commit / "config.json").write_text(json.dumps({"n_layer": layers}))
    (model / "refs").mkdir()
    (model / "refs" / "main").write_text("1" * 40)
    (tmp_path / "proj").mkdir()
    found = traced(tmp_path / "proj", "from huggingface_hub import hf_hub_download\n"
                                      "open(hf_hub_download('org/tiny', 'config.json')).read()\n",
                   {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert provenance.changes(found, tmp_path / "proj") == []
    (model / "refs" / "main").write_text("2" * 40)
    assert provenance.changes(found, tmp_path / "proj")[0].startswith(f"{model / 'refs' / 'main'} (read by the trainer")
