"""One protocol session, coordinated: the lock, the executor, the runs in flight, what is missing.

It decides nothing: baseline reuse is ``baseline``'s, decisions ``verdicts``' (``pytest_exprun_decide``), reports
``publish``'s. Data flows one way: trainer output -> ``RunResult`` -> stored ``RunRecord`` -> decision -> reports.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Iterable

import pytest

from . import baseline, newhooks, prestart, runs, simcache, timings
from .reports import aside
from .remeasure import Remeasure
from .trainer import fingerprint
from .decide import looks, stats
from .executors import Executor, RunHandle
from .decide.decision import control_check
from .decide.protocol import ControlCheck
from .names import BASELINE, CONTROL, CONTROL_SEED, SEEDS, ProtocolFailure
from .reports.publish import Publisher
from .trainer.runner import Failure, RunResult, RunSpec
from .decide.sequential import Decision
from .experiments import Experiment
from .settings import Settings
from .trainer.interface import expected_lines
from .trainer.result_file import with_result_file
from .model import BaselineSnapshot, RunRecord, Setup
from .store import RunStore, SessionLock, fresh_dir, git_commit, now, refuse_links, remove_tree
from .terminal import Outcome, RunCounter, Terminal, summary_lines
from .verdicts import Judge

if TYPE_CHECKING:
    from .items import SeedRun



class ProtocolSession:
    def __init__(self, config: pytest.Config, settings: Settings, early: prestart.Early | None = None) -> None:
        self.config = config
        self.settings = settings
        self.store = RunStore(settings.state_dir, settings.scale)
        self.lock = SessionLock(settings.state_dir / "lock")
        self.terminal = Terminal(config, settings.rootdir)
        #: Statistics, plots and reports, in a helper process once ``prestart`` has started it.
        self.aside = aside.Helper(None if early is None else early.helper)
        self.publisher = Publisher(settings, self.aside.call, self.terminal.rel)
        self.terminal.is_evaluation = self._is_evaluation
        self.executor: Executor | None = None
        #: The executor ``prestart.start_early`` made and started before collection, until ``start`` takes it.
        self.early: Executor | None = None if early is None else early.executor
        self.handles: dict[tuple[str, int], RunHandle] = {}
        #: Runs an eager executor finished (and that were stored) before their test asked.
        self._stored_early: dict[tuple[str, int], RunRecord] = {}
        self.records: dict[str, dict[int, RunRecord]] = {}
        self.snapshot: BaselineSnapshot | None = None
        self.reused = False
        self.failed: dict[tuple[str, int], str] = {}
        self.counter = RunCounter()
        #: A failure every later run would repeat (the trainer cannot start): later seeds are not started.
        self._fatal: str | None = None
        self._setups: dict[str, Setup] = {}
        self._fingerprints: dict[str, fingerprint.Fingerprint] = {}
        self._commit: str | None = None
        #: The control run's check against the stored baseline, part of this session's decisions.
        self.control: ControlCheck | None = None
        self.judge: Judge | None = None
        #: A baseline being re-measured, stored apart until every seed is in (remeasure.py).
        self.remeasure: Remeasure | None = None

    # ----------------------------------------------------------------- set-up
    def start(self, items: Iterable["SeedRun"]) -> None:
        """Before the first run: check inputs, take the lock, decide what the baseline is."""
        items = list(items)
        runs.check_trainer(self.settings)
        try:
            locked = self.lock.acquire(self.settings.lock_wait, self.terminal.say)
        except OSError as exc:
            raise pytest.UsageError(
                f"cannot use {self.settings.research_dir} as the research dir ({exc}); "
                "fix --exprun-research-dir (or exprun_research_dir in your ini file)"
            ) from None
        if not locked:
            raise pytest.UsageError(
                f"another exprun session is using {self.settings.research_dir} "
                f"(lock {self.lock.path}); wait for it or raise --exprun-lock-wait"
            )
        self._commit = git_commit(self.settings.rootdir)
        self.judge = Judge(self.config, self.settings, self.store, self.publisher, self, self.terminal, self.aside.call,
                           self._commit)
        self.judge.check_names()
        self.setup(BASELINE)
        found = self._fingerprints[BASELINE]
        if found.empty:
            self.terminal.say(f"nothing is fingerprinted for this setup: {'; '.join(found.notes) or 'no files found'}; "
                              "an edited trainer would not be noticed (add files with exprun_fingerprint_include)")
        measuring = any(item.group == BASELINE for item in items)
        try:
            self.snapshot = baseline.prepare(
                self.store, self.setup(BASELINE), self.settings.baseline_seeds, self.settings.baseline_report,
                self.settings.rerun_baseline, measuring, self.terminal.say, self.settings.rootdir)
            if self.settings.rerun_baseline and measuring:  # the old baseline stays in force until then
                self.remeasure = Remeasure(self.store, self.setup(BASELINE).key(), self.settings.baseline_report,
                                           self.terminal.rel)
        except (baseline.BaselineRefused, OSError) as exc:
            raise pytest.UsageError(str(exc)) from None
        if self.snapshot is not None:
            have = self.collected(BASELINE, self.settings.baseline_seeds)
            self.reused = len(have) == len(self.settings.baseline_seeds)
            self._maybe_publish_baseline()
        pending = [item for item in items if self._known(item.group, item.seed) is None]
        for item in pending:
            self.counter.plan(item.group, item.conditional, getattr(item, "look", None))
        prestart.start_for(self, pending)
        assert self.executor is not None
        if self.executor.eager:
            for item in pending:
                if not item.conditional:
                    self._submit(item.group, item.seed)

    def finish(self, cancel: bool) -> None:
        if self.executor is not None:
            if self.executor.eager:
                self._store_finished()
            for handle in self.handles.values():
                handle.cancel()
            timings.timed("close the executor", self.executor.close, cancel)
        simcache.save(self)  # before the aside helper, which keeps what it simulated, is closed
        self.aside.close()
        self.lock.release()

    def setup(self, group: str) -> Setup:
        """What defines this group's runs, fingerprinted once per session (flags can name config files)."""
        if group not in self._setups:
            self._setups[group], self._fingerprints[group] = runs.setup_of(self.settings, self._flags(group))
        return self._setups[group]

    def _flags(self, group: str) -> tuple[str, ...]:
        return () if group in (BASELINE, CONTROL) else self.experiment(group).flags

    def _setup_changed(self, group: str) -> list[str]:
        """What changed in the group's files since the session took its fingerprint (cheap)."""
        self.setup(group)
        return fingerprint.recheck(self._fingerprints[group], self.settings.rootdir)

    def experiment(self, name: str) -> Experiment:
        return next(e for e in self.settings.experiments if e.name == name)

    # -------------------------------------------------------------------- runs
    def _known(self, group: str, seed: int) -> RunRecord | None:
        """A result for this seed from this session or an earlier one (the store)."""
        found = self.records.get(group, {}).get(seed)
        if found is None and group != CONTROL:
            found = runs.unless_stale(self._store_for(group).record(group, self.setup(group).key(), seed),
                                      self.settings.rootdir, self.terminal.say)
            if found is not None:
                self.records.setdefault(group, {})[seed] = found
        return found

    def _store_for(self, group: str) -> RunStore:
        return self.store if self.remeasure is None else self.remeasure.store_for(group)

    def collected(self, group: str, seeds: Iterable[int]) -> dict[int, RunRecord]:
        return {s: r for s in seeds if (r := self._known(group, s)) is not None}

    def values(self, group: str, seeds: Iterable[int]) -> tuple[list[RunRecord], list[int]]:
        seeds = list(seeds)
        have = self.collected(group, seeds)
        return [have[s] for s in seeds if s in have], [s for s in seeds if s not in have]

    def spec(self, group: str, seed: int) -> RunSpec:
        custom = functools.partial(self._hook, "pytest_exprun_build_argv", group=group, seed=seed)
        return runs.spec_of(self.settings, group, seed, self._flags(group), custom,
                            self._store_for(group).log_path(group, self.setup(group).key(), seed))

    def _hook(self, name: str, **kwargs: Any) -> Any:
        return newhooks.call(self.config, name, **kwargs)

    def _is_evaluation(self, line: str) -> bool:
        try:
            return self._parse_line(line) is not None
        except ProtocolFailure:
            return False  # the run itself reports the hook's error

    def _parse_line(self, line: str) -> tuple[int, float] | None:
        result: tuple[int, float] | None = self._hook("pytest_exprun_parse_line", line=line)
        return result

    def _submit(self, group: str, seed: int) -> RunHandle:
        assert self.executor is not None
        handle = self.handles.get((group, seed))
        if handle is None:
            spec = self.spec(group, seed)
            try:
                fresh_dir(spec.output_dir, self.settings.checkpoints_dir)
                refuse_links(spec.log_path, self.settings.state_dir)
                spec.log_path.parent.mkdir(parents=True, exist_ok=True)
                runs.clear_trace(spec.log_path)
            except OSError as exc:
                raise ProtocolFailure(f"{spec.label}: cannot prepare its output dir or log ({exc})") from None
            sink = self.terminal.echo if self.executor.streams_output else None
            handle = self.executor.submit(spec, sink, self._parse_line)
            self.handles[(group, seed)] = handle
        return handle

    def run_seed(self, group: str, seed: int) -> RunRecord | str:
        """Measure one seed, or say why it needs no run (returned as the skip reason)."""
        early = self._stored_early.pop((group, seed), None)
        known = None if early is not None else self._known(group, seed)
        if known is not None:
            if group == BASELINE and self.reused and seed in self.settings.baseline_seeds:
                return f"baseline reused from {self.terminal.rel(self.settings.baseline_report)}"
            return ("already measured in an earlier session "
                    f"({self.terminal.rel(self.store.record_path(group, known.setup_key, seed))})")
        if self._fatal is not None:
            raise ProtocolFailure(f"{group}[seed{seed}]: not started, as every run would fail the same way: {self._fatal}")
        changed = self._setup_changed(group)
        if changed:
            raise ProtocolFailure(f"{group}[seed{seed}]: the setup changed during this session ({'; '.join(changed)}); "
                                  "runs of two versions are never mixed: run the same command again")
        handle = self._submit(group, seed)
        label = f"{group}[seed{seed}]"
        counter = self.counter.next()
        self.terminal.run_started(counter, label)
        note = None if self.executor is None else self.executor.readiness()  # ``_submit`` had one
        if note is not None:
            self.terminal.say(note)
        started = timings.now()
        with self.terminal.uncaptured():
            result = self._await(handle)
        timings.add(f"run {label}", started, timings.now(), f"its own wall time {result.wall_time:.3f}s")
        self.handles.pop((group, seed), None)
        if not result.ok:
            message = result.describe_failure(expected_lines(self.settings.trainer_io))
            self.failed[(group, seed)] = message
            if result.failure is Failure.NOT_STARTED:
                self._fatal = message.splitlines()[0]
            self.terminal.run_ended(counter, label, f"FAILED after {result.wall_time:.1f}s")
            raise ProtocolFailure(message)
        record = early if early is not None else self._store(result)
        metric = self.settings.trainer_io.metric_name
        self.terminal.run_ended(counter, label, f"done in {result.wall_time:.1f}s, {metric} {result.val_loss:.4f}")
        return record

    def _await(self, handle: RunHandle) -> RunResult:
        """Wait for one run; meanwhile store every other run that finished, in whatever order."""
        if self.executor is not None and self.executor.eager:
            while not handle.wait(0.2):
                self._store_finished()
        return with_result_file(handle.result(), self.settings.trainer_io.result)

    def _store_finished(self) -> None:
        """Store the finished, successful runs no test has asked for yet, so an interruption keeps them."""
        for key, handle in list(self.handles.items()):
            if key not in self._stored_early and handle.wait(0):
                try:
                    result = with_result_file(handle.result(), self.settings.trainer_io.result)
                except Exception:  # noqa: BLE001 - raised again, and reported, by that run's own test
                    continue
                if result.ok:
                    try:
                        self._stored_early[key] = self._store(result)
                    except ProtocolFailure:
                        continue  # reported by that run's own test, which stores it again or fails

    def _store(self, result: RunResult) -> RunRecord:
        """Persist one successful run and do what follows from it (hook, checkpoint clean-up, report)."""
        group, seed = result.spec.group, result.spec.seed
        assert result.val_loss is not None and self.executor is not None
        changed = self._setup_changed(group)
        if changed:
            message = (f"{result.spec.label}: the setup changed while it ran ({'; '.join(changed)}); its result "
                       f"({self.settings.trainer_io.metric_name} {result.val_loss:.4f}) is not recorded: run again")
            self.failed[(group, seed)] = message
            raise ProtocolFailure(message)
        record = runs.record_of(result, self.setup(group).key(), self.executor.timing,
                                self.terminal.rel(result.spec.log_path), self.settings)
        if (mixed := runs.read_otherwise(result.spec.label, record, self.records.get(BASELINE, {}).values())):
            self.failed[(group, seed)] = mixed
            raise ProtocolFailure(mixed)
        try:
            with timings.span("store the record"):
                self._store_for(group).save_record(record)  # a control run is stored too, but never reused (``_known``)
        except (OSError, ValueError) as exc:
            message = (
                f"{result.spec.label}: could not store the result ({exc}); the run finished with "
                f"{self.settings.trainer_io.metric_name} {result.val_loss:.4f} (log: {self.terminal.rel(result.spec.log_path)}) but it is not recorded "
                "and will run again next time"
            )
            self.failed[(group, seed)] = message
            raise ProtocolFailure(message) from None
        self.records.setdefault(group, {})[seed] = record
        if not self.settings.keep_checkpoints:
            remove_tree(result.spec.output_dir)
            with contextlib.suppress(OSError):  # the research dir's folder goes too once it is empty
                result.spec.output_dir.parent.rmdir()
        self._hook("pytest_exprun_run_finished", record=record)
        if group == BASELINE:
            self._maybe_publish_baseline()
        return record

    def _maybe_publish_baseline(self) -> None:
        """Once every baseline seed is stored: the snapshot (if new) and the report, from the store."""
        seeds = self.settings.baseline_seeds
        have = self.collected(BASELINE, seeds)
        if len(have) < len(seeds):
            return
        setup = self.setup(BASELINE)
        if self.snapshot is None:
            measured = max((r.finished_at for r in have.values()), default="") or now()
            self.snapshot, traced = runs.new_snapshot(setup, [have[s] for s in seeds], self._commit, measured)
            try:
                if self.remeasure is not None:  # only now is the old baseline set aside
                    have = self.records[BASELINE] = self.remeasure.commit(seeds, self.terminal.say)
                    self.remeasure = None
                self.store.save_snapshot(self.snapshot)
            except OSError as exc:
                raise ProtocolFailure(f"could not store the baseline snapshot ({exc}); its runs are stored, "
                                      "run the same command again") from None
            if traced is not None:
                self.terminal.say(traced)
        with timings.span("baseline report"):
            self.publisher.baseline([have[s] for s in seeds], self.snapshot.setup, self.snapshot.git_commit,
                                    self.snapshot.measured_at, self.snapshot.traced)

    def run_control(self, seed: int) -> RunRecord:
        """Run the baseline's setup afresh and fail when it no longer matches the stored baseline."""
        base, missing = self.values(BASELINE, self.settings.baseline_seeds)
        if missing:
            raise ProtocolFailure(
                f"cannot check the control run: baseline seed(s) {', '.join(map(str, missing))} not measured"
            )
        outcome = self.run_seed(CONTROL, seed)
        record = outcome if isinstance(outcome, RunRecord) else self.records[CONTROL][seed]
        self.control = check = control_check(base, record, self.settings.trainer_io.metric_name)
        if not check.ok:
            message = (
                f"control run (seed {seed}, no experiment flags): {check.message}: the baseline in "
                f"{self.terminal.rel(self.settings.baseline_report)} no longer matches what the code gives; "
                "re-measure it with --exprun-rerun-baseline"
            )
            self.failed[(CONTROL, seed)] = message
            raise ProtocolFailure(message)
        return record

    # -------------------------------------------------------------- decisions
    def run_extension_seed(self, name: str, seed: int) -> RunRecord | str:
        assert self.judge is not None
        decision = self.judge.extension(name)
        if isinstance(decision, str):
            return decision
        self.counter.decided(name, decision.extend)
        if not decision.extend:
            return decision.reason
        if self.executor is not None and self.executor.eager:
            for other in self.settings.extension_seeds:
                if self._known(name, other) is None:
                    self._submit(name, other)
        return self.run_seed(name, seed)

    def verdict(self, name: str) -> Outcome:
        assert self.judge is not None
        return self.judge.verdict(name, self.control, self.failed.get((CONTROL, CONTROL_SEED)))

    # ------------------------------------------------------ the sequential mode
    def run_look_seed(self, group: str, seed: int, look: int) -> RunRecord | str:
        """A seed of a later look: it runs only when the decision at the look before is CONTINUE."""
        assert self.judge is not None
        decisions = self.judge.look_decisions(look - 1)
        if isinstance(decisions, str):
            return f"cannot decide whether look {look + 1} is needed while {decisions} are missing"
        names = list(decisions) if group == BASELINE else [group]
        going = [n for n in names if decisions[n].decision is Decision.CONTINUE]
        self.counter.look_decided(group, look, bool(going))
        if not going:
            count = len(self.settings.design.looks)
            return "not needed: " + "; ".join(looks.stopped_reason(decisions[n], count, n if group == BASELINE else None)
                                              for n in names)
        if self.executor is not None and self.executor.eager:
            design = self.settings.design
            counts = design.baseline_looks if group == BASELINE else design.looks
            for other in SEEDS[counts[look - 1]:counts[look]]:
                if self._known(group, other) is None:
                    self._submit(group, other)
        return self.run_seed(group, seed)

    def summary_lines(self) -> list[str]:
        base, missing = self.values(BASELINE, self.settings.baseline_seeds)
        summary = stats.summarize([r.val_loss for r in base]) if base else None
        reused = self.terminal.rel(self.settings.baseline_report) if self.reused else None
        outcomes = [] if self.judge is None else self.judge.outcomes
        unfinished = [] if self.remeasure is None else [self.remeasure.unfinished(len(base), len(base) + len(missing))]
        return summary_lines(summary, len(self.settings.baseline_seeds), missing, reused, outcomes,
                             self.terminal.rel, self.settings.trainer_io.metric_name) + unfinished
