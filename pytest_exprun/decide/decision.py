"""From runs to a ``Decision``: the fixed (2σ) rule and the sequential rule, pure.

``decide(mode, design, baseline, runs)`` is what the default ``pytest_exprun_decide`` hooks
call; a project's own rule returns a ``Decision`` too (``Decision.made``, with
``comparison_of`` for the numbers its report shows, ``with_margin`` for the margin's verdict).
With a margin (``design.margin``) NEUTRAL is split into EQUIVALENT and INCONCLUSIVE by the two
one-sided tests on the seeds the rule used; under a program's control (``design.program``) the
fixed rule's WINNER threshold is widened to the decision's level. ``restore`` re-derives a stored
decision's comparison from its records, keeping the verdict as stored: the reports then
render decisions and never decide.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping, Sequence

from . import looks, protocol, sequential, stats
from ..model import Decided, Decision, DecisionMode, ExperimentDesign, LookRecord, RunRecord, Verdict, plain
from ..names import SEEDS
from ..program_records import MarginRecord
from .protocol import Comparison, ControlCheck

if TYPE_CHECKING:
    from .equivalence import Equivalence

Runs = Mapping[str, Sequence[RunRecord]]

#: What a rule that does not know the session's command says to run; ``run_again`` names the command.
SAME_COMMAND = "the same command again"
#: The end of every "not measured" reason: what to do about it.
RUN_AGAIN = (f"not measured (failed, interrupted or deselected); run {SAME_COMMAND} and only the "
             "missing seeds will run")


def run_again(command: str) -> str:
    """``RUN_AGAIN`` with the exact command that measures the missing seeds, which the pytest layer
    knows (after ``-k`` the same command would leave them deselected again)."""
    return RUN_AGAIN.replace(SAME_COMMAND, f"`{command}`")


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


def _compared(design: ExperimentDesign, baseline: Sequence[RunRecord],
              runs: Sequence[RunRecord]) -> Comparison | Decision:
    """The comparison both rules judge, or the refusal when the runs cannot be compared or support no verdict."""
    problem = incomparable(baseline, runs)
    if problem is not None:
        return Decision.refused(design, problem)
    cmp = comparison_of(baseline, runs)
    if cmp.verdict is None:
        return dataclasses.replace(Decision.refused(design, cmp.problem or "the data cannot support a verdict"),
                                   comparison=cmp)
    return cmp


def fixed(design: ExperimentDesign, baseline: Sequence[RunRecord], runs: Sequence[RunRecord]) -> Decision:
    """The 2σ rule on every stored run of the experiment (its first seeds, and the extension's if run)."""
    cmp = _compared(design, baseline, runs)
    if isinstance(cmp, Decision):
        return cmp
    step = design.program
    if step is not None and step.threshold is not None:
        from .program import widened_verdict

        cmp = dataclasses.replace(cmp, verdict=widened_verdict(cmp.val_loss.baseline, cmp.val_loss.experiment,
                                                               step.threshold))
    decision = dataclasses.replace(Decision.made(design, baseline, runs, cmp.verdict, cmp), program=step)
    return with_margin(design, decision, baseline, runs)


def sequential_rule(design: ExperimentDesign, baseline: Sequence[RunRecord], runs: Runs) -> Decision:
    """The sequential rule: the family's looks in order, up to the one that decides this experiment."""
    seq = design.sequential
    if seq is None:
        raise ValueError("the sequential rule needs the design's looks (ExperimentDesign.sequential)")
    from .sequential_equivalence import at_looks

    base = {r.seed: r.val_loss for r in baseline}
    exps = {name: {r.seed: r.val_loss for r in runs.get(name, ())} for name in design.family}
    equivalence = at_looks(design.margin, seq)
    decisions = looks.decisions_at(seq, design.family, base, exps, len(seq.looks) - 1, until=design.name,
                                   equivalence=equivalence)
    if isinstance(decisions, str):
        return Decision.refused(design, f"{decisions} {RUN_AGAIN}")
    decided = decisions[design.name]
    b_seeds, e_seeds = sequential.seeds_for_look(seq, decided.look_index)
    by_seed = {r.seed: r for r in runs[design.name]}
    base_runs = [r for r in baseline if r.seed in b_seeds]
    exp_runs = [by_seed[s] for s in e_seeds if s in by_seed]
    cmp = _compared(design, base_runs, exp_runs)
    if isinstance(cmp, Decision):
        return cmp
    verdict = Verdict(decided.decision.value)
    record = LookRecord.from_json(plain(looks.decision_data(seq, decided, cmp.val_loss.baseline.std,
                                                            design.family, design.operating)))
    made = Decision.made(design, base_runs, exp_runs, verdict, dataclasses.replace(cmp, verdict=verdict),
                         mode=DecisionMode.SEQUENTIAL, sequential=record)
    made = dataclasses.replace(made, program=design.program)
    if equivalence is None:
        return made
    from .sequential_equivalence import report_note

    sigma = cmp.val_loss.baseline.std
    in_sigmas = (equivalence.margin.value if equivalence.margin.unit.value == "sigma"
                 else equivalence.margin.value / sigma if sigma > 0 else None)
    return with_margin(design, made, base_runs, exp_runs, paired=seq.paired,
                       note=report_note(equivalence, seq, in_sigmas), alpha=equivalence.per_look)


def with_margin(design: ExperimentDesign, decision: Decision, baseline: Sequence[RunRecord],
                runs: Sequence[RunRecord], paired: bool = False, note: str = "", alpha: float | None = None) -> Decision:
    """The decision with the margin's verdict: WINNER and LOSER as decided, NEUTRAL split by the two
    one-sided tests (TOST) on the seeds the decision used into EQUIVALENT and INCONCLUSIVE; an
    INCONCLUSIVE one names the seeds most likely to settle it. Without a margin, unchanged.
    ``alpha``: each one-sided test's level (the sequential rule's per-look level; default 5%)."""
    if design.margin is None or decision.verdict is None or decision.margin is not None:
        return decision
    from . import equivalence

    base = {r.seed: r.val_loss for r in baseline if r.seed in decision.baseline_seeds}
    exp = {r.seed: r.val_loss for r in runs if r.seed in decision.seeds}
    try:
        eq = equivalence.tost(design.margin, base, exp, paired=paired,
                              alpha=equivalence.DEFAULT_ALPHA if alpha is None else alpha)
    except equivalence.MarginError as exc:
        if decision.verdict is not Verdict.NEUTRAL:
            return decision  # WINNER and LOSER stand as the rule decided; no test needed to split them
        return dataclasses.replace(Decision.refused(design, f"{exc}; run at least 2 seeds in each group (a margin in "
                                                    "sigma needs a baseline that varies) or drop --exprun-margin"),
                                   comparison=decision.comparison)
    word = equivalence.margin_verdict(decision.verdict.value, eq)
    verdict = Verdict(word.value)
    settle: tuple[str, ...] = ()
    settle_note = ""
    if verdict is Verdict.INCONCLUSIVE:
        settle, settle_note = _settle(design, eq, base, exp, paired)
    record = MarginRecord(design.margin.value, design.margin.unit.value, eq.margin, eq.alpha, eq.method, eq.p_value,
                          eq.interval[0], eq.interval[1], decision.verdict.value, settle, settle_note, note)
    reason = decision.reason
    if verdict in (Verdict.EQUIVALENT, Verdict.INCONCLUSIVE):
        inside = "inside" if verdict is Verdict.EQUIVALENT else "not inside"
        reason = (f"{verdict.value}: the rule found no WINNER or LOSER, and the {100 * eq.confidence:.4g}% interval of Δ "
                  f"[{eq.interval[0]:+.4f}, {eq.interval[1]:+.4f}] is {inside} the margin ±{eq.margin:.4f} "
                  f"({record.describe()}; two one-sided {eq.method} tests, p = {eq.p_value:.3g} against α = "
                  f"{eq.alpha:g}).")
    cmp = decision.comparison
    if cmp is not None and cmp.problem is None:
        cmp = dataclasses.replace(cmp, verdict=verdict)
    return dataclasses.replace(decision, verdict=verdict, margin=record, reason=reason, comparison=cmp)


def _settle(design: ExperimentDesign, eq: "Equivalence", base: Mapping[int, float], exp: Mapping[int, float],
            paired: bool) -> tuple[tuple[str, ...], str]:
    """The command that runs the seeds most likely to settle an INCONCLUSIVE, and why (or why none can)."""
    from . import equivalence

    if paired:
        shared = sorted(set(base) & set(exp))
        spread = stats.summarize([exp[s] - base[s] for s in shared]).std
    else:
        spread = stats.summarize(list(exp.values())).std
    # the command it gives runs the fixed rule, whose test is at the default level (not a look's α / K)
    alpha = equivalence.DEFAULT_ALPHA if design.sequential is not None else eq.alpha
    plan = equivalence.seeds_to_settle(eq.estimate, eq.margin, stats.summarize(list(base.values())).std, len(base),
                                       spread, len(exp), alpha, paired=paired)
    if not plan.reachable or plan.more_seeds < 1 or not design.spec or design.margin is None:
        return (), plan.reason
    more = equivalence.settle_seeds(sorted(exp), plan.more_seeds, SEEDS)
    margin = f"{design.margin.value:g}" + ("sigma" if design.margin.unit is equivalence.Unit.SIGMA else "")
    mode = ("--exprun-decide=fixed",) if design.sequential is not None else ()
    return (*equivalence.settle_arguments(design.spec, sorted(exp), more), f"--exprun-margin={margin}", *mode), \
        plan.reason


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


def control_check(baseline: Sequence[RunRecord], control: RunRecord, metric: str = "val_loss") -> ControlCheck:
    """The control run against the stored baseline (``protocol.check_control``); ``metric`` names the value."""
    same_seed = next((r.val_loss for r in baseline if r.seed == control.seed), None)
    return protocol.check_control(stats.summarize([r.val_loss for r in baseline]), control.val_loss, same_seed,
                                  metric)
