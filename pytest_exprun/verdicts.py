"""From stored runs to a verdict: the extension decision, the comparison, the decision stored,
and the outcome announced with its reports, in either decision mode.

The session runs the seeds; this module only reads what is stored (through the session's
``values``), applies ``protocol``'s or ``sequential``'s rules, stores the decision and hands the
rendering to ``publish``. A verdict that cannot be reached fails its test with the reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, NoReturn

import pytest

from .decide import looks, protocol, sequential, sequential_rates, stats
from .experiments import Experiment
from .decide.protocol import BASELINE, Extension, ProtocolFailure, Verdict
from .reports.publish import DECISION, Publisher, compare_runs, now
from .decide.sequential import LookDecision
from .decide.sequential_design import SEEDS
from .settings import SEQUENTIAL, Settings
from .model import Decision, RunRecord, Setup
from .store import RunStore
from .terminal import Outcome

Values = Callable[[str, Iterable[int]], tuple[list[RunRecord], list[int]]]


class Judge:
    """Decides each experiment from the runs the session has stored, and keeps the outcomes."""

    def __init__(self, settings: Settings, store: RunStore, publisher: Publisher, values: Values,
                 setup: Callable[[str], Setup], work: Callable[..., Any], say: Callable[[str], None],
                 control_failure: Callable[[], str | None]) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self._values = values
        self.setup = setup
        self._work = work
        self.say = say
        self.control_failure = control_failure
        #: This session's control check, shown in its experiment reports.
        self.control: protocol.ControlCheck | None = None
        self.commit: str | None = None
        self.outcomes: list[Outcome] = []

    def experiment(self, name: str) -> Experiment:
        return next(e for e in self.settings.experiments if e.name == name)

    def collected(self, group: str, seeds: Iterable[int]) -> dict[int, RunRecord]:
        have, _ = self._values(group, seeds)
        return {r.seed: r for r in have}

    def check_names(self) -> None:
        """A report name is never silently reused for different flags, in this session or an earlier one."""
        for exp in self.settings.experiments:
            stored = self.store.decision(exp.name)
            if stored is not None and stored.flags != tuple(exp.flags):
                raise pytest.UsageError(
                    f"the report name {exp.name!r} already holds the experiment {' '.join(stored.flags)!r}, "
                    f"not {' '.join(exp.flags)!r}; choose another with --experiment-name"
                )

    def extension(self, name: str) -> Extension | str:
        """Do this experiment's extension seeds run? Decided on the first seeds alone; a string says what is missing."""
        base, base_missing = self._values(BASELINE, self.settings.baseline_seeds)
        first, first_missing = self._values(name, self.settings.experiment_seeds)
        if base_missing or first_missing:
            missing = [f"baseline seed {s}" for s in base_missing] + [f"{name} seed {s}" for s in first_missing]
            return f"cannot decide on extra seeds while {', '.join(missing)} are missing"
        return protocol.extension(stats.summarize([r.val_loss for r in base]),
                                  stats.summarize([r.val_loss for r in first]))

    def verdict(self, name: str) -> Outcome:
        if self.settings.decide == SEQUENTIAL:
            return self.sequential_verdict(name)
        exp = self.experiment(name)
        s = self.settings
        base, base_missing = self._values(BASELINE, s.baseline_seeds)
        first, first_missing = self._values(name, s.experiment_seeds)
        missing = [f"baseline seed {x}" for x in base_missing] + [f"{name} seed {x}" for x in first_missing]
        runs = first
        if not missing and s.extension_seeds:
            decision = self.extension(name)
            if isinstance(decision, Extension) and decision.extend:
                more, more_missing = self._values(name, s.extension_seeds)
                missing += [f"{name} seed {x}" for x in more_missing]
                runs = first + more
        if missing:
            self._no_verdict(exp, None, f"{', '.join(missing)} not measured (failed, interrupted or "
                             "deselected); run the same command again and only the missing seeds will run")
        cmp = self._comparison(exp, base, runs)
        self._record_decision(exp, cmp, base, runs)
        return self._announce(exp, cmp)

    def _comparison(self, exp: Experiment, base: list[RunRecord], runs: list[RunRecord]) -> protocol.Comparison:
        """The 2σ comparison of comparable runs; runs measured in different environments get no verdict."""
        mixed = protocol.mixed_environments([r.extra.get("environment", {}) for r in base],
                                            [r.extra.get("environment", {}) for r in runs])
        if mixed:
            self._no_verdict(exp, None, f"the runs were not measured in the same environment ({mixed}); "
                             "a baseline from another machine, torch, data set or executor timing (a process "
                             "per run against a warm worker) is not comparable: re-measure it here with "
                             "--exprun-rerun-baseline")
        cmp = compare_runs(base, runs)
        if cmp.verdict is None:
            self._no_verdict(exp, cmp, cmp.problem or "the data cannot support a verdict")
        return cmp

    def _record_decision(self, exp: Experiment, cmp: protocol.Comparison, base: list[RunRecord],
                         runs: list[RunRecord], extra: dict[str, Any] | None = None) -> None:
        """Store the decision; one already stored from the same runs keeps its time (same report)."""
        assert cmp.verdict is not None
        data = {
            "flags": list(exp.flags),
            "setup": self.setup(exp.name).to_json(),
            "setup_key": self.setup(exp.name).key(),
            "baseline_setup": self.setup(BASELINE).to_json(),
            "baseline_key": self.setup(BASELINE).key(),
            "baseline_seeds": [r.seed for r in base],
            "seeds": [r.seed for r in runs],
            "verdict": cmp.verdict.value,
            **(extra or {}),
        }
        stored = self.store.decision(exp.name)
        stored_data = None if stored is None else stored.to_json()
        if stored_data is not None and all(stored_data.get(k) == v for k, v in data.items()):
            data["git_commit"], data["decided_at"] = stored_data.get("git_commit"), stored_data.get("decided_at", now())
        else:
            data["git_commit"], data["decided_at"] = self.commit, now()
        try:
            self.store.save_decision(Decision.from_json(exp.name, data))
        except OSError as exc:
            self._no_verdict(exp, cmp, f"could not store the decision ({exc}); its runs are stored, "
                             "run the same command again")

    def look_decisions(self, look: int, until: str | None = None) -> dict[str, LookDecision] | str:
        """Every experiment's decision at ``look`` (0-based) from the stored runs, or which seeds are missing."""
        design = self.settings.design
        names = [e.name for e in self.settings.experiments]
        base = {s: r.val_loss for s, r in self.collected(BASELINE, SEEDS[:design.baseline_looks[-1]]).items()}
        exps = {n: {s: r.val_loss for s, r in self.collected(n, SEEDS[:design.looks[-1]]).items()} for n in names}
        return looks.decisions_at(design, names, base, exps, look, until)

    def sequential_verdict(self, name: str) -> Outcome:
        """The sequential mode's verdict, from the stored runs of the look that decided it."""
        exp = self.experiment(name)
        design = self.settings.design
        decisions = self.look_decisions(len(design.looks) - 1, until=name)
        if isinstance(decisions, str):
            self._no_verdict(exp, None, f"{decisions} not measured (failed, interrupted or deselected); run the "
                             "same command again and only the missing seeds will run")
        decision = decisions[name]
        b_seeds, e_seeds = sequential.seeds_for_look(design, decision.look_index)
        base, runs = self._values(BASELINE, b_seeds)[0], self._values(name, e_seeds)[0]
        cmp = self._comparison(exp, base, runs)
        cmp = dataclasses.replace(cmp, verdict=Verdict(decision.decision.value))
        self._record_decision(exp, cmp, base, runs, {"sequential": self._sequential_data(decision, cmp)})
        return self._announce(exp, cmp)

    def _sequential_data(self, decision: LookDecision, cmp: protocol.Comparison) -> dict[str, Any]:
        """What the stored decision keeps of the mode, for the report (``looks.decision_data``)."""
        table = self._work(sequential_rates.operating_table, self.settings.design)
        return looks.decision_data(self.settings.design, decision, cmp.val_loss.baseline.std,
                                   [e.name for e in self.settings.experiments], table)

    def _announce(self, exp: Experiment, cmp: protocol.Comparison) -> Outcome:
        """Write the reports from the stored decision and say the verdict (the fixed mode's tail, shared)."""
        s = self.settings
        control = self.control_failure()
        contexts = self.publisher.experiments(self.setup(BASELINE).key(), fresh=exp.name, control=self.control)
        path = s.experiment_report(exp.name)
        accepted = cmp.verdict in s.accept and control is None
        table = self.publisher.verdict_text(contexts[exp.name], accepted, path)
        problem = self.publisher.step_summary(contexts[exp.name], accepted, path)
        if problem:
            self.say(problem)
        if control is not None:
            table += f"\n  the control run failed, so this verdict does not pass: {control}"
        outcome = Outcome(exp, cmp, path, table, accepted)
        self.outcomes.append(outcome)
        return outcome

    def _no_verdict(self, exp: Experiment, cmp: protocol.Comparison | None, why: str) -> NoReturn:
        """Fail the verdict test, keeping the reason for the terminal summary."""
        message = f"no verdict for {exp.name}: {why}"
        self.outcomes.append(Outcome(exp, cmp, None, message))
        raise ProtocolFailure(message)
