"""The protocol run by real pytest sessions against the fake trainer."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import Project

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
LOSER = {"--use_x": {"42": 2.10, "137": 2.11, "256": 2.09}}
NEUTRAL = {"--use_x": {"42": 2.00, "137": 1.99, "256": 2.01, "512": 2.00, "1024": 2.00}}


def headings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_plain_pytest_starts_no_training(project: Project) -> None:
    project.pytester.makepyfile(test_unit="def test_ok():\n    assert True\n")
    result = project.run()
    result.assert_outcomes(passed=1)
    assert project.calls() == []
    assert not project.research.exists()


def test_baseline_runs_five_seeds_in_order_and_writes_variance_report(project: Project) -> None:
    result = project.run("-m", "baseline")
    result.assert_outcomes(passed=5)
    assert project.seeds_run() == [42, 137, 256, 512, 1024]
    text = (project.research / "baseline_variance_1M.md").read_text()
    assert text.startswith("# Baseline Variance Report: 1M Tokens\n")
    assert "| Metric | Mean | Std | Min | Max |" in text
    assert "| val_loss | 2.0000 | 0.0158 | 1.9800 | 2.0200 |" in text
    assert re.search(r"^\| wall_time \(s\) \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \|$", text, re.M)
    assert "Seeds used: 42, 137, 256, 512, 1024" in text
    assert "| 137 | 2.0200 |" in text
    assert "fake_trainer.py` sha256:" in text


def test_matching_baseline_is_reused_and_reported_skipped(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    before = (project.research / "baseline_variance_1M.md").read_text()
    result = project.run("-m", "baseline", "-rs")
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines(["*baseline reused from docs/research/baseline_variance_1M.md*"])
    assert len(project.seeds_run()) == 5
    assert (project.research / "baseline_variance_1M.md").read_text() == before


def test_winner_passes_without_extension_seeds(project: Project) -> None:
    project.plan(WINNER)
    result = project.run("--experiment=use_x", "-rs")
    result.assert_outcomes(passed=9, skipped=2)
    assert result.ret == 0
    assert project.seeds_run(["--use_x"]) == [42, 137, 256]
    result.stdout.fnmatch_lines(["*use_x: WINNER*", "SKIPPED*exprun::use_x[[]seed512[]]*: not needed: experiment mean 1.9000*away (≥ 2σ)*"])
    text = (project.research / "experiment_use_x_1M.md").read_text()
    assert "## Verdict: WINNER" in text
    assert "## Experiment Statistics (N=3 runs)" in text


def test_neutral_runs_two_more_seeds_and_fails(project: Project) -> None:
    project.plan(NEUTRAL)
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=10, failed=1)
    assert result.ret == 1
    assert project.seeds_run(["--use_x"]) == [42, 137, 256, 512, 1024]
    result.stdout.fnmatch_lines(["*use_x: NEUTRAL*", "*val_loss*2.0000 ± 0.0158*2.0000 ± 0.0071*"])
    assert "## Experiment Statistics (N=5 runs)" in (project.research / "experiment_use_x_1M.md").read_text()


def test_accept_neutral_lets_a_neutral_verdict_pass(project: Project) -> None:
    project.plan(NEUTRAL)
    result = project.run("--experiment=use_x", "--exprun-accept=neutral")
    result.assert_outcomes(passed=11)
    assert result.ret == 0


def test_loser_fails_with_the_verdict_table(project: Project) -> None:
    project.plan(LOSER)
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=8, failed=1, skipped=2)
    result.stdout.fnmatch_lines(["*use_x: LOSER*", "*Cohen's d = +*(Large)*", "*report: docs/research/experiment_use_x_1M.md*"])
    assert "Traceback" not in result.stdout.str()


def test_report_has_the_required_sections_in_order(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x")
    text = (project.research / "experiment_use_x_1M.md").read_text()
    assert headings(text)[:7] == [
        "# Experiment: use_x",
        "## Baseline Statistics (N=5 runs)",
        "## Experiment Statistics (N=3 runs)",
        "## Statistical Test",
        "## Wall Clock",
        "## Verdict: WINNER",
        "## Per-Seed Results",
    ]
    assert "| Metric | Cohen's d | Effect Size | \\|Δ\\| in baseline σ |" in text
    assert "| | Baseline (N=5) | Experiment (N=3) |" in text  # the Wall Clock table


def test_report_statistics_match_hand_computed_values(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x")
    text = (project.research / "experiment_use_x_1M.md").read_text()
    # σ_base² = 2.5e-4, σ_exp² = 1e-4: d = -0.10 / sqrt(1.75e-4) = -7.56
    assert "| val_loss | -7.56 | Large | ≥ 2σ |" in text
    assert "| val_loss | 1.9000 | 0.0100 | 1.8900 | 1.9100 |" in text
    assert "Δ val_loss = -0.1000 (-6.32 baseline σ)" in text


def test_crashed_seed_is_rerun_alone_next_time(project: Project) -> None:
    project.plan(WINNER, behaviour={"--use_x 137": "exit3"})
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=7, failed=2, skipped=2)
    result.stdout.fnmatch_lines([
        "*use_x[[]seed137[]]: trainer exited with a non-zero code (3)*",
        "*RuntimeError: boom*",
        "*no verdict for use_x: use_x seed 137 not measured*",
    ])
    assert not (project.research / "experiment_use_x_1M.md").exists()
    project.plan(WINNER)
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=2, skipped=9)
    assert project.seeds_run(["--use_x"]) == [42, 256, 137]
    assert len(project.seeds_run()) == 5


def test_collect_only_lists_readable_items_and_runs_nothing(project: Project) -> None:
    result = project.run("--co", "-q", "--experiment=use_x")
    result.stdout.fnmatch_lines([
        "exprun::baseline[[]seed42[]]",
        "exprun::baseline[[]seed1024[]]",
        "exprun::use_x[[]seed42[]]",
        "exprun::use_x[[]seed1024[]]",
        "exprun::use_x[[]verdict[]]",
    ])
    assert project.calls() == []


def test_keyword_selects_single_seeds(project: Project) -> None:
    result = project.run("-m", "baseline", "-k", "seed137 or seed512")
    result.assert_outcomes(passed=2)
    assert project.seeds_run() == [137, 512]
    assert not (project.research / "baseline_variance_1M.md").exists()


def test_unit_tests_are_not_run_in_an_experiment_session(project: Project) -> None:
    project.pytester.makepyfile(test_unit="import sys\nsys.exit('imported')\ndef test_ok():\n    assert True\n")
    project.plan(WINNER)
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=9, skipped=2)


def test_junitxml_records_each_seed(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x", "--junitxml=out.xml")
    xml = (project.path / "out.xml").read_text()
    assert 'name="use_x[seed137]"' in xml and 'classname="exprun"' in xml
    assert '<property name="val_loss" value="1.910000"' in xml
    assert '<property name="verdict" value="WINNER"' in xml


def test_flags_are_passed_as_given(project: Project) -> None:
    project.run("--experiment=optimizer=muon", "--experiment=--lr 3e-3 --note 'a b'", "-k", "seed42 and not baseline",
                "--exprun-baseline-seeds=42,137", "--exprun-allow-small-baseline")
    flags = [c["flags"] for c in project.calls()]
    assert flags == [["--optimizer", "muon"], ["--lr", "3e-3", "--note", "a b"]]
    outputs = [c["output_dir"] for c in project.calls()]
    assert re.search(r"/checkpoints/research-[0-9a-f]{8}/optimizer-muon_1M_seed42$", outputs[0])


def test_several_experiments_share_one_baseline(project: Project) -> None:
    project.plan({**WINNER, "--use_y": {"42": 2.10, "137": 2.11, "256": 2.09}})
    result = project.run("--experiment=use_x", "--experiment=use_y")
    result.assert_outcomes(passed=12, failed=1, skipped=4)
    assert len(project.seeds_run()) == 5
    assert (project.research / "experiment_use_x_1M.md").exists()
    assert "## Verdict: LOSER" in (project.research / "experiment_use_y_1M.md").read_text()


def test_experiment_name_option_names_the_report(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x", "--experiment-name=My idea/../../v2")
    assert (project.research / "experiment_My_idea_.._.._v2_1M.md").exists() is False
    names = sorted(p.name for p in project.research.glob("experiment_*.md"))
    assert names == ["experiment_My_idea_v2_1M.md"]


def test_checkpoints_are_removed_unless_kept(project: Project) -> None:
    project.run("-m", "baseline", "-k", "seed42")
    assert not any((project.path / "checkpoints").iterdir())  # the run's folder and its emptied parent
    project.run("-m", "baseline", "-k", "seed137", "--exprun-keep-checkpoints")
    (folder,) = (project.path / "checkpoints").glob("research-*")
    assert (folder / "baseline_1M_seed137" / "checkpoint.bin").exists()
    project.run("-m", "baseline", "-k", "seed256")
    assert sorted(p.name for p in folder.iterdir()) == ["baseline_1M_seed137"]  # a kept one is left alone


def test_two_research_dirs_never_share_a_checkpoint_dir(project: Project) -> None:
    project.run("-m", "baseline", "-k", "seed42", "--exprun-keep-checkpoints")
    project.run("-m", "baseline", "-k", "seed42", "--exprun-keep-checkpoints", "--exprun-research-dir=other/research")
    outputs = [c["output_dir"] for c in project.calls()]
    assert len(set(outputs)) == 2


def test_a_run_starts_in_an_empty_output_dir(project: Project) -> None:
    project.run("-m", "baseline", "-k", "seed42", "--exprun-keep-checkpoints")
    (output,) = {c["output_dir"] for c in project.calls()}
    (Path(output) / "stale_from_another_run.bin").write_text("old")
    shutil.rmtree(project.research / ".exprun")
    project.run("-m", "baseline", "-k", "seed42", "--exprun-keep-checkpoints").assert_outcomes(passed=1)
    assert not (Path(output) / "stale_from_another_run.bin").exists()


def test_changed_trainer_is_never_silently_reused(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    with open(project.path / "fake_trainer.py", "a") as handle:
        handle.write("# a change\n")
    result = project.run("-m", "baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline_variance_1M.md was measured with a different setup "
                                 "(fake_trainer.py changed (sha256 *)*--exprun-rerun-baseline*"])
    assert len(project.seeds_run()) == 5
    result = project.run("-m", "baseline", "--exprun-rerun-baseline")
    result.assert_outcomes(passed=5)
    assert len(project.seeds_run()) == 10
    assert len(list(project.research.glob("baseline_variance_1M.md.replaced-*"))) == 1


def test_other_train_tokens_use_their_own_scale(project: Project) -> None:
    result = project.run("-m", "baseline", "--exprun-train-tokens=20000")
    result.assert_outcomes(passed=5)
    assert "# Baseline Variance Report: 20K Tokens" in (project.research / "baseline_variance_20K.md").read_text()


def test_user_templates_override_the_shipped_ones(project: Project) -> None:
    (project.path / "tpl").mkdir()
    (project.path / "tpl" / "baseline_variance.md.j2").write_text("# Mine: {{ val.mean|f4 }} over {{ seeds|length }}\n")
    project.run("-m", "baseline", "--exprun-templates=tpl").assert_outcomes(passed=5)
    assert (project.research / "baseline_variance_1M.md").read_text().startswith("# Mine: 2.0000 over 5\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exprun-train-tokens=-5"], "--exprun-train-tokens must be a positive integer, got -5"),
        (["--exprun-baseline-seeds="], "--exprun-baseline-seeds is empty*"),
        (["--exprun-baseline-seeds=1,1"], "*lists seed(s) [[]1[]] more than once"),
        (["--exprun-command=python missing.py"], "*trainer file*missing.py does not exist*"),
        (["--exprun-command=./no-such-program"], "*'./no-such-program' is not an executable program*"),
        (["--experiment=use_x", "--experiment=use_y", "--experiment-name=z"], "*--experiment-name names one experiment*"),
        (["--experiment=Use_x", "--experiment=use_x"], "*both make the report name*"),
        (["--exprun-accept=maybe"], "--exprun-accept must be 'winner' or 'neutral'*"),
    ],
)
def test_bad_options_stop_before_any_run(project: Project, args: list[str], message: str) -> None:
    result = project.run("-m", "baseline", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str()
    assert project.calls() == []


def test_options_are_settable_in_the_ini_file(project: Project) -> None:
    project.pytester.makeini(
        "[pytest]\nexprun_command = python fake_trainer.py\nexprun_baseline_seeds = 1,2,3\n"
        "exprun_train_tokens = 2500000\nexprun_research_dir = results\n"
    )
    project.run("-m", "baseline").assert_outcomes(passed=3)
    assert project.seeds_run() == [1, 2, 3]
    assert (project.path / "results" / "baseline_variance_2.5M.md").exists()


def test_help_lists_every_option_in_one_group(project: Project) -> None:
    result = project.run("--help")
    text = result.stdout.str()
    section = text[text.index("exprun: training experiments"):]
    for option in ["--experiment=FLAG", "--experiment-name", "--exprun-command", "--exprun-train-tokens",
                   "--exprun-baseline-seeds", "--exprun-experiment-seeds", "--exprun-extension-seeds",
                   "--exprun-research-dir", "--exprun-checkpoints-dir", "--exprun-keep-checkpoints",
                   "--exprun-rerun-baseline", "--exprun-timeout", "--exprun-accept", "--exprun-templates", "--exprun-control"]:
        assert option in section, option


def test_hooks_let_a_project_adapt_command_and_parser(project: Project) -> None:
    project.pytester.makeconftest(
        """
        import re

        def pytest_exprun_build_argv(config, group, seed, argv):
            return argv + ["--extra", group]

        def pytest_exprun_parse_line(config, line):
            m = re.match(r"Step (\\d+) \\| val_loss: (\\S+)", line)
            return (int(m.group(1)), 10.0 + int(m.group(1))) if m else None

        finished = []

        def pytest_exprun_run_finished(config, record):
            finished.append(record.seed)
            print("FINISHED", record.seed, record.val_loss)
        """
    )
    result = project.run("-m", "baseline", "-k", "seed42", "-s")
    result.assert_outcomes(passed=1)
    assert project.calls()[0]["flags"] == ["--extra", "baseline"]
    result.stdout.fnmatch_lines(["collected 5 items / 4 deselected / 1 selected", "*FINISHED 42 60.0*"])


def test_run_record_keeps_the_learning_curve(project: Project) -> None:
    project.run("-m", "baseline", "-k", "seed42")
    (record,) = (project.research / ".exprun" / "runs" / "1M" / "baseline").glob("*/seed42.json")
    data = json.loads(record.read_text())
    assert [step for step, _ in data["curve"]] == [10, 20, 30, 40, 50]
    assert data["curve"][-1] == [50, 2.0] and data["curve"][0][1] > data["curve"][-1][1]
    assert Path(project.path / data["log"]).read_text().startswith("fake trainer: seed 42")


def test_baseline_from_another_environment_gives_no_verdict(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.plan(WINNER)
    monkeypatch.setenv("FAKE_DEVICE", "NVIDIA H100")
    project.run("-m", "baseline").assert_outcomes(passed=5)
    (record,) = (project.research / ".exprun").rglob("baseline/*/seed42.json")
    assert '"device": "NVIDIA H100"' in record.read_text()
    monkeypatch.setenv("FAKE_DEVICE", "cpu")
    result = project.run("--experiment=use_x")
    result.assert_outcomes(passed=3, failed=1, skipped=7)
    result.stdout.fnmatch_lines(["*no verdict for use_x: the runs were not measured in the same environment "
                                 "(device: NVIDIA H100 vs cpu)*--exprun-rerun-baseline*"])
