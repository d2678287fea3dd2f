"""The program's ledger: one JSON object a line per decision, for agents that must not parse Markdown.

``LedgerEntry`` is what one line says; ``to_json_line`` writes it and ``validate`` checks any
object against the schema shipped beside this module (``verdicts.schema.json``), with the small
part of JSON Schema that the schema uses, so that no validator needs installing. Pure: the
session appends the lines, and rebuilds the file from the store.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

SCHEMA_VERSION = 1
SCHEMA_FILE = "verdicts.schema.json"
#: The ledger's file name, beside the reports.
LEDGER_NAME = "verdicts.jsonl"


class LedgerError(ValueError):
    """An entry that does not fit the schema; the message names the field."""


@dataclass(frozen=True)
class MarginEntry:
    value: float
    unit: str  # "metric" or "sigma"
    metric_units: float


@dataclass(frozen=True)
class ProgramEntry:
    index: int
    level: float | None = None
    alpha: float | None = None
    familywise: float | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """One decision, as the ledger states it (see the schema for each field's meaning)."""

    experiment: str
    flags: tuple[str, ...]
    verdict: str
    delta: float
    ci: tuple[float | None, float | None]
    d: float | None
    baseline_seeds: int
    experiment_seeds: int
    mode: str
    margin: MarginEntry | None
    baseline: str
    report: str
    seconds: float
    decided_at: datetime
    program: ProgramEntry | None = None

    def to_object(self) -> dict[str, Any]:
        """The entry as the schema's object, keys in the schema's order."""
        if self.decided_at.tzinfo is None:
            raise LedgerError(f"decided_at of {self.experiment!r} has no time zone; give it in UTC")
        report = PurePosixPath(self.report)
        if report.is_absolute() or ".." in report.parts or "\\" in self.report:
            raise LedgerError(f"report of {self.experiment!r} must be relative to the rootdir with forward slashes, "
                              f"got {self.report!r}")
        obj: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "experiment": self.experiment,
            "flags": list(self.flags),
            "verdict": str(getattr(self.verdict, "value", self.verdict)),
            "delta": self.delta,
            "ci": {"low": _number(self.ci[0]), "high": _number(self.ci[1])},
            "d": _number(self.d),
            "seeds": {"baseline": self.baseline_seeds, "experiment": self.experiment_seeds},
            "mode": self.mode,
            "margin": None if self.margin is None else {
                "value": self.margin.value, "unit": self.margin.unit, "metric_units": self.margin.metric_units},
            "baseline": self.baseline,
            "report": self.report,
            "seconds": self.seconds,
            "decided_at": self.decided_at.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "program": None if self.program is None else {
                "index": self.program.index, "level": self.program.level, "alpha": self.program.alpha,
                "familywise": self.program.familywise},
        }
        return obj


def _number(value: float | None) -> float | None:
    """JSON has no NaN: an undefined statistic is null."""
    return None if value is None or not math.isfinite(value) else float(value)


def to_json_line(entry: LedgerEntry) -> str:
    """One line of the ledger (without its newline), validated before it is written."""
    obj = entry.to_object()
    problems = validate(obj)
    if problems:
        raise LedgerError(f"ledger entry for {entry.experiment!r} does not fit the schema: {problems[0]}")
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def read_line(line: str) -> dict[str, Any]:
    """One ledger line back as its object, refused in one line when it does not fit the schema."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LedgerError(f"not a JSON line: {exc}") from None
    problems = validate(obj)
    if problems:
        raise LedgerError(f"ledger line does not fit the schema: {problems[0]}")
    return dict(obj)


@functools.lru_cache(maxsize=1)
def schema() -> Mapping[str, Any]:
    """The JSON Schema shipped with the package."""
    loaded: dict[str, Any] = json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    return loaded


# ------------------------------------------------------------------ the validator
_TYPES: Mapping[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "null": lambda v: v is None,
}


def validate(obj: Any, node: Mapping[str, Any] | None = None, where: str = "entry") -> list[str]:
    """Every way ``obj`` breaks the schema (``type``, ``enum``, ``required``, ``properties``,
    ``items``, ``minimum``, ``minLength``, ``format: date-time``), one message each; empty when it fits."""
    node = schema() if node is None else node
    types = node.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](obj) for t in allowed):
            return [f"{where} must be {' or '.join(allowed)}, got {json.dumps(obj, default=str)[:60]}"]
    problems: list[str] = []
    if "enum" in node and obj not in node["enum"]:
        problems.append(f"{where} must be one of {node['enum']}, got {obj!r}")
    if isinstance(obj, dict):
        problems += [f"{where}.{name} is missing" for name in node.get("required", ()) if name not in obj]
        for name, child in node.get("properties", {}).items():
            if name in obj:
                problems += validate(obj[name], child, f"{where}.{name}")
    if isinstance(obj, list) and "items" in node:
        for i, item in enumerate(obj):
            problems += validate(item, node["items"], f"{where}[{i}]")
    if _TYPES["number"](obj) and "minimum" in node and obj < node["minimum"]:
        problems.append(f"{where} must be at least {node['minimum']}, got {obj}")
    if isinstance(obj, str) and len(obj) < node.get("minLength", 0):
        problems.append(f"{where} must not be empty")
    if isinstance(obj, str) and node.get("format") == "date-time":
        try:
            stamp = datetime.fromisoformat(obj.replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"{where} must be an ISO 8601 date-time, got {obj!r}")
        else:
            if stamp.tzinfo is None:
                problems.append(f"{where} must carry a time zone, got {obj!r}")
    return problems
