"""The ledger's lines: every field the shipped schema requires is produced, and the small
validator refuses what the schema refuses."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pytest_exprun.reports.ledger import (
    LEDGER_NAME,
    LedgerEntry,
    LedgerError,
    MarginEntry,
    ProgramEntry,
    read_line,
    schema,
    to_json_line,
    validate,
)

WHEN = datetime(2026, 12, 4, 21, 30, 5, tzinfo=timezone.utc)


def _entry(**changes: object) -> LedgerEntry:
    fields: dict[str, object] = {
        "experiment": "use_qk_norm", "flags": ("--use_qk_norm",), "verdict": "EQUIVALENT", "delta": -0.0021,
        "ci": (-0.0102, 0.0060), "d": -0.31, "baseline_seeds": 5, "experiment_seeds": 5, "mode": "fixed",
        "margin": MarginEntry(0.5, "sigma", 0.0079), "baseline": "ab12cd34",
        "report": "docs/research/experiment_use_qk_norm_1M.md", "seconds": 1234.5, "decided_at": WHEN,
        "program": ProgramEntry(3, 0.0026, 0.05, None)}
    fields.update(changes)
    return LedgerEntry(**fields)  # type: ignore[arg-type]


def _missing(obj: object, node: dict, where: str = "") -> set[str]:  # type: ignore[type-arg]
    """Required names (dotted) absent where their parent object is present; null parents need nothing."""
    if not isinstance(obj, dict):
        return set()
    missing = {f"{where}{name}" for name in node.get("required", ()) if name not in obj}
    for name, child in node.get("properties", {}).items():
        missing |= _missing(obj.get(name), child, f"{where}{name}.")
    return missing


@pytest.mark.parametrize("entry", [_entry(), _entry(margin=None, verdict="NEUTRAL", program=None)])
def test_every_field_the_schema_requires_is_produced(entry: LedgerEntry) -> None:
    obj = json.loads(to_json_line(entry))
    assert _missing(obj, dict(schema())) == set()
    assert _missing({"margin": {}}, dict(schema())) >= {"margin.value", "experiment"}  # the check itself can fail
    assert validate(obj) == []


def test_issue_fields_are_all_required_by_the_schema() -> None:
    assert set(schema()["required"]) >= {"schema", "experiment", "flags", "verdict", "delta", "ci", "d", "seeds",
                                         "mode", "margin", "baseline", "report", "seconds", "decided_at"}
    for name in schema()["required"]:
        assert name in schema()["properties"], name


def test_a_line_is_one_line_and_reads_back() -> None:
    line = to_json_line(_entry(experiment="naïve\nname"))
    assert "\n" not in line
    obj = read_line(line)
    assert obj["experiment"] == "naïve\nname" and obj["ci"] == {"low": -0.0102, "high": 0.0060}
    assert obj["seeds"] == {"baseline": 5, "experiment": 5} and obj["decided_at"] == "2026-12-04T21:30:05Z"
    assert obj["margin"] == {"value": 0.5, "unit": "sigma", "metric_units": 0.0079}
    assert obj["program"] == {"index": 3, "level": 0.0026, "alpha": 0.05, "familywise": None}


def test_decided_at_is_written_in_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert read_line(to_json_line(_entry(decided_at=local)))["decided_at"] == "2026-12-04T21:30:05Z"
    with pytest.raises(LedgerError, match="time zone"):
        to_json_line(_entry(decided_at=datetime(2026, 12, 4)))


def test_undefined_statistics_are_null_not_nan() -> None:
    obj = read_line(to_json_line(_entry(d=math.nan, ci=(None, math.inf))))
    assert obj["d"] is None and obj["ci"] == {"low": None, "high": None}


@pytest.mark.parametrize("report", ["/abs/experiment.md", "../outside.md", "docs\\research\\x.md"])
def test_report_path_must_be_relative_to_the_rootdir(report: str) -> None:
    with pytest.raises(LedgerError, match="relative to the rootdir"):
        to_json_line(_entry(report=report))


@pytest.mark.parametrize(("change", "problem"), [
    (lambda o: o.pop("baseline"), "entry.baseline is missing"),
    (lambda o: o["seeds"].pop("experiment"), "entry.seeds.experiment is missing"),
    (lambda o: o.update(verdict="MAYBE"), "entry.verdict must be one of"),
    (lambda o: o.update(schema=2), "entry.schema must be one of [1]"),
    (lambda o: o.update(delta="0.1"), "entry.delta must be number"),
    (lambda o: o.update(seconds=-1), "entry.seconds must be at least 0"),
    (lambda o: o["seeds"].update(baseline=True), "entry.seeds.baseline must be integer"),
    (lambda o: o.update(flags=["--a", 3]), "entry.flags[1] must be string"),
    (lambda o: o.update(decided_at="yesterday"), "entry.decided_at must be an ISO 8601 date-time"),
    (lambda o: o.update(decided_at="2026-12-04T21:30:05"), "entry.decided_at must carry a time zone"),
    (lambda o: o.update(margin={"value": 0.5}), "entry.margin.unit is missing"),
    (lambda o: o.update(mode="bayes"), "entry.mode must be one of"),
])
def test_validator_names_what_breaks_the_schema(change, problem: str) -> None:  # type: ignore[no-untyped-def]
    obj = json.loads(to_json_line(_entry()))
    change(obj)
    problems = validate(obj)
    assert problems and problems[0].startswith(problem), problems
    with pytest.raises(LedgerError) as info:
        read_line(json.dumps(obj))
    assert "\n" not in str(info.value)


def test_a_bad_entry_is_never_written() -> None:
    with pytest.raises(LedgerError, match="verdict"):
        to_json_line(_entry(verdict="MAYBE"))
    with pytest.raises(LedgerError, match="not a JSON line"):
        read_line("{broken")


def test_schema_ships_as_package_data() -> None:
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"verdicts.schema.json"' in pyproject
    assert schema()["properties"]["schema"]["enum"] == [1] and LEDGER_NAME == "verdicts.jsonl"
