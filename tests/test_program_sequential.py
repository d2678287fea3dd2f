"""The sequential mode under a research program: each experiment's design at its own LOND level."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from conftest import Project

from pytest_exprun.decide import program

#: 10 baseline σ better: a WINNER at the first look even at a program's level.
WIN = {"--use_x": {"42": 1.80, "137": 1.81, "256": 1.80, "512": 1.81, "1024": 1.80, "2048": 1.81}}
#: No change: NEUTRAL (futility) whatever the level.
SAME = {"--use_y": {"42": 2.01, "137": 1.99, "256": 2.00, "512": 2.02, "1024": 1.98, "2048": 2.00}}


def stored(project: Project, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.research / f".exprun/results/1M/experiment/{name}.json").read_text())
    return data


@pytest.mark.slow  # calibrates the design at each new level (seconds each)
def test_two_sessions_each_decide_at_their_lond_level_and_the_report_says_so(project: Project) -> None:
    project.plan({**WIN, **SAME})
    first = project.run("--experiment=use_x", "--exprun-decide=sequential", "--exprun-program-alpha=0.05")
    assert first.ret == 0, first.stdout.str()
    first.stdout.fnmatch_lines(["use_x: WINNER*"])
    one = stored(project, "use_x")
    assert one["program"]["index"] == 1 and one["program"]["threshold"] is None
    assert one["sequential"]["alpha"] == one["program"]["level"] == program.lond_level(0.05, 1, 0)
    assert one["sequential"]["design"]["alpha"] == one["program"]["level"]

    second = project.run("--experiment=use_y", "--exprun-decide=sequential", "--exprun-program-alpha=0.05",
                         "--exprun-accept=neutral")
    assert second.ret == 0, second.stdout.str()
    second.stdout.fnmatch_lines(["use_y: NEUTRAL*"])
    two = stored(project, "use_y")
    level = program.lond_level(0.05, 2, 1)  # one WINNER before it: LOND gives budget back
    assert two["program"]["index"] == 2 and two["program"]["winners_before"] == 1
    assert two["program"]["level"] == level and two["sequential"]["alpha"] == level
    assert two["sequential"]["family"] == ["use_y"]  # no step-down on top of the program's control
    assert two["verdict"] == two["sequential"]["decision"] == "NEUTRAL"

    report = (project.research / "experiment_use_y_1M.md").read_text()
    assert "## Verdict: NEUTRAL" in report
    assert f"tested at a false-WINNER level of {level:.2g}" in report
    null = next(row for row in two["sequential"]["rates"] if row["effect"] == 0.0)
    assert f"simulated P(false WINNER) is {null['p_winner']:.3%}" in report
    assert re.search(r"± \d\.\d\d\d% \(200,000 trials; P\(WINNER\) at a true 2σ improvement \d+\.\d%\)", report)
    assert null["p_winner"] <= level + 3 * (level / 200_000) ** 0.5  # the design at the level holds it
    entry = json.loads((project.research / "verdicts.jsonl").read_text().splitlines()[-1])
    assert entry["program"]["level"] == level and entry["verdict"] == "NEUTRAL"


@pytest.mark.slow  # calibrates the design at each new level (seconds each)
def test_experiments_named_together_take_their_steps_in_the_order_named(project: Project) -> None:
    project.plan({**WIN, **SAME})
    result = project.run("--experiment=use_y", "--experiment=use_x", "--exprun-decide=sequential",
                         "--exprun-program-alpha=0.05", "--exprun-accept=neutral")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["use_y: NEUTRAL*", "use_x: WINNER*"])
    y, x = stored(project, "use_y"), stored(project, "use_x")
    assert (y["program"]["index"], x["program"]["index"]) == (1, 2)
    # a WINNER decided in the same session is not counted before the other: a lower level, never a higher one
    assert x["program"]["winners_before"] == 0 and x["sequential"]["alpha"] == program.lond_level(0.05, 2, 0)
    assert x["sequential"]["family"] == ["use_x"] and y["sequential"]["family"] == ["use_y"]


#: A small, precise gain: no bound crossed at the first look, within a margin of 0.05 already.
PRECISE = {"--use_z": {"42": 1.990, "137": 1.991, "256": 1.989, "512": 1.990, "1024": 1.991, "2048": 1.990}}


def test_under_a_program_an_experiment_still_stops_early_as_equivalent(project: Project) -> None:
    project.plan({**WIN, **PRECISE})
    result = project.run("--experiment=use_x", "--experiment=use_z", "--exprun-decide=sequential",
                         "--exprun-program-alpha=0.05", "--exprun-margin=0.05", "--exprun-accept=neutral")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: WINNER*", "use_z: EQUIVALENT*"])
    assert sorted(project.seeds_run(["--use_z"])) == [42, 137]
    z = stored(project, "use_z")
    assert z["program"]["index"] == 2 and z["sequential"]["alpha"] == program.lond_level(0.05, 2, 0)
    assert "stopped as equivalent" in z["sequential"]["reason"] and z["margin"]["alpha"] == 0.05 / 4
