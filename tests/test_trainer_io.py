"""How runs reach a trainer exprun did not write, and where their result is read from."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from conftest import QUIET_REWRITE
from pytest_exprun.trainer.interface import (
    DEFAULT_ARGV,
    ArgvTemplate,
    TrainerIO,
    TrainerIOError,
    experiment_flags,
    line_parser,
    parse_flag_style,
    parse_tokens_per_step,
    run_environment,
    steps_for,
)
from pytest_exprun.trainer.result_file import ResultSource, read_result


def ini(**values: str):  # noqa: ANN201 - a stand-in for config.getini
    defaults = {"exprun_argv": DEFAULT_ARGV, "exprun_tokens_per_step": "", "exprun_flag_style": "space",
                "exprun_line_pattern": "", "exprun_result": ""}
    defaults.update({f"exprun_{k}": v for k, v in values.items()})
    return defaults.__getitem__


# ------------------------------------------------------------------ argv
def test_default_template_gives_train_llm_arguments() -> None:
    argv = ArgvTemplate.parse(DEFAULT_ARGV).render(seed=42, train_tokens=1000, output_dir="out/a b")
    assert argv == ["--train_tokens", "1000", "--seed", "42", "--output_dir", "out/a b"]


def test_nanogpt_template_counts_iterations() -> None:
    template = ArgvTemplate.parse("--max_iters={steps} --eval_interval={steps} --out_dir={output_dir}", 8192)
    assert template.render(seed=1, train_tokens=100_000, output_dir="ck") == [
        "--max_iters=12", "--eval_interval=12", "--out_dir=ck"
    ]


@pytest.mark.parametrize(("tokens", "per_step", "steps"), [(100, 10, 10), (105, 10, 11), (104, 10, 10), (5, 10, 1)])
def test_steps_are_rounded_half_up(tokens: int, per_step: int, steps: int) -> None:
    assert steps_for(tokens, per_step) == steps


def test_fewer_tokens_than_half_a_step_is_refused() -> None:
    with pytest.raises(TrainerIOError, match="less than half a step"):
        steps_for(4, 10)


def test_steps_without_tokens_per_step_is_refused() -> None:
    with pytest.raises(TrainerIOError, match="exprun_tokens_per_step is not set"):
        ArgvTemplate.parse("--max_iters {steps}")


@pytest.mark.parametrize("text", ["--seed {sed}", "--seed {seed!r}", "--seed {seed:04d}", "--x {0}", "--x {}"])
def test_unknown_field_is_refused_naming_the_fields(text: str) -> None:
    with pytest.raises(TrainerIOError, match=r"unknown field .*\{seed\}, \{train_tokens\}"):
        ArgvTemplate.parse(text)


def test_unbalanced_brace_is_refused() -> None:
    with pytest.raises(TrainerIOError, match="not a valid template"):
        ArgvTemplate.parse("--seed {seed")


def test_literal_braces_are_kept() -> None:
    assert ArgvTemplate.parse("--json={{}} --s={seed}").render(seed=3, train_tokens=1, output_dir="o") == [
        "--json={}", "--s=3"
    ]


def test_unsplittable_template_is_refused() -> None:
    with pytest.raises(TrainerIOError, match="cannot be split"):
        ArgvTemplate.parse("--seed '{seed}")


def test_protocol_options_are_those_carrying_a_field() -> None:
    template = ArgvTemplate.parse("--max_iters={steps} --seed {seed} -o{output_dir} --compile=False", 10)
    assert template.protocol_options() == ("--max_iters", "--seed", "-o")


def test_tokens_per_step_must_be_a_positive_integer() -> None:
    assert parse_tokens_per_step(" ") is None
    assert parse_tokens_per_step("12_288") == 12288
    for bad in ("0", "-4", "1.5", "many"):
        with pytest.raises(TrainerIOError, match="exprun_tokens_per_step must be a positive integer"):
            parse_tokens_per_step(bad)


def test_every_run_gets_its_seed_tokens_and_output_dir_in_the_environment() -> None:
    assert run_environment(137, 5000, Path("ck/b")) == {
        "EXPRUN_SEED": "137", "EXPRUN_TRAIN_TOKENS": "5000", "EXPRUN_OUTPUT_DIR": "ck/b"
    }
    assert run_environment(1, 2, "o", steps=7)["EXPRUN_STEPS"] == "7"


# ------------------------------------------------------------- flag style
def test_equals_style_joins_name_and_value() -> None:
    assert experiment_flags("n_layer=4", "equals") == ["--n_layer=4"]
    assert experiment_flags("n_layer=4", "space") == ["--n_layer", "4"]


def test_bare_names_and_own_spellings_are_the_same_in_both_styles() -> None:
    assert experiment_flags("use_x", "equals") == ["--use_x"]
    assert experiment_flags("--lr 3e-3 --x", "equals") == ["--lr", "3e-3", "--x"]


def test_flag_style_is_checked() -> None:
    assert parse_flag_style(" Equals ") == "equals"
    with pytest.raises(TrainerIOError, match="'space' .* or 'equals'"):
        parse_flag_style("colon")


# ------------------------------------------------------------ line pattern
NANOGPT = r"^step (?P<step>\d+): train loss \S+, val loss (?P<value>\S+)"


def test_line_pattern_finds_step_and_value() -> None:
    parse = line_parser(NANOGPT)
    assert parse("step 2000: train loss 1.0012, val loss 1.4723") == (2000, 1.4723)
    assert parse("iter 1999: loss 1.0321, time 30.2ms") is None


def test_line_pattern_searches_anywhere_in_the_line() -> None:
    assert line_parser(r"eval (?P<step>[\d,]+) (?P<value>\S+)")("12:00 [info] eval 1,000 2.5,") == (1000, 2.5)


def test_non_finite_values_are_parsed_for_the_caller_to_judge() -> None:
    step, value = line_parser(NANOGPT)("step 10: train loss nan, val loss nan")  # type: ignore[misc]
    assert step == 10 and math.isnan(value)


def test_a_match_without_a_number_is_no_evaluation() -> None:
    assert line_parser(NANOGPT)("step 10: train loss x, val loss soon") is None
    assert line_parser(r"(?P<step>\d+)?x(?P<value>\d+)")("x5") is None


def test_pattern_without_a_value_group_is_refused() -> None:
    with pytest.raises(TrainerIOError, match="no named group 'value'"):
        line_parser(r"step (?P<step>\d+): val loss (\S+)")
    with pytest.raises(TrainerIOError, match="no named group 'value'"):
        line_parser(r"val loss (\S+)")
    with pytest.raises(TrainerIOError, match="no named group 'value'"):
        line_parser(r"(?P<step>\d+) (?P<train>\S+) (?P<val>\S+)")  # two candidates: which is the value?


def test_pattern_that_does_not_compile_is_refused() -> None:
    with pytest.raises(TrainerIOError, match="not a valid regular expression"):
        line_parser(r"step (?P<step>\d+")


# ------------------------------------------------------------- result file
def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_result_source_is_file_and_key() -> None:
    source = ResultSource.parse(" eval_results.json:eval_loss ")
    assert (str(source.file), source.key, source.metric_name) == ("eval_results.json", "eval_loss", "eval_loss")


@pytest.mark.parametrize("text", ["eval_results.json", ":eval_loss", "eval_results.json:", "a.json:x..y"])
def test_malformed_result_source_is_refused(text: str) -> None:
    with pytest.raises(TrainerIOError, match="exprun_result"):
        ResultSource.parse(text)


@pytest.mark.parametrize("text", ["/etc/passwd:x", "../other/eval.json:x", "a/../../b.json:x", "a\\b.json:x"])
def test_result_file_outside_the_output_dir_is_refused(text: str) -> None:
    with pytest.raises(TrainerIOError, match="inside the run's output dir"):
        ResultSource.parse(text)


def test_hugging_face_eval_results_are_read(tmp_path: Path) -> None:
    write(tmp_path / "eval_results.json", {"epoch": 1.0, "eval_loss": 2.25, "eval_runtime": 0.1})
    assert read_result(ResultSource.parse("eval_results.json:eval_loss"), tmp_path) == (None, 2.25)


def test_step_is_taken_from_the_file_when_present(tmp_path: Path) -> None:
    write(tmp_path / "eval_results.json", {"eval_loss": 2, "global_step": 120})
    assert read_result(ResultSource.parse("eval_results.json:eval_loss"), tmp_path) == (120, 2.0)


def test_nested_keys_and_subfolders(tmp_path: Path) -> None:
    write(tmp_path / "logs" / "final.json", {"metrics": {"val": {"loss": 1.5, "step": 30}}})
    assert read_result(ResultSource.parse("logs/final.json:metrics.val.loss"), tmp_path) == (30, 1.5)


def test_a_key_with_dots_is_found_as_written(tmp_path: Path) -> None:
    write(tmp_path / "r.json", {"val.loss": 1.25, "val": {"loss": 9}})
    assert read_result(ResultSource.parse("r.json:val.loss"), tmp_path) == (None, 1.25)


def test_missing_file_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(TrainerIOError, match="the run left no eval_results.json in"):
        read_result(ResultSource.parse("eval_results.json:eval_loss"), tmp_path)


def test_missing_key_lists_the_keys_there(tmp_path: Path) -> None:
    write(tmp_path / "r.json", {"loss": 1, "epoch": 2})
    with pytest.raises(TrainerIOError, match=r"no key 'eval_loss' \(keys: epoch, loss\)"):
        read_result(ResultSource.parse("r.json:eval_loss"), tmp_path)
    with pytest.raises(TrainerIOError, match=r"no key 'loss.val' \(keys under 'loss': no keys\)"):
        read_result(ResultSource.parse("r.json:loss.val"), tmp_path)


@pytest.mark.parametrize("value", ["2.0", True, None, [1.0]])
def test_a_value_that_is_not_a_number_is_refused(tmp_path: Path, value: object) -> None:
    write(tmp_path / "r.json", {"eval_loss": value})
    with pytest.raises(TrainerIOError, match="not a number"):
        read_result(ResultSource.parse("r.json:eval_loss"), tmp_path)


def test_non_finite_value_is_returned_for_the_caller_to_judge(tmp_path: Path) -> None:
    write(tmp_path / "r.json", '{"eval_loss": NaN}')
    assert math.isnan(read_result(ResultSource.parse("r.json:eval_loss"), tmp_path)[1])


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "[" * 100_000 + "]" * 100_000])
def test_a_file_that_is_not_an_object_of_metrics_is_one_error(tmp_path: Path, text: str) -> None:
    write(tmp_path / "r.json", text)
    with pytest.raises(TrainerIOError, match="not valid JSON|not an object of metrics"):
        read_result(ResultSource.parse("r.json:eval_loss"), tmp_path)


def test_a_symlinked_result_file_is_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path / "secret.json", {"eval_loss": 0.0})
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_results.json").symlink_to(outside)
    with pytest.raises(TrainerIOError, match="goes through a symlink"):
        read_result(ResultSource.parse("eval_results.json:eval_loss"), run)


def test_a_symlinked_folder_on_the_way_is_not_followed(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere" / "r.json", {"eval_loss": 0.0})
    run = tmp_path / "run"
    run.mkdir()
    (run / "logs").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TrainerIOError, match="goes through a symlink"):
        read_result(ResultSource.parse("logs/r.json:eval_loss"), run)


def test_a_symlinked_output_dir_is_not_followed(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere" / "r.json", {"eval_loss": 0.0})
    (tmp_path / "run").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TrainerIOError, match="goes through a symlink"):
        read_result(ResultSource.parse("r.json:eval_loss"), tmp_path / "run")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "r.json")
    with pytest.raises(TrainerIOError, match="not a regular file"):
        read_result(ResultSource.parse("r.json:eval_loss"), tmp_path)


def test_a_huge_file_is_refused_without_reading_it_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_exprun.trainer.result_file.MAX_RESULT_BYTES", 1000)
    write(tmp_path / "r.json", json.dumps({"eval_loss": 1.0, "pad": "x" * 5000}))
    with pytest.raises(TrainerIOError, match="larger than"):
        read_result(ResultSource.parse("r.json:eval_loss"), tmp_path)


# ------------------------------------------------------------------ bundle
def test_defaults_keep_train_llm_behaviour() -> None:
    io = TrainerIO.load(ini(), train_tokens=1000)
    assert io.metric_name == "val_loss" and io.result is None and io.parse_line() is None
    assert io.flags("optimizer=muon") == ["--optimizer", "muon"]


def test_metric_name_follows_the_result_key() -> None:
    assert TrainerIO.load(ini(result="eval_results.json:eval_loss"), 1000).metric_name == "eval_loss"


def test_nanogpt_settings_load_together() -> None:
    io = TrainerIO.load(
        ini(argv="--max_iters={steps} --eval_interval={steps} --out_dir={output_dir}", tokens_per_step="1024",
            flag_style="equals", line_pattern=NANOGPT),
        train_tokens=20480,
    )
    assert io.argv.steps(20480) == 20 and io.flags("n_layer=2") == ["--n_layer=2"]
    parse = io.parse_line()
    assert parse is not None and parse("step 20: train loss 2.0, val loss 2.1") == (20, 2.1)


def test_zero_steps_are_refused_when_the_settings_load() -> None:
    with pytest.raises(TrainerIOError, match="less than half a step"):
        TrainerIO.load(ini(argv="--max_iters={steps}", tokens_per_step="1000000"), train_tokens=1000)


def test_bad_pattern_is_refused_when_the_settings_load() -> None:
    with pytest.raises(TrainerIOError, match="exprun_line_pattern"):
        TrainerIO.load(ini(line_pattern="val loss (.*)"), train_tokens=1000)


def test_identity_is_empty_for_the_defaults_and_names_every_change() -> None:
    assert TrainerIO.load(ini(), 1000).identity() == ()
    changed = TrainerIO.load(ini(argv="--s {seed}", line_pattern=NANOGPT, result="r.json:loss"), 1000).identity()
    assert changed == ("argv:", "--s", "{seed}", f"line_pattern:{NANOGPT}", "result:r.json:loss")
    assert TrainerIO.load(ini(result="r.json:loss"), 1000).identity() != TrainerIO.load(ini(result="r.json:acc"), 1000).identity()


def test_header_line_says_how_runs_start_and_where_the_value_comes_from() -> None:
    from pytest_exprun.trainer.interface import describe

    io = TrainerIO.load(ini(argv="--max_steps {steps}", tokens_per_step="1024", result="eval_results.json:eval_loss"),
                        32768)
    assert describe(io, ["python", "train_hf.py"]) == (
        "runs: python train_hf.py --max_steps {steps} [+ flags, space style]; "
        "eval_loss from eval_results.json:eval_loss (after the run)"
    )
    assert describe(TrainerIO.load(ini(), 1000)).endswith("val_loss from 'Step N | val_loss: X' lines")


# ------------------------------------------------------- through the plugin
#: A trainer with its own conventions: no seed option (EXPRUN_SEED), iterations, --key=value,
#: its own print format and a result file. It notes what it was given in calls.jsonl.
OWN_TRAINER = """
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
seed = int(os.environ["EXPRUN_SEED"])
loss = {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99}[str(seed)] - float(args.get("lr", 0))
out = os.environ["EXPRUN_OUTPUT_DIR"]
with open("calls.jsonl", "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "seed": seed, "out": out, "steps": os.environ.get("EXPRUN_STEPS")}) + "\\n")
print(f"it {args['iters']}/{args['iters']} | loss={loss + 0.5:.4f}", flush=True)
print(f"Step {args['iters']} | val_loss: 9.0", flush=True)  # the file, when configured, wins over this
os.makedirs(out, exist_ok=True)
if os.environ.get("NO_RESULT") is None:
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"metrics": {"loss": loss, "step": int(args["iters"])}}, f)
"""

OWN_INI = """[pytest]
exprun_command = python own.py
exprun_argv = --iters={steps}
exprun_tokens_per_step = 100
exprun_train_tokens = 1000
exprun_flag_style = equals
"""


@pytest.fixture
def own(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "own.py").write_text(OWN_TRAINER)
    return pytester


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((path / "docs" / "research").rglob("seed*.json"))]


def test_result_file_value_is_recorded_and_named_after_its_key(own: pytest.Pytester) -> None:
    own.makeini(OWN_INI + "exprun_result = result.json:metrics.loss\n")
    result = own.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=lr=0.1", "-q")
    result.assert_outcomes(passed=9, skipped=2)
    result.stdout.fnmatch_lines(["*baseline[[]seed42[]] done in *, metrics.loss 2.0000"])
    calls = [json.loads(line) for line in (own.path / "calls.jsonl").read_text().splitlines()]
    assert {c["seed"] for c in calls} == {42, 137, 256, 512, 1024}
    assert all(c["argv"][0] == "--iters=10" and c["steps"] == "10" for c in calls)
    assert [c["argv"][1:] for c in calls if len(c["argv"]) > 1] == [["--lr=0.1"]] * 3
    assert all(Path(c["out"]).is_absolute() for c in calls)
    assert sorted(r["val_loss"] for r in records(own.path) if r["group"] == "baseline") == [1.98, 1.99, 2.0, 2.01, 2.02]
    assert all(r["curve"] == [[10, 9.0]] for r in records(own.path))  # the file's step equals the line's


def test_missing_result_file_fails_the_run_naming_the_file(own: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    own.makeini(OWN_INI + "exprun_result = result.json:metrics.loss\n")
    monkeypatch.setenv("NO_RESULT", "1")
    result = own.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "-m", "baseline", "-q", "-x")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the run left no result.json in *baseline*seed42*"])
    assert records(own.path) == []


def test_line_pattern_reads_the_trainers_own_format(own: pytest.Pytester) -> None:
    own.makeini(OWN_INI + r"exprun_line_pattern = ^it (?P<step>\d+)/\d+ \| loss=(?P<value>\S+)" + "\n")
    own.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "-m", "baseline", "-q").assert_outcomes(passed=5)
    assert sorted(r["val_loss"] for r in records(own.path)) == [2.48, 2.49, 2.5, 2.51, 2.52]


def test_experiment_may_not_set_an_option_the_template_sets(own: pytest.Pytester) -> None:
    own.makeini(OWN_INI)
    result = own.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=iters=3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--experiment='iters=3' passes --iters, which would override --iters*"])


@pytest.mark.parametrize(("line", "message"), [
    ("exprun_argv = --iters={iterations}", "*exprun_argv has an unknown field {iterations}*"),
    ("exprun_line_pattern = loss=(\\S+)", "*exprun_line_pattern * has no named group 'value'*"),
    ("exprun_result = result.json", "*exprun_result 'result.json' is not FILE:KEY*"),
    ("exprun_flag_style = colon", "*exprun_flag_style must be 'space'*"),
])
def test_bad_trainer_settings_are_one_line_before_any_run(own: pytest.Pytester, line: str, message: str) -> None:
    name = line.split(" = ")[0]
    own.makeini("".join(kept for kept in OWN_INI.splitlines(True) if not kept.startswith(name + " ")) + line + "\n")
    result = own.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "-m", "baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()
    assert not (own.path / "calls.jsonl").exists()


def test_a_baseline_is_not_reused_once_the_result_key_changes(own: pytest.Pytester) -> None:
    own.makeini(OWN_INI + "exprun_result = result.json:metrics.loss\n")
    own.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "-m", "baseline", "-q").assert_outcomes(passed=5)
    own.makeini(OWN_INI + "exprun_result = result.json:metrics.step\n")
    result = own.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "-m", "baseline", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*different setup*result:result.json:metrics.loss*result:result.json:metrics.step*"])
