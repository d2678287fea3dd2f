"""A trainer whose value is ``eval_loss`` (a result file's key) never meets the word val_loss:
not in a report, its JSON twin's keys, the figures' names and titles, JUnit XML, the terminal,
nor ``--exprun-status``. The default metric keeps its name and its file names."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import QUIET_REWRITE
from test_report_modes import BASE, eval_project

#: val_loss as a word of its own, not the tail of eval_loss.
VAL_LOSS = re.compile(r"(?<![A-Za-z])val_loss")


def keys_and_strings(data: Any) -> Iterator[str]:
    """Every key and string value of a JSON document."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield str(key)
            yield from keys_and_strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from keys_and_strings(value)
    elif isinstance(data, str):
        yield data


def test_a_result_files_metric_is_named_in_every_file_and_line(pytester: pytest.Pytester, with_plots: None,
                                                                tmp_path: Path) -> None:
    research = eval_project(pytester, "exprun_result = eval_results.json:eval_loss",
                            {seed: value + 0.2 for seed, value in BASE.items()})
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=better", "--exprun-control",
                                f"--junitxml={junit}", "-rA")
    result.assert_outcomes(passed=9, failed=1, skipped=2)  # a LOSER fails its verdict test

    out = result.stdout.str()
    assert "eval_loss" in out and not VAL_LOSS.search(out), out
    for path in research.iterdir():  # reports, twin, figures, ledger
        assert not VAL_LOSS.search(path.name), path.name
        if path.suffix in (".md", ".json", ".jsonl"):
            assert not VAL_LOSS.search(path.read_text()), path.name
    pngs = sorted(p.name for p in research.glob("*.png"))
    assert pngs == ["experiment_better_1M_curves.png", "experiment_better_1M_eval_loss.png",
                    "experiment_better_1M_wall_time.png", "summary_1M_forest.png"]
    report = (research / "experiment_better_1M.md").read_text()
    assert "![eval_loss per seed](experiment_better_1M_eval_loss.png)" in report
    assert "![Δ eval_loss of every experiment" in (research / "summary_1M.md").read_text()
    twin = json.loads((research / "experiment_better_1M.json").read_text())
    assert not [s for s in keys_and_strings(twin) if VAL_LOSS.search(s)]
    assert twin["plots"][0] == "experiment_better_1M_eval_loss.png"
    assert twin["runs"][0]["eval_loss"] == pytest.approx(2.2)

    properties = [(p.get("name"), p.get("value")) for p in ET.parse(junit).iter("property")]
    assert ("eval_loss", "2.000000") in properties and ("eval_loss", "2.200000") in properties
    assert not [name for name, _ in properties if VAL_LOSS.search(str(name))]
    assert not VAL_LOSS.search(junit.read_text())

    status = pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--exprun-status")
    assert "eval_loss 2.0000" in status.stdout.str() and not VAL_LOSS.search(status.stdout.str())


@pytest.mark.slow
def test_a_report_of_another_metric_drawn_under_the_old_name_is_drawn_again(pytester: pytest.Pytester,
                                                                             with_plots: None) -> None:
    """Reports written before the figures were named after the metric: the old per-seed figure
    is replaced by one named after the metric, and the report links the new one."""
    research = eval_project(pytester, "exprun_result = eval_results.json:eval_loss",
                            {seed: value - 0.2 for seed, value in BASE.items()})
    assert pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=better").ret == 0
    new = research / "experiment_better_1M_eval_loss.png"
    new.rename(research / "experiment_better_1M_val_loss.png")  # as an earlier version named it
    assert pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=better").ret == 0
    assert new.is_file() and not (research / "experiment_better_1M_val_loss.png").exists()
    assert "(experiment_better_1M_eval_loss.png)" in (research / "experiment_better_1M.md").read_text()


def test_the_default_metric_keeps_its_figure_names(tmp_path: Path, with_plots: None) -> None:
    from pytest_exprun.reports import plots

    assert plots.figures()[0] == ("val_loss", "val_loss per seed")
    assert plots.metric_suffix("eval/loss bits") == "eval_loss_bits"
    assert plots.metric_suffix("wall_time") == "metric_wall_time"  # never another figure's file


def test_the_control_message_names_the_metric() -> None:
    from pytest_exprun.decide import protocol
    from pytest_exprun.decide.stats import summarize

    base = summarize(list(BASE.values()))
    assert protocol.check_control(base, 2.5, metric="eval_bpb").message.startswith("eval_bpb 2.5000 is ")
    assert protocol.check_control(base, 2.0, 2.0, metric="eval_bpb").message.startswith("eval_bpb 2.0000 reproduces")
