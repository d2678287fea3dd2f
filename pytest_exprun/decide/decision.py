"""From runs to a ``Decision``: the fixed (2σ) rule and the sequential rule, pure.

``decide(mode, design, baseline, runs)`` is what the default ``pytest_exprun_decide`` hooks
call; a project's own rule returns a ``Decision`` too (``Decision.made``, with
``comparison_of`` for the numbers its report shows). ``restore`` re-derives a stored
decision's comparison from its records, keeping the verdict as stored: the reports then
render decisions and never decide.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from . import looks, protocol, sequential, stats
from ..model import Decided, Decision, DecisionMode, ExperimentDesign, LookRecord, RunRecord, Verdict, plain
from .protocol import Comparison, ControlCheck

Runs = Mapping[str, Sequence[RunRecord]]

#: The end of every "not measured" reason: what to do about it.
RUN_AGAIN = ("not measured (failed, interrupted or deselected); run the same command again and only the "
             "missing seeds will run")


def comparison_of(baseline: Sequence[RunRecord], runs: Sequence[RunRecord]) -> Comparison:
    """The 2σ comparison of two groups of runs (val_loss and wall time), with the 2σ rule's verdict."""
    return protocol.compare(
        stats.summarize([r.val_loss for r in baseline]),
        stats.summarize([r.val_loss for r in runs]),
        stats.summarize([r.wall_time for r in baseline]),
        stats.summarize([r.wall_time for r in runs]),
    )


def incomparable(baseline: Sequence[RunRecord], runs: Sequence[RunRecord]) -> str | None:
    """Why these runs cannot be compared (measured in different environments), or None."""
    mixed = protocol.mixed_environments([dict(r.environment.values) for r in baseline],
                                        [dict(r.environment.values) for r in runs])
    if mixed is None:
        return None
    return (f"the runs were not measured in the same environment ({mixed}); a baseline from another machine, "
            "torch, data set or executor timing (a process per run against a warm worker) is not comparable: "
            "re-measure it here with --exprun-rerun-baseline")


def fixed(design: ExperimentDesign, baseline: Sequence[RunRecord], runs: Sequence[RunRecord]) -> Decision:
    """The 2σ rule on every stored run of the experiment (its first seeds, and the extension's if run)."""
    problem = incomparable(baseline, runs)
    if problem is not None:
        return Decision.refused(design, problem)
    cmp = comparison_of(baseline, runs)
    if cmp.verdict is None:
        return dataclasses.replace(Decision.refused(design, cmp.problem or "the data cannot support a verdict"),
                                   comparison=cmp)
    return Decision.made(design, baseline, runs, cmp.verdict, cmp)


def sequential_rule(design: ExperimentDesign, baseline: Sequence[RunRecord], runs: Runs) -> Decision:
    """The sequential rule: the family's looks in order, up to the one that decides this experiment."""
    seq = design.sequential
    if seq is None:
        raise ValueError("the sequential rule needs the design's looks (ExperimentDesign.sequential)")
    base = {r.seed: r.val_loss for r in baseline}
    exps = {name: {r.seed: r.val_loss for r in runs.get(name, ())} for name in design.family}
    decisions = looks.decisions_at(seq, design.family, base, exps, len(seq.looks) - 1, until=design.name)
    if isinstance(decisions, str):
        return Decision.refused(design, f"{decisions} {RUN_AGAIN}")
    decided = decisions[design.name]
    b_seeds, e_seeds = sequential.seeds_for_look(seq, decided.look_index)
    by_seed = {r.seed: r for r in runs[design.name]}
    base_runs = [r for r in baseline if r.seed in b_seeds]
    exp_runs = [by_seed[s] for s in e_seeds if s in by_seed]
    problem = incomparable(base_runs, exp_runs)
    if problem is not None:
        return Decision.refused(design, problem)
    cmp = comparison_of(base_runs, exp_runs)
    if cmp.verdict is None:
        return dataclasses.replace(Decision.refused(design, cmp.problem or "the data cannot support a verdict"),
                                   comparison=cmp)
    verdict = Verdict(decided.decision.value)
    record = LookRecord.from_json(plain(looks.decision_data(seq, decided, cmp.val_loss.baseline.std,
                                                            design.family, design.operating)))
    return Decision.made(design, base_runs, exp_runs, verdict, dataclasses.replace(cmp, verdict=verdict),
                         mode=DecisionMode.SEQUENTIAL, sequential=record)


def decide(mode: DecisionMode, design: ExperimentDesign, baseline: Sequence[RunRecord], runs: Runs) -> Decision:
    """The decision on ``design.name`` by the mode's rule; ``runs`` holds each experiment's stored runs."""
    if mode is DecisionMode.SEQUENTIAL:
        return sequential_rule(design, baseline, runs)
    return fixed(design, baseline, runs[design.name])


def restore(decision: Decision, baseline: Sequence[RunRecord], runs: Sequence[RunRecord]) -> Decided:
    """A stored decision with its runs, its comparison re-derived from them and its verdict as stored."""
    cmp = comparison_of(baseline, runs)
    if cmp.problem is None:
        cmp = dataclasses.replace(cmp, verdict=decision.verdict)
    return Decided(dataclasses.replace(decision, comparison=cmp), tuple(baseline), tuple(runs))


def control_check(baseline: Sequence[RunRecord], control: RunRecord) -> ControlCheck:
    """The control run against the stored baseline (``protocol.check_control``)."""
    same_seed = next((r.val_loss for r in baseline if r.seed == control.seed), None)
    return protocol.check_control(stats.summarize([r.val_loss for r in baseline]), control.val_loss, same_seed)
