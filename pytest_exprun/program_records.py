"""What a decision keeps of its margin and of its place in a research program.

Stored inside a decision (``model.Decision.margin`` and ``.program``) only when the option that
makes them is given, so that decisions without them save byte for byte as before. Standard
library only, like the model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@dataclass(frozen=True)
class MarginRecord:
    """What a decision with a margin keeps: the margin, the two one-sided tests, what would settle it."""

    value: float
    unit: str  # "metric" (val_loss units) or "sigma" (baseline σ)
    metric_units: float
    alpha: float
    method: str
    p_value: float
    low: float  # the (1 − 2α) interval of Δ
    high: float
    rule_verdict: str  # the rule's own word (WINNER, NEUTRAL or LOSER)
    #: pytest's arguments that run the seeds most likely to settle an INCONCLUSIVE; empty otherwise.
    settle: tuple[str, ...] = ()
    settle_note: str = ""
    #: What a sequential decision says of its equivalence stops at each look (docs/sequential.md).
    note: str = ""

    def describe(self) -> str:
        return f"{self.value:g}σ" if self.unit == "sigma" else f"{self.value:g}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _plain({f.name: getattr(self, f.name) for f in fields(self)})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MarginRecord":
        return cls(float(data["value"]), str(data["unit"]), float(data["metric_units"]), float(data["alpha"]),
                   str(data["method"]), float(data["p_value"]), float(data["low"]), float(data["high"]),
                   str(data["rule_verdict"]), tuple(str(a) for a in data.get("settle", [])),
                   str(data.get("settle_note", "")), str(data.get("note", "")))


@dataclass(frozen=True)
class ProgramRecord:
    """Where a decision stands in its program under ``--exprun-program-alpha`` (LOND, decide/program.py)."""

    index: int  # the n-th controlled decision on this baseline, from 1
    winners_before: int
    level: float  # the false-WINNER rate it was tested at
    alpha: float  # the program's false-discovery rate
    threshold: float | None = None  # the fixed rule's widened WINNER threshold, in baseline σ

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _plain({f.name: getattr(self, f.name) for f in fields(self)})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ProgramRecord":
        threshold = data.get("threshold")
        return cls(int(data["index"]), int(data["winners_before"]), float(data["level"]), float(data["alpha"]),
                   None if threshold is None else float(threshold))
