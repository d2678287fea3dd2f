"""The sequential mode's looks over stored runs: the decision at each look, why a later look's
seeds are not needed, and what a stored decision keeps of the mode for its report.

The rules are ``sequential``'s; this gathers the values look by look so that a missing seed is
named, and turns decisions into plain data. Nothing here runs a trainer or touches a file.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import sequential, sequential_rates
from ..model import plain
from .sequential import Decision, EquivalenceStop, LookDecision
from .sequential_design import Design


def decisions_at(design: Design, names: Sequence[str], base: Mapping[int, float],
                 exps: Mapping[str, Mapping[int, float]], look: int, until: str | None = None,
                 equivalence: EquivalenceStop | None = None) -> dict[str, LookDecision] | str:
    """Each experiment's decision at ``look`` (0-based), or a text naming the seeds still missing.

    The experiments are one family against one baseline (``decide_family``'s step-down at each
    look). With ``until``, stops at the look that decides that experiment. With ``equivalence``
    (a margin's test at each look) an experiment may also stop as equivalent.
    """
    decided: dict[str, LookDecision] = {}
    for k in range(look + 1):
        active = [n for n in names if n not in decided or decided[n].decision is Decision.CONTINUE]
        if not active or (until is not None and until not in active):
            break
        b_seeds, e_seeds = sequential.seeds_for_look(design, k)
        missing = [f"baseline seed {s}" for s in b_seeds if s not in base]
        missing += [f"{n} seed {s}" for n in active for s in e_seeds if s not in exps[n]]
        if missing:
            return ", ".join(missing)
        if len(names) == 1:
            decided = {names[0]: sequential.decide(design, k, base, exps[names[0]], equivalence)}
        else:
            decided = sequential.decide_family(design, k, base, exps, equivalence)
    return decided


def decisions_each(designs: Mapping[str, Design], base: Mapping[int, float],
                   exps: Mapping[str, Mapping[int, float]], look: int,
                   equivalence: Mapping[str, EquivalenceStop] | None = None) -> dict[str, LookDecision] | str:
    """Each experiment's decision at ``look``, each alone at its own design, or the seeds still missing.

    A research program's control (``decide.program``) gives every experiment its own level, and
    LOND's guarantee needs each decision to hold its level on its own; a step-down over the
    session's experiments would be a second correction for the same false WINNERs, so under a
    program there is none (docs/program.md).
    """
    decided: dict[str, LookDecision] = {}
    missing: list[str] = []
    for name, design in designs.items():
        found = decisions_at(design, [name], base, {name: exps[name]}, look,
                             equivalence=None if equivalence is None else equivalence.get(name))
        if isinstance(found, str):
            missing += [part for part in found.split(", ") if part not in missing]
        else:
            decided.update(found)
    return ", ".join(missing) if missing else decided


def stopped_reason(decision: LookDecision, looks: int, name: str | None) -> str:
    """'decided WINNER at look 2 of 4 (t = 5.90 ≥ 3.07)', for a seed that no longer needs to run."""
    if decision.equivalent:
        who = f"{name} " if name else ""
        return f"{who}stopped as equivalent within the margin at look {decision.look_index + 1} of {looks}"
    sign = {Decision.WINNER: "≥", Decision.LOSER: "≤"}.get(decision.decision, "<")
    who = f"{name} " if name else ""
    return (f"{who}decided {decision.decision.value} at look {decision.look_index + 1} of {looks} "
            f"(t = {decision.statistic:.2f} {sign} {decision.boundary:.2f})")


def decision_data(design: Design, decision: LookDecision, sigma: float, family: Sequence[str],
                  table: Sequence[sequential_rates.ReportRow]) -> dict[str, Any]:
    """What the stored decision keeps of the mode, for the report: the look, its numbers, the design."""
    data = {
        "mode": "sequential",
        "decision": decision.decision.value,
        "look_index": decision.look_index,
        "looks": len(design.looks),
        "n_baseline": decision.n_baseline,
        "n_experiment": decision.n_experiment,
        "statistic": decision.statistic,
        "df": decision.df,
        "boundary": decision.boundary,
        "winner_bound": decision.winner_bound,
        "loser_bound": decision.loser_bound,
        "futility_bound": decision.futility_bound,
        "alpha": decision.alpha,
        "reason": decision.reason,
        "estimate": decision.estimate,
        "interval": list(decision.interval),
        "estimate_sigmas": decision.estimate / sigma,
        "interval_sigmas": [x / sigma for x in decision.interval],
        "estimate_note": decision.estimate_note,
        "family": list(family),
        "design": sequential_rates.design_summary(design),
        "rate_trials": sequential_rates.RATE_TRIALS,
        "rates": [{"effect": row.rates.effect, "p_winner": row.rates.p_winner, "p_loser": row.rates.p_loser,
                   "expected_seeds": row.rates.expected_seeds, "winner_estimate": row.winner_estimate}
                  for row in table],
    }
    return dict(plain(data))  # as stored: plain JSON values
