"""The margin in a session: EQUIVALENT and INCONCLUSIVE verdicts, what passes, what is stored."""

from __future__ import annotations

import json

from conftest import Project

#: The same val_loss as the baseline within 0.01: equivalent at a margin of 0.05, not at 0.001.
SAME = {"--use_x": {"42": 2.00, "137": 2.01, "256": 1.99, "512": 2.00, "1024": 2.00}}
#: No change on average, but noisy: a margin of 0.05 needs about 12 more seeds to settle.
NOISY = {"--use_x": {"42": 2.06, "137": 1.94, "256": 2.00, "512": 2.06, "1024": 1.94}}


def test_a_change_within_the_margin_is_equivalent_and_neutral_accept_passes_it(project: Project) -> None:
    project.plan(SAME)
    result = project.run("--experiment=use_x", "--exprun-margin=0.05", "--exprun-accept=neutral")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: EQUIVALENT*"])
    report = (project.research / "experiment_use_x_1M.md").read_text()
    assert "## Verdict: EQUIVALENT" in report and "±0.0500" in report
    stored = json.loads((project.research / ".exprun/results/1M/experiment/use_x.json").read_text())
    assert stored["verdict"] == "EQUIVALENT" and stored["margin"]["value"] == 0.05
    assert stored["margin"]["rule_verdict"] == "NEUTRAL" and stored["margin"]["unit"] == "metric"


def test_equivalent_fails_without_neutral_accept(project: Project) -> None:
    project.plan(SAME)
    result = project.run("--experiment=use_x", "--exprun-margin=0.05")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["use_x: EQUIVALENT*"])


def test_a_margin_too_tight_for_the_noise_is_inconclusive_with_the_command_to_settle_it(project: Project) -> None:
    project.plan(NOISY)
    result = project.run("--experiment=use_x", "--exprun-margin=0.05", "--exprun-accept=neutral")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: INCONCLUSIVE*"])
    stored = json.loads((project.research / ".exprun/results/1M/experiment/use_x.json").read_text())
    assert stored["verdict"] == "INCONCLUSIVE"
    report = (project.research / "experiment_use_x_1M.md").read_text()
    assert "INCONCLUSIVE" in report
    settle = stored["margin"]["settle"]  # the seeds used and 12 new ones; the margin kept
    assert settle[:2] == ["--experiment=use_x", "--exprun-experiment-seeds=42,137,256,512,1024," + ",".join(
        str(2**k) for k in range(11, 23))] and "--exprun-margin=0.05" in settle
    assert "pytest " + " ".join(settle) in report
    result.stdout.fnmatch_lines(["  to settle it: pytest --experiment=use_x --exprun-experiment-seeds=42,137,*"])


def test_without_a_margin_nothing_changes(project: Project) -> None:
    project.plan(SAME)
    result = project.run("--experiment=use_x", "--exprun-accept=neutral")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: NEUTRAL*"])
    stored = json.loads((project.research / ".exprun/results/1M/experiment/use_x.json").read_text())
    assert "margin" not in stored and "program" not in stored


def test_a_bad_margin_is_a_one_line_error(project: Project) -> None:
    result = project.run("--experiment=use_x", "--exprun-margin=5%")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--exprun-margin*0.5sigma*"])
    assert project.calls() == []


def test_the_sequential_mode_judges_equivalence_at_its_looks_and_says_so(project: Project) -> None:
    project.plan(SAME)
    result = project.run("--experiment=use_x", "--exprun-decide=sequential", "--exprun-margin=0.05",
                         "--exprun-accept=neutral")
    result.stdout.fnmatch_lines(["use_x: EQUIVALENT*"])
    stored = json.loads((project.research / ".exprun/results/1M/experiment/use_x.json").read_text())
    assert stored["verdict"] == "EQUIVALENT" and "sequential" in stored
    assert stored["margin"]["method"] in {"Welch", "paired"}
    report = (project.research / "experiment_use_x_1M.md").read_text()
    assert "the rule may stop at any look for EQUIVALENT" in report and "## Verdict: EQUIVALENT" in report
    assert stored["margin"]["alpha"] == 0.05 / 4  # each look's test at α / K
    assert "P(EQUIVALENT) when the true Δ lies on the margin is" in report


#: A small, precise gain (0.6 baseline σ): past the futility bound, far from the WINNER bound, so the
#: sequential rule alone would run the next look; within a margin of 0.05 at the first look already.
PRECISE = {"--use_x": {"42": 1.990, "137": 1.991, "256": 1.989, "512": 1.990, "1024": 1.991, "2048": 1.990}}


def test_a_clearly_equivalent_experiment_stops_early_as_equivalent(project: Project) -> None:
    project.plan(PRECISE)
    result = project.run("--experiment=use_x", "--exprun-decide=sequential", "--exprun-margin=0.05",
                         "--exprun-accept=neutral")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: EQUIVALENT*"])
    assert sorted(project.seeds_run(["--use_x"])) == [42, 137]  # 2 of the design's 6
    stored = json.loads((project.research / ".exprun/results/1M/experiment/use_x.json").read_text())
    look = stored["sequential"]
    assert look["look_index"] == 0 and look["n_experiment"] == 2 and "stopped as equivalent" in look["reason"]
    assert look["futility_bound"] < look["statistic"] < look["winner_bound"]  # no other bound stopped it
    assert stored["verdict"] == "EQUIVALENT" and stored["seeds"] == [42, 137]
    report = (project.research / "experiment_use_x_1M.md").read_text()
    assert "## Verdict: EQUIVALENT" in report and "stopped as equivalent" in report
