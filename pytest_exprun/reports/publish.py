"""Reports: what each one says (template contexts), JSON twins, plots, the summary, the step summary.

Every report is rendered from the run store: the baseline from its snapshot and records, an
experiment from its stored decision and records, the summary from every stored decision at
that scale. Nothing is read back from a rendered file, except whether exprun wrote it and
nobody edited it since (an edited report is kept aside, never silently replaced).

The Holm family is every experiment at the scale judged against the same baseline: the same
family in each experiment report and in the summary, so one experiment shows one adjusted p.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from ..decide import evidence, protocol, rates, stats, wall_time
from . import plots, program_view, render as report
from .commands import more_seeds
from .run_context import baseline_wall_clock, context_std, measured_with, shared_environment, wall_clock_context
from ..decide.curves import Curves, learning_curves, thin
from ..decide.protocol import Comparison
from .. import timings
from ..names import ProtocolFailure
from ..model import Decided, Decision, LookRecord, RunRecord, to_json_text
from ..settings import Settings
from .statements import (band_text, digits_of, family_statements, renamed, rule_of, sequential_design,
                         twin_comparison, twin_evidence, twin_program, twin_run, twin_wall_clock)
from ..store import RunStore, StoreWarning, atomic_write_text, set_aside

#: Curve rows shown in a report; the JSON next to it keeps every step.
CURVE_ROWS = 20

Work = Callable[..., Any]


def to_json(data: dict[str, Any]) -> str:
    return to_json_text(data)


class Publisher:
    """Writes every report of a scale from stored decisions and records; ``work`` runs statistics and plots."""

    def __init__(self, settings: Settings, work: Work, rel: Callable[[Path], str]) -> None:
        self.settings = settings
        self.work = work
        self.rel = rel
        self._digests = RunStore(settings.state_dir, settings.scale)

    # ------------------------------------------------------------- writing
    def write_owned(self, path: Path, text: str) -> None:
        """Write a report, never silently replacing a file that a person wrote or edited; the digest
        of what was written is kept in the store, which is how the next write tells."""
        try:
            if (path.exists() or path.is_symlink()) and not self.unedited(path):
                kept = set_aside(path, "bak")
                warnings.warn(StoreWarning(f"{path} was not written by exprun or was edited; kept as {kept.name}"))
            self._digests.report_digest(path, text)  # first: a crash before the rename leaves a known file
            atomic_write_text(path, text, inside=self.settings.research_dir)
        except OSError as exc:
            raise ProtocolFailure(f"could not write {self.rel(path)} ({exc}); the previous file, if any, "
                                  "is unchanged or kept aside") from None

    def unedited(self, path: Path) -> bool:
        """Is the file at ``path`` the report exprun last wrote there (``render.unchanged_since_written``)?"""
        return report.unchanged_since_written(path, self._digests.report_digest(path))

    def _render(self, template: str, context: dict[str, Any]) -> str:
        try:
            with timings.span(f"render {template}"):
                return report.render(template, context, self.settings.template_dir)
        except report.ReportError as exc:
            raise ProtocolFailure(str(exc)) from None

    # ------------------------------------------------------------ baseline
    def baseline(self, records: list[RunRecord], setup: dict[str, Any], git_commit: str | None,
                 measured_at: str, traced: dict[str, Any] | None = None) -> None:
        s = self.settings
        context = {
            "scale": s.scale,
            "val": stats.summarize([r.val_loss for r in records]),
            "wall": stats.summarize([r.wall_time for r in records]),
            "seeds": [r.seed for r in records],
            "runs": records,
            "setup": setup,
            "measured_with": measured_with(setup.get("command", ()), records),
            "wall_clock": baseline_wall_clock(records),
            "traced": traced,
            "environment": shared_environment(records),
            "git_commit": git_commit,
            "measured_at": measured_at,
            "metric": self.metric,
            "digits": evidence.decimals_for(context_std(records)),
        }
        body = self._render("baseline_variance.md.j2", context)
        text = report.with_data(body, {"kind": "baseline", "scale": s.scale})
        path = s.baseline_report
        if _same_text(path, text) or (path.exists() and not path.is_symlink() and not self.unedited(path)):
            return  # a reused baseline's report keeps the prose a person added (``baseline`` checked its tables)
        self.write_owned(path, text)

    # ---------------------------------------------------------- experiments
    @property
    def metric(self) -> str:
        """What the reports call the value a run records: ``exprun_result``'s key, a pattern's group, or val_loss."""
        return self.settings.trainer_io.metric_name

    def two_sigma_design(self, decided: Decided) -> rates.Design:
        """The 2σ rule's design as this decision ran it: the baseline seeds actually compared, the configured rest."""
        s = self.settings
        return rates.Design(max(len(decided.baseline), 2), max(len(s.experiment_seeds), 1), len(s.extension_seeds))

    def experiments(self, family: Sequence[Decided], fresh: str) -> dict[str, dict[str, Any]]:
        """(Re)write every report of the family, the newly decided ``fresh`` one with its plots; contexts by name."""
        found_evidence = {d.name: self.work(evidence.evaluate, {r.seed: r.val_loss for r in d.baseline},
                                            {r.seed: r.val_loss for r in d.runs}, _cmp(d).val_loss.baseline,
                                            _cmp(d).val_loss.experiment, self.two_sigma_design(d),
                                            rule_of(d.decision), sequential_design(d.decision), self.metric,
                                            more_seeds(d.decision, self.settings.train_tokens))
                          for d in family}
        names = [d.name for d in family]
        adjusted = stats.holm_adjust([found_evidence[n].welch.p_value for n in names])
        holm = [{"name": n, "p": found_evidence[n].welch.p_value, "adjusted": a} for n, a in zip(names, adjusted)]
        contexts = {}
        for decided, holm_p in zip(family, adjusted):
            name, cmp = decided.name, _cmp(decided)
            path = self.settings.experiment_report(name)
            drawn = self._plots(decided, cmp, path, redraw=name == fresh)
            curves = learning_curves([r.curve for r in decided.baseline], [r.curve for r in decided.runs],
                                     self.settings.train_tokens, cmp.val_loss.baseline.mean)
            context = self._context(decided, cmp, found_evidence[name], curves, drawn, holm, holm_p, path)
            context["program"] = program_view.standing(family, decided, self.work)
            body = self._render("experiment.md.j2", context)
            text = report.with_data(body, {"kind": "experiment", "name": name, "scale": self.settings.scale})
            if not _same_text(path, text):
                self.write_owned(path, text)
            self._write_twin(path, decided, cmp, found_evidence[name], curves, context, holm, holm_p)
            contexts[name] = context
        self.summary(family, adjusted)
        return contexts

    def _plots(self, decided: Decided, cmp: Comparison, path: Path, redraw: bool) -> plots.PlotSet:
        base, runs = decided.baseline, decided.runs
        data = plots.PlotData(
            name=decided.name, scale=self.settings.scale,
            baseline_val={r.seed: r.val_loss for r in base}, experiment_val={r.seed: r.val_loss for r in runs},
            baseline_wall={r.seed: r.wall_time for r in base}, experiment_wall={r.seed: r.wall_time for r in runs},
            baseline_mean=cmp.val_loss.baseline.mean, baseline_std=cmp.val_loss.baseline.std,
            experiment_mean=cmp.val_loss.experiment.mean,
            curves=learning_curves([r.curve for r in base], [r.curve for r in runs],
                                         self.settings.train_tokens, cmp.val_loss.baseline.mean),
            baseline_curves=[r.curve for r in base], experiment_curves=[r.curve for r in runs],
            metric=self.metric,
        )
        existing = plots.existing(path.parent, path.stem, self.metric)
        if not redraw and existing is not None:
            return existing
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            drawn: plots.PlotSet = self.work(plots.draw, path.parent, path.stem, data)
        except OSError as exc:  # raised again in-process after the helper failed: one line, no traceback
            raise ProtocolFailure(f"could not draw the plots of {decided.name} next to {self.rel(path)} ({exc}); "
                                  "no report of it was written") from None
        return drawn

    def _context(self, decided: Decided, cmp: Comparison, ev: evidence.Evidence, curves: Curves,
                 drawn: plots.PlotSet, holm: list[dict[str, Any]], holm_p: float | None, path: Path) -> dict[str, Any]:
        b = {r.seed: r for r in decided.baseline}
        e = {r.seed: r for r in decided.runs}
        seed_rows = [
            {"seed": seed,
             "base_val": b[seed].val_loss if seed in b else None, "base_wall": b[seed].wall_time if seed in b else None,
             "exp_val": e[seed].val_loss if seed in e else None, "exp_wall": e[seed].wall_time if seed in e else None}
            for seed in sorted(set(b) | set(e))
        ]
        wall = self.work(wall_time.compare_records, decided.baseline, decided.runs)
        paired_rows = [{"seed": seed, "base": b[seed].val_loss, "exp": e[seed].val_loss, "diff": diff}
                       for seed, diff in zip(ev.paired.seeds, ev.paired.differences)]
        return {
            "name": decided.name,
            "flags": list(decided.decision.flags),
            "scale": self.settings.scale,
            "train_tokens": self.settings.train_tokens,
            "baseline_report": self.settings.baseline_report.name,
            "cmp": cmp,
            "measured_with": measured_with(decided.decision.setup.command, decided.baseline, decided.runs),
            "speed": wall.headline(),
            "wall_clock": wall_clock_context(decided, wall),
            "explanation": explanation(decided.decision, cmp, ev.note, self.metric),
            "rule": rule_of(decided.decision),
            "metric": self.metric,
            "digits": digits_of(cmp, ev),
            "bands": {m.metric: band_text(m) for m in (cmp.val_loss, cmp.wall_time)},
            "sequential": sequential_context(decided.decision.sequential),
            "seed_rows": seed_rows,
            "ev": ev,
            "paired_rows": paired_rows,
            "holm_family": holm,
            "holm_p": holm_p,
            "curves": curves,
            "curve_rows": thin(curves.points, CURVE_ROWS),
            "plots": drawn,
            "json_file": path.with_suffix(".json").name,
            "summary_file": self.settings.summary_report.name,
            "setup": decided.decision.setup.to_json(),
            "presets": sorted({str(r.extra["environment"]["preset"]) for r in [*decided.baseline, *decided.runs]
                               if "preset" in r.extra.get("environment", {})}),
            "git_commit": decided.decision.git_commit,
            "measured_at": decided.decision.decided_at,
            "control": decided.decision.control,
        }

    def _write_twin(self, path: Path, decided: Decided, cmp: Comparison, ev: evidence.Evidence, curves: Curves,
                    context: dict[str, Any], holm: list[dict[str, Any]], holm_p: float | None) -> None:
        """Every number of the report, for scripts and dashboards."""
        drawn: plots.PlotSet = context["plots"]
        data = {
            "kind": "experiment",
            "name": decided.name,
            "metric": self.metric,
            "rule": rule_of(decided.decision),
            "flags": list(decided.decision.flags),
            "scale": self.settings.scale,
            "train_tokens": self.settings.train_tokens,
            "verdict": None if decided.decision.verdict is None else decided.decision.verdict.value,
            "accepted": decided.decision.verdict in self.settings.accept,
            "setup": decided.decision.setup.to_json(),
            "baseline_setup": decided.decision.baseline_setup.to_json(),
            "comparison": twin_comparison(cmp),
            "evidence": twin_evidence(ev),
            "holm": {"family": holm, "welch_p_adjusted": holm_p},
            "sequential": None if decided.decision.sequential is None else decided.decision.sequential.to_json(),
            "learning_curves": asdict(curves),
            "plots": [p.file for p in drawn.plots],
            "wall_clock": twin_wall_clock(context["wall_clock"]),
            **twin_program(decided.decision, context["program"]),
            "baseline_runs": [twin_run(r) for r in decided.baseline],
            "runs": [twin_run(r) for r in decided.runs],
            "report": path.name,
            "git_commit": decided.decision.git_commit,
            "measured_at": decided.decision.decided_at,
        }
        twin = path.with_suffix(".json")
        text = to_json(renamed(data, self.metric) if self.metric != "val_loss" else data)
        if _same_text(twin, text):
            return
        try:
            atomic_write_text(twin, text, inside=self.settings.research_dir)
        except OSError as exc:
            raise ProtocolFailure(f"could not write {self.rel(twin)} ({exc}); the previous file, if any, "
                                  "is unchanged") from None

    # ------------------------------------------------------------- summary
    def summary(self, family: Sequence[Decided], adjusted: tuple[float | None, ...]) -> None:
        """Rank the family of experiments judged against this baseline, from the store."""
        if not family:
            return
        rows = []
        for decided in family:
            verdict = decided.decision.verdict
            rows.append((decided.name, "" if verdict is None else verdict.value, [r.val_loss for r in decided.baseline],
                         [r.val_loss for r in decided.runs], self.settings.experiment_report(decided.name).name))
        ranked = self.work(protocol.rank_experiments, rows)
        latest = max(d.decision.decided_at for d in family)
        families = self.work(family_statements, ranked, {d.name: rule_of(d.decision) for d in family},
                             {d.name: d.decision.sequential for d in family}, len(self.settings.experiment_seeds),
                             len(self.settings.extension_seeds))
        context = {"scale": self.settings.scale, "ranked": ranked, "families": families, "measured_at": latest,
                   "forest": self._forest(family),
                   "metric": self.metric,
                   "digits": max((digits_of(_cmp(d), None) for d in family), default=4)}
        body = self._render("summary.md.j2", context)
        text = report.with_data(body, {"kind": "summary", "scale": self.settings.scale})
        if not _same_text(self.settings.summary_report, text):
            self.write_owned(self.settings.summary_report, text)

    def _forest(self, family: Sequence[Decided]) -> dict[str, str | None]:
        """The summary's forest plot of every experiment's Δ with its Welch interval, best first."""
        rows = []
        for decided in family:
            interval = self.work(stats.welch_interval, [r.val_loss for r in decided.baseline],
                                 [r.val_loss for r in decided.runs])
            verdict = decided.decision.verdict
            rows.append(plots.ForestRow(decided.name, "" if verdict is None else verdict.value,
                                        _cmp(decided).val_loss.delta, interval.low, interval.high))
        rows.sort(key=lambda r: (r.delta, r.name))
        summary = self.settings.summary_report
        file, missing = self.work(plots.forest, summary.parent, summary.stem, rows, 0.95, self.metric)
        return {"file": file, "missing": missing}

    def verdict_text(self, context: dict[str, Any], accepted: bool, path: Path) -> str:
        return self._render("verdict.txt.j2", {**context, "accepted": accepted, "report": self.rel(path)})

    def step_summary(self, context: dict[str, Any], accepted: bool, path: Path) -> str | None:
        """On GitHub Actions, add the verdict table to the job's summary page; a problem is returned."""
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if not target:
            return None
        text = self._render("step_summary.md.j2", {**context, "accepted": accepted, "report": self.rel(path)})
        try:
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            return f"could not append to GITHUB_STEP_SUMMARY={target} ({exc.strerror or exc}); the report is written"
        return None


def _cmp(decided: Decided) -> Comparison:
    """The decision's comparison (``decide.decision.restore`` fills it for a stored decision)."""
    if decided.decision.comparison is None:
        raise ProtocolFailure(f"the decision on {decided.name} came without its comparison; restore it from its "
                              "runs with pytest_exprun.decide.decision.restore")
    return decided.decision.comparison


def sequential_context(seq: LookRecord | None) -> dict[str, Any] | None:
    """What ``sequential_section.md.j2`` shows, from a stored decision; None in the fixed mode."""
    if seq is None:
        return None
    design = seq.design
    last = len(design["looks"]) - 1
    looks = [
        {"look": i + 1, "experiment_seeds": n, "baseline_seeds": m, "winner": w, "loser": lo,
         "futility": None if i == last else f, "stopped": i == seq.look_index}
        for i, (n, m, w, lo, f) in enumerate(zip(design["looks"], design["baseline_looks"], design["winner_bounds"],
                                                 design["loser_bounds"], design["futility_bounds"]))
    ]
    return {**seq.to_json(), "look": seq.look_index + 1, "bounds": looks, "step_down": len(seq.family) > 1,
            "bias": [row for row in seq.rates if row["effect"] > 0 and row["winner_estimate"] is not None]}


def _same_text(path: Path, text: str) -> bool:
    """True when ``path`` already holds exactly ``text`` (re-rendering changes nothing)."""
    try:
        return not path.is_symlink() and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def explanation(decision: Decision, cmp: Comparison, note: str | None, metric: str = "val_loss") -> str:
    """The verdict's reason in one sentence: the rule's own, the sequential look's, or the 2σ rule's numbers."""
    if decision.reason is not None:
        return decision.reason
    if decision.sequential is not None:
        return f"Decided by the sequential mode at {decision.sequential.reason}."
    if decision.verdict is None:
        return decision.problem or cmp.problem or ""
    return evidence.explain_verdict(decision.verdict, cmp.val_loss.baseline, cmp.val_loss.experiment, note, metric)
