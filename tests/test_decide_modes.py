"""The sequential decision mode through real pytest sessions with the fake trainer."""

from __future__ import annotations

import json

from conftest import Project

BIG = {"--use_x": {str(s): 1.80 + 0.001 * i for i, s in enumerate((42, 137, 256, 512, 1024, 2048))}}
NOTHING = {"--use_x": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99, "2048": 2.00}}


def test_a_large_effect_is_a_winner_at_the_first_look_and_the_verdict_passes(project: Project) -> None:
    project.plan(BIG)
    result = project.run("--experiment=use_x", "--exprun-decide=sequential")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: WINNER *"])
    assert project.seeds_run(["--use_x"]) == [42, 137]
    data = json.loads((project.research / "experiment_use_x_1M.json").read_text())
    assert data["verdict"] == "WINNER" and [r["seed"] for r in data["runs"]] == [42, 137]
    assert "## Sequential Decision: WINNER at look 1" in (project.research / "experiment_use_x_1M.md").read_text()


def test_no_effect_ends_neutral_and_the_same_command_again_runs_nothing(project: Project) -> None:
    project.plan(NOTHING)
    first = project.run("--experiment=use_x", "--exprun-decide=sequential")
    first.stdout.fnmatch_lines(["use_x: NEUTRAL *"])
    calls = len(project.calls())
    again = project.run("--experiment=use_x", "--exprun-decide=sequential")
    again.stdout.fnmatch_lines(["use_x: NEUTRAL *"])
    assert len(project.calls()) == calls
