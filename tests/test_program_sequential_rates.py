"""LOND over sequential decisions: programs of K experiments on one shared baseline, each experiment
decided alone by the sequential rule at its LOND level, keep the false-discovery rate within the
program's alpha (an independent vectorised simulation, checked trial by trial against the looks
coordinator the session uses)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_exprun.decide import looks
from pytest_exprun.decide.program import lond_level, sequential_at_level
from pytest_exprun.decide.sequential import Decision
from pytest_exprun.decide.sequential_design import SEEDS, Design, look_statistics, make_design
from pytest_exprun.decide.sequential_rates import _apply

ALPHA, K, TRIALS = 0.05, 5, 20_000


def _programs(design: Design, effects: np.ndarray, lond: bool, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(WINNER per trial and experiment, the runs, the designs used) of ``TRIALS`` programs.

    Experiment j's level follows the WINNERs before it in its own program (LOND), so trials are
    grouped by that count and each group judged at its design; ``lond`` False: every experiment
    at the design's own α (no program control).
    """
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((TRIALS, design.baseline_looks[-1]))
    exps = rng.standard_normal((TRIALS, K, design.looks[-1])) - effects[None, :, None]
    won = np.zeros((TRIALS, K), dtype=bool)
    designs: dict[tuple[int, int], Design] = {}
    for j in range(K):
        t, _ = look_statistics(design.looks, design.baseline_looks, design.paired, base, exps[:, j, :])
        before = won[:, :j].sum(axis=1)
        for w in np.unique(before):
            rows = before == w
            key = (j + 1, int(w))
            if key not in designs:
                designs[key] = sequential_at_level(design, lond_level(ALPHA, *key)) if lond else design
            code, _ = _apply(designs[key], t[rows])
            won[rows, j] = code == 1
    return won, np.concatenate([base[:, None, :], exps], axis=1), designs


def _fdr(won: np.ndarray, effects: np.ndarray) -> tuple[float, float]:
    false = (won & (effects[None, :] == 0)).sum(axis=1)
    fdp = false / np.maximum(won.sum(axis=1), 1)
    return float(fdp.mean()), float(fdp.std(ddof=1) / math.sqrt(len(fdp)))


@pytest.mark.parametrize("true_effects", [0, 1], ids=["all-null", "one-2sigma-effect"])
def test_lond_over_sequential_decisions_keeps_the_false_discovery_rate(true_effects: int) -> None:
    design = make_design(0.03)
    effects = np.zeros(K)
    effects[:true_effects] = 2.0
    won, runs, designs = _programs(design, effects, lond=True, seed=31 + true_effects)
    fdr, se = _fdr(won, effects)
    assert fdr <= ALPHA + 2 * se, (fdr, se)

    # the same programs without control exceed the bound: the test can fail
    loose, _, _ = _programs(design, effects, lond=False, seed=31 + true_effects)
    assert _fdr(loose, effects)[0] > ALPHA + 4 * se

    # the vectorised rule is the session's: the looks coordinator gives the same WINNERs
    for trial in range(150):
        base = {s: float(v) for s, v in zip(SEEDS, runs[trial, 0])}
        exps = {f"e{j}": {s: float(v) for s, v in zip(SEEDS, runs[trial, j + 1])} for j in range(K)}
        winners = 0
        for j in range(K):
            at = designs[(j + 1, winners)]
            decided = looks.decisions_each({f"e{j}": at}, base, exps, len(design.looks) - 1)
            assert not isinstance(decided, str)
            is_winner = decided[f"e{j}"].decision is Decision.WINNER
            assert is_winner == won[trial, j]
            winners += is_winner
