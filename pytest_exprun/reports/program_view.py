"""What a report says of its decision's place in the research program: the margin's test, the
n-th decision on this baseline, the level it was tested at (or the program's uncontrolled rate),
and what the decision cost. Numbers come from the stored decisions; nothing is decided here.
"""

from __future__ import annotations

import shlex
from typing import Any, Callable, Sequence

from ..model import Decided, DecisionMode


def ordered(family: Sequence[Decided]) -> list[Decided]:
    """The decisions on one baseline in the order they were made (controlled ones by their step)."""
    return sorted(family, key=lambda d: (d.decision.program.index if d.decision.program else 0,
                                         d.decision.decided_at, d.name))


def seconds(decided: Decided) -> float:
    """The decision's cost: the wall time of every run it used, baseline and experiment."""
    return float(sum(r.wall_time for r in (*decided.baseline, *decided.runs)))


def experiment_seconds(decided: Decided) -> float:
    return float(sum(r.wall_time for r in decided.runs))


def settle_command(args: Sequence[str]) -> str:
    return "pytest " + " ".join(shlex.quote(a) for a in args) if args else ""


def uncontrolled(family: Sequence[Decided], decided: Decided, work: Callable[..., Any]) -> tuple[int, Any]:
    """The decision's position on its baseline (from 1), and ``program.UncontrolledRate`` up to it."""
    from ..decide import program

    order = ordered(family)
    position = next(i for i, d in enumerate(order) if d.name == decided.name) + 1
    earlier = order[:position]
    fixed = sum(1 for d in earlier if d.decision.mode is DecisionMode.FIXED)
    alphas = [float(d.decision.sequential.alpha or 0.0) for d in earlier if d.decision.sequential is not None]
    return position, work(program.uncontrolled_familywise, fixed, alphas)


def at_level(decided: Decided) -> str:
    """What a sequential decision under a program says of its design at its level: the simulated
    false-WINNER rate and power of the bounds calibrated there, with trials and Monte Carlo error."""
    look = decided.decision.sequential
    if look is None or not look.rates:
        return ""
    trials = max(int(look.rate_trials), 1)
    rows = {float(row["effect"]): row for row in look.rates}
    null = rows.get(0.0)
    if null is None:
        return ""
    p = float(null["p_winner"])
    error = (max(p * (1 - p), 1.0 / trials) / trials) ** 0.5  # one Monte Carlo standard error
    text = (f"; the sequential bounds calibrated at that level ({int(look.design.get('calibration_trials', 0)):,} "
            f"null trials), whose simulated P(false WINNER) is {p:.3%} ± {error:.3%} ({trials:,} trials")
    at_two = rows.get(2.0)
    if at_two is not None:
        text += f"; P(WINNER) at a true 2σ improvement {float(at_two['p_winner']):.1%}"
    return text + ")"


def standing(family: Sequence[Decided], decided: Decided, work: Callable[..., Any]) -> dict[str, Any]:
    """The template's ``program``: where this decision stands, and its margin's numbers."""
    position, rate = uncontrolled(family, decided, work)
    step = decided.decision.program
    text = step and (f"decision {step.index} on this baseline under program control, tested at a false-WINNER "
                     f"level of {step.level:.2g} (LOND, {step.winners_before} WINNER(s) before it"
                     + (f"; the fixed rule's WINNER threshold widened to {step.threshold:.2f}σ, LOSER kept at 2σ"
                        if step.threshold is not None else "")
                     + at_level(decided)
                     + f"); program-wide false-discovery rate ≤ {step.alpha:g}, and when no experiment has an "
                     f"effect, P(any false WINNER) ≤ {step.alpha:g}")
    if not text:
        text = rate.describe()
    margin = decided.decision.margin
    return {
        "position": position,
        "familywise": None if step else rate.familywise,
        "text": text,
        "seconds": seconds(decided),
        "experiment_seconds": experiment_seconds(decided),
        "runs": len(decided.baseline) + len(decided.runs),
        "margin": margin,
        "settle": settle_command(margin.settle) if margin else "",
    }
