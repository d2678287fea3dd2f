"""Which experiments a session was asked for: each ``--experiment`` turned into its flags and a
report name, refused in one line when it would override what exprun sets for every run, clash
with another experiment's name, or take a name exprun uses for its own files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from .names import ProtocolError, experiment_flags, experiment_name, safe_name
from .trainer.interface import TrainerIO
from .trainer.options import PROTOCOL_ARGUMENTS, static_aliases, trainer_aliases


@dataclass(frozen=True)
class Experiment:
    spec: str
    name: str
    flags: tuple[str, ...]


def refuse_nul(text: str, what: str) -> None:
    """A NUL byte cannot be part of a program argument; exec would fail with a traceback."""
    if "\0" in text:
        raise pytest.UsageError(f"{what} contains a NUL byte, which no program argument can hold; remove it")


#: Report and record names exprun uses itself (compared case-blind: macOS and Windows folders are).
RESERVED_NAMES = frozenset({"baseline", "control", "summary", "verdict", "exprun"})
_NEGATIVE_NUMBER = re.compile(r"^-\d|^-\.\d|^-inf$|^-nan$", re.IGNORECASE)


def _refuse_protocol_arguments(spec: str, flags: tuple[str, ...], aliases: dict[str, str],
                               protected: tuple[str, ...] = PROTOCOL_ARGUMENTS) -> None:
    """An experiment flag that overrides the seed, tokens or output dir would make the data wrong.

    The trainer takes the last value given, argparse accepts abbreviations (``--see``) and
    short options take their value attached (``-s7``); ``aliases`` maps the trainer's own
    option strings (``-s``, ``--random-seed``) to the protocol argument they set.
    """
    longs = {name: name for name in (*PROTOCOL_ARGUMENTS, *protected) if name.startswith("--")}
    longs.update({opt: dest for opt, dest in aliases.items() if opt.startswith("--")})
    shorts = {name: name for name in protected if not name.startswith("--")}
    shorts.update({opt: dest for opt, dest in aliases.items() if not opt.startswith("--")})
    for flag in flags:
        name = flag.split("=", 1)[0]
        clash = None
        if name.startswith("--") and len(name) >= 3:
            clash = next((dest for opt, dest in longs.items() if opt.startswith(name)), None)
        elif name.startswith("-") and len(name) >= 2 and not _NEGATIVE_NUMBER.match(name):
            # "-s7", "-s=7", a single-dash long option ("-seed"), or "-vs 7" (flags clustered before it)
            clash = next((dest for opt, dest in shorts.items()
                          if name.startswith(opt) or (len(opt) == 2 and re.match(rf"^-[A-Za-z]*{re.escape(opt[1])}", name))),
                         None)
        if clash is not None:
            raise pytest.UsageError(
                f"--experiment={spec!r} passes {name}, which would override {clash}: exprun sets "
                f"{', '.join(PROTOCOL_ARGUMENTS)} for every run itself; use --exprun-train-tokens, "
                "the --exprun-*-seeds options or --exprun-checkpoints-dir instead"
            )


def parse(config: pytest.Config, command: tuple[str, ...] = (), rootdir: Path | None = None,
                 io: TrainerIO | None = None) -> tuple[Experiment, ...]:
    specs: list[str] = config.getoption("experiment") or []
    custom_name = config.getoption("experiment_name")
    if custom_name is not None and len(specs) != 1:
        raise pytest.UsageError("--experiment-name names one experiment; give exactly one --experiment with it")
    if custom_name is not None:
        refuse_nul(custom_name, "--experiment-name")
    parsed: list[tuple[str, tuple[str, ...]]] = []
    for spec in specs:
        refuse_nul(spec, f"--experiment={spec!r}")
        try:
            # The trainer's style (exprun_flag_style) for the flags; the report name from the plain form.
            parsed.append((spec, tuple(io.flags(spec) if io is not None else experiment_flags(spec))))
        except ProtocolError as exc:
            raise pytest.UsageError(str(exc)) from None
    aliases: dict[str, str] = {}
    if rootdir is not None and command and any(
        word.startswith("-") and not word.startswith("--") for _, flags in parsed for word in flags
    ):
        aliases = trainer_aliases(command, rootdir)  # only short options need the trainer's own list
    elif rootdir is not None and command and parsed:
        aliases = {k: v for k, v in static_aliases(command, rootdir).items() if k.startswith("--")}
    found: dict[str, Experiment] = {}
    for spec, flags in parsed:
        _refuse_protocol_arguments(spec, flags, aliases, io.argv.protocol_options() if io is not None else ())
        name = safe_name(custom_name) if custom_name is not None else experiment_name(experiment_flags(spec))
        if name.casefold() in RESERVED_NAMES:
            raise pytest.UsageError(
                f"an experiment cannot be named {name!r}: exprun uses that name for its own files; "
                "pass --experiment-name"
            )
        same = next((other for other in found.values() if other.name.casefold() == name.casefold()), None)
        if same is not None:
            if same.flags == flags:
                continue  # the same experiment given twice
            raise pytest.UsageError(
                f"--experiment={spec!r} and --experiment={same.spec!r} both make the report name {name!r}; "
                "run them in two sessions with --experiment-name"
            )
        found[name] = Experiment(spec=spec, name=name, flags=flags)
    return tuple(found.values())
