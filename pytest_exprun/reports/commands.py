"""The pytest commands a report prints, made from its stored decision alone (the flags, the report
name, the seeds, the scale): a report rendered again from the store, in any later session, says
the same, and the command runs that experiment whatever the session that rendered it was asked."""

from __future__ import annotations

import shlex
from typing import Sequence

from ..model import Decision
from ..names import BASELINE_SEEDS, DEFAULT_TRAIN_TOKENS, SEEDS, experiment_flags, experiment_name


def experiment_spec(flags: Sequence[str]) -> str:
    """An ``--experiment`` value that gives these flags again: ``NAME`` or ``NAME=VALUE`` where the
    flags read so, else the flags themselves (a value starting with ``-`` is passed as is)."""
    plain = [*flags]
    if len(plain) in (1, 2) and plain[0].startswith("--") and "=" not in plain[0]:
        spec = plain[0][2:] + ("" if len(plain) == 1 else f"={plain[1]}")
        try:
            if experiment_flags(spec) == plain:
                return spec
        except ValueError:
            pass
    return shlex.join(plain)


def experiment_options(name: str, flags: Sequence[str]) -> tuple[str, ...]:
    """``--experiment=...``, and ``--experiment-name`` where the report name is not the flags' own."""
    options = (f"--experiment={experiment_spec(flags)}",)
    return options if experiment_name(list(flags)) == name else (*options, f"--experiment-name={name}")


def more_seeds(decision: Decision, train_tokens: int) -> str:
    """The command that runs the experiment on as many seeds again as it used (stored runs are
    reused, only the new seeds train), against the same baseline seeds, with the decision's margin
    and program level, in the fixed mode that gives such advice; "" when no seed is left."""
    used = sorted(decision.seeds)
    fresh = [s for s in SEEDS if s not in set(used)][:len(used)]
    if not fresh or not decision.flags:
        return ""
    args = [*experiment_options(decision.name, decision.flags),
            f"--exprun-experiment-seeds={','.join(str(s) for s in (*used, *fresh))}", "--exprun-extension-seeds=",
            "--exprun-decide=fixed"]  # the mode that gave the advice, whatever the ini says by then
    if tuple(decision.baseline_seeds) != tuple(BASELINE_SEEDS):
        args.append(f"--exprun-baseline-seeds={','.join(str(s) for s in decision.baseline_seeds)}")
    if train_tokens != DEFAULT_TRAIN_TOKENS:
        args.append(f"--exprun-train-tokens={train_tokens}")
    if decision.margin is not None:
        args.append(f"--exprun-margin={decision.margin.value:g}{'sigma' if decision.margin.unit == 'sigma' else ''}")
    if decision.program is not None:
        args.append(f"--exprun-program-alpha={decision.program.alpha:g}")
    return shlex.join(["pytest", *args])
