"""The decision's own options, checked: the mode and its design's inputs, the margin, the program's level.

Part of reading the settings (``settings.load``); apart so each stays one screen long.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import pytest

from . import names
from .names import BASELINE_SEEDS, EXPERIMENT_SEEDS, EXTENSION_SEEDS

if TYPE_CHECKING:
    from .decide.equivalence import Margin

FIXED, SEQUENTIAL = "fixed", "sequential"
DECIDE_MODES = (FIXED, SEQUENTIAL)


def number(text: str, what: str, kind: type[int] | type[float], unit: str = "") -> float:
    try:
        value: float = kind(text)
    except ValueError:
        raise pytest.UsageError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise pytest.UsageError(f"{what} must be a finite number{unit}, got {text.strip()!r}")
    return value


def _parse_margin(text: str) -> Margin:
    """Imported on use: the equivalence test needs numpy, which a plain ``pytest`` never loads."""
    from .decide.equivalence import parse_margin

    return parse_margin(text)


def program(get: Callable[[str], str]) -> tuple[Margin | None, float | None]:
    """The equivalence margin and the program's level; empty means the option is off."""
    margin_text = get("margin").strip()
    try:
        margin = _parse_margin(margin_text) if margin_text else None
    except ValueError as exc:  # a MarginError: its message says what to write instead
        raise pytest.UsageError(str(exc)) from None
    alpha_text = get("program_alpha").strip()
    program_alpha = None
    if alpha_text:
        program_alpha = number(alpha_text, "--exprun-program-alpha", float)
        if not 0.0 < program_alpha < 0.5:
            raise pytest.UsageError(f"--exprun-program-alpha is the program's false-discovery rate and must lie "
                                    f"between 0 and 0.5 (e.g. 0.05), got {program_alpha:g}")
    return margin, program_alpha


def decision_mode(get: Callable[[str], str], baseline_seeds: tuple[int, ...], experiment_seeds: tuple[int, ...],
                   extension_seeds: tuple[int, ...]) -> tuple[str, float, float, int | None]:
    """The decision mode and its design's inputs; checked in either mode, so a typo never waits for a switch."""
    decide = get("decide").strip().lower()
    if decide not in DECIDE_MODES:
        raise pytest.UsageError(f"--exprun-decide must be 'fixed' or 'sequential', got {decide!r}")
    alpha = number(get("alpha").strip(), "--exprun-alpha", float)
    if not 0.0 < alpha < 0.5:
        raise pytest.UsageError(f"--exprun-alpha is the false-WINNER rate and must lie between 0 and 0.5 "
                                f"(e.g. 0.03), got {alpha:g}")
    min_effect = number(get("min_effect").strip(), "--exprun-min-effect", float, " of baseline sigma")
    if not (math.isfinite(min_effect) and min_effect > 0.0):
        raise pytest.UsageError(f"--exprun-min-effect is in baseline sigma and must be a positive number "
                                f"(e.g. 1), got {min_effect:g}")
    max_text = get("max_seeds").strip()
    max_seeds = None
    if max_text:
        if not max_text.isdigit() or not 2 <= int(max_text) <= names.MAX_SEEDS:
            raise pytest.UsageError(f"--exprun-max-seeds must be an integer from 2 (the first look's seeds) to "
                                    f"{names.MAX_SEEDS} (the seeds defined), got {max_text!r}")
        max_seeds = int(max_text)
    if decide == SEQUENTIAL:
        # The design's looks are planned on its own seed sequence; other seeds would break the pairing.
        for option, seeds, default in (
            ("--exprun-baseline-seeds", baseline_seeds, BASELINE_SEEDS),
            ("--exprun-experiment-seeds", experiment_seeds, EXPERIMENT_SEEDS),
            ("--exprun-extension-seeds", extension_seeds, EXTENSION_SEEDS),
        ):
            if seeds != default:
                raise pytest.UsageError(
                    f"{option} is not used with --exprun-decide=sequential, whose seeds come from its design "
                    f"({', '.join(map(str, names.SEEDS[:6]))}, ...); drop {option} or use --exprun-decide=fixed"
                )
    return decide, alpha, min_effect, max_seeds
