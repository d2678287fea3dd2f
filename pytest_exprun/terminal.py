"""What a protocol session shows on the terminal: progress lines, the trainer's echo, the summary.

Everything goes through pytest's terminal reporter, past output capturing, so it looks like
pytest and respects ``-q``; nothing here decides anything.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import pytest

from .trainer.lines import LineThrottle

if TYPE_CHECKING:
    from .decide.protocol import Comparison
    from .experiments import Experiment
    from .decide.stats import Summary

#: Longest trainer line echoed as is; the run's log keeps every character.
ECHO_CHARS = 500


@dataclass(frozen=True)
class Outcome:
    """What a verdict test found, kept for the end-of-session summary."""

    experiment: "Experiment"
    comparison: "Comparison | None"
    report: Path | None
    message: str
    accepted: bool = False
    #: Why its wall-clock comparison cannot be trusted (a loaded machine), or None.
    wall_clock_distrust: str | None = None
    #: The closing line an agent can grep (``program_ledger.Line.grep_line``), once decided.
    grep: str | None = None


class RunCounter:
    """The "run 3 of 3-5" counter: runs planned for sure, and those a rule may still ask for.

    Conditional runs (extension seeds, a later look's seeds) count in the upper bound until the
    rule decides; then they become planned or drop out, so the counter never promises a run
    that will not happen.
    """

    def __init__(self) -> None:
        self.started = 0
        self.planned = 0
        self._undecided: dict[str, int] = {}  # per group
        self._looks: dict[tuple[str, int], int] = {}  # per (group, look) in the sequential mode

    def plan(self, group: str, conditional: bool, look: int | None) -> None:
        if not conditional:
            self.planned += 1
            return
        self._undecided[group] = self._undecided.get(group, 0) + 1
        if look is not None:
            self._looks[(group, look)] = self._looks.get((group, look), 0) + 1

    def decided(self, group: str, needed: bool) -> None:
        """The extension rule decided for ``group``: its conditional runs are planned or dropped."""
        count = self._undecided.pop(group, 0)
        if needed:
            self.planned += count

    def look_decided(self, group: str, look: int, going: bool) -> None:
        """A look was decided: its runs count as planned, or they (and every later look's) drop out."""
        for key in [k for k in self._looks if k[0] == group and (k[1] == look or (not going and k[1] > look))]:
            count = self._looks.pop(key)
            self._undecided[group] = self._undecided.get(group, 0) - count
            if going:
                self.planned += count
        if self._undecided.get(group) == 0:
            del self._undecided[group]

    def next(self) -> str:
        self.started += 1
        planned = max(self.planned, self.started)
        most = planned + sum(self._undecided.values())
        return f"{self.started} of {planned}" if most == planned else f"{self.started} of {planned}-{most}"


class Terminal:
    """Progress of one session: which run is going, the trainer's lines, the closing summary."""

    def __init__(self, config: pytest.Config, rootdir: Path) -> None:
        self.config = config
        self.rootdir = rootdir
        self._throttle = LineThrottle()
        self._current: tuple[str, str, float] = ("", "", 0.0)  # counter text, label, start time
        #: Which trainer lines are evaluations: the ones shown at the default verbosity.
        self.is_evaluation: Callable[[str], bool] = lambda line: True

    def _reporter(self) -> Any:
        return self.config.pluginmanager.get_plugin("terminalreporter")

    @contextlib.contextmanager
    def uncaptured(self) -> Iterator[None]:
        """Let trainer output through pytest's capturing while a run is awaited."""
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if capman is None:
            yield
        else:
            with capman.global_and_fixture_disabled():
                yield

    def say(self, message: str) -> None:
        reporter = self._reporter()
        if reporter is None:
            return
        with self.uncaptured():
            reporter.write_line(f"exprun: {message}")

    def run_started(self, counter: str, label: str) -> None:
        self._current = (counter, label, time.perf_counter())
        if self.config.get_verbosity() >= 0:  # -q: one line per run, when it ends
            self.say(f"run {counter}: {label} started")

    def run_ended(self, counter: str, label: str, text: str) -> None:
        self.say(f"run {counter}: {label} {text}")

    def echo(self, line: str) -> None:
        """One line the trainer printed, prefixed with the run it belongs to; throttled.

        ``-v`` shows every line, the default only evaluation lines, ``-q`` none (the run's log
        keeps them all, and a failure shows its last lines).
        """
        reporter = self._reporter()
        verbosity = self.config.get_verbosity()
        if reporter is None or verbosity < 0 or (verbosity == 0 and not self.is_evaluation(line)):
            return
        if not self._throttle.allow():
            return
        counter, label, started = self._current
        held_back = self._throttle.take_held_back()
        if held_back:
            reporter.write_line(f"  [{label}: {held_back} lines not shown here; every line is in the run's log]")
        reporter.write_line(f"  [{counter} {label} {time.perf_counter() - started:6.1f}s] {line[:ECHO_CHARS]}")

    def rel(self, path: Path) -> str:
        """A path as the user would type it from the project's root."""
        try:
            return str(path.relative_to(self.rootdir))
        except ValueError:
            return str(path)


def summary_lines(baseline: "Summary | None", planned: int, missing: list[int], reused_from: str | None,
                  outcomes: list[Outcome], rel: Any, metric: str = "val_loss") -> list[str]:
    """The end-of-session lines: the baseline's state and one line per verdict; ``metric`` names the value."""
    lines = []
    if baseline is not None:
        where = f" (reused from {reused_from})" if reused_from else ""
        std = f" ± {baseline.std:.4f}" if baseline.n > 1 else ""
        lines.append(f"baseline: {baseline.n}/{planned} seeds, {metric} {baseline.mean:.4f}{std}{where}")
    if missing:
        lines.append(f"baseline seeds still missing: {', '.join(map(str, missing))}")
    for outcome in outcomes:
        cmp = outcome.comparison
        if cmp is None or cmp.verdict is None or outcome.report is None:
            lines.append(outcome.message.splitlines()[0])
            continue
        d = cmp.val_loss.cohens_d
        lines.append(
            f"{outcome.experiment.name}: {cmp.verdict.value} (Δ {metric} {cmp.val_loss.delta:+.4f}, "
            f"d = {'n/a' if d is None else f'{d:+.2f}'}, n={cmp.val_loss.experiment.n}) → {rel(outcome.report)}"
        )
        if outcome.wall_clock_distrust:
            lines.append(f"  {outcome.experiment.name}: {outcome.wall_clock_distrust}")
    return lines


#: Options that deselect tests: a command to measure the deselected seeds drops them.
_DESELECTING = {"-k": True, "--deselect": True, "--lf": False, "--last-failed": False}


def rerun_command(args: Sequence[str], select: Sequence[str], keep_selection: bool = False) -> str:
    """This session's own command, shell-quoted, with ``-k``/``--deselect`` replaced by a ``-k``
    that selects ``select`` (item names), so a seed ``-k`` left out is measured; stored runs are reused.

    With ``keep_selection`` the command is the session's own, as given.
    """
    if keep_selection:
        return shlex.join(["pytest", *args])
    kept: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in _DESELECTING:
            skip_next = _DESELECTING[name] and "=" not in arg
            continue
        if arg.startswith("-k") and not arg.startswith("--"):
            continue  # -kEXPR
        kept.append(arg)
    if select:
        kept += ["-k", " or ".join(select)]
    return shlex.join(["pytest", *kept])


def grep_lines(outcomes: list[Outcome]) -> list[str]:
    """One ``exprun: NAME VERDICT Δ=… [low, high] d=… seeds B+E Ns → report`` line per decision."""
    return [o.grep for o in outcomes if o.grep]
