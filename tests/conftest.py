"""Fixtures that give each plugin test a throw-away project driven by the fake trainer."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

pytest_plugins = ["pytester"]

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")

#: The plugin is already imported by the outer session, so in-process runs cannot rewrite it.
QUIET_REWRITE = ("-W", "ignore::pytest.PytestAssertRewriteWarning")

#: Baseline losses with mean 2.0 and sample std sqrt(0.001 / 4) = 0.0158114 (2σ = 0.0316).
BASELINE_LOSSES = {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99}


T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Project:
    """A pytester project whose trainer is ``fake_trainer.py``, steered by ``fake_plan.json``."""

    pytester: pytest.Pytester
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.pytester.path

    @property
    def research(self) -> Path:
        return self.path / "docs" / "research"

    def plan(self, losses: dict[str, dict[str, float]] | None = None,
             behaviour: dict[str, str] | None = None, sleep: float = 0.0, gate: str | None = None) -> None:
        """Steer the fake trainer; with ``gate``, every run waits until that file exists."""
        all_losses: dict[str, Any] = {"": BASELINE_LOSSES}
        all_losses.update(losses or {})
        (self.path / "fake_plan.json").write_text(
            json.dumps({"losses": all_losses, "behaviour": behaviour or {}, "sleep": sleep, "gate": gate})
        )

    def calls(self) -> list[dict[str, Any]]:
        log = self.path / "fake_calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def seeds_run(self, flags: list[str] | None = None) -> list[int]:
        return [c["seed"] for c in self.calls() if c["flags"] == (flags or [])]

    def started(self) -> list[dict[str, Any]]:
        """Every trainer start so far (seed, flags, pid), finished or not."""
        log = self.path / "fake_started.jsonl"
        if not log.exists():
            return []
        # Only whole lines: a trainer may be writing the last one right now.
        return [json.loads(line) for line in log.read_text().split("\n")[:-1] if line.strip()]

    def popen(self, *args: str, output: str = "pytest_out.txt") -> subprocess.Popen[bytes]:
        """Start pytest in a process of its own, to signal it or race it against another."""
        # PYTEST_ADDOPTS is the project fixture's own (it leaves the fake trainer's plan out of the setup).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") or k == "PYTEST_ADDOPTS"}
        with open(self.path / output, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                cwd=self.path, stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        self.spawned.append(proc)
        return proc

    def clean_up(self) -> None:
        """After a failed test: end the pytest processes it started and any trainer still running."""
        for proc in self.spawned:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for start in self.started():
            if pid_alive(start["pid"]) and b"fake_trainer" in Path(f"/proc/{start['pid']}/cmdline").read_bytes():
                try:
                    os.killpg(start["pid"], signal.SIGKILL)  # each trainer leads its own group
                except ProcessLookupError:
                    pass

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, *args)

    def reports_from_scratch(self, *args: str) -> tuple[pytest.RunResult, dict[str, str]]:
        """Run a session in a research dir emptied first; its outcome and normalised reports."""
        for path in self.research.glob("*.md"):
            path.unlink()
        shutil.rmtree(self.research / ".exprun", ignore_errors=True)
        (self.path / "fake_calls.jsonl").unlink(missing_ok=True)
        result = self.run(*args)
        return result, {p.name: normalised_report(p) for p in sorted(self.research.glob("*.md"))}

    def run_subprocess(self, *args: str, timeout: float = 120) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess("-p", "no:cacheprovider", *QUIET_REWRITE, *args, timeout=timeout)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    shutil.copy(FAKE_TRAINER, pytester.path / "fake_trainer.py")
    # pytester makes the project the home directory; one user cache for the whole test session
    # keeps the trainers' bytecode cache warm from test to test, as it is from session to session.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "user-cache"))
    # The fake trainer reads its plan at run time, so the plan would be traced as part of the setup;
    # it steers the test, it is not the trainer's setup (a test changing it expects the baseline reused).
    monkeypatch.setenv("PYTEST_ADDOPTS", "--exprun-fingerprint-exclude=fake_plan.json")
    pytester.makeini("[pytest]\nexprun_command = python fake_trainer.py\n")
    proj = Project(pytester)
    proj.plan()
    yield proj
    proj.clean_up()


def normalised_report(path: Path) -> str:
    """A report with every timing removed (wall times, how they were taken, the Measured and Cost lines, the body hash).

    What is left must not depend on the executor that ran the seeds.
    """
    from pytest_exprun.reports import render as report

    read = report.read_report(path)
    assert read.data is not None, f"{path} has no data block"
    lines: list[str] = []
    in_wall_clock = False  # CPU time, throughput and whether the machine looked loaded are timings too
    traced = False
    for line in read.body.splitlines():
        if line.startswith("## "):
            in_wall_clock = line == "## Wall Clock"
        if in_wall_clock or line.startswith("- argv "):  # an argv names its executor's output dir
            continue
        if line.startswith(("- Measured:", "Updated ", "**Cost:**")) or "wall_time" in line or "faster" in line or "slower" in line:
            continue
        # What the runs read while they ran: traced per run by local-style executors, not by a warm worker.
        traced = line.startswith("- Read by the trainer while it ran") or (traced and line[:4] in ("  - ", ""))
        if traced:
            continue
        line = re.sub(r",? ?timing `[^`]*`", "", line)  # how the wall time was taken, in the environment line
        if re.match(r"^\| \d+ \|", line):  # per-seed rows: keep the seed and val_loss columns only
            cells = line.split("|")
            line = "|".join(cell for i, cell in enumerate(cells) if i not in (3, 5))
        lines.append(line)
    data = dict(read.data)
    data.pop("body_sha256", None)
    data.pop("tables_sha256", None)  # covers the wall-time cells too
    for key in ("runs", "baseline_runs"):
        data[key] = [{k: v for k, v in run.items() if k != "wall_time"} for run in data.get(key, [])]
        for run in data[key]:
            run.get("environment", {}).pop("timing", None)  # how the wall time was taken
    return "\n".join(lines) + "\n" + json.dumps(data, sort_keys=True)


@pytest.fixture
def with_plots(_plots_drawn_once: None) -> None:
    """Request this to have reports draw their PNGs; skips where the plots extra is not installed."""


@pytest.fixture(scope="session")
def _plots_drawn_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Draw one set of plots in the outer session, so that every module matplotlib imports
    lazily is imported here: pytester's in-process runs drop modules first imported inside
    them, and a second copy of matplotlib's modules breaks it (two ``Transform`` classes)."""
    pytest.importorskip("matplotlib", reason="plots need the 'plots' extra: pip install -e '.[plots]'")
    from pytest_exprun.reports import plots
    from pytest_exprun.decide.curves import learning_curves

    curve = [(0, 3.0), (10, 2.5), (20, 2.1)]
    plots.draw(tmp_path_factory.mktemp("plots"), "warm_up", plots.PlotData(
        name="x", scale="1M", baseline_val={1: 2.0, 2: 2.1}, experiment_val={1: 1.9, 2: 2.0},
        baseline_wall={1: 1.0, 2: 1.1}, experiment_wall={1: 1.0, 2: 1.2}, baseline_mean=2.05,
        baseline_std=0.07, experiment_mean=1.95,
        curves=learning_curves([curve] * 2, [curve] * 2, 1000, 2.05),
        baseline_curves=[curve] * 2, experiment_curves=[curve] * 2,
    ))


@pytest.fixture(scope="session", autouse=True)
def _statistics_imported_up_front() -> None:
    """pytester's in-process runs drop the modules first imported inside them, and numpy's C
    extensions refuse a second import ("cannot load module more than once per process"): import
    the statistics stack once in the outer session, so any test file can run on its own. A
    fixture, not a module-level import: this conftest is also loaded by experiment sessions
    started from the repository root, which must not pay for scipy up front.

    exprun's own protocol modules too: a plain run no longer imports them, and one first imported
    inside an in-process run is dropped after it while its package keeps the old module as an
    attribute, so a later run's ``from .decide import looks`` would meet a stale copy (and enums
    from two copies of one module never compare equal)."""
    import scipy.stats  # noqa: F401

    import pytest_exprun.session  # noqa: F401 - imports every decide and reports module


@pytest.fixture
def with_aside() -> None:
    """Request this to have verdicts computed in the helper process, as in real sessions."""


@pytest.fixture(autouse=True)
def _aside_only_when_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helper costs a Python start and the scipy and matplotlib imports per session, and
    the in-process monkeypatches of other fixtures do not reach it: tests get the in-process
    path (the very functions the helper calls) unless they ask for ``with_aside``."""
    if "with_aside" not in request.fixturenames:
        monkeypatch.setattr("pytest_exprun.reports.aside.start", lambda: None)


@pytest.fixture(autouse=True)
def _plots_only_when_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawing costs about half a second per report; only tests that ask for ``with_plots`` pay it."""
    if "with_plots" not in request.fixturenames:
        monkeypatch.setattr("pytest_exprun.reports.plots._matplotlib", lambda: None)
