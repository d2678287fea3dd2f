"""What an experiment report says beyond the verdict, checked through real pytest sessions."""

from __future__ import annotations

import json
import shutil
import struct
import sys

import pytest
from scipy import stats as sps

from conftest import BASELINE_LOSSES, Project
from pytest_exprun.decide import evidence, protocol, rates, stats
from pytest_exprun.reports import plots, render as report, statements
from pytest_exprun.decide.curves import learning_curves
from pytest_exprun.decide.stats import summarize

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
LOSER_Y = {"--use_y": {"42": 2.10, "137": 2.11, "256": 2.09}}
BASE = [BASELINE_LOSSES[s] for s in ("42", "137", "256", "512", "1024")]
REQUIRED = ["# Experiment: use_x", "## Baseline Statistics (N=5 runs)", "## Experiment Statistics (N=3 runs)",
            "## Statistical Test", "## Wall Clock", "## Verdict: WINNER", "## Per-Seed Results"]
ADDED = ["## Confidence and Tests (val_loss)", "## Paired Seeds", "## Error Rates", "## Power", "## Learning Curves", "## Plots",
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
    assert "| Test | Statistic | p-value (two-sided) | Holm-adjusted p (two-sided) |" in text
    assert f"| Welch's t-test | {welch.statistic:+.2f} | {welch.pvalue:.1e} | {welch.pvalue:.1e} |" in text
    ci = welch.confidence_interval(0.95)
    assert f"95% confidence interval of Δ val_loss (experiment − baseline, Welch t-interval): [{ci.low:+.4f}, {ci.high:+.4f}]" in text
    assert "covering the true Δ only 83% of the time at 5 vs 3 runs" in text
    assert f"| Mann–Whitney U | 0.00 | {2 / 56:.4f} | |" in text
    paired = sps.ttest_rel(exp, BASE[:3])
    assert f"- Paired t-test (two-sided): p = {paired.pvalue:.4f}" in text
    assert "| 137 | 2.0200 | 1.9100 | -0.1100 |" in text
    assert "- Did pairing help? Yes: a seed's baseline and experiment values correlate (r = 1.00" in text
    mde = rates.design_mde() * 0.0158113883
    assert (f"Minimum detectable effect of this design, as run (two-stage): a true improvement of {mde:.4f} in "
            "val_loss (2.53σ) is called WINNER with 80% probability") in text
    assert "| 0 | 3.0% | 3.0% | 4.90 |" in text and "| 2 | 61.8% | 0.0% | 3.89 |" in text
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
    assert data["evidence"]["interval"]["method"] == "Welch t-interval"
    assert data["evidence"]["rates"][0]["p_winner"] == pytest.approx(0.0305, abs=0.002)
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
        assert "over its family: the 2 experiments at this scale judged against this baseline" in text
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
    result.stdout.fnmatch_lines(["*control run (seed 42, no experiment flags): *val_loss 2.0500 is +3.16σ from the "
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


def test_fewer_than_three_baseline_seeds_are_refused_with_the_option_to_allow_them(project: Project) -> None:
    result = project.run("-m", "baseline", "--exprun-baseline-seeds=42,137")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--exprun-baseline-seeds has 2 seeds*false WINNER about 15%*"
                                 "--exprun-allow-small-baseline*"])
    assert "Traceback" not in result.stderr.str()


def test_an_allowed_small_baseline_states_its_false_winner_rate(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x", "--exprun-baseline-seeds=42,137", "--exprun-allow-small-baseline")
    text = (project.research / "experiment_use_x_1M.md").read_text()
    two = rates.fixed_rule_rates(n_baseline=2, effects=(0.0,))[0].p_winner
    assert f"**Small baseline: only 2 seeds (allowed by --exprun-allow-small-baseline), so the rule's false-WINNER rate is {two:.1%}" in text


# ------------------------------------------------ the template alone, from a context built here
#: The shipped example's runs: NEUTRAL under the 2σ rule, paired t-test p = 0.0066, all five seeds worse.
SHIPPED_BASE = {42: 2.0083, 137: 1.9977, 256: 1.9911, 512: 1.9834, 1024: 2.0623}
SHIPPED_EXP = {42: 2.0432, 137: 2.0739, 256: 2.0179, 512: 2.02, 1024: 2.1125}


def old_explanation(cmp: protocol.Comparison) -> str:
    """What the session writes today, before it builds the sentence with evidence.explain_verdict."""
    bm, em, margin = cmp.val_loss.baseline.mean, cmp.val_loss.experiment.mean, 2 * cmp.val_loss.baseline.std
    if cmp.verdict is protocol.Verdict.NEUTRAL:
        return (f"The experiment's mean val_loss {em:.4f} lies within the baseline's {bm:.4f} ± 2σ = "
                f"[{bm - margin:.4f}, {bm + margin:.4f}]: not distinguishable from noise.")
    return f"The experiment's mean val_loss {em:.4f} is beyond the baseline's 2σ."


def render_experiment(base: dict[int, float], exp: dict[int, float], **extra: object) -> str:
    b, e = summarize(list(base.values())), summarize(list(exp.values()))
    cmp = protocol.compare(b, e, summarize([30.0] * len(base)), summarize([30.0] * len(exp)))
    ev = evidence.evaluate(base, exp, b, e)
    curves = learning_curves([], [], 1_000_000, b.mean)
    context = {
        "name": "use_z", "flags": ["--use_z"], "scale": "1M", "train_tokens": 1_000_000,
        "baseline_report": "baseline_variance_1M.md", "cmp": cmp, "speed": "0.0% faster",
        "explanation": old_explanation(cmp), "seed_rows": [], "ev": ev,
        "paired_rows": [], "holm_family": [], "holm_p": ev.welch.p_value, "curves": curves, "curve_rows": [],
        "plots": plots.PlotSet((), "none drawn here"), "json_file": "x.json", "summary_file": "summary_1M.md",
        "setup": {"command": ["python", "t.py"], "fingerprint": {"files": {}, "versions": {}, "notes": []}}, "git_commit": None, "measured_at": "now",
        "rule": "fixed", "metric": "val_loss", "digits": 4,
        "bands": {m.metric: statements.band_text(m) for m in (cmp.val_loss, cmp.wall_time)},
        **extra,
    }
    return report.render("experiment.md.j2", context)


def test_a_neutral_whose_paired_test_rejects_is_no_longer_called_noise() -> None:
    text = render_experiment(SHIPPED_BASE, SHIPPED_EXP)
    assert "## Verdict: NEUTRAL" in text
    assert "not distinguishable from noise" not in text
    assert "**The 2σ rule says NEUTRAL, but paired t-test (p = 0.0066, two-sided) rejects no difference at 5%" in text
    assert "were it the true effect, this design would call it LOSER with " in text
    assert "probably higher" in text and "run more seeds" in text
    # The post hoc seeds figure is the paired test's, not 87 seeds of an unpaired one.
    assert "for a two-sided paired t-test at α = 0.05" in text
    assert "no number of seeds gives it" not in text


def test_a_neutral_with_welch_p_below_five_percent_says_so() -> None:
    base = {42: 2.00, 137: 2.05, 256: 1.95, 512: 2.03, 1024: 1.97}
    exp = {42: 1.944, 137: 1.936, 256: 1.950, 512: 1.941, 1024: 1.939}
    welch = sps.ttest_ind(list(exp.values()), list(base.values()), equal_var=False)
    assert 0.01 < welch.pvalue < 0.05
    text = render_experiment(base, exp)
    assert "## Verdict: NEUTRAL" in text and "not distinguishable from noise" not in text
    assert f"Welch's t-test (p = {welch.pvalue:.4f}, two-sided; 95% interval of Δ" in text


def test_a_neutral_the_tests_agree_with_keeps_its_plain_sentence() -> None:
    base = {42: 2.00, 137: 2.02, 256: 1.98, 512: 2.01, 1024: 1.99}
    exp = {42: 2.01, 137: 1.99, 256: 2.005, 512: 2.00, 1024: 1.995}
    text = render_experiment(base, exp)
    assert "not distinguishable from noise." in text and "**The 2σ rule says" not in text


def test_an_a_a_run_says_the_flag_changed_nothing_instead_of_pairing_helped() -> None:
    text = render_experiment(SHIPPED_BASE, dict(SHIPPED_BASE))
    assert "Did pairing help? Yes" not in text and "ratio 0.00" not in text
    assert "- Did pairing help? The flag changed nothing: every shared seed gave exactly the same val_loss" in text
    assert "**Every experiment seed gave exactly its baseline seed's val_loss: the flag changed nothing" in text


def test_pairing_is_not_claimed_from_the_variance_ratio_alone() -> None:
    base = {1: 2.00, 2: 2.02, 3: 1.98, 4: 2.01, 5: 1.99}
    exp = {1: 2.005, 2: 2.01, 3: 1.99, 4: 1.99, 5: 2.003}  # ratio 0.59, r = 0.47 (p = 0.43)
    paired = stats.paired_seeds(base, exp)
    assert paired.variance_ratio is not None and paired.variance_ratio < 1 and paired.helped is False
    text = render_experiment(base, exp)
    assert "- Did pairing help? Not shown: the correlation of a seed's baseline and experiment values is r = " in text


def test_every_p_value_is_labelled_two_sided_and_every_sign_explained() -> None:
    text = render_experiment(SHIPPED_BASE, SHIPPED_EXP)
    assert "p-value (two-sided)" in text and "Holm-adjusted p (two-sided)" in text
    assert "- Paired t-test (two-sided): p = 0.0066" in text and "Wilcoxon signed-rank (two-sided)" in text
    assert "negative means lower val_loss (better)" in text
    assert "Welch's t is (mean_exp − mean_base) / its standard error" in text and "Mann–Whitney's U counts" in text
    for line in text.splitlines():
        if " p = " in line or "p-value" in line:
            assert "two-sided" in line, line


def test_the_report_states_sigma_uncertainty_and_labels_post_hoc_figures() -> None:
    text = render_experiment(SHIPPED_BASE, SHIPPED_EXP)
    sigma = stats.std_interval(summarize(list(SHIPPED_BASE.values())).std, 5)
    assert f"its 95% interval (chi-square, 4 df) is [{sigma.low:.4f}, {sigma.high:.4f}]" in text
    assert "Post hoc, from the observed effect (which early stopping inflates" in text
    assert "calls a false WINNER 3.0% of the time when nothing changed" in text


def test_the_control_section_states_its_rule_and_false_alarm_rate() -> None:
    b = summarize(list(SHIPPED_BASE.values()))
    passed = protocol.check_control(b, 2.0083, stored_same_seed=2.0083)
    text = render_experiment(SHIPPED_BASE, SHIPPED_EXP, control=passed)
    assert "## Control Run\n\nPassed (reproduction rule, false alarm 0% when nothing changed): val_loss 2.0083 reproduces" in text
    failed = protocol.check_control(b, 2.2, stored_same_seed=2.0083)
    text = render_experiment(SHIPPED_BASE, SHIPPED_EXP, control=failed)
    assert "Failed (prediction interval rule, false alarm 5% when nothing changed): val_loss 2.2000 is " in text
    assert "## Control Run" not in render_experiment(SHIPPED_BASE, SHIPPED_EXP)


def test_summary_states_the_familywise_false_winner_rate_of_its_holm_family() -> None:
    base = list(BASELINE_LOSSES.values())
    ranked = protocol.rank_experiments([
        (f"e{i}", "NEUTRAL", base, [2.0 + i / 1000, 2.01, 1.99], f"e{i}.md") for i in range(5)
    ])
    families = statements.family_statements(ranked, {r.name: "fixed" for r in ranked}, {}, 3, 2)
    text = report.render("summary.md.j2", {"scale": "1M", "ranked": ranked, "families": families, "measured_at": "now",
                                           "metric": "val_loss"})
    rate = families[0]["statements"][0]["false_winner"]
    assert (f"5 experiments decided by the 2σ rule against one baseline of 5 seeds: when no flag changes anything, "
            f"the 2σ rule calls at least one false WINNER among them {rate:.1%} of the time") in text
    assert rate == pytest.approx(0.094, abs=0.004)
    assert "| Welch p (two-sided) | Holm-adjusted p |" in text
    assert "the experiments judged against the same baseline, the same family as in each experiment report" in text
