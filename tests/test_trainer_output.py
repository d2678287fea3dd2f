"""Real trainers' output: colour codes, logging prefixes, progress bars on the other stream,
grouped step numbers, lines that do not parse and result files from an early evaluation.

Whatever the output looks like, the value recorded is the final evaluation, or the run fails
in one line that says why; an earlier value is never recorded silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import BASELINE_LOSSES, Project
from pytest_exprun.trainer import result_file
from pytest_exprun.trainer.interface import (
    TrainerIO,
    expected_lines,
    line_parser,
)
from pytest_exprun.trainer.result_file import ResultSource, with_result_file
from pytest_exprun.trainer.lines import (
    LineParser,
    _LineSplitter,
    log_lines,
    mentions_metric,
    parse_step_line,
    progress_step,
)
from pytest_exprun.trainer.runner import (
    Failure,
    RunResult,
    RunSpec,
    parse_lines,
    run_trainer,
)

NEEDS_BAR_LIBRARIES = pytest.mark.skipif(
    importlib.util.find_spec("tqdm") is None or importlib.util.find_spec("rich") is None,
    reason="needs tqdm and rich, which the hf extra brings: pip install -e '.[hf]'")
RECORDS = Path("docs/research/.exprun/runs/1M")
REPO = Path(__file__).resolve().parents[1]


def run_script(tmp_path: Path, body: str, parse_line: LineParser = parse_step_line) -> RunResult:
    trainer = tmp_path / "trainer.py"
    trainer.write_text(textwrap.dedent(body))
    spec = RunSpec(label="baseline[seed42]", group="baseline", seed=42, argv=(sys.executable, str(trainer)),
                   output_dir=tmp_path / "out", log_path=tmp_path / "seed42.log", cwd=tmp_path)
    return run_trainer(spec, parse_line=parse_line)


def split(data: bytes) -> list[str]:
    splitter = _LineSplitter()
    return splitter.feed(data) + splitter.flush()


# ------------------------------------------------------------ what a line says
@pytest.mark.parametrize(
    "raw",
    [
        b"\x1b[1;32mStep 50\x1b[0m | val_loss: \x1b[38;5;208m2.0000\x1b[0m",  # colours, 256-colour
        b"\x1b[2K\x1b[1GStep 50 | val_loss: 2.0000",  # tqdm's erase line, cursor to column 1
        b"\x1b[?25l\x1b[1A\x1b[2KStep 50 | val_loss: 2.0000\x1b[?25h",  # hide cursor, move up (rich)
        b"\x1b]0;training\x07Step 50 | val_loss: 2.0000",  # window title, ended by BEL
        b"\x1b]8;;file:///run/log\x1b\\Step 50\x1b]8;;\x1b\\ | val_loss: 2.0000",  # hyperlink, ended by ST
        b"\x1b[38;2;255;0;0mStep\x1b[39m \x1b[1m50\x1b[22m | val_loss:\x1b[K 2.0000\x1b(B",  # truecolour, charset
    ],
)
def test_terminal_escape_sequences_are_removed_before_a_line_is_parsed(raw: bytes) -> None:
    (line,) = split(raw + b"\n")
    assert line == "Step 50 | val_loss: 2.0000"
    assert parse_step_line(line) == (50, 2.0)


@pytest.mark.parametrize(
    "line",
    [
        "2026-12-04 10:00:00,123 INFO trainer: Step 50 | val_loss: 2.0000 | train_loss: 2.1",
        "[2026-12-04 10:00:00,123][trainer][INFO] - Step 50 | val_loss: 2.0000",
        "INFO:__main__:step 50 | val_loss=2.0000",
        "Epoch 3/3 ━━━━━━━━━━━━━━━━━━━━ Step 50 | val_loss: 2.0000 | 0:00:01",
        "train 100%|##########| 50/50 [00:10<00:00] Step 50 | val_loss: 2.0000",
        "Step 50/50 | train_loss: 2.1000 | val_loss: 2.0000 | lr: 3e-4",
        "step: 50, tok/s: 16,512, val_loss=2.0000",
    ],
)
def test_an_evaluation_line_is_found_wherever_it_stands_in_the_line(line: str) -> None:
    assert parse_step_line(line) == (50, 2.0)


@pytest.mark.parametrize(
    ("printed", "step"),
    [("1,000", 1000), ("1_000", 1000), ("1 000", 1000), ("12,345,678", 12_345_678), ("1\u202f000", 1000),
     ("999", 999)],
)
def test_step_numbers_may_group_their_digits(printed: str, step: int) -> None:
    assert parse_step_line(f"Step {printed} | val_loss: 2.0000") == (step, 2.0)
    assert progress_step(f"Step {printed} | train_loss: 2.1") == step
    assert line_parser(r"it (?P<step>[\d,_\s]+): loss (?P<value>\S+)")(f"it {printed}: loss 2.0") == (step, 2.0)


@pytest.mark.parametrize(
    ("line", "step"),
    [
        (" 80%|########  | 40/50 [00:08<00:02, 4.9it/s, step=40, loss=2.31]", 40),  # tqdm's postfix
        ("2026-12-04 10:00:00,123 INFO trainer: Step 1,000 | train_loss: 2.1", 1000),
        ("{'loss': 2.31, 'grad_norm': 0.52, 'global_step': 40}", 40),
        ("iter 40: loss 2.3100, time 12.01ms, mfu 3.2%", 40),
        ("Step 5 100%", 5),  # a percentage after it is not a digit group
        ("train tokens: 1,000,000 (50 steps x 8 x 64)", None),  # a count of steps is not a step
        ("warmup_steps: 100 | max_step_size 2", None),
    ],
)
def test_a_progress_line_gives_its_step_wherever_it_stands(line: str, step: int | None) -> None:
    assert progress_step(line) == step


@pytest.mark.parametrize("line", ["Step 50 | val_loss_ema: 2.1", "Step 50 | eval_loss: 2.1", "Step 50 | val_loss: 2,1",
                                  "step 50 val_loss 2.1", "Step 50 | val_loss: n/a"])
def test_a_line_that_only_resembles_an_evaluation_is_not_read_as_one(line: str) -> None:
    assert parse_step_line(line) is None


def test_a_dot_is_never_read_as_a_thousands_separator() -> None:
    assert parse_step_line("Step 1.000 | val_loss: 2.0") is None
    assert mentions_metric("Step 1.000 | val_loss: 2.0")


def test_a_custom_pattern_is_searched_anywhere_and_its_anchor_means_the_line_start() -> None:
    anywhere = line_parser(r"step (?P<step>\d+): val (?P<value>\S+)")
    anchored = line_parser(r"^step (?P<step>\d+): val (?P<value>\S+)")
    line = "12:00:01 INFO step 50: val 2.0"
    assert anywhere(line) == (50, 2.0) and anchored(line) is None
    (plain,) = split(b"\x1b[32mstep 50: val 2.0\x1b[0m\n")
    assert anchored(plain) == (50, 2.0)


# ----------------------------------------------------- which value is recorded
def test_a_later_val_loss_that_does_not_parse_fails_the_run_quoting_it() -> None:
    evals = parse_lines(["Step 40 | val_loss: 2.1000", "Step 50 | val_loss: 2,0000"])
    assert evals.problem() is Failure.UNPARSED
    assert "at step 50 it printed 'Step 50 | val_loss: 2,0000', which names a val_loss but did not parse, " \
           "so the last val_loss read would be the one at step 40" in evals.detail()


def test_an_unparsed_val_loss_without_a_step_counts_at_the_last_step_reported() -> None:
    evals = parse_lines(["Step 40 | val_loss: 2.1000", "Step 50 | train_loss: 2.0", "final val loss = 2.0000"])
    assert evals.problem() is Failure.UNPARSED


@pytest.mark.parametrize("line", ["Validation loss (step 1,000): 1.9000", "val loss at step 1000: 1,9",
                                  "[eval] step=1000 val/loss=1.90", "{'eval_loss': 1.9, 'step': 1000}"])
def test_an_unread_val_loss_in_any_wording_at_a_later_step_fails_the_run(line: str) -> None:
    evals = parse_lines(["Step 900 | val_loss: 2.0000", line])
    assert evals.problem() is Failure.UNPARSED and line in evals.detail()


def test_a_summary_of_the_final_evaluation_does_not_fail_the_run() -> None:
    evals = parse_lines(["Step 50 | val_loss: 2.0000", "done: val_loss 2.0000 | 12.1s | wrote out/metrics.json",
                         "step 0: train loss 5.5, val loss 5.5"])
    assert evals.problem() is None and evals.val_loss == 2.0


def test_decorated_progress_lines_still_show_that_the_last_evaluation_was_early() -> None:
    evals = parse_lines(split(
        b"\x1b[32mStep 30\x1b[0m | val_loss: 2.3\n"
        b"2026-12-04 10:00:00,123 INFO trainer: Step 40 | train_loss: 2.2\n"
        b" 98%|#########8| 49/50 [00:10<00:00, step=5,000, loss=2.1]\r"
    ))
    assert evals.problem() is Failure.NOT_FINAL and evals.final_step == 5000


# ------------------------------------------------------ real trainers, real libraries
@NEEDS_BAR_LIBRARIES
def test_a_real_tqdm_bar_left_open_on_stderr_does_not_hide_the_final_evaluation(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        import sys
        from tqdm import tqdm
        bar = tqdm(range(1, 51), file=sys.stderr, mininterval=0, ascii=True)
        for step in bar:
            if step % 10 == 0:
                print(f"Step {step} | val_loss: {3 - step / 50:.4f}", flush=True)
        # the bar is never closed: its last redraw ends without a newline
    """)
    assert result.ok, result.describe_failure()
    assert (result.eval_step, result.val_loss) == (50, 2.0)
    assert [step for step, _ in result.curve] == [10, 20, 30, 40, 50]


def test_the_log_read_again_gives_the_lines_the_two_streams_gave(tmp_path: Path) -> None:
    anchored = line_parser(r"^Step (?P<step>\d+) \| val_loss: (?P<value>\S+)")
    result = run_script(tmp_path, """
        import sys
        for step in (10, 20, 30, 40, 50):
            sys.stderr.write(f"\\r{step * 2}%|{'#' * (step // 5)}")  # left open each time
            sys.stderr.flush()
            print(f"Step {step} | val_loss: {3 - step / 50:.4f}", flush=True)
    """, anchored)
    assert result.ok and result.val_loss == 2.0
    again = parse_lines(log_lines(tmp_path / "seed42.log"), anchored)
    assert (again.eval_step, again.val_loss, again.curve) == (50, 2.0, result.curve)


@NEEDS_BAR_LIBRARIES
def test_the_rich_console_and_its_colours_do_not_hide_the_final_evaluation(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        from rich.console import Console
        console = Console(force_terminal=True, color_system="truecolor", width=200)
        for step in (10, 20, 30, 40, 50):
            console.print(f"[bold green]Step {step:,}[/] | val_loss: [yellow]{3 - step / 50:.4f}[/] | [link=https://example.org]run[/link]")
    """)
    assert result.ok, result.describe_failure()
    assert (result.eval_step, result.val_loss) == (50, 2.0)


def test_pythons_logging_as_trainers_configure_it_does_not_hide_the_final_evaluation(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        import logging, sys
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
        hydra = logging.StreamHandler(sys.stdout)
        hydra.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        log = logging.getLogger("trainer")
        for step in range(1, 51):
            sys.stderr.write(f"\\r{step * 2}%|{'#' * (step // 5)}")  # a hand-made bar, never ended
            sys.stderr.flush()
            if step % 10 == 0:
                (log if step < 50 else logging.getLogger("hydra")).info(f"Step {step} | val_loss: {3 - step / 50:.4f}")
            if step == 40:
                logging.getLogger("hydra").addHandler(hydra)
                logging.getLogger("hydra").propagate = False
    """)
    assert result.ok, result.describe_failure()
    assert (result.eval_step, result.val_loss) == (50, 2.0)


@NEEDS_BAR_LIBRARIES
def test_an_early_last_evaluation_fails_however_the_progress_lines_are_decorated(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        import logging
        from rich.console import Console
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
        console = Console(force_terminal=True, color_system="256")
        for step in range(100, 1001, 100):
            if step <= 600:
                logging.getLogger("trainer").info(f"Step {step:,} | val_loss: {3 - step / 1000:.4f}")
            console.print(f"[blue]Step {step:,}[/] | train_loss: {3 - step / 1000:.4f}")
    """)
    assert result.failure is Failure.NOT_FINAL
    assert "its last val_loss is at step 600, but it reported step 1000" in result.describe_failure()


def test_an_unreadable_final_evaluation_fails_the_run_in_one_line_quoting_it(tmp_path: Path) -> None:
    result = run_script(tmp_path, """
        for step in (10, 20, 30, 40):
            print(f"Step {step} | val_loss: {3 - step / 50:.4f}")
        print("Step 50 | val_loss: 2,0000 | train_loss: 2,1000")
    """)
    assert result.failure is Failure.UNPARSED
    first = result.describe_failure().splitlines()[0]
    assert first.startswith("baseline[seed42]: trainer printed a val_loss exprun could not read (at step 50 it "
                            "printed 'Step 50 | val_loss: 2,0000 | train_loss: 2,1000'")
    assert "the last val_loss read would be the one at step 40" in first


def test_a_custom_pattern_that_never_matches_is_quoted_in_the_message(tmp_path: Path) -> None:
    io = TrainerIO.load(lambda name: {"exprun_argv": "", "exprun_tokens_per_step": "", "exprun_flag_style": "space",
                                      "exprun_line_pattern": r"^eval (?P<step>\d+) (?P<value>\S+)",
                                      "exprun_result": ""}[name], 1000)
    result = run_script(tmp_path, "print('evaluation at 50: 2.0')\n")
    assert result.failure is Failure.NO_VAL_LOSS
    first = result.describe_failure(expected_lines(io)).splitlines()[0]
    assert r"(expected lines matching exprun_line_pattern '^eval (?P<step>\\d+) (?P<value>\\S+)')" in first
    assert "Step 240" not in first


# ------------------------------------------------------------------ result files
def result_run(tmp_path: Path, body: str, source: str = "eval_results.json:eval_loss") -> RunResult:
    return with_result_file(run_script(tmp_path, body), ResultSource.parse(source))


WRITE = "import json, os\nos.makedirs('out', exist_ok=True)\ndef write(name, data):\n" \
        "    with open(os.path.join('out', name), 'w') as f: json.dump(data, f)\n"


@pytest.mark.parametrize("key", ["global_step", "step", "iter"])
def test_a_result_file_from_an_early_step_fails_the_run(tmp_path: Path, key: str) -> None:
    result = result_run(tmp_path, WRITE + f"""
for step in range(10, 51, 10):
    print(f"Step {{step:,}} | train_loss: 2.1", flush=True)
    if step == 10:
        write("eval_results.json", {{"eval_loss": 2.4, "{key}": 10}})
""")
    assert result.failure is Failure.STALE_RESULT and result.val_loss is None
    assert ("trainer left a result file from before its last step (eval_results.json:eval_loss is from step 10, "
            "but training went to step 50; write it after the last step") in result.describe_failure()


@NEEDS_BAR_LIBRARIES
def test_a_result_file_at_the_last_step_is_recorded(tmp_path: Path) -> None:
    result = result_run(tmp_path, WRITE + """
for step in range(10, 51, 10):
    print(f"2026-12-04 10:00:00,123 INFO trainer: Step {step} | train_loss: 2.1", flush=True)
write("eval_results.json", {"eval_loss": 2.0, "global_step": 50})
""")
    assert result.ok and result.val_loss == 2.0


#: What a Hugging Face Trainer prints: a progress bar on stderr (drawn here as tqdm's ascii bar is,
#: so that these tests need no hf extra; the tests above drive the real tqdm) and a dict per log step.
HF_LOGS = """
import sys
for step in range(1, 51):
    filled = "#" * (step // 5)
    sys.stderr.write(f"\\r{2 * step:3d}%|{filled:<10}| {step}/50 [00:00<00:00, 1000.00it/s]")
    sys.stderr.flush()
    if step % 10 == 0:
        print({"loss": round(2.5 - step / 100, 4), "grad_norm": 0.5, "learning_rate": 1e-4, "epoch": step / 50 * 3},
              flush=True)
"""


def test_a_hugging_face_result_file_from_an_early_epoch_fails_the_run(tmp_path: Path) -> None:
    result = result_run(tmp_path, WRITE + HF_LOGS.replace(
        "flush=True)", "flush=True)\n    if step == 20: write('eval_results.json', {'epoch': 1.2, 'eval_loss': 2.4})"))
    assert result.failure is Failure.STALE_RESULT
    assert "is from epoch 1.2, but training went to epoch 3" in result.describe_failure()


def test_a_hugging_face_result_is_dated_by_the_trainer_state_beside_it(tmp_path: Path) -> None:
    state = {"global_step": 50, "log_history": [
        {"eval_loss": 2.4, "epoch": 1.0, "step": 10}, {"loss": 2.1, "epoch": 3.0, "step": 50},
        {"eval_loss": 2.0, "epoch": 3.0, "step": 50}]}
    early = result_run(tmp_path, WRITE + HF_LOGS + f"write('trainer_state.json', {state!r})\n"
                       "write('eval_results.json', {'eval_loss': 2.4})\n")
    assert early.failure is Failure.STALE_RESULT
    assert "is from step 10, but training went to step 50" in early.describe_failure()
    final = result_run(tmp_path, WRITE + HF_LOGS + f"write('trainer_state.json', {state!r})\n"
                       "write('eval_results.json', {'eval_loss': 2.0, 'epoch': 3.0})\n")
    assert final.ok and final.val_loss == 2.0


def test_a_result_file_without_a_step_written_long_before_the_last_step_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(result_file, "RESULT_MTIME_SLACK_S", 0.3)
    body = WRITE + """
import time
print("Step 10 | train_loss: 2.3", flush=True)
{early}
time.sleep(0.8)
print("Step 50 | train_loss: 2.1", flush=True)
{late}
"""
    write = "write('eval_results.json', {'eval_loss': 2.4})"
    early = result_run(tmp_path, body.format(early=write, late=""))
    assert early.failure is Failure.STALE_RESULT
    assert re.search(r"eval_results.json:eval_loss was last written 0\.\ds before the output first reported "
                     r"step 50; write it after the last step", early.describe_failure())
    late = result_run(tmp_path, body.format(early="", late=write))
    assert late.ok and late.val_loss == 2.4


# ------------------------------------------------------------------ the run's log
def test_a_log_cut_short_by_a_file_size_limit_is_marked_and_fails_the_run(tmp_path: Path) -> None:
    trainer = tmp_path / "trainer.py"
    trainer.write_text("import sys\nfor i in range(3000):\n    print(f'line {i} ' + 'x' * 100)\n"
                       "print('Step 50 | val_loss: 2.0000')\n")
    log = tmp_path / "seed42.log"
    code = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from pytest_exprun.trainer.runner import RunSpec, run_trainer
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        spec = RunSpec(label="baseline[seed42]", group="baseline", seed=42, argv=(sys.executable, {str(trainer)!r}),
                       output_dir=Path({str(tmp_path / 'out')!r}), log_path=Path({str(log)!r}))
        result = run_trainer(spec)
        print(result.failure.name if result.failure else "ok")
        print(result.describe_failure().splitlines()[0])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    failure, message = out.stdout.splitlines()
    assert failure == "LOG_CUT_SHORT"
    assert message.startswith("baseline[seed42]: trainer had its log cut short (File too large while writing ")
    assert "raise the file-size limit (ulimit -f)" in message
    text = log.read_bytes()
    assert len(text) <= 100_000
    assert text.rstrip().endswith(b"[exprun: the log was cut short here: File too large; the run failed]")


def test_a_log_on_a_full_disk_fails_the_run_saying_so(tmp_path: Path) -> None:
    trainer = tmp_path / "trainer.py"
    trainer.write_text("print('Step 20 | val_loss: 2.0000 | train_loss: 2.1')\n")
    spec = RunSpec(label="baseline[seed42]", group="baseline", seed=42, argv=(sys.executable, str(trainer)),
                   output_dir=tmp_path / "out", log_path=Path("/dev/full"))  # every write: ENOSPC
    result = run_trainer(spec)
    assert result.failure is Failure.LOG_CUT_SHORT
    assert "trainer had its log cut short (No space left on device while writing /dev/full" in \
        result.describe_failure()


# --------------------------------------------------------------- whole sessions
STYLED = {"42": "ansi+", "137": "logging+", "256": "hydra+", "512": "glued+", "1024": "thousands+",
          "--use_x 42": "glued+", "--use_x 137": "ansi+", "--use_x 256": "thousands+"}
WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}


def recorded(project: Project, group: str) -> dict[int, float]:
    return {int(p.stem[4:]): json.loads(p.read_text())["val_loss"]
            for p in (project.path / RECORDS / group).glob("*/seed*.json")}


@pytest.mark.parametrize("executor", [(), ("--exprun-executor=warm", "--exprun-warm-start=fork"),
                                      ("--exprun-executor=warm", "--exprun-warm-start=worker")],
                         ids=["local", "fork-server", "warm-worker"])
def test_a_session_records_every_final_evaluation_whatever_the_output_looks_like(
        project: Project, executor: tuple[str, ...]) -> None:
    project.plan(WINNER, behaviour=STYLED)
    result = project.run("--experiment=use_x", *executor)
    result.assert_outcomes(passed=9, skipped=2)
    assert recorded(project, "baseline") == {int(seed): loss for seed, loss in BASELINE_LOSSES.items()}
    assert recorded(project, "use_x") == {42: 1.90, 137: 1.91, 256: 1.89}


def test_a_session_never_judges_with_an_earlier_value_of_an_unreadable_final_evaluation(project: Project) -> None:
    project.plan(WINNER, behaviour={"--use_x 137": "unreadable+"})
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=7, failed=2, skipped=2)
    result.stdout.fnmatch_lines([
        "*use_x[[]seed137[]]: trainer printed a val_loss exprun could not read (at step 50 it printed "
        "'Step 50 | val_loss: 1,9100 | *', which names a val_loss but did not parse, so the last val_loss read "
        "would be the one at step 40*",
        "*no verdict for use_x*",
    ])
    assert 137 not in recorded(project, "use_x")


def test_a_session_fails_a_decorated_run_whose_last_evaluation_is_early(project: Project) -> None:
    project.plan(behaviour={"256": "logging+early_eval"})
    result = project.run("-m", "baseline", "-k", "seed256")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*baseline[[]seed256[]]: trainer did not evaluate at its final step (its last "
                                 "val_loss is at step 30, but it reported step 50)*"])


def test_a_session_fails_a_run_whose_result_file_is_from_an_early_step(project: Project) -> None:
    project.pytester.makeini("[pytest]\nexprun_command = python fake_trainer.py\n"
                             "exprun_result = result.json:eval_loss\n")
    project.plan(behaviour={"42": "early_result+"})
    result = project.run("-m", "baseline", "-k", "seed42")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*baseline[[]seed42[]]: trainer left a result file from before its last step "
                                 "(result.json:eval_loss is from step 10, but training went to step 50;*"])


# ------------------------------------------------------------ where files go
@pytest.mark.parametrize("option", ["--exprun-research-dir", "--exprun-checkpoints-dir"])
def test_the_filesystem_root_or_home_as_a_data_dir_is_refused_in_one_line(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, option: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for value, where in (("/", "the filesystem root"), (str(home), "your home directory"),
                         (str(home / "sub" / ".."), "your home directory")):
        result = project.run(f"{option}={value}", "-m", "baseline")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {option} '{value}' is {where}; give a folder of its own*"])
        assert "Traceback" not in result.stderr.str()
    assert project.calls() == []
