"""One protocol session: which seeds still need a run, running them, deciding, reporting.

Items call into this object; it applies the pure rules of ``protocol`` to the results it
gets from the executor and the run store, and writes reports through ``report``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, NoReturn, TypeVar

import pytest

from . import aside, plots, protocol, rates, report, stats
from .executors import Executor, RunHandle, make_executor
from .protocol import Comparison, Verdict, compare, needs_extension
from .runner import LineThrottle, RunResult, RunSpec, parse_step_line
from .settings import Experiment, Settings
from .stats import summarize
from .store import (
    RunRecord,
    RunStore,
    SessionLock,
    Setup,
    StoreWarning,
    atomic_write_text,
    git_commit,
    remove_tree,
    set_aside,
    trainer_files,
)

if TYPE_CHECKING:
    from .items import SeedRun

BASELINE = "baseline"
#: A fresh baseline-like run checked against the stored baseline; never reused across sessions.
CONTROL = "control"
CONTROL_SEED = 42
#: Curve rows shown in a report; the JSON next to it keeps every step.
CURVE_ROWS = 20


class ProtocolFailure(Exception):
    """A seed or a verdict failed for a reason the message fully explains (no traceback)."""


@dataclass(frozen=True)
class Decision:
    """Whether an experiment's extension seeds run, and why, for the skip message and report."""

    extend: bool | None
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What the verdict test found, kept for the terminal summary."""

    experiment: Experiment
    comparison: Comparison | None
    report: Path | None
    message: str


#: Keys of a trainer's ``metrics.json`` that must agree between runs that are compared.
ENVIRONMENT_KEYS = ("device", "torch_version", "data_fingerprint")
#: What a run's wall time covers (``Executor.timing``); runs stored before it was recorded
#: were all timed as one process per run.
TIMING_KEY = "timing"
DEFAULT_TIMING = "process"


T = TypeVar("T")


def read_environment(output_dir: Path) -> dict[str, object]:
    """What machine, framework and data a run used, if the trainer wrote a ``metrics.json``."""
    try:
        metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    return {key: metrics[key] for key in ENVIRONMENT_KEYS if isinstance(metrics.get(key), (str, int, float))}


def mixed_environments(*groups: list[RunRecord]) -> str | None:
    """Describe how the runs' environments differ, or None when they agree (or are unknown)."""
    seen: dict[str, set[str]] = {}
    for records in groups:
        for record in records:
            environment = {TIMING_KEY: DEFAULT_TIMING, **(record.extra.get("environment") or {})}
            for key, value in environment.items():
                seen.setdefault(key, set()).add(str(value))
    differing = {key: sorted(values) for key, values in seen.items() if len(values) > 1}
    if not differing:
        return None
    return "; ".join(f"{key}: {' vs '.join(values)}" for key, values in sorted(differing.items()))


@dataclass(frozen=True)
class Published:
    """An experiment report written in this session, kept to re-render it as the Holm family grows."""

    experiment: Experiment
    comparison: Comparison
    baseline: list[RunRecord]
    runs: list[RunRecord]
    evidence: rates.Evidence
    curves: stats.Curves
    plots: plots.PlotSet
    path: Path
    measured_at: str


class ProtocolSession:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.store = RunStore(settings.state_dir, settings.scale)
        self.lock = SessionLock(settings.state_dir / "lock")
        self.executor: Executor | None = None
        self.aside: aside.Aside | None = None
        self.handles: dict[tuple[str, int], RunHandle] = {}
        #: Runs an eager executor finished (and that were stored) before their test asked.
        self._stored_early: dict[tuple[str, int], RunRecord] = {}
        self.records: dict[str, dict[int, RunRecord]] = {}
        self.reused_from: Path | None = None
        self.failed: dict[tuple[str, int], str] = {}
        self.outcomes: list[Outcome] = []
        self.runs_started = 0
        self.runs_planned = 0
        self.published: dict[str, Published] = {}
        self._setups: dict[str, Setup] = {}
        self._trainer_files: tuple[tuple[str, str], ...] | None = None
        self._reported_env: dict[int, dict[str, object]] = {}
        self._current: tuple[int, str, float] = (0, "", 0.0)  # the run whose output is echoed
        self._commit: str | None = None
        self._parse_line = self._line_parser()
        self._echo_throttle = LineThrottle()

    # ----------------------------------------------------------------- set-up
    def start(self, items: Iterable["SeedRun"]) -> None:
        """Before the first run: check inputs, take the lock, decide what the baseline is."""
        self._check_trainer()
        try:
            locked = self.lock.acquire(self.settings.lock_wait, self._say)
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
        self._prepare_baseline()
        self.executor = make_executor(self.settings)
        pending = [item for item in items if self._known(item.group, item.seed) is None]
        self.runs_planned = len(pending)
        if pending and self.settings.experiments:
            self.aside = aside.start()  # imports the statistics and plotting while the runs go on
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
            self.executor.close(cancel=cancel)
        if self.aside is not None:
            self.aside.close()
        self.lock.release()

    def _check_trainer(self) -> None:
        argv = self.settings.argv_prefix()
        program = argv[0]
        if shutil.which(program) is None and not (
            Path(program).is_file() and Path(program).stat().st_mode & 0o111
        ):
            raise pytest.UsageError(
                f"trainer command {program!r} is not an executable program; "
                "fix --exprun-command (or exprun_command in your ini file)"
            )
        for arg in self.settings.command[1:]:
            if arg.endswith(".py") and not arg.startswith("-"):
                path = Path(arg) if Path(arg).is_absolute() else self.settings.rootdir / arg
                if not path.is_file():
                    raise pytest.UsageError(
                        f"trainer file {path} does not exist; fix --exprun-command "
                        f"(currently {' '.join(self.settings.command)!r})"
                    )

    def setup(self, group: str) -> Setup:
        if group not in self._setups:
            if self._trainer_files is None:  # hashed once: every group runs the same trainer
                self._trainer_files = trainer_files(self.settings.command, self.settings.rootdir)
            flags = () if group in (BASELINE, CONTROL) else self.experiment(group).flags
            self._setups[group] = Setup(
                command=self.settings.command,
                train_tokens=self.settings.train_tokens,
                flags=flags,
                trainer_files=self._trainer_files,
            )
        return self._setups[group]

    def experiment(self, name: str) -> Experiment:
        return next(e for e in self.settings.experiments if e.name == name)

    # ---------------------------------------------------------------- baseline
    def _prepare_baseline(self) -> None:
        """Reuse a matching baseline report, or refuse one that does not match, before any run."""
        path = self.settings.baseline_report
        setup = self.setup(BASELINE)
        if self.settings.rerun_baseline:
            if path.exists():
                kept = set_aside(path, "replaced" if report.is_ours_unedited(path) else "bak")
                self._say(f"re-measuring the baseline; the previous report is kept as {kept.name}")
            folder = self.store.folder(BASELINE, setup.key())
            if folder.exists():
                set_aside(folder, "replaced")
            return
        if not path.exists():
            return
        try:
            runs = self._read_baseline_report(path, setup)
        except (report.ReportError, OSError) as exc:
            raise pytest.UsageError(str(exc)) from None
        stored = self.records.setdefault(BASELINE, {})
        for seed, (val_loss, wall_time) in runs.items():
            # Curves live in the run store; the report alone is enough for the statistics.
            record = self.store.load(BASELINE, setup.key(), seed)
            if record is None or not math.isclose(record.val_loss, val_loss, rel_tol=1e-9):
                env = self._reported_env.get(seed)
                record = RunRecord(BASELINE, seed, val_loss, wall_time, setup.key(),
                                   extra={"environment": env} if env else {})
            stored[seed] = record
        self.reused_from = path

    def _read_baseline_report(self, path: Path, setup: Setup) -> dict[int, tuple[float, float]]:
        rerun = "re-measure with --exprun-rerun-baseline (the current file is kept aside)"
        read = report.read_report(path)
        if read.data is None:
            raise report.ReportError(
                f"{path} has no exprun data block (written by hand, or in the short format): "
                f"exprun cannot tell what it was measured with, so it will not reuse it; {rerun}"
            )
        data = read.data
        try:
            if data.get("kind") != "baseline":
                raise ValueError("it is not a baseline report")
            stored_setup = Setup.from_json(data["setup"])
            runs = {int(r["seed"]): (float(r["val_loss"]), float(r["wall_time"])) for r in data["runs"]}
            self._reported_env = {int(r["seed"]): dict(r.get("environment") or {}) for r in data["runs"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise report.ReportError(f"{path}: its exprun data block is damaged ({exc}); {rerun}") from None
        if not all(math.isfinite(v) and math.isfinite(w) for v, w in runs.values()):
            raise report.ReportError(f"{path}: its data holds non-finite values; {rerun}")
        changes = setup.differences(stored_setup)
        if changes:
            raise report.ReportError(
                f"{path} was measured with a different setup ({'; '.join(changes)}); "
                f"it is not reused for a changed trainer: {rerun}"
            )
        expected = sorted(self.settings.baseline_seeds)
        if sorted(runs) != expected:
            raise report.ReportError(
                f"{path} holds seeds {sorted(runs)} but the protocol needs {expected}; {rerun}"
            )
        if read.edited and "tables_sha256" in data:
            if data["tables_sha256"] != report.tables_digest(read.body):
                raise report.ReportError(
                    f"{path} was edited by hand: the numbers in its tables no longer match what was measured "
                    f"(added prose is fine, changed table rows are not); restore it (e.g. from git) or {rerun}"
                )
        elif read.edited:
            shown = report.visible_seed_rows(read.body)
            for seed, (val_loss, wall_time) in runs.items():
                row = shown.get(seed)
                if row is None or round(row[0], 4) != round(val_loss, 4) or round(row[1], 2) != round(wall_time, 2):
                    raise report.ReportError(
                        f"{path} was edited by hand: its per-seed table no longer matches the measured "
                        f"values (seed {seed}: measured {val_loss:.4f} / {wall_time:.2f}s); "
                        f"restore it (e.g. from git) or {rerun}"
                    )
        return runs

    def _maybe_write_baseline_report(self) -> None:
        if self.reused_from is not None:
            return
        runs = self.collected(BASELINE, self.settings.baseline_seeds)
        if len(runs) < len(self.settings.baseline_seeds):
            return
        setup = self.setup(BASELINE)
        ordered = [runs[s] for s in self.settings.baseline_seeds]
        context = {
            "scale": self.settings.scale,
            "val": summarize([r.val_loss for r in ordered]),
            "wall": summarize([r.wall_time for r in ordered]),
            "seeds": list(self.settings.baseline_seeds),
            "runs": ordered,
            "setup": setup.to_json(),
            "git_commit": self._commit,
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        body = report.render("baseline_variance.md.j2", context, self.settings.template_dir)
        data = {
            "kind": "baseline",
            "scale": self.settings.scale,
            "setup": setup.to_json(),
            "git_commit": self._commit,
            "runs": [{"seed": r.seed, "val_loss": r.val_loss, "wall_time": r.wall_time,
                      "environment": r.extra.get("environment", {})} for r in ordered],
        }
        self._write_owned(self.settings.baseline_report, report.with_data(body, data))

    def _write_owned(self, path: Path, text: str) -> None:
        """Write a report, never silently replacing a file that a person wrote or edited."""
        if path.exists() and not report.is_ours_unedited(path):
            kept = set_aside(path, "bak")
            warnings.warn(StoreWarning(f"{path} was not written by exprun or was edited; kept as {kept.name}"))
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise ProtocolFailure(f"could not write {path} ({exc}); the previous file, if any, is unchanged") from None

    # -------------------------------------------------------------------- runs
    def _known(self, group: str, seed: int) -> RunRecord | None:
        """A result for this seed from this session, a reused report, or an earlier session."""
        found = self.records.get(group, {}).get(seed)
        if found is None and group != CONTROL:
            found = self.store.load(group, self.setup(group).key(), seed)
            if found is not None:
                self.records.setdefault(group, {})[seed] = found
        return found

    def collected(self, group: str, seeds: Iterable[int]) -> dict[int, RunRecord]:
        return {s: r for s in seeds if (r := self._known(group, s)) is not None}

    def spec(self, group: str, seed: int) -> RunSpec:
        s = self.settings
        if group in (BASELINE, CONTROL):
            out_name = f"{group}_{s.scale}_seed{seed}"
            flags: tuple[str, ...] = ()
        else:
            exp_part = "exp" if len(s.experiments) == 1 else f"exp_{group}"
            out_name = f"{exp_part}_{s.scale}_seed{seed}"
            flags = self.experiment(group).flags
        output_dir = s.checkpoints_dir / out_name
        argv = [*s.argv_prefix(), "--train_tokens", str(s.train_tokens), "--seed", str(seed),
                "--output_dir", str(output_dir), *flags]
        custom = self.config.hook.pytest_exprun_build_argv(config=self.config, group=group, seed=seed, argv=list(argv))
        if custom is not None:
            argv = [str(a) for a in custom]
        key = self.setup(group).key()
        return RunSpec(
            label=f"{group}[seed{seed}]",
            group=group,
            seed=seed,
            argv=tuple(argv),
            output_dir=output_dir,
            log_path=self.store.log_path(group, key, seed),
            timeout=s.timeout,
            cwd=s.rootdir,
        )

    def _submit(self, group: str, seed: int) -> RunHandle:
        assert self.executor is not None
        handle = self.handles.get((group, seed))
        if handle is None:
            sink = self._echo if self.executor.streams_output else None
            handle = self.executor.submit(self.spec(group, seed), sink, self._parse_line)
            self.handles[(group, seed)] = handle
        return handle

    def run_seed(self, group: str, seed: int) -> RunRecord | str:
        """Measure one seed, or say why it needs no run (returned as the skip reason)."""
        early = self._stored_early.pop((group, seed), None)
        known = None if early is not None else self._known(group, seed)
        if known is not None:
            if group == BASELINE and self.reused_from is not None:
                return f"baseline reused from {self._rel(self.reused_from)}"
            if group == BASELINE and not self.settings.baseline_report.exists():
                # Runs stored by a session that stopped before writing the report.
                self._maybe_write_baseline_report()
            return f"already measured in an earlier session ({self._rel(self.store.record_path(group, known.setup_key, seed))})"
        handle = self._submit(group, seed)
        self.runs_started += 1
        label = f"{group}[seed{seed}]"
        self._current = (self.runs_started, label, time.perf_counter())
        self._say(f"run {self.runs_started}/{max(self.runs_planned, self.runs_started)}: {label} started")
        with self._terminal_unsuppressed():
            result = self._await(handle)
        self.handles.pop((group, seed), None)
        if not result.ok:
            message = result.describe_failure()
            self.failed[(group, seed)] = message
            self._say(f"run {self.runs_started}: {label} FAILED after {result.wall_time:.1f}s")
            raise ProtocolFailure(message)
        record = early if early is not None else self._store(result)
        self._say(f"run {self.runs_started}: {label} done in {result.wall_time:.1f}s, val_loss {result.val_loss:.4f}")
        return record

    def _await(self, handle: RunHandle) -> RunResult:
        """Wait for one run; meanwhile store every other run that finished, in whatever order."""
        if self.executor is not None and self.executor.eager:
            while not handle.wait(0.2):
                self._store_finished()
        return handle.result()

    def _store_finished(self) -> None:
        """Store the finished, successful runs no test has asked for yet, so an interruption keeps them."""
        for key, handle in list(self.handles.items()):
            if key not in self._stored_early and handle.wait(0):
                try:
                    result = handle.result()
                except Exception:  # noqa: BLE001 - raised again, and reported, by that run's own test
                    continue
                if result.ok:
                    self._stored_early[key] = self._store(result)

    def _store(self, result: RunResult) -> RunRecord:
        """Persist one successful run and do what follows from it (hook, checkpoint clean-up, report)."""
        group, seed = result.spec.group, result.spec.seed
        assert result.val_loss is not None
        environment = read_environment(result.spec.output_dir)
        assert self.executor is not None
        environment[TIMING_KEY] = self.executor.timing
        record = RunRecord(
            group=group,
            seed=seed,
            val_loss=result.val_loss,
            wall_time=result.wall_time,
            setup_key=self.setup(group).key(),
            curve=[tuple(p) for p in result.curve],  # type: ignore[misc]
            argv=list(result.spec.argv),
            log=self._rel(result.spec.log_path),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(result.started_at + result.wall_time)),
            extra={"environment": environment},
        )
        try:
            self.store.save(record)
        except OSError as exc:
            message = (
                f"{result.spec.label}: could not store the result ({exc}); the run finished with val_loss "
                f"{result.val_loss:.4f} (log: {self._rel(result.spec.log_path)}) but it is not recorded "
                "and will run again next time"
            )
            self.failed[(group, seed)] = message
            raise ProtocolFailure(message) from None
        self.records.setdefault(group, {})[seed] = record
        if not self.settings.keep_checkpoints:
            remove_tree(result.spec.output_dir)
        self.config.hook.pytest_exprun_run_finished(config=self.config, record=record)
        if group == BASELINE:
            self._maybe_write_baseline_report()
        return record

    def run_control(self, seed: int) -> RunRecord:
        """Run the baseline's setup afresh and fail if it lands more than 1σ from the baseline mean."""
        base, missing = self._values(BASELINE, self.settings.baseline_seeds)
        if missing:
            raise ProtocolFailure(
                f"cannot check the control run: baseline seed(s) {', '.join(map(str, missing))} not measured"
            )
        outcome = self.run_seed(CONTROL, seed)
        record = outcome if isinstance(outcome, RunRecord) else self.records[CONTROL][seed]
        b = summarize([r.val_loss for r in base])
        check = protocol.check_control(b, record.val_loss)
        if not check.ok:
            away = "" if check.sigmas is None else f", {check.sigmas:+.2f}σ"
            raise ProtocolFailure(
                f"control run (seed {seed}, no experiment flags) gave val_loss {record.val_loss:.4f}{away} from the "
                f"baseline mean {b.mean:.4f} ± {b.std:.4f} (more than {protocol.CONTROL_SIGMAS:g}σ): the baseline in "
                f"{self._rel(self.settings.baseline_report)} no longer matches what the code gives; "
                "re-measure it with --exprun-rerun-baseline"
            )
        return record

    # -------------------------------------------------------------- decisions
    def _values(self, group: str, seeds: Iterable[int]) -> tuple[list[RunRecord], list[int]]:
        seeds = list(seeds)
        have = self.collected(group, seeds)
        return [have[s] for s in seeds if s in have], [s for s in seeds if s not in have]

    def extension(self, name: str) -> Decision:
        """Do this experiment's extension seeds run? Decided on the first seeds alone."""
        base, base_missing = self._values(BASELINE, self.settings.baseline_seeds)
        first, first_missing = self._values(name, self.settings.experiment_seeds)
        if base_missing or first_missing:
            missing = [f"baseline seed {s}" for s in base_missing] + [f"{name} seed {s}" for s in first_missing]
            return Decision(None, f"cannot decide on extra seeds while {', '.join(missing)} are missing")
        b = summarize([r.val_loss for r in base])
        e = summarize([r.val_loss for r in first])
        distance = abs(e.mean - b.mean) / b.std if b.std > 0 else math.inf
        where = f"mean {e.mean:.4f} vs baseline {b.mean:.4f} ± {b.std:.4f}"
        if needs_extension(b, e):
            return Decision(True, f"{where}: within 2σ, so the extension seeds run")
        return Decision(False, f"not needed: experiment {where} is {distance:.1f}σ away (≥ 2σ)")

    def run_extension_seed(self, name: str, seed: int) -> RunRecord | str:
        decision = self.extension(name)
        if not decision.extend:
            if decision.extend is False:
                self.runs_planned -= 1 if self._known(name, seed) is None else 0
            return decision.reason
        if self.executor is not None and self.executor.eager:
            for other in self.settings.extension_seeds:
                if self._known(name, other) is None:
                    self._submit(name, other)
        return self.run_seed(name, seed)

    def verdict(self, name: str) -> Outcome:
        exp = self.experiment(name)
        s = self.settings
        base, base_missing = self._values(BASELINE, s.baseline_seeds)
        first, first_missing = self._values(name, s.experiment_seeds)
        missing = [f"baseline seed {x}" for x in base_missing] + [f"{name} seed {x}" for x in first_missing]
        runs = first
        if not missing and s.extension_seeds:
            decision = self.extension(name)
            if decision.extend:
                more, more_missing = self._values(name, s.extension_seeds)
                missing += [f"{name} seed {x}" for x in more_missing]
                runs = first + more
        if missing:
            self._no_verdict(exp, None, f"{', '.join(missing)} not measured (failed, interrupted or "
                             "deselected); run the same command again and only the missing seeds will run")
        mixed = mixed_environments(base, runs)
        if mixed:
            self._no_verdict(exp, None, f"the runs were not measured in the same environment ({mixed}); "
                             "a baseline from another machine, torch, data set or executor timing (a process "
                             "per run against a warm worker) is not comparable: re-measure it here with "
                             "--exprun-rerun-baseline")
        cmp = compare(
            summarize([r.val_loss for r in base]),
            summarize([r.val_loss for r in runs]),
            summarize([r.wall_time for r in base]),
            summarize([r.wall_time for r in runs]),
        )
        if cmp.verdict is None:
            self._no_verdict(exp, cmp, cmp.problem or "the data cannot support a verdict")
        path = s.experiment_report(name)
        self.published[name] = self._evidence_for(exp, cmp, base, runs, path)
        contexts = self._publish()
        context = contexts[name]
        accepted = cmp.verdict in s.accept
        table = report.render(
            "verdict.txt.j2",
            {**context, "accepted": accepted, "report": self._rel(path)},
            s.template_dir,
        )
        self._append_step_summary({**context, "accepted": accepted, "report": self._rel(path)})
        outcome = Outcome(exp, cmp, path, table)
        self.outcomes.append(outcome)
        return outcome

    def _evidence_for(self, exp: Experiment, cmp: Comparison, base: list[RunRecord], runs: list[RunRecord],
                      path: Path) -> Published:
        """Statistics, curves and plots of one experiment; computed once, when its verdict is given."""
        base_val = {r.seed: r.val_loss for r in base}
        exp_val = {r.seed: r.val_loss for r in runs}
        found = self._work(rates.evaluate, base_val, exp_val, cmp.val_loss.baseline, cmp.val_loss.experiment)
        curves = stats.learning_curves(
            [r.curve for r in base], [r.curve for r in runs], self.settings.train_tokens, cmp.val_loss.baseline.mean
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        drawn = self._work(plots.draw, path.parent, path.stem, plots.PlotData(
            name=exp.name, scale=self.settings.scale, baseline_val=base_val, experiment_val=exp_val,
            baseline_wall={r.seed: r.wall_time for r in base}, experiment_wall={r.seed: r.wall_time for r in runs},
            baseline_mean=cmp.val_loss.baseline.mean, baseline_std=cmp.val_loss.baseline.std,
            experiment_mean=cmp.val_loss.experiment.mean, curves=curves,
            baseline_curves=[r.curve for r in base], experiment_curves=[r.curve for r in runs],
        ))
        return Published(exp, cmp, base, runs, found, curves, drawn, path, time.strftime("%Y-%m-%d %H:%M:%S %Z"))

    def _work(self, func: Callable[..., T], *args: Any) -> T:
        """Statistics and plots: in the helper process, which has imported scipy and matplotlib by now."""
        return func(*args) if self.aside is None else self.aside.call(func, *args)

    def _publish(self) -> dict[str, dict[str, object]]:
        """(Re)write every report of this session, its JSON twin and the scale's summary.

        Earlier reports are rewritten because Holm's adjustment depends on the whole family of
        experiments judged in this session, which grows with each verdict.
        """
        names = list(self.published)
        adjusted = stats.holm_adjust([self.published[n].evidence.welch.p_value for n in names])
        family = [
            {"name": n, "p": self.published[n].evidence.welch.p_value, "adjusted": a}
            for n, a in zip(names, adjusted)
        ]
        contexts = {}
        for name, holm_p in zip(names, adjusted):
            entry = self.published[name]
            context = self._experiment_context(entry, family, holm_p)
            body = report.render("experiment.md.j2", context, self.settings.template_dir)
            self._write_owned(entry.path, report.with_data(body, self._report_data(entry)))
            atomic_write_text(entry.path.with_suffix(".json"), _to_json(self._json_data(entry, family, holm_p)))
            contexts[name] = context
        self._write_summary()
        return contexts

    def _report_data(self, entry: Published) -> dict[str, Any]:
        assert entry.comparison.verdict is not None
        return {
            "kind": "experiment",
            "name": entry.experiment.name,
            "flags": list(entry.experiment.flags),
            "scale": self.settings.scale,
            "verdict": entry.comparison.verdict.value,
            "setup": self.setup(entry.experiment.name).to_json(),
            "baseline_setup": self.setup(BASELINE).to_json(),
            "baseline_runs": [{"seed": r.seed, "val_loss": r.val_loss, "wall_time": r.wall_time} for r in entry.baseline],
            "runs": [{"seed": r.seed, "val_loss": r.val_loss, "wall_time": r.wall_time} for r in entry.runs],
        }

    def _json_data(self, entry: Published, family: list[dict[str, Any]], holm_p: float | None) -> dict[str, Any]:
        """Every number of the report, for scripts and dashboards."""
        def runs(records: list[RunRecord]) -> list[dict[str, Any]]:
            return [{"seed": r.seed, "val_loss": r.val_loss, "wall_time": r.wall_time,
                     "curve": [list(p) for p in r.curve]} for r in records]

        return {
            **self._report_data(entry),
            "train_tokens": self.settings.train_tokens,
            "accepted": entry.comparison.verdict in self.settings.accept,
            "comparison": asdict(entry.comparison),
            "evidence": asdict(entry.evidence),
            "holm": {"family": family, "welch_p_adjusted": holm_p},
            "learning_curves": asdict(entry.curves),
            "plots": [p.file for p in entry.plots.plots],
            "baseline_runs": runs(entry.baseline),
            "runs": runs(entry.runs),
            "report": entry.path.name,
            "git_commit": self._commit,
            "measured_at": entry.measured_at,
        }

    def _write_summary(self) -> None:
        """Rank every experiment report at this scale, from their data blocks, not only this session's."""
        s = self.settings
        entries = []
        for path in sorted(s.research_dir.glob(f"experiment_*_{s.scale}.md")):
            try:
                data = report.read_report(path).data
                if not data or data.get("kind") != "experiment" or data.get("scale") != s.scale:
                    continue
                entries.append((
                    str(data["name"]), str(data["verdict"]),
                    [float(r["val_loss"]) for r in data["baseline_runs"]],
                    [float(r["val_loss"]) for r in data["runs"]],
                    path.name,
                ))
            except (OSError, report.ReportError, KeyError, TypeError, ValueError):
                continue
        if not entries:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a hand-edited block with degenerate data
            ranked = self._work(protocol.rank_experiments, entries)
        context = {"scale": s.scale, "ranked": ranked, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        body = report.render("summary.md.j2", context, s.template_dir)
        data = {"kind": "summary", "scale": s.scale, "experiments": [r.name for r in ranked]}
        self._write_owned(s.summary_report, report.with_data(body, data))

    def _append_step_summary(self, context: dict[str, object]) -> None:
        """On GitHub Actions, add the verdict table to the job's summary page."""
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if not target:
            return
        text = report.render("step_summary.md.j2", context, self.settings.template_dir)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(text)

    def _no_verdict(self, exp: Experiment, cmp: Comparison | None, why: str) -> NoReturn:
        """Fail the verdict test, keeping the reason for the terminal summary."""
        message = f"no verdict for {exp.name}: {why}"
        self.outcomes.append(Outcome(exp, cmp, None, message))
        raise ProtocolFailure(message)

    def _experiment_context(
        self, entry: Published, family: list[dict[str, Any]], holm_p: float | None
    ) -> dict[str, object]:
        exp, cmp, base, runs = entry.experiment, entry.comparison, entry.baseline, entry.runs
        b = {r.seed: r for r in base}
        e = {r.seed: r for r in runs}
        seed_rows = [
            {
                "seed": seed,
                "base_val": b[seed].val_loss if seed in b else None,
                "base_wall": b[seed].wall_time if seed in b else None,
                "exp_val": e[seed].val_loss if seed in e else None,
                "exp_wall": e[seed].wall_time if seed in e else None,
            }
            for seed in sorted(set(b) | set(e))
        ]
        paired_rows = [
            {"seed": seed, "base": b[seed].val_loss, "exp": e[seed].val_loss, "diff": diff}
            for seed, diff in zip(entry.evidence.paired.seeds, entry.evidence.paired.differences)
        ]
        margin = 2 * cmp.val_loss.baseline.std
        bm = cmp.val_loss.baseline.mean
        em = cmp.val_loss.experiment.mean
        explanation = {
            Verdict.WINNER: f"The experiment's mean val_loss {em:.4f} is at or below the baseline's {bm:.4f} − 2σ = {bm - margin:.4f}.",
            Verdict.LOSER: f"The experiment's mean val_loss {em:.4f} is at or above the baseline's {bm:.4f} + 2σ = {bm + margin:.4f}.",
            Verdict.NEUTRAL: f"The experiment's mean val_loss {em:.4f} lies within the baseline's {bm:.4f} ± 2σ = [{bm - margin:.4f}, {bm + margin:.4f}]: not distinguishable from noise.",
        }[cmp.verdict] if cmp.verdict else (cmp.problem or "")
        speed = "n/a"
        if cmp.percent_faster is not None:
            pct = cmp.percent_faster
            speed = f"{abs(pct):.1f}% {'faster' if pct >= 0 else 'slower'}"
        return {
            "name": exp.name,
            "flags": list(exp.flags),
            "scale": self.settings.scale,
            "train_tokens": self.settings.train_tokens,
            "baseline_report": self.settings.baseline_report.name,
            "cmp": cmp,
            "speed": speed,
            "explanation": explanation,
            "seed_rows": seed_rows,
            "ev": entry.evidence,
            "paired_rows": paired_rows,
            "holm_family": family,
            "holm_p": holm_p,
            "curves": entry.curves,
            "curve_rows": stats.thin(entry.curves.points, CURVE_ROWS),
            "plots": entry.plots,
            "json_file": entry.path.with_suffix(".json").name,
            "summary_file": self.settings.summary_report.name,
            "setup": self.setup(exp.name).to_json(),
            "git_commit": self._commit,
            "measured_at": entry.measured_at,
        }

    # ---------------------------------------------------------------- terminal
    def _line_parser(self) -> Callable[[str], tuple[int, float] | None]:
        hook = self.config.hook.pytest_exprun_parse_line
        if not hook.get_hookimpls():
            return parse_step_line
        return lambda line: hook(config=self.config, line=line)

    def _terminal(self):  # type: ignore[no-untyped-def]
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def _say(self, message: str) -> None:
        tr = self._terminal()
        if tr is None:
            return
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line(f"exprun: {message}")
        else:
            tr.write_line(f"exprun: {message}")

    def _echo(self, line: str) -> None:
        tr = self._terminal()
        if tr is None or self.config.get_verbosity() < 0 or not self._echo_throttle.allow():
            return
        index, label, started = self._current
        held_back = self._echo_throttle.take_held_back()
        if held_back:
            tr.write_line(f"  [{label}: {held_back} lines not shown here; every line is in the run's log]")
        tr.write_line(f"  [{index}/{max(self.runs_planned, index)} {label} {time.perf_counter() - started:6.1f}s] {line[:500]}")

    def _terminal_unsuppressed(self) -> contextlib.AbstractContextManager[None]:
        """Let trainer output through pytest's capturing while a run is awaited."""
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        return contextlib.nullcontext() if capman is None else capman.global_and_fixture_disabled()

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.settings.rootdir))
        except ValueError:
            return str(path)

    def summary_lines(self) -> list[str]:
        lines = []
        base, missing = self._values(BASELINE, self.settings.baseline_seeds)
        if base:
            b = summarize([r.val_loss for r in base])
            where = f" (reused from {self._rel(self.reused_from)})" if self.reused_from else ""
            std = f" ± {b.std:.4f}" if b.n > 1 else ""
            lines.append(f"baseline: {len(base)}/{len(self.settings.baseline_seeds)} seeds, val_loss {b.mean:.4f}{std}{where}")
        if missing:
            lines.append(f"baseline seeds still missing: {', '.join(map(str, missing))}")
        for outcome in self.outcomes:
            cmp = outcome.comparison
            if cmp is None or cmp.verdict is None or outcome.report is None:
                lines.append(outcome.message.splitlines()[0])
                continue
            d = cmp.val_loss.cohens_d
            lines.append(
                f"{outcome.experiment.name}: {cmp.verdict.value} (Δ val_loss {cmp.val_loss.delta:+.4f}, "
                f"d = {'n/a' if d is None else f'{d:+.2f}'}, n={cmp.val_loss.experiment.n}) → {self._rel(outcome.report)}"
            )
        return lines


def _plain(value: Any) -> Any:
    """JSON-ready copy: enums by value, tuples as lists, NaN and infinities as null."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _to_json(data: dict[str, Any]) -> str:
    return json.dumps(_plain(data), indent=1, allow_nan=False) + "\n"
