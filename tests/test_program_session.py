"""Program-wide control through real sessions: LOND's level for each decision on one baseline."""

from __future__ import annotations

import json
from typing import Any

from conftest import Project

from pytest_exprun.decide import program

WIN = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.92}}
#: 2.3 baseline σ better: a WINNER for the 2σ rule alone, not at a program's widened threshold.
MODEST = {"--use_z": {"42": 1.965, "137": 1.962, "256": 1.963, "512": 1.964, "1024": 1.963}}


def stored(project: Project, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.research / f".exprun/results/1M/experiment/{name}.json").read_text())
    return data


def test_each_decision_takes_its_lond_step_and_a_modest_gain_is_no_longer_a_winner(project: Project) -> None:
    project.plan({**WIN, **MODEST})
    alone = project.run("--experiment=use_z")
    alone.stdout.fnmatch_lines(["use_z: WINNER*"])
    project.pytester.path.joinpath("docs/research/.exprun/results/1M/experiment/use_z.json").unlink()
    project.pytester.path.joinpath("docs/research/verdicts.jsonl").unlink()

    first = project.run("--experiment=use_x", "--exprun-program-alpha=0.05")
    first.stdout.fnmatch_lines(["use_x: WINNER*"])
    step = stored(project, "use_x")["program"]
    level = program.lond_level(0.05, 1, 0)
    assert step["index"] == 1 and step["winners_before"] == 0 and step["alpha"] == 0.05
    assert abs(step["level"] - level) < 1e-12 and step["threshold"] > 2.0
    second = project.run("--experiment=use_z", "--exprun-program-alpha=0.05")
    second.stdout.fnmatch_lines(["use_z: NEUTRAL*"])
    step = stored(project, "use_z")["program"]
    assert step["index"] == 2 and step["winners_before"] == 1
    assert abs(step["level"] - program.lond_level(0.05, 2, 1)) < 1e-12
    assert abs(step["threshold"] - program.widened_threshold(step["level"])) < 1e-9
    report = (project.research / "experiment_use_z_1M.md").read_text()
    assert "decision 2 on this baseline under program control" in report
    assert "program-wide false-discovery rate ≤ 0.05" in report
    entry = json.loads((project.research / "verdicts.jsonl").read_text().splitlines()[-1])
    assert entry["program"]["index"] == 2 and entry["program"]["alpha"] == 0.05
    # made again (say after a crash): the same step, the same verdict, nothing runs
    calls = len(project.calls())
    again = project.run("--experiment=use_z", "--exprun-program-alpha=0.05")
    again.stdout.fnmatch_lines(["use_z: NEUTRAL*"])
    assert stored(project, "use_z")["program"] == step and len(project.calls()) == calls


def test_another_program_alpha_on_the_same_baseline_is_refused_in_one_line(project: Project) -> None:
    project.plan({**WIN, **MODEST})
    project.run("--experiment=use_x", "--exprun-program-alpha=0.05")
    result = project.run("--experiment=use_z", "--exprun-program-alpha=0.1")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*made at --exprun-program-alpha=0.05, not 0.1*--exprun-rerun-baseline*"])


def test_without_the_option_each_report_states_the_uncontrolled_rate_so_far(project: Project) -> None:
    project.plan({**WIN, **MODEST})
    project.run("--experiment=use_x")
    project.run("--experiment=use_z")
    first = (project.research / "experiment_use_x_1M.md").read_text()
    second = (project.research / "experiment_use_z_1M.md").read_text()
    one, two = program.uncontrolled_familywise(1), program.uncontrolled_familywise(2)
    assert "decision 1 on this baseline without program-wide control" in first
    assert f"is {one.familywise:.1%}" in first
    assert "decision 2 on this baseline without program-wide control" in second
    assert f"is {two.familywise:.1%}" in second and two.familywise > one.familywise


def test_the_session_says_what_the_experiments_will_cost_before_their_first_run(project: Project) -> None:
    project.plan(WIN)
    result = project.run("--experiment=use_x")
    out = result.stdout.lines
    said = next(i for i, line in enumerate(out) if "the design expects about" in line)
    first = next(i for i, line in enumerate(out) if "use_x[seed42] started" in line)
    last_baseline = max(i for i, line in enumerate(out) if "baseline[seed" in line and "done" in line)
    assert last_baseline < said < first
    line = out[said]
    per_run = float(line.split("× ")[1].split(" expected")[0])
    assert 3.0 < per_run < 5.0  # 3 first seeds, and 2 more whenever the first ones decide neither way
    assert "at the baseline's" in line and " s a run" in line
