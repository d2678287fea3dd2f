"""Which of the trainer's own options set a protocol argument: ``-s`` or ``--random-seed`` for ``--seed``.

An experiment flag must not override the seed, tokens or output dir exprun passes to
every run, and the trainer may accept them under other names. Those names are read from
the trainer's ``add_argument`` calls in its sources (nothing is run), or else from its
``--help``.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Arguments exprun passes to every run itself; an experiment must not override them.
PROTOCOL_ARGUMENTS = ("--train_tokens", "--seed", "--output_dir")
_HELP_TIMEOUT_S = 30.0


def trainer_aliases(command: Sequence[str], rootdir: Path) -> dict[str, str]:
    """The trainer's option strings that set a protocol argument, e.g. ``{"-s": "--seed"}``.

    Read statically from the trainer's ``add_argument`` calls (nothing is run), in the
    trainer script and the project modules it imports; where none is found, from its
    ``--help`` (argparse's ``-s SEED, --seed SEED`` lines), asked once per command. Empty
    when neither says: then only the long names are known.
    """
    found = static_aliases(tuple(command), rootdir)
    return found or dict(_aliases_from_help(tuple(command), str(rootdir)))


def _has_python_shebang(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == b"#!" and b"python" in handle.readline(200)
    except OSError:
        return False


def _protocol_dest(options: list[str], dest: str | None) -> str | None:
    wanted = {arg[2:]: arg for arg in PROTOCOL_ARGUMENTS}
    if dest is not None:
        return wanted.get(dest)
    for option in options:
        if option.startswith("--") and option[2:].replace("-", "_") in wanted:
            return wanted[option[2:].replace("-", "_")]
    return None


def _aliases_in_source(path: Path) -> dict[str, str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"):
            continue
        options = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                   and a.value.startswith("-")]
        dest = next((k.value.value for k in node.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)
                     and isinstance(k.value.value, str)), None)
        target = _protocol_dest(options, dest)
        if target is not None:
            found.update({option: target for option in options})
    return found


@functools.lru_cache(maxsize=8)
def _aliases_from_help(command: tuple[str, ...], cwd: str) -> tuple[tuple[str, str], ...]:
    argv = list(command)
    if argv and argv[0] in {"python", "python3"}:
        argv[0] = sys.executable
    try:
        out = subprocess.run([*argv, "--help"], cwd=cwd, capture_output=True, text=True, errors="replace",
                             timeout=_HELP_TIMEOUT_S, stdin=subprocess.DEVNULL, start_new_session=True).stdout
    except (OSError, subprocess.SubprocessError, ValueError):
        return ()
    found: dict[str, str] = {}
    for line in out.splitlines():
        # "  -s SEED, --seed SEED   help text": option strings up to two spaces before the help
        head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        if not head.startswith("-"):
            continue
        options = [part.split()[0].split("=")[0] for part in head.split(", ") if part.startswith("-")]
        target = _protocol_dest(options, None)
        if target is not None:
            found.update({option: target for option in options})
    return tuple(sorted(found.items()))


def static_aliases(command: tuple[str, ...], rootdir: Path) -> dict[str, str]:
    """The aliases found in the trainer's sources; nothing is run."""
    from .fingerprint import setup_files  # imported here: only experiment sessions need it

    found: dict[str, str] = {}
    for name, _ in setup_files(command, (), rootdir).files:
        path = Path(name) if os.path.isabs(name) else rootdir / name
        if path.suffix == ".py" or _has_python_shebang(path):
            found.update(_aliases_in_source(path))
    return found
