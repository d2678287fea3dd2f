"""The sequential decision mode through real pytest sessions with the fake trainer."""

from __future__ import annotations

import json
import os
import signal

from conftest import Project, pid_alive, wait_for

BIG = {"--use_x": {str(s): 1.80 + 0.001 * i for i, s in enumerate((42, 137, 256, 512, 1024, 2048))}}
NOTHING = {"--use_x": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99, "2048": 2.00}}
# About 1.5 sigma better: every look before the last says CONTINUE, the last (6 + 6 seeds) WINNER.
CLOSE = {"": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99, "2048": 2.00},
         "--use_x": {"42": 1.985, "137": 1.99, "256": 1.975, "512": 1.98, "1024": 1.985, "2048": 1.98}}


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


def test_a_session_killed_between_looks_resumes_at_that_look_and_runs_no_seed_twice(project: Project) -> None:
    project.plan(CLOSE)
    project.run("-m", "baseline").assert_outcomes(passed=5)
    # Looks 1 and 2 (seeds 42, 137, 256) finish with CONTINUE; look 3's first seed never ends.
    project.plan(CLOSE, behaviour={"--use_x 512": "hang"})
    proc = project.popen("--experiment=use_x", "--exprun-decide=sequential")
    victim = wait_for(lambda: [s["pid"] for s in project.started() if s["flags"] == ["--use_x"] and s["seed"] == 512],
                      what="look 3's first run to start")[0]
    proc.send_signal(signal.SIGKILL)  # no clean-up of any kind: as if the machine went away
    proc.wait(timeout=30)
    os.killpg(victim, signal.SIGKILL)
    wait_for(lambda: not pid_alive(victim), what="the orphaned trainer to end")
    assert project.seeds_run(["--use_x"]) == [42, 137, 256]
    assert not (project.research / "experiment_use_x_1M.md").exists()

    project.plan(CLOSE)
    result = project.run("--experiment=use_x", "--exprun-decide=sequential")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["use_x: WINNER *"])
    assert project.seeds_run(["--use_x"]) == [42, 137, 256, 512, 1024, 2048]  # each seed once, in look order
    assert project.seeds_run() == [42, 137, 256, 512, 1024, 2048]  # the last look's extra baseline seed, once
    report = (project.research / "experiment_use_x_1M.md").read_text()
    assert "## Sequential Decision: WINNER at look 4" in report
