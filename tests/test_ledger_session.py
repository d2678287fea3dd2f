"""The verdict ledger beside the reports and the closing grep line, through real sessions."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from conftest import Project

from pytest_exprun.decide import program
from pytest_exprun.reports import ledger

WIN = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.92}}
SAME = {"--use_y": {"42": 2.00, "137": 2.01, "256": 1.99, "512": 2.00, "1024": 2.00}}


def lines(project: Project) -> list[dict[str, Any]]:
    text = (project.research / "verdicts.jsonl").read_text()
    assert text.endswith("\n")
    return [ledger.read_line(line) for line in text.splitlines()]


def test_each_decision_is_appended_once_across_sessions_and_not_by_a_rerender(project: Project) -> None:
    project.plan({**WIN, **SAME})
    project.run("--experiment=use_x")
    first = lines(project)
    assert [e["experiment"] for e in first] == ["use_x"]
    entry = first[0]
    assert entry["verdict"] == "WINNER" and entry["seeds"] == {"baseline": 5, "experiment": 3}
    assert entry["report"] == "docs/research/experiment_use_x_1M.md" and entry["mode"] == "fixed"
    assert entry["margin"] is None and entry["flags"] == ["--use_x"]
    # an independent check of the numbers: Δ and its Welch 95% interval from the losses themselves
    assert abs(entry["delta"] - (1.91 - 2.00)) < 1e-9
    assert entry["ci"]["low"] < entry["delta"] < entry["ci"]["high"] < 0
    assert entry["seconds"] > 0 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["decided_at"])
    stamp = datetime.fromisoformat(entry["decided_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 3600
    again = project.run("--experiment=use_x")  # same decision, re-rendered: no new line
    assert again.ret == 0
    assert lines(project) == first
    project.run("--experiment=use_y", "--exprun-margin=0.05")
    both = lines(project)
    assert [e["experiment"] for e in both] == ["use_x", "use_y"] and both[0] == first[0]
    assert both[1]["verdict"] == "EQUIVALENT" and both[1]["margin"]["metric_units"] == 0.05
    assert both[1]["baseline"] == both[0]["baseline"]
    # without program control: the n-th decision on the baseline and the uncontrolled rate so far
    assert both[0]["program"]["index"] == 1 and both[1]["program"]["index"] == 2
    assert both[1]["program"]["level"] is None and both[1]["program"]["alpha"] is None
    assert abs(both[0]["program"]["familywise"] - program.fixed_familywise(1)) < 1e-12
    assert abs(both[1]["program"]["familywise"] - program.fixed_familywise(2)) < 1e-12


def test_a_deleted_ledger_is_written_again_from_the_store(project: Project) -> None:
    project.plan({**WIN, **SAME})
    project.run("--experiment=use_x")
    project.run("--experiment=use_y")
    kept = lines(project)
    (project.research / "verdicts.jsonl").unlink()
    project.run("--experiment=use_y")  # nothing new is decided, yet the ledger comes back whole
    assert lines(project) == kept


def test_the_session_ends_with_one_grep_line_per_decision(project: Project) -> None:
    project.plan(WIN)
    result = project.run("--experiment=use_x")
    result.stdout.re_match_lines([r"exprun: use_x WINNER Δ=-0\.0900 \[-0\.\d+, -0\.\d+\] d=-\d+\.\d\d seeds 5\+3 \d+s "
                                  r"→ docs/research/experiment_use_x_1M\.md$"])
    entry = lines(project)[0]
    assert f"[{entry['ci']['low']:+.4f}, {entry['ci']['high']:+.4f}]" in result.stdout.str()


def test_ledger_lines_fit_the_shipped_schema(project: Project) -> None:
    project.plan(WIN)
    project.run("--experiment=use_x")
    for raw in (project.research / "verdicts.jsonl").read_text().splitlines():
        assert ledger.validate(json.loads(raw)) == []
