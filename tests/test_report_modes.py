"""Each report speaks of the rule that decided it (the 2σ rule, the sequential rule, a project's own),
read from the stored decision; its numbers keep their digits; the metric is called by its name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import QUIET_REWRITE, Project
from test_decide_hook import WELCH_RULE, WIDE

# About 1.2σ better: the sequential rule says CONTINUE until its last look (6 + 6 seeds) and then
# WINNER, while the 2σ rule on the same runs says NEUTRAL and Welch's test rejects.
CLOSE = {"": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99, "2048": 2.00},
         "--use_x": {"42": 1.985, "137": 1.99, "256": 1.975, "512": 1.98, "1024": 1.985, "2048": 1.98}}
#: What only the 2σ rule may say.
TWO_SIGMA_ONLY = ("Significant?", "which is the 2σ rule's", "The 2σ rule at this design", "The 2σ rule says",
                  "--exprun-extension-seeds", "with 3 or 5 experiment runs", "Minimum detectable effect",
                  "Seeds per group for the 2σ rule", "<1σ, noise")


def report(project: Project, name: str = "use_x") -> str:
    return (project.research / f"experiment_{name}_1M.md").read_text()


def twin(project: Project, name: str = "use_x") -> dict:
    return json.loads((project.research / f"experiment_{name}_1M.json").read_text())


def test_a_sequential_winner_the_2_sigma_rule_calls_neutral_speaks_only_of_the_sequential_rule(project: Project) -> None:
    project.plan(CLOSE)
    result = project.run("--experiment=use_x", "--exprun-decide=sequential")
    assert result.ret == 0, result.stdout.str()
    text = report(project)
    assert "## Sequential Decision: WINNER at look 4 of 4" in text
    for said in TWO_SIGMA_ONLY:
        assert said not in text, said
    assert "Neither test is the verdict, which is the sequential rule's." in text
    coverage = re.search(r"covers the true Δ (\d+\.\d)% to (\d+\.\d)% of the time rather than 95%", text)
    assert coverage and 90 < float(coverage[1]) <= float(coverage[2]) < 95
    assert "the 6 runs compared" in text  # the baseline seeds the last look compared, not the configured 5
    assert re.search(r"this sequential design alone would call it WINNER with \d+\.\d% probability", text)
    assert "false-WINNER rate is 2.9" in text and "heavy-tailed" in text  # its own rates, with their noise

    data = twin(project)
    assert data["verdict"] == data["comparison"]["verdict"] == "WINNER" and data["rule"] == "sequential"
    assert "verdict" not in data["evidence"] and data["evidence"]["two_sigma_verdict"] == "NEUTRAL"
    assert data["evidence"]["rates"] == [] and data["evidence"]["false_winner"] is None
    assert data["evidence"]["design"] is None and data["evidence"]["coverage"]["low"] < 0.95
    assert "significance" not in data["comparison"]["val_loss"]

    summary = (project.research / "summary_1M.md").read_text()
    assert "the 2σ rule calls" not in summary
    assert re.search(r"decided together by the sequential rule \(use_x\): .* 2\.\d\d% ± 0\.0\d points", summary)


def test_a_fixed_report_states_its_noise_assumption_and_says_what_each_test_says(project: Project) -> None:
    # 1.2σ better on every seed: the 2σ rule says NEUTRAL, the paired t-test rejects.
    project.plan({"--use_x": {"42": 1.98, "137": 2.00, "256": 1.96, "512": 1.99, "1024": 1.97}})
    result = project.run("--experiment=use_x")
    assert result.ret != 0  # NEUTRAL is not accepted
    text = report(project)
    assert "## Verdict: NEUTRAL" in text
    assert re.search(r"calls a false WINNER 3\.\d% of the time when nothing changed and the seed-to-seed noise is "
                     r"normal \(4\.\d% with heavy-tailed noise, 1\d\.\d% with left-skewed noise", text)
    assert "No (<1σ, noise)" not in text and "<1σ, noise" not in text
    assert "| val_loss | -" in text and "1σ to 2σ" in text
    assert "Neither test is the verdict, which is the 2σ rule's." in text
    assert "with 3 or 5 experiment runs" in text
    data = twin(project)
    assert data["rule"] == "fixed" and data["evidence"]["two_sigma_verdict"] == data["verdict"] == "NEUTRAL"
    assert data["comparison"]["val_loss"]["sigma_distance"] == "1σ to 2σ"
    summary = (project.research / "summary_1M.md").read_text()
    assert "decided by the 2σ rule against one baseline of 5 seeds" in summary


def test_a_projects_own_rule_is_not_dressed_in_the_2_sigma_rules_figures(project: Project) -> None:
    project.plan(WIDE)  # 3.2σ better: the 2σ rule would say WINNER, the project's Welch rule says NEUTRAL
    project.pytester.makeconftest(WELCH_RULE)
    project.run("--experiment=use_x")
    text = report(project)
    assert "## Verdict: NEUTRAL" in text and "Welch's t-test gives p = 0.2" in text
    for said in TWO_SIGMA_ONLY:
        assert said not in text, said
    assert "Neither test is the verdict, which is the project's own rule's." in text
    assert "its error rates are the project's to state" in text
    data = twin(project)
    assert data["rule"] == "own" and data["verdict"] == data["comparison"]["verdict"] == "NEUTRAL"
    assert data["evidence"]["two_sigma_verdict"] == "WINNER"
    summary = (project.research / "summary_1M.md").read_text()
    assert "the 2σ rule calls" not in summary and "decided by the project's own rule" in summary


def test_a_sequential_decision_is_not_redecided_by_the_fixed_rule(project: Project) -> None:
    project.plan({"--use_x": {str(s): 1.80 for s in (42, 137, 256, 512, 1024, 2048)}})
    assert project.run("--experiment=use_x", "--exprun-decide=sequential").ret == 0
    before, calls = report(project), len(project.calls())
    again = project.run("--experiment=use_x")
    assert again.ret == pytest.ExitCode.USAGE_ERROR
    again.stderr.fnmatch_lines(["*use_x was decided by the sequential rule*--exprun-decide=sequential*"])
    assert report(project) == before and len(project.calls()) == calls  # nothing ran, nothing rewritten
    back = project.run("--experiment=use_x", "--exprun-decide=sequential")
    assert back.ret == 0 and report(project) == before


EVAL_TRAINER = r'''
import json, os, sys
seed = str(os.environ["EXPRUN_SEED"])
losses = json.load(open("losses.json"))
loss = losses["better" if "--better" in sys.argv else "base"][seed]
out = os.environ["EXPRUN_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
print(f"step 10 eval {loss + 0.5!r}", flush=True)
print(f"step 20 eval {loss!r}", flush=True)
with open(os.path.join(out, "eval_results.json"), "w") as f:
    json.dump({"eval_loss": loss, "global_step": 20}, f)
'''
BASE = {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99}


def eval_project(pytester: pytest.Pytester, setting: str, better: dict[str, float],
                 base: dict[str, float] = BASE) -> Path:
    (pytester.path / "eval_trainer.py").write_text(EVAL_TRAINER)
    (pytester.path / "losses.json").write_text(json.dumps({"base": base, "better": better}))
    pytester.makeini("[pytest]\nexprun_command = python eval_trainer.py\nexprun_argv = --n 1\n" + setting + "\n")
    return pytester.path / "docs" / "research"


def test_a_tiny_sigma_prints_significant_digits_and_never_minus_zero(pytester: pytest.Pytester) -> None:
    base = {"42": 2.000001, "137": 2.000003, "256": 2.000000, "512": 2.000002, "1024": 1.999999}
    research = eval_project(pytester, "exprun_line_pattern = step (?P<step>\\d+) eval (?P<value>\\S+)",
                            {"42": 2.0000005, "137": 2.0000025, "256": 1.9999995, "512": 2.0000015, "1024": 1.9999985}, base)
    pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=better")
    for path in research.glob("*.md"):
        text = path.read_text()
        assert not re.search(r"[-−+]0\.0+(?![0-9])", text), path.name
    text = (research / "experiment_better_1M.md").read_text()
    assert "| val_loss | 2.0000010 | 0.0000016 |" in text  # mean and σ to 2 significant digits of σ
    assert "Δ val_loss = -0.0000005 " in text


@pytest.mark.parametrize(("setting", "name"), [
    ("exprun_result = eval_results.json:eval_loss", "eval_loss"),
    (r"exprun_line_pattern = step (?P<step>\d+) eval (?P<eval_bpb>\S+)", "eval_bpb"),
])
def test_the_metric_is_named_after_its_key_everywhere(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, setting: str, name: str) -> None:
    research = eval_project(pytester, setting, {seed: value + 0.2 for seed, value in BASE.items()})
    step_summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    # A LOSER: the verdict fails, and its failure shows the verdict's table in the terminal.
    result = pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=better")
    out = result.stdout.str()
    shown = {"report": (research / "experiment_better_1M.md").read_text(),
             "summary": (research / "summary_1M.md").read_text(),
             "baseline": (research / "baseline_variance_1M.md").read_text(),
             "twin": (research / "experiment_better_1M.json").read_text(),
             "step summary": step_summary.read_text(),
             "verdict": out[out.index("better: LOSER"):out.index("report: ")]}
    for where, text in shown.items():
        assert name in text, where
        assert not re.search(r"\bval_loss\b", text), where
    assert json.loads(shown["twin"])["metric"] == name
    assert f"| {name} | 2.0000 |" in shown["report"] and "## Verdict: LOSER" in shown["report"]
