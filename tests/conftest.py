"""Fixtures that give each plugin test a throw-away project driven by the fake trainer."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")

#: The plugin is already imported by the outer session, so in-process runs cannot rewrite it.
QUIET_REWRITE = ("-W", "ignore::pytest.PytestAssertRewriteWarning")

#: Baseline losses with mean 2.0 and sample std sqrt(0.001 / 4) = 0.0158114 (2σ = 0.0316).
BASELINE_LOSSES = {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99}


@dataclass
class Project:
    """A pytester project whose trainer is ``fake_trainer.py``, steered by ``fake_plan.json``."""

    pytester: pytest.Pytester

    @property
    def path(self) -> Path:
        return self.pytester.path

    @property
    def research(self) -> Path:
        return self.path / "docs" / "research"

    def plan(self, losses: dict[str, dict[str, float]] | None = None,
             behaviour: dict[str, str] | None = None, sleep: float = 0.0) -> None:
        all_losses: dict[str, Any] = {"": BASELINE_LOSSES}
        all_losses.update(losses or {})
        (self.path / "fake_plan.json").write_text(
            json.dumps({"losses": all_losses, "behaviour": behaviour or {}, "sleep": sleep})
        )

    def calls(self) -> list[dict[str, Any]]:
        log = self.path / "fake_calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def seeds_run(self, flags: list[str] | None = None) -> list[int]:
        return [c["seed"] for c in self.calls() if c["flags"] == (flags or [])]

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, *args)

    def run_subprocess(self, *args: str, timeout: float = 120) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess("-p", "no:cacheprovider", *QUIET_REWRITE, *args, timeout=timeout)


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    shutil.copy(FAKE_TRAINER, pytester.path / "fake_trainer.py")
    pytester.makeini("[pytest]\nexprun_command = python fake_trainer.py\n")
    proj = Project(pytester)
    proj.plan()
    return proj


def normalised_report(path: Path) -> str:
    """A report with every timing removed (wall times, the Measured line, the body hash), to compare executors."""
    from pytest_exprun import report

    read = report.read_report(path)
    assert read.data is not None, f"{path} has no data block"
    lines = []
    for line in read.body.splitlines():
        if line.startswith("- Measured:") or "wall_time" in line or "faster" in line or "slower" in line:
            continue
        if re.match(r"^\| \d+ \|", line):  # per-seed rows: keep the seed and val_loss columns only
            cells = line.split("|")
            line = "|".join(cell for i, cell in enumerate(cells) if i not in (3, 5))
        lines.append(line)
    data = dict(read.data)
    data.pop("body_sha256", None)
    for key in ("runs", "baseline_runs"):
        data[key] = [{k: v for k, v in run.items() if k != "wall_time"} for run in data.get(key, [])]
    return "\n".join(lines) + "\n" + json.dumps(data, sort_keys=True)


@pytest.fixture
def with_plots() -> None:
    """Request this to have reports draw their PNGs (matplotlib permitting)."""


@pytest.fixture(autouse=True)
def _plots_only_when_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawing costs about half a second per report; only tests that ask for ``with_plots`` pay it."""
    if "with_plots" not in request.fixturenames:
        monkeypatch.setattr("pytest_exprun.plots._matplotlib", lambda: None)
