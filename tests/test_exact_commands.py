"""Where exprun says to run something again, it prints the command that does it: a verdict whose
seeds -k deselected names a command without the -k, and a NEUTRAL the tests doubt names the
command that runs more seeds of that experiment."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from conftest import Project
from pytest_exprun.model import Decision
from pytest_exprun.program_records import MarginRecord, ProgramRecord
from pytest_exprun.reports.commands import experiment_options, experiment_spec, more_seeds

#: Δ about −1.3 baseline σ: the 2σ rule says NEUTRAL while Welch's and the paired test reject.
BASE = {"42": 2.00, "137": 2.05, "256": 1.95, "512": 2.03, "1024": 1.97}
CLOSE = {"42": 1.944, "137": 1.996, "256": 1.896, "512": 1.976, "1024": 1.917,
         "2048": 1.950, "4096": 1.945, "8192": 1.947, "16384": 1.951, "32768": 1.943}


def printed_command(text: str) -> list[str]:
    """The arguments of the one backquoted ``pytest ...`` command in ``text``."""
    start = text.index("`pytest ") + 1
    return shlex.split(text[start:text.index("`", start)])[1:]


def test_a_verdict_whose_seed_k_deselected_names_a_command_without_the_k(project: Project) -> None:
    project.plan({"--use_x": {"42": 1.90, "137": 1.91, "256": 1.92}})
    result = project.run("--experiment=use_x", "-k", "not use_x[seed137]")
    result.stdout.fnmatch_lines(["*no verdict for use_x: use_x seed 137 not measured (failed, interrupted or "
                                 "deselected); run `pytest * --experiment=use_x *` and only the missing seeds will run*"])
    args = printed_command(result.stdout.str())  # this session's own arguments, less the -k
    assert "-k" not in args and "not use_x[seed137]" not in args and "--experiment=use_x" in args
    before = len(project.calls())
    again = project.run(*args)
    assert again.ret == 0, again.stdout.str()
    assert [(c["flags"], c["seed"]) for c in project.calls()[before:]] == [(["--use_x"], 137)]


@pytest.mark.slow
def test_a_neutral_the_tests_doubt_names_the_command_that_runs_more_seeds(project: Project) -> None:
    project.plan({"": BASE, "--use_x": CLOSE})
    result = project.run("--experiment=use_x", "--exprun-accept=neutral")
    assert result.ret == 0, result.stdout.str()
    report = (project.research / "experiment_use_x_1M.md").read_text()
    assert "## Verdict: NEUTRAL" in report and "run more seeds before reading this as no effect: `pytest " in report
    args = printed_command(report)
    assert args == ["--experiment=use_x", "--exprun-experiment-seeds=42,137,256,512,1024,2048,4096,8192,16384,32768",
                    "--exprun-extension-seeds=", "--exprun-decide=fixed"]
    twin = json.loads((project.research / "experiment_use_x_1M.json").read_text())
    assert shlex.join(["pytest", *args]) in twin["evidence"]["note"]
    before = len(project.calls())
    again = project.run(*args, "--exprun-accept=neutral")
    assert again.ret == 0, again.stdout.str()
    assert sorted(c["seed"] for c in project.calls()[before:]) == [2048, 4096, 8192, 16384, 32768]
    assert json.loads((project.research / "experiment_use_x_1M.json").read_text())["comparison"]["val_loss"][
        "experiment"]["n"] == 10


@pytest.mark.parametrize(("flags", "spec"), [
    (["--use_x"], "use_x"),
    (["--lr", "3e-4"], "lr=3e-4"),
    (["--lr=3e-4"], "--lr=3e-4"),
    (["--note", "a b"], "'note=a b'"),
    (["--a", "--b"], "a=--b"),
    (["--a", "b", "c"], "'--a b c'"),
])
def test_an_experiment_spec_gives_its_flags_again(flags: list[str], spec: str) -> None:
    from pytest_exprun.names import experiment_flags

    assert shlex.quote(experiment_spec(flags)) == spec
    assert experiment_flags(experiment_spec(flags)) == flags


def test_a_custom_report_name_is_named_in_the_command() -> None:
    assert experiment_options("use_x", ["--use_x"]) == ("--experiment=use_x",)
    assert experiment_options("mine", ["--use_x"]) == ("--experiment=use_x", "--experiment-name=mine")


def test_more_seeds_keeps_the_baseline_seeds_and_the_scale_it_was_decided_at() -> None:
    stored = Path(__file__).parent / "data" / "store_v1" / "fixed_decision.json"
    decision = dataclasses.replace(Decision.from_json("use_x", json.loads(stored.read_text())), name="use_x",
                                   flags=("--use_x",), baseline_seeds=(42, 137, 256), seeds=(42, 137, 256))
    args = shlex.split(more_seeds(decision, 5_000_000))
    assert args[1:] == ["--experiment=use_x", "--exprun-experiment-seeds=42,137,256,512,1024,2048",
                        "--exprun-extension-seeds=", "--exprun-decide=fixed", "--exprun-baseline-seeds=42,137,256",
                        "--exprun-train-tokens=5000000"]
    assert "--exprun-margin" not in args and "--exprun-program-alpha" not in args


def test_more_seeds_keeps_the_decisions_margin_and_program_level() -> None:
    stored = Path(__file__).parent / "data" / "store_v1" / "fixed_decision.json"
    decision = dataclasses.replace(Decision.from_json("use_x", json.loads(stored.read_text())), name="use_x",
                                   flags=("--use_x",), seeds=(42, 137, 256),
                                   margin=MarginRecord(0.5, "sigma", 0.01, 0.05, "Welch", 0.2, -0.02, 0.01, "NEUTRAL"),
                                   program=ProgramRecord(1, 0, 0.019, 0.05))
    args = shlex.split(more_seeds(decision, 1_000_000))
    assert args[-2:] == ["--exprun-margin=0.5sigma", "--exprun-program-alpha=0.05"]
