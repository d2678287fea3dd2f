"""From stored runs to an announced verdict: gather the runs, ask the decision rule (the
``pytest_exprun_decide`` hook), store the decision, hand it to the reports, say the outcome.

The rules themselves are pure (``decide.decision``); exprun's two are the default, ``trylast``
implementations of the hook below (``FixedRule``, ``SequentialRule``), so a project's own rule
in its ``conftest.py`` answers first. A verdict that cannot be reached fails its test with the
reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, NoReturn, Protocol, Sequence

import pytest

from . import newhooks, program_ledger, program_steps, timings
from .decide import decision as rules, looks, protocol, sequential_rates, stats
from .decide.protocol import ControlCheck, Extension
from .decide.sequential import LookDecision
from .decide.sequential_design import Design as SequentialDesign
from .experiments import Experiment
from .names import BASELINE, SEEDS, ProtocolFailure
from .model import Decided, Decision, DecisionMode, ExperimentDesign, RunRecord, Setup
from .program_records import ProgramRecord
from .reports.publish import Publisher
from .settings import Settings
from .store import RunStore, now
from .terminal import Outcome, Terminal

Work = Callable[..., Any]


class RunSource(Protocol):
    """Where the judge finds runs: this session's and the store's, by group and seed."""

    def values(self, group: str, seeds: Iterable[int]) -> tuple[list[RunRecord], list[int]]:
        """The stored runs of these seeds in seed order, and the seeds with none."""

    def setup(self, group: str) -> Setup:
        """What defines this group's runs."""


class FixedRule:
    """exprun's fixed rule (the 2σ verdict on the planned seeds), the hook's default for that mode."""

    @pytest.hookimpl(trylast=True)
    def pytest_exprun_decide(self, mode: DecisionMode, design: ExperimentDesign, baseline: Sequence[RunRecord],
                             runs: Mapping[str, Sequence[RunRecord]]) -> Decision | None:
        return rules.fixed(design, baseline, runs[design.name]) if mode is DecisionMode.FIXED else None


class SequentialRule:
    """exprun's sequential rule (looks with bounds), the hook's default for that mode."""

    @pytest.hookimpl(trylast=True)
    def pytest_exprun_decide(self, mode: DecisionMode, design: ExperimentDesign, baseline: Sequence[RunRecord],
                             runs: Mapping[str, Sequence[RunRecord]]) -> Decision | None:
        return rules.sequential_rule(design, baseline, runs) if mode is DecisionMode.SEQUENTIAL else None


def decided_by_other_mode(stored: Decision, mode: DecisionMode) -> str | None:
    """The mode of exprun's rule that decided ``stored`` when it is not ``mode``, else None.

    Refused rather than re-rendered: a fixed-mode session would run the 2σ rule's seeds and
    store its own verdict over the sequential one (or the other way round), choosing the rule
    after seeing the data. A project's own rule (a decision with its reason) is its own business.
    """
    if stored.reason is not None:
        return None
    was = DecisionMode.SEQUENTIAL if stored.sequential is not None else DecisionMode.FIXED
    return None if was is mode else was.value


class Judge:
    """Decides each experiment from the runs the session has stored, and keeps the outcomes."""

    def __init__(self, config: pytest.Config, settings: Settings, store: RunStore, publisher: Publisher,
                 source: RunSource, terminal: Terminal, work: Work, commit: str | None) -> None:
        self.config = config
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.source = source
        self.terminal = terminal
        self._work = work
        self.commit = commit
        self.mode = DecisionMode(settings.decide)
        self.outcomes: list[Outcome] = []
        self._operating: dict[SequentialDesign, tuple[sequential_rates.ReportRow, ...]] = {}
        self._levels: dict[float, SequentialDesign] = {}
        self._steps: dict[str, ProgramRecord] = {}

    def experiment(self, name: str) -> Experiment:
        return next(e for e in self.settings.experiments if e.name == name)

    def collected(self, group: str, seeds: Iterable[int]) -> dict[int, RunRecord]:
        have, _ = self.source.values(group, seeds)
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
            if stored is not None and (other := decided_by_other_mode(stored, self.mode)) is not None:
                raise pytest.UsageError(
                    f"{exp.name} was decided by the {other} rule, and its report is that rule's; run it with "
                    f"--exprun-decide={other} to keep that decision, or decide again under another name with "
                    "--experiment-name (a decision is not re-decided by another rule on the same runs)"
                )

    def extension(self, name: str) -> Extension | str:
        """Do this experiment's extension seeds run? Decided on the first seeds alone; a string says what is missing."""
        with timings.span(f"decide the extension of {name}"):
            return self._extension(name)

    def _extension(self, name: str) -> Extension | str:
        base, base_missing = self.source.values(BASELINE, self.settings.baseline_seeds)
        first, first_missing = self.source.values(name, self.settings.experiment_seeds)
        if base_missing or first_missing:
            missing = [f"baseline seed {s}" for s in base_missing] + [f"{name} seed {s}" for s in first_missing]
            return f"cannot decide on extra seeds while {', '.join(missing)} are missing"
        step = self.step(name)
        if step is not None and step.threshold is not None:
            from .decide.program import widened_extension

            extend = widened_extension(stats.summarize([r.val_loss for r in base]),
                                       stats.summarize([r.val_loss for r in first]), step.threshold)
            return Extension(extend, f"the first seeds decide {'neither way' if extend else 'already'} at the "
                             f"program's WINNER threshold of {step.threshold:.2f}σ")
        return protocol.extension(stats.summarize([r.val_loss for r in base]),
                                  stats.summarize([r.val_loss for r in first]))

    def step(self, name: str) -> ProgramRecord | None:
        """This experiment's step in its program under --exprun-program-alpha (None without it); fixed
        the first time it is asked for in a session, and kept with the stored decision."""
        alpha = self.settings.program_alpha
        if alpha is None:
            return None
        if self.mode is DecisionMode.SEQUENTIAL and name not in self._steps:
            # The looks decide every experiment of the session together, so the steps are handed
            # out at once, in the order the experiments were named: no outcome picks the order.
            for other in (e.name for e in self.settings.experiments):
                if other not in self._steps:
                    self._steps[other] = self._next_step(alpha, other)
        if name not in self._steps:
            self._steps[name] = self._next_step(alpha, name)
        return self._steps[name]

    def _next_step(self, alpha: float, name: str) -> ProgramRecord:
        s = self.settings
        stored = program_steps.controlled(self.store.decisions(), self.source.setup(BASELINE).key())
        taken = sum(1 for n in self._steps if n not in {d.name for d in stored})
        threshold = program_steps.ThresholdAt(len(s.baseline_seeds), len(s.experiment_seeds), len(s.extension_seeds))
        return program_steps.next_step(alpha, stored, name, taken, threshold if self.mode is DecisionMode.FIXED else None)

    def look_decisions(self, look: int, until: str | None = None) -> dict[str, LookDecision] | str:
        """Every experiment's decision at ``look`` (0-based) from the stored runs, or which seeds are missing."""
        design = self.settings.design
        names = [e.name for e in self.settings.experiments]
        base = {s: r.val_loss for s, r in self.collected(BASELINE, SEEDS[:design.baseline_looks[-1]]).items()}
        exps = {n: {s: r.val_loss for s, r in self.collected(n, SEEDS[:design.looks[-1]]).items()} for n in names}
        from .decide.sequential_equivalence import at_looks

        margin = self.settings.margin
        if self.settings.program_alpha is not None:
            designs = {n: self.sequential_design(n) for n in names}
            stops = {n: stop for n, d in designs.items() if (stop := at_looks(margin, d)) is not None}
            return looks.decisions_each(designs, base, exps, look, stops)
        return looks.decisions_at(design, names, base, exps, look, until, at_looks(margin, design))

    def sequential_design(self, name: str) -> SequentialDesign:
        """The session's design, or under a program the same design calibrated at this experiment's
        LOND level (``decide.program.sequential_at_level``; seconds the first time a level is met)."""
        step = self.step(name)
        if step is None:
            return self.settings.design
        if step.level not in self._levels:
            from .decide.program import sequential_at_level

            self._levels[step.level] = self._work(sequential_at_level, self.settings.design, step.level)
        return self._levels[step.level]

    # -------------------------------------------------------------- the verdict
    def design(self, exp: Experiment) -> ExperimentDesign:
        """What the rule is asked: this experiment in its family, and the sequential mode's design.

        Under a program each experiment is its own family, at its own level (``sequential_design``),
        and its report quotes that design's simulated rates."""
        sequential = self.mode is DecisionMode.SEQUENTIAL
        seq = self.sequential_design(exp.name) if sequential else None
        if seq is not None and seq not in self._operating:
            self._operating[seq] = self._work(sequential_rates.operating_table, seq)
        alone = sequential and self.settings.program_alpha is not None
        return ExperimentDesign(name=exp.name, flags=tuple(exp.flags), setup=self.source.setup(exp.name),
                                baseline_setup=self.source.setup(BASELINE),
                                family=(exp.name,) if alone else tuple(e.name for e in self.settings.experiments),
                                sequential=seq, operating=self._operating.get(seq, ()) if seq else (),
                                margin=self.settings.margin, spec=exp.spec, program=self.step(exp.name))

    def verdict(self, name: str, control: ControlCheck | None = None, control_failure: str | None = None) -> Outcome:
        """Decide, store the decision, write the reports, and say the verdict; a failed control fails it."""
        exp = self.experiment(name)
        s = self.settings
        if self.mode is DecisionMode.FIXED:
            base, base_missing = self.source.values(BASELINE, s.baseline_seeds)
            runs, run_missing = self._fixed_runs(name)
            missing = [f"baseline seed {x}" for x in base_missing] + run_missing
            if missing:
                self._no_verdict(exp, None, f"{', '.join(missing)} {rules.RUN_AGAIN}")
            all_runs: dict[str, Sequence[RunRecord]] = {name: runs}
        else:
            design = s.design
            base = self.source.values(BASELINE, SEEDS[:design.baseline_looks[-1]])[0]
            all_runs = {n: self.source.values(n, SEEDS[:design.looks[-1]])[0] for n in (e.name for e in s.experiments)}
        with timings.span(f"decide {name}"):
            asked = self.design(exp)
            decision = rules.with_margin(asked, self._decide(asked, base, all_runs), base, all_runs[name])
        if decision.verdict is None:
            self._no_verdict(exp, decision.comparison, decision.problem or "the data cannot support a verdict")
        if not (set(decision.baseline_seeds) <= {r.seed for r in base}
                and set(decision.seeds) <= {r.seed for r in all_runs[name]}):
            self._no_verdict(exp, decision.comparison, self._unstored(decision))
        with timings.span("store the decision"):
            decision = dataclasses.replace(self._store(exp, decision), control=control)
        with timings.span(f"reports of {name}"):
            return self._announce(exp, decision, control_failure)

    def _fixed_runs(self, name: str) -> tuple[list[RunRecord], list[str]]:
        """The fixed mode's runs: the first seeds, and the extension seeds when the extension rule asked for them."""
        s = self.settings
        runs, missing = self.source.values(name, s.experiment_seeds)
        named = [f"{name} seed {x}" for x in missing]
        if not missing and s.extension_seeds:
            extension = self.extension(name)
            if isinstance(extension, Extension) and extension.extend:
                more, more_missing = self.source.values(name, s.extension_seeds)
                named += [f"{name} seed {x}" for x in more_missing]
                runs = runs + more
        return runs, named

    def _decide(self, design: ExperimentDesign, base: Sequence[RunRecord],
                runs: Mapping[str, Sequence[RunRecord]]) -> Decision:
        """Ask the decision rules (the project's first, exprun's last) and check what comes back."""
        decision = newhooks.call(self.config, "pytest_exprun_decide", mode=self.mode, design=design,
                                 baseline=tuple(base), runs=runs)
        if decision is None:
            raise ProtocolFailure(f"no decision rule answered for --exprun-decide={self.mode.value}; a "
                                  "pytest_exprun_decide implementation returned None for every mode")
        if not isinstance(decision, Decision) or decision.name != design.name:
            raise ProtocolFailure(f"pytest_exprun_decide returned {decision!r:.80}, not a Decision on {design.name}; "
                                  "build one with pytest_exprun.model.Decision.made(design, baseline, runs, verdict)")
        return decision

    def _store(self, exp: Experiment, decision: Decision) -> Decision:
        """Store the decision; one already stored from the same runs keeps its commit and time (same report)."""
        stored = self.store.decision(exp.name)
        if stored is not None and decision.same_facts(stored):
            decision = decision.stamped(stored.git_commit, stored.decided_at or now())
        else:
            decision = decision.stamped(self.commit, now())
        try:
            self.store.save_decision(decision)
        except OSError as exc:
            self._no_verdict(exp, decision.comparison, f"could not store the decision ({exc}); its runs are "
                             "stored, run the same command again")
        return decision

    def family(self, fresh: Decision) -> list[Decided]:
        """Every stored decision judged against the same baseline, with its runs, by name; ``fresh`` as made."""
        found = []
        for stored in self.store.decisions():
            if stored.baseline_key != fresh.baseline_key:
                continue
            base = self.store.records(BASELINE, stored.baseline_key, stored.baseline_seeds)
            runs = self.store.records(stored.name, stored.setup_key, stored.seeds)
            if len(base) != len(stored.baseline_seeds) or len(runs) != len(stored.seeds):
                continue  # its runs were set aside: the decision no longer stands on records
            decision = fresh if stored.name == fresh.name else stored
            found.append(rules.restore(decision, [base[x] for x in stored.baseline_seeds],
                                       [runs[x] for x in stored.seeds]))
        return found

    def _announce(self, exp: Experiment, decision: Decision, control_failure: str | None) -> Outcome:
        """Write the reports from the stored decisions and say the verdict (both modes' tail)."""
        s = self.settings
        family = self.family(decision)
        fresh = next((d.decision for d in family if d.name == exp.name), None)
        if fresh is None:
            self._no_verdict(exp, decision.comparison, self._unstored(decision))
        with timings.span("experiment reports, twins, plots, summary"):
            contexts = self.publisher.experiments(family, fresh=exp.name)
        path = s.experiment_report(exp.name)
        accepted = decision.verdict in s.accept and control_failure is None
        table = self.publisher.verdict_text(contexts[exp.name], accepted, path)
        problem = self.publisher.step_summary(contexts[exp.name], accepted, path)
        if problem:
            self.terminal.say(problem)
        if control_failure is not None:
            table += f"\n  the control run failed, so this verdict does not pass: {control_failure}"
        outcome = Outcome(exp, fresh.comparison, path, table, accepted,
                          contexts[exp.name].get("wall_clock", {}).get("distrust"), self._ledger(family, exp.name, path))
        self.outcomes.append(outcome)
        return outcome

    def _ledger(self, family: Sequence[Decided], name: str, path: Any) -> str:
        """Add the decision to the ledger beside the reports (written again from the store when missing);
        its closing grep line."""
        s = self.settings
        decided = next(d for d in family if d.name == name)
        line: program_ledger.Line = self._work(program_ledger.line_of, decided, s.scale, path, s.rootdir, family)
        with timings.span("ledger"):
            program_ledger.record(s.research_dir / "verdicts.jsonl", line,
                                  lambda: self._work(program_ledger.stored_lines, s.state_dir, s.research_dir,
                                                     s.rootdir),
                                  inside=s.research_dir)
        return line.grep_line()

    @staticmethod
    def _unstored(decision: Decision) -> str:
        return (f"the decision names runs that are not stored (baseline seeds {list(decision.baseline_seeds)}, "
                f"seeds {list(decision.seeds)}); a decision rule decides on the runs it is given")

    def _no_verdict(self, exp: Experiment, cmp: protocol.Comparison | None, why: str) -> NoReturn:
        """Fail the verdict test, keeping the reason for the terminal summary; "run the same command
        again" becomes the exact command: this session's, without what deselected seeds (-k, --deselect)."""
        from .terminal import rerun_command

        command = rerun_command(self.config.invocation_params.args, [])
        message = f"no verdict for {exp.name}: {why.replace(rules.RUN_AGAIN, rules.run_again(command))}"
        self.outcomes.append(Outcome(exp, cmp, None, message))
        raise ProtocolFailure(message)
