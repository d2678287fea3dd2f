"""What an experiment report says beyond the verdict, checked through real pytest sessions."""

from __future__ import annotations

import json
import shutil
import struct
import sys

import pytest
from scipy import stats as sps

from conftest import BASELINE_LOSSES, Project
from pytest_exprun import protocol, rates, stats

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
LOSER_Y = {"--use_y": {"42": 2.10, "137": 2.11, "256": 2.09}}
BASE = [BASELINE_LOSSES[s] for s in ("42", "137", "256", "512", "1024")]
REQUIRED = ["# Experiment: use_x", "## Baseline Statistics (N=5 runs)", "## Experiment Statistics (N=3 runs)",
            "## Statistical Test", "## Wall Clock", "## Verdict: WINNER", "## Per-Seed Results"]
ADDED = ["## Confidence and Tests (val_loss)", "## Paired Seeds", "## Power", "## Learning Curves", "## Plots",
         "## Machine-Readable Results", "## Measured With"]


def shown_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def headings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def png_size(path) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_new_sections_follow_the_required_ones(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    text = (project.research / "experiment_use_x_1M.md").read_text()
    assert headings(text) == REQUIRED + ADDED


def test_report_numbers_match_scipy(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x")
    text = (project.research / "experiment_use_x_1M.md").read_text()
    exp = [1.90, 1.91, 1.89]
    welch = sps.ttest_ind(exp, BASE, equal_var=False)
    assert welch.pvalue < 1e-4  # shown in scientific notation
    assert f"| Welch's t-test | {welch.statistic:+.2f} | {welch.pvalue:.1e} | {welch.pvalue:.1e} |" in text
    assert f"| Mann–Whitney U | 0.00 | {2 / 56:.4f} | |" in text
    paired = sps.ttest_rel(exp, BASE[:3])
    assert f"- Paired t-test: p = {paired.pvalue:.4f}" in text
    assert "| 137 | 2.0200 | 1.9100 | -0.1100 |" in text
    assert "- Did pairing help? Yes: Var(paired differences) = 0.000100 vs. Var(baseline) + Var(experiment) = 0.000500" in text
    mde = rates.minimum_detectable_effect(0.0158113883, 5, 3)
    assert f"a true improvement of {mde:.4f} in val_loss (2.72σ) is called WINNER with 80% probability" in text
    # Curves end at 1.90 for the experiment: its mean is 1.95 at step 40, below the baseline's 2.00.
    assert "| 50 | 1,000,000 | 2.0000 ± 0.0158 | 1.9000 ± 0.0100 |" in text
    assert "at step 40, about 800,000 tokens (80% of the 1,000,000-token budget)" in text


def test_json_next_to_the_report_holds_every_number(project: Project, with_plots: None) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x")
    data = json.loads((project.research / "experiment_use_x_1M.json").read_text())
    assert data["verdict"] == "WINNER" and data["accepted"] is True
    assert [r["seed"] for r in data["runs"]] == [42, 137, 256]
    assert data["runs"][1]["val_loss"] == 1.91 and data["runs"][1]["curve"][-1] == [50, 1.91]
    assert data["comparison"]["val_loss"]["baseline"]["std"] == pytest.approx(0.0158113883)
    assert data["evidence"]["welch"]["p_value"] == pytest.approx(sps.ttest_ind([1.90, 1.91, 1.89], BASE, equal_var=False).pvalue)
    assert data["evidence"]["paired"]["wilcoxon"]["p_value"] is None
    assert data["evidence"]["bootstrap"]["low"] < -0.1 < data["evidence"]["bootstrap"]["high"]
    assert data["evidence"]["power"]["minimum_detectable_effect"] > 0
    assert data["learning_curves"]["to_target"]["step"] == 40
    assert len(data["learning_curves"]["points"]) == 5
    assert data["plots"] == ["experiment_use_x_1M_val_loss.png", "experiment_use_x_1M_curves.png",
                             "experiment_use_x_1M_wall_time.png"]


def test_plots_are_written_next_to_the_report_and_linked(project: Project, with_plots: None) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x")
    text = (project.research / "experiment_use_x_1M.md").read_text()
    for suffix in ("val_loss", "curves", "wall_time"):
        png = project.research / f"experiment_use_x_1M_{suffix}.png"
        assert png.stat().st_size > 10_000
        assert png_size(png) == (800, 450)
        assert f"({png.name})" in text


def test_without_matplotlib_the_report_says_how_to_get_plots(
    project: Project, monkeypatch: pytest.MonkeyPatch, with_plots: None
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    text = (project.research / "experiment_use_x_1M.md").read_text()
    assert "No plots: matplotlib is not installed; `pip install 'pytest-exprun[plots]'`" in text
    assert list(project.research.glob("*.png")) == []
    assert "## Learning Curves" in text and (project.research / "experiment_use_x_1M.json").exists()


def test_several_experiments_get_holm_adjusted_p_values(project: Project) -> None:
    project.plan({**WINNER, **LOSER_Y})
    project.run("--experiment=use_x", "--experiment=use_y")
    raw = [sps.ttest_ind(e, BASE, equal_var=False).pvalue for e in ([1.90, 1.91, 1.89], [2.10, 2.11, 2.09])]
    adjusted = stats.holm_adjust(raw)
    for name in ("use_x", "use_y"):
        text = (project.research / f"experiment_{name}_1M.md").read_text()
        assert "over the 2 experiments judged in this session" in text
        assert f"| use_x | {shown_p(raw[0])} | {shown_p(adjusted[0])} |" in text.replace("**", "")
        assert f"| use_y | {shown_p(raw[1])} | {shown_p(adjusted[1])} |" in text.replace("**", "")
        data = json.loads((project.research / f"experiment_{name}_1M.json").read_text())
        assert data["holm"]["welch_p_adjusted"] == pytest.approx(adjusted[name == "use_y"])


def test_summary_ranks_experiments_from_earlier_sessions_too(project: Project) -> None:
    project.plan({**WINNER, **LOSER_Y, "--use_z": {"42": 1.95, "137": 1.96, "256": 1.94}})
    project.run("--experiment=use_y")
    project.run("--experiment=use_x")
    project.run("--experiment=use_z")
    text = (project.research / "summary_1M.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1] for row in rows] == ["use_x", "use_z", "use_y"]
    assert rows[0].startswith("| 1 | use_x | WINNER | -0.1000 | -6.32 |")
    assert "[experiment_use_y_1M.md](experiment_use_y_1M.md)" in rows[2]


def test_baseline_without_its_records_is_measured_again_not_rebuilt_from_its_report(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    shutil.rmtree(project.research / ".exprun" / "runs" / "1M" / "baseline")
    project.plan(WINNER)
    project.run("--experiment=use_x").assert_outcomes(passed=9, skipped=2)
    assert project.seeds_run() == [42, 137, 256, 512, 1024] * 2
    text = (project.research / "experiment_use_x_1M.md").read_text()
    assert "| 50 | 1,000,000 | 2.0000 ± 0.0158 | 1.9000 ± 0.0100 |" in text


def test_control_run_passes_when_the_baseline_still_matches(project: Project) -> None:
    project.plan(WINNER)
    result = project.run("--experiment=use_x", "--exprun-control", "-v")
    result.assert_outcomes(passed=10, skipped=2)
    result.stdout.fnmatch_lines(["*exprun::control[[]seed42[]] PASSED*"])
    assert list((project.research / ".exprun" / "runs" / "1M" / "control").glob("*/seed42.json"))
    assert project.seeds_run() == [42, 137, 256, 512, 1024, 42]


def test_control_run_fails_when_the_code_no_longer_gives_the_baseline(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    project.plan({"": {**BASELINE_LOSSES, "42": 2.05}})
    result = project.run("-m", "experiment", "--exprun-control")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*control run (seed 42, no experiment flags) gave val_loss 2.0500, +3.16σ from the "
                                 "baseline mean 2.0000 ± 0.0158*--exprun-rerun-baseline*"])
    # The baseline's own record for seed 42 is untouched.
    (record,) = (project.research / ".exprun" / "runs" / "1M" / "baseline").glob("*/seed42.json")
    assert json.loads(record.read_text())["val_loss"] == 2.0


def test_verdict_is_appended_to_the_github_step_summary(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = project.path / "step_summary.md"
    summary.write_text("# Earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.plan({**WINNER, **LOSER_Y})
    project.run("--experiment=use_x", "--experiment=use_y")
    text = summary.read_text()
    assert text.startswith("# Earlier step\n")
    assert "### exprun: use_x — WINNER (accepted)" in text and "### exprun: use_y — LOSER" in text
    assert "| val_loss | 2.0000 ± 0.0158 | 1.9000 ± 0.0100 |" in text


def test_junit_has_val_loss_and_wall_time_per_seed(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x", "--exprun-control", "--junitxml=out.xml")
    xml = (project.path / "out.xml").read_text()
    assert xml.count('<property name="val_loss"') == 9  # 5 baseline, control, 3 experiment
    assert xml.count('<property name="wall_time"') == 9
    assert 'name="control[seed42]"' in xml
