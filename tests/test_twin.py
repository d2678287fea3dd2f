"""The JSON twin carries every value its report states: each run's CPU time, GPU time and
throughput, the wall-time test and the loaded-machine rule, the margin's test and the
decision's step in its program; checked against the report's own text."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import QUIET_REWRITE, Project

#: A trainer that reports its GPU time and throughput in metrics.json, as train_llm.py does on a GPU.
GPU_TRAINER = r'''
import json, os, sys
seed = int(os.environ["EXPRUN_SEED"])
loss = {42: 2.00, 137: 2.02, 256: 1.98, 512: 2.01, 1024: 1.99}[seed] - (0.1 if "--better" in sys.argv else 0.0)
out = os.environ["EXPRUN_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
print(f"Step 10 | val_loss: {loss + 0.5} | train_loss: 3.0", flush=True)
print(f"Step 20 | val_loss: {loss} | train_loss: 2.5", flush=True)
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"gpu_time_s": 1.5 + seed / 10000, "tokens_per_second": 1000.0 + seed}, f)
'''


def twin_and_report(research: Path, name: str) -> tuple[dict[str, Any], str]:
    return (json.loads((research / f"experiment_{name}_1M.json").read_text()),
            (research / f"experiment_{name}_1M.md").read_text())


def cell(report: str, row: str) -> list[str]:
    """The cells after a table row's label."""
    line = next(line for line in report.splitlines() if line.startswith(f"| {row} |"))
    return [c.strip() for c in line.split("|")[2:-1]]


def test_a_default_twin_holds_each_runs_timings_and_the_wall_time_test(pytester: pytest.Pytester) -> None:
    (pytester.path / "gpu_trainer.py").write_text(GPU_TRAINER)
    pytester.makeini("[pytest]\nexprun_command = python gpu_trainer.py\nexprun_argv = --n 1\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=better")
    assert result.ret == 0, result.stdout.str()
    twin, report = twin_and_report(pytester.path / "docs" / "research", "better")

    for group, runs in (("baseline", twin["baseline_runs"]), ("experiment", twin["runs"])):
        for run in runs:
            assert run["gpu_time"] == 1.5 + run["seed"] / 10000
            assert run["tokens_per_second"] == 1000.0 + run["seed"]
            assert run["cpu_time"] is not None and run["cpu_time"] > 0
        wall = twin["wall_clock"][group]
        assert wall["gpu"]["mean"] == pytest.approx(sum(r["gpu_time"] for r in runs) / len(runs))
        assert wall["cpu"]["mean"] == pytest.approx(sum(r["cpu_time"] for r in runs) / len(runs))
    base, exp = twin["wall_clock"]["baseline"], twin["wall_clock"]["experiment"]
    assert cell(report, "GPU time (s), mean ± std") == [f"{base['gpu']['mean']:.2f} ± {base['gpu']['std']:.2f}",
                                                        f"{exp['gpu']['mean']:.2f} ± {exp['gpu']['std']:.2f}"]
    assert cell(report, "CPU time (s), mean ± std") == [f"{base['cpu']['mean']:.2f} ± {base['cpu']['std']:.2f}",
                                                        f"{exp['cpu']['mean']:.2f} ± {exp['cpu']['std']:.2f}"]
    assert cell(report, "throughput (tokens/s), min to max") == [
        f"{base['speed']['min']:,.0f} to {base['speed']['max']:,.0f}", f"{exp['speed']['min']:,.0f} to {exp['speed']['max']:,.0f}"]

    test = twin["wall_clock"]["test"]
    assert f"Experiment vs baseline wall time: {test['finding']}." in report
    assert f"p = {test['p_value']:.3g}" in test["finding"] and f"α = {test['alpha']:g}" in test["finding"]
    low, high = re.search(r"95% interval (\S+% \w+) to (\S+% \w+)", test["finding"]).groups()  # type: ignore[union-attr]
    assert low == describe(test["low"]) and high == describe(test["high"])
    loaded = twin["wall_clock"]["loaded_machine"]
    assert loaded["fraction"] == 0.7 and "0.7x its group's median throughput" in loaded["rule"]
    # No throughput is far below its group's median; a busy machine may still slow a run's CPU use.
    assert not [r for r in loaded["runs"] if "throughput" in r["why"]]
    if loaded["loaded"]:
        assert loaded["why"].replace("the wall-clock comparison cannot be trusted: ", "") in report
        assert f"{loaded['runs'][0]['group']}[seed{loaded['runs'][0]['seed']}] {loaded['runs'][0]['why']}" in report
    else:
        assert loaded["runs"] == [] and loaded["why"] is None and loaded["trusted"] is True
        assert "No run looks slowed by a loaded machine" in report and "Not to be trusted" not in report
    assert twin["margin"] is None and twin["program"] is not None and twin["program"]["step"] is None
    assert f"{twin['program']['uncontrolled_familywise']:.1%}" in report


def describe(ratio: float) -> str:
    return f"{(1 - ratio) * 100:.1f}% faster" if ratio <= 1 else f"{(ratio - 1) * 100:.1f}% slower"


def test_a_loaded_machine_is_flagged_in_the_twin_with_the_reports_reason() -> None:
    from pytest_exprun.decide import wall_time
    from pytest_exprun.reports.statements import twin_wall_clock

    timings = [wall_time.Timing(s, 10.0, None, 1000.0) for s in (1, 2, 3)]
    slow = [wall_time.Timing(1, 10.0, None, 1000.0), wall_time.Timing(2, 20.0, None, 500.0),
            wall_time.Timing(3, 10.0, None, 1000.0)]
    test = wall_time.compare(timings, slow)
    twin = twin_wall_clock({"baseline": {}, "experiment": {}, "test": test, "finding": test.finding(),
                            "distrust": test.distrust(), "loaded_fraction": wall_time.LOADED_FRACTION})
    loaded = twin["loaded_machine"]
    assert loaded["loaded"] is True and loaded["trusted"] is False
    assert loaded["runs"] == [{"group": "experiment", "seed": 2, "why": "ran at 0.50x its group's median throughput"}]
    assert loaded["why"] == test.distrust()


#: No change on average, but noisy: INCONCLUSIVE at a margin of 0.05, with seeds that would settle it.
NOISY = {"--use_x": {"42": 2.06, "137": 1.94, "256": 2.00, "512": 2.06, "1024": 1.94}}


def test_a_margin_and_program_twin_states_the_tost_and_the_lond_step_of_the_report(project: Project) -> None:
    project.plan(NOISY)
    result = project.run("--experiment=use_x", "--exprun-margin=0.05", "--exprun-program-alpha=0.05")
    result.stdout.fnmatch_lines(["use_x: INCONCLUSIVE*"])
    twin, report = twin_and_report(project.research, "use_x")
    margin, step = twin["margin"], twin["program"]["step"]
    assert twin["verdict"] == "INCONCLUSIVE" and margin["rule_verdict"] == "NEUTRAL"
    assert f"**Margin ±{margin['metric_units']:.4f}** ({margin['value']:g})" in report
    assert (f"at α = {margin['alpha']} each (the {100 - 200 * margin['alpha']:.0f}% interval of Δ is "
            f"[{margin['low']:+.4f}, {margin['high']:+.4f}], p = {margin['p_value']:.3g})") in report
    assert margin["settle_command"].startswith("pytest --experiment=use_x ")
    assert f"To settle it: `{margin['settle_command']}` ({margin['settle_note']};" in report
    assert step["index"] == 1 and step["winners_before"] == 0 and step["alpha"] == 0.05
    assert f"tested at a false-WINNER level of {step['level']:.2g} (LOND" in report
    assert f"**In the program:** {twin['program']['statement']}." in report
    assert twin["program"]["uncontrolled_familywise"] is None
    cost = twin["program"]["cost"]
    assert f"**Cost:** {cost['runs']} runs, {cost['seconds']:.1f} s of training" in report
