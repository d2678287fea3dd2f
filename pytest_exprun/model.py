"""The typed model every layer shares: setups, run records, environments, baseline snapshots,
decisions, and their JSON form in one place.
Frozen dataclasses and enums only, and the standard library: the store persists these, the
decision rules make ``Decision``s, the reports render them. A stored file is read through
``from_json`` here and nowhere else, so a format change is made (and migrated) in one module.

Older files load unchanged; a ``Decision``'s comparison, not stored, is re-derived from its
records on read (``decide.decision.restore``). Margins and program steps: ``program_records``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .program_records import MarginRecord, ProgramRecord
from .jsonfiles import load_json as load_json  # model, store and reports read JSON one way
from .jsonfiles import plain as plain
from .jsonfiles import to_json_text as to_json_text

if TYPE_CHECKING:
    from .decide.protocol import Comparison, ControlCheck
    from .decide.sequential_design import Design as SequentialDesign
    from .decide.equivalence import Margin
    from .decide.sequential_rates import ReportRow

#: The version every stored record, snapshot and decision carries; another version is not read.
SCHEMA_VERSION = 1


class Verdict(str, Enum):
    WINNER = "WINNER"
    NEUTRAL = "NEUTRAL"
    LOSER = "LOSER"
    EQUIVALENT, INCONCLUSIVE = "EQUIVALENT", "INCONCLUSIVE"  # with a margin: NEUTRAL split (TOST)


class DecisionMode(str, Enum):
    """Which rule decides: the 2σ rule on a fixed set of seeds, or the sequential looks."""

    FIXED = "fixed"
    SEQUENTIAL = "sequential"


class Kind(str, Enum):
    """What a stored result derived from run records is; its value names its folder."""

    SNAPSHOT = "baseline"
    DECISION = "experiment"


# ------------------------------------------------------------------- setups
@dataclass(frozen=True)
class Setup:
    """What a group of runs was measured with; runs under another setup are never mixed in.

    ``fingerprint`` is ``fingerprint.Fingerprint.to_json()``: the trainer's files, the project
    modules it imports, config files named in the command or flags, and the Python and torch
    versions (see ``fingerprint.setup_files``).
    """

    command: tuple[str, ...]
    train_tokens: int
    flags: tuple[str, ...]
    fingerprint: dict[str, Any]

    def key(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "command": list(self.command),
            "train_tokens": self.train_tokens,
            "flags": list(self.flags),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Setup":
        fingerprint = data.get("fingerprint")
        if not isinstance(fingerprint, dict):  # measured before setups were fingerprinted
            fingerprint = {"files": {str(k): str(v) for k, v in dict(data.get("trainer_files", {})).items()}}
        return cls(
            command=tuple(str(a) for a in data["command"]),
            train_tokens=int(data["train_tokens"]),
            flags=tuple(str(a) for a in data.get("flags", [])),
            fingerprint=fingerprint,
        )

    def differences(self, other: "Setup") -> list[str]:
        """Human-readable list of what changed from ``other`` to this setup."""
        from .trainer.fingerprint import Fingerprint

        changes = []
        if self.command != other.command:
            changes.append(f"trainer command {' '.join(other.command)!r} → {' '.join(self.command)!r}")
        if self.train_tokens != other.train_tokens:
            changes.append(f"train tokens {other.train_tokens} → {self.train_tokens}")
        if self.flags != other.flags:
            changes.append(f"flags {list(other.flags)} → {list(self.flags)}")
        try:
            old = Fingerprint.from_json(other.fingerprint)
        except ValueError:
            return [*changes, "the stored fingerprint is unreadable"]
        changes += Fingerprint.from_json(self.fingerprint).differences(old)
        if not changes and self.to_json() != other.to_json():
            changes.append("the fingerprint's notes differ")
        return changes


# ---------------------------------------------------------------- run records
Plain = str | int | float | bool | None
MEASURES = ("cpu_time", "gpu_time", "tokens_per_second")  # a record's optional numbers beside its wall time


@dataclass(frozen=True)
class Environment:
    """Where a run ran, as its trainer reported it (device, versions, data, how it was timed)."""

    values: Mapping[str, Plain] = field(default_factory=dict)

    def get(self, key: str, default: Plain = None) -> Plain:
        return self.values.get(key, default)

    @classmethod
    def from_json(cls, value: Any) -> "Environment":
        if not isinstance(value, dict) or not all(
            isinstance(v, (str, int, float, bool)) or v is None for v in value.values()
        ):
            raise ValueError("its 'extra.environment' field is not an object of plain values")
        return cls(dict(value))


def _extra(value: Any) -> dict[str, Any]:
    """A record's ``extra`` field, checked: ``environment`` must map names to plain values."""
    if not isinstance(value, dict):
        raise ValueError("its 'extra' field is not an object")
    Environment.from_json(value.get("environment", {}))
    return dict(value)


@dataclass(frozen=True)
class RunRecord:
    """One finished, successful run: what the protocol's statistics are computed from."""

    group: str
    seed: int
    val_loss: float
    wall_time: float
    setup_key: str
    curve: list[tuple[int, float]] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    log: str = ""
    finished_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: What it read as it ran (``Provenance.to_json()``); None, and not written, when untraced.
    traced: dict[str, Any] | None = None
    version: int = SCHEMA_VERSION
    #: CPU seconds of the trainer's process tree, GPU seconds, tokens/s: where known (absent in old files).
    cpu_time: float | None = None
    gpu_time: float | None = None
    tokens_per_second: float | None = None

    @property
    def environment(self) -> Environment:
        return Environment(dict(self.extra.get("environment", {})))

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "traced" or self.traced}
        data = {k: v for k, v in data.items() if v is not None or k not in MEASURES}  # old files stay byte for byte
        return json.dumps(data, indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunRecord":
        data = load_json(text.encode("utf-8") if isinstance(text, str) else text)
        if not isinstance(data, dict) or data.get("version") != SCHEMA_VERSION:
            raise ValueError("not a run record of this version")
        record = cls(
            group=str(data["group"]),
            seed=int(data["seed"]),
            val_loss=float(data["val_loss"]),
            wall_time=float(data["wall_time"]),
            setup_key=str(data["setup_key"]),
            curve=[(int(s), float(v)) for s, v in data.get("curve", [])],
            argv=[str(a) for a in data.get("argv", [])],
            log=str(data.get("log", "")),
            finished_at=str(data.get("finished_at", "")),
            extra=_extra(data.get("extra", {})),
            **{k: None if data.get(k) is None else float(data[k]) for k in MEASURES},  # type: ignore[arg-type]
            traced=None if data.get("traced") is None else dict(data["traced"]),
        )
        if not (math.isfinite(record.val_loss) and math.isfinite(record.wall_time) and record.wall_time >= 0
                and all(0 <= (getattr(record, k) or 0) < math.inf for k in MEASURES)):
            raise ValueError("val_loss is not finite, or a time or throughput is negative or not finite")
        return record


# ------------------------------------------------------------ derived results
@dataclass(frozen=True)
class BaselineSnapshot:
    """What a finished baseline was measured with; its report is rendered from it and the records."""

    setup: dict[str, Any]
    setup_key: str
    seeds: tuple[int, ...]
    git_commit: str | None
    measured_at: str
    traced: dict[str, Any] | None = None  #: what its runs read, merged; reused only while unchanged

    def to_json(self) -> dict[str, Any]:
        data = {"setup": self.setup, "setup_key": self.setup_key, "seeds": list(self.seeds),
                "git_commit": self.git_commit, "measured_at": self.measured_at}
        return {**data, "traced": self.traced} if self.traced else data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "BaselineSnapshot":
        return cls(dict(data["setup"]), str(data["setup_key"]), tuple(int(s) for s in data["seeds"]),
                   None if data.get("git_commit") is None else str(data["git_commit"]), str(data["measured_at"]),
                   None if data.get("traced") is None else dict(data["traced"]))


@dataclass(frozen=True)
class LookRecord:
    """What a sequential decision keeps of its look for the report: the numbers, the bounds, the design."""

    decision: str
    look_index: int
    looks: int
    n_baseline: int
    n_experiment: int
    statistic: float | None
    df: float | None
    boundary: float | None
    winner_bound: float | None
    loser_bound: float | None
    futility_bound: float | None
    alpha: float | None
    reason: str
    estimate: float | None
    interval: tuple[float | None, ...]
    estimate_sigmas: float | None
    interval_sigmas: tuple[float | None, ...]
    estimate_note: str | None
    family: tuple[str, ...]
    design: dict[str, Any]
    rate_trials: int
    rates: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = plain({"mode": DecisionMode.SEQUENTIAL.value,
                                      **{f.name: getattr(self, f.name) for f in fields(self)}})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LookRecord":
        values = {f.name: data[f.name] for f in fields(cls)}
        for name in ("interval", "interval_sigmas", "family", "rates"):
            values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class ExperimentDesign:
    """What a decision is asked about: one experiment of a family, its setups, the mode's design."""

    name: str
    flags: tuple[str, ...]
    setup: Setup
    baseline_setup: Setup
    family: tuple[str, ...]
    #: The sequential mode's looks and bounds, and its simulated operating characteristics.
    sequential: "SequentialDesign | None" = None
    operating: "tuple[ReportRow, ...]" = ()
    margin: "Margin | None" = None  # --exprun-margin; ``spec`` is the --experiment value, for commands
    spec: str = ""
    program: ProgramRecord | None = None  # its step in the program under --exprun-program-alpha


@dataclass(frozen=True)
class Decision:
    """One experiment's decision: what was decided, on which runs, under which setups, and why.

    ``comparison`` and ``control`` are not stored: the comparison is a pure function of the
    runs (re-derived on read), and a control run belongs to the session that made it.
    """

    name: str
    flags: tuple[str, ...]
    verdict: Verdict | None
    setup: Setup
    setup_key: str
    baseline_setup: Setup
    baseline_key: str
    baseline_seeds: tuple[int, ...]
    seeds: tuple[int, ...]
    mode: DecisionMode = DecisionMode.FIXED
    #: Why no verdict could be reached (``verdict`` is then None); such a decision is never stored.
    problem: str | None = None
    #: The rule's own one-sentence reason, for a rule other than exprun's (None: the report explains).
    reason: str | None = None
    sequential: LookRecord | None = None
    git_commit: str | None = None
    decided_at: str = ""
    margin: MarginRecord | None = None
    program: ProgramRecord | None = None
    comparison: "Comparison | None" = field(default=None, compare=False)
    control: "ControlCheck | None" = field(default=None, compare=False)

    @classmethod
    def made(cls, design: ExperimentDesign, baseline: Sequence[RunRecord], runs: Sequence[RunRecord],
             verdict: Verdict | None, comparison: "Comparison | None" = None, *, problem: str | None = None,
             reason: str | None = None, mode: DecisionMode = DecisionMode.FIXED,
             sequential: LookRecord | None = None) -> "Decision":
        """A rule's decision on these runs, not yet stamped with its commit and time."""
        return cls(name=design.name, flags=design.flags, verdict=verdict, setup=design.setup,
                   setup_key=design.setup.key(), baseline_setup=design.baseline_setup,
                   baseline_key=design.baseline_setup.key(), baseline_seeds=tuple(r.seed for r in baseline),
                   seeds=tuple(r.seed for r in runs), mode=mode, problem=problem, reason=reason,
                   sequential=sequential, comparison=comparison)

    @classmethod
    def refused(cls, design: ExperimentDesign, problem: str) -> "Decision":
        return cls.made(design, (), (), None, problem=problem)

    def stamped(self, git_commit: str | None, decided_at: str) -> "Decision":
        return replace(self, git_commit=git_commit, decided_at=decided_at)

    def same_facts(self, other: "Decision") -> bool:
        """Decided from the same runs, setups and rule with the same outcome (its time may differ)."""
        return self.stamped(None, "") == other.stamped(None, "")

    def to_json(self) -> dict[str, Any]:
        if self.verdict is None:
            raise ValueError(f"{self.name} has no verdict to store ({self.problem})")
        data: dict[str, Any] = {
            "flags": list(self.flags),
            "setup": self.setup.to_json(),
            "setup_key": self.setup_key,
            "baseline_setup": self.baseline_setup.to_json(),
            "baseline_key": self.baseline_key,
            "baseline_seeds": list(self.baseline_seeds),
            "seeds": list(self.seeds),
            "verdict": self.verdict.value,
        }
        if self.reason is not None:
            data["reason"] = self.reason
        data.update((key, part.to_json()) for key, part in (("sequential", self.sequential), ("margin", self.margin),
                                                            ("program", self.program)) if part is not None)
        data["git_commit"], data["decided_at"] = self.git_commit, self.decided_at
        return data

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> "Decision":
        sequential = data.get("sequential")
        return cls(
            name=name,
            flags=tuple(str(f) for f in data["flags"]),
            verdict=Verdict(data["verdict"]),
            setup=Setup.from_json(data["setup"]),
            setup_key=str(data["setup_key"]),
            baseline_setup=Setup.from_json(data["baseline_setup"]),
            baseline_key=str(data["baseline_key"]),
            baseline_seeds=tuple(int(s) for s in data["baseline_seeds"]),
            seeds=tuple(int(s) for s in data["seeds"]),
            mode=DecisionMode.SEQUENTIAL if isinstance(sequential, dict) else DecisionMode.FIXED,
            reason=None if data.get("reason") is None else str(data["reason"]),
            sequential=LookRecord.from_json(sequential) if isinstance(sequential, dict) else None,
            git_commit=None if data.get("git_commit") is None else str(data["git_commit"]),
            decided_at=str(data.get("decided_at", "")),
            margin=MarginRecord.from_json(data["margin"]) if isinstance(data.get("margin"), dict) else None,
            program=ProgramRecord.from_json(data["program"]) if isinstance(data.get("program"), dict) else None,
        )


@dataclass(frozen=True)
class Decided:
    """A stored decision with the runs it was made from, as the reports render it."""

    decision: Decision
    baseline: tuple[RunRecord, ...]
    runs: tuple[RunRecord, ...]

    @property
    def name(self) -> str:
        return self.decision.name
