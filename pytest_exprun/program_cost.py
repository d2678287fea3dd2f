"""What the experiments of a session are expected to cost, said before the first of their runs.

The expected number of experiment runs comes from the decision rule's simulated distribution
(``decide.rates`` for the fixed rule, ``decide.sequential_rates`` for the looks), at no effect and
at a 2σ effect, so a reader sees the range; the time from the baseline's measured mean wall time.
"""

from __future__ import annotations

import math
from typing import Sequence

from .model import RunRecord
from .settings import SEQUENTIAL, Settings

#: The effects (in baseline σ) at which the expected runs are quoted.
QUOTED_EFFECTS = (0.0, 2.0)


def expected_runs(settings: Settings) -> tuple[float, float]:
    """Expected experiment runs per experiment at no effect and at a 2σ effect."""
    if settings.decide == SEQUENTIAL:
        from .decide import sequential_rates

        rows = sequential_rates.operating_table(settings.design)
        by_effect = {row.rates.effect: row.rates.expected_seeds for row in rows}
        low = by_effect.get(0.0, float(settings.design.looks[-1]))
        return low, by_effect.get(2.0, min(by_effect.values()))
    from .decide import rates

    found = rates.design_rates(rates.Design.of(settings), QUOTED_EFFECTS, trials=100_000)
    return found[0].expected_seeds, found[1].expected_seeds


def announcement(settings: Settings, baseline: Sequence[RunRecord]) -> str:
    """One line: the experiment runs the design expects, and about how long they take."""
    count = len(settings.experiments)
    null, effect = expected_runs(settings)
    runs = f"about {null * count:.1f} experiment runs ({count} experiment(s) × {null:.2f} expected when a change does " \
           f"nothing, {effect:.2f} at a 2σ effect; stored runs are reused)"
    if not baseline:
        return f"the design expects {runs}; the time follows once the baseline has run"
    seconds = math.fsum(r.wall_time for r in baseline) / len(baseline)
    total = seconds * null * count
    took = f"{total / 60:.1f} min" if total >= 90 else f"{total:.0f} s"
    return f"the design expects {runs}: about {took} at the baseline's {seconds:.1f} s a run"
