"""What the fork server needs to know about a trainer before anything runs, read from its files.

Whether its command is one a fork server can repeat (``python [options] script.py`` or
``python -m module``), whether it speaks the worker protocol, which of its imports are not the
project's own (those the server imports once), and whether it names a ``multiprocessing`` start
method that needs a clean interpreter. Nothing is imported or run: the trainer-file scan
(``trainer/files.py``) and an ``ast`` walk.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..trainer.files import TrainerScan, scan_trainer

if TYPE_CHECKING:
    from ..settings import Settings

_PYTHON = re.compile(r"^(?:python|pypy)(?:\d+(?:\.\d+)*)?$")
#: Interpreter options that change nothing a forked child would do differently, and those taking a value.
_PLAIN_OPTIONS = {"-u", "-B", "-O", "-OO", "-E", "-s", "-S", "-b", "-bb", "-q", "-d", "-v", "-R"}
_VALUE_OPTIONS = {"-X", "-W"}
#: Calls whose constant argument chooses a start method that needs a clean interpreter.
_START_METHOD_CALLS = {"set_start_method", "get_context"}
_CLEAN_METHODS = {"spawn", "forkserver"}


class ForkRefused(Exception):
    """Forking cannot be exact for this trainer; the message says why, in one line."""


def python_invocation(command: Sequence[str]) -> tuple[list[str], str, str, int]:
    """``(interpreter and its options, "script" or "module", script path or module, words used)``."""
    if not command or not (_PYTHON.match(Path(command[0]).name) or command[0] == sys.executable):
        raise ForkRefused(f"the trainer command does not start with python ({command[0] if command else 'empty'!r})")
    i = 1
    while i < len(command):
        word = command[i]
        if word in _VALUE_OPTIONS:
            i += 2
        elif word in _PLAIN_OPTIONS or (word[:2] in _VALUE_OPTIONS and len(word) > 2):
            i += 1
        elif word == "-m" and i + 1 < len(command):
            return list(command[:i]), "module", command[i + 1], i + 2
        elif word.startswith("-"):
            raise ForkRefused(f"the trainer command passes python {word!r}, which a fork server cannot repeat")
        else:
            return list(command[:i]), "script", word, i + 1
    raise ForkRefused("the trainer command names no script or module after python")


def speaks_worker_protocol(settings: Settings) -> bool:
    """Whether a file of the trainer prints the worker protocol's ready line (``train_llm.py`` does)."""
    return any(b"exprun-worker: ready" in _read(path) for path in _trainer_files(settings)[0])


def preload_modules(settings: Settings) -> list[str]:
    """The trainer's imports that are not the project's own, in the order first seen, wherever they
    are in its files (inside functions too). ``from package import Name`` is listed as ``package.Name``:
    the server imports it as a module, or else looks the name up in the package (a lazy module's
    class, as transformers has them)."""
    files, scan = _trainer_files(settings)
    for path in files:
        _refuse_start_methods(path)
    project = {dotted.split(".")[0] for (dotted, _), found in scan.modules.items() if found}
    modules = [dotted for (dotted, _), found in scan.modules.items()
               if not found and dotted.split(".")[0] not in project | {"__future__"}]
    return list(dict.fromkeys(modules))


def _trainer_files(settings: Settings) -> tuple[list[Path], TrainerScan]:
    scan = scan_trainer(settings.command, (), settings.rootdir, settings.fingerprint_include,
                        settings.fingerprint_exclude, None, lambda path: "")
    return [p for p in scan.files if p.suffix == ".py"], scan


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _refuse_start_methods(path: Path) -> None:
    """A start method the trainer names that needs a clean interpreter, or ``mp.spawn``."""
    try:
        tree = ast.parse(_read(path))
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
        if name in _START_METHOD_CALLS and node.args and isinstance(node.args[0], ast.Constant) \
                and node.args[0].value in _CLEAN_METHODS:
            raise ForkRefused(f"{path.name} line {node.lineno} chooses the {node.args[0].value!r} start method, "
                              "which starts from a clean interpreter")
        if name in {"spawn", "start_processes"} and ("multiprocessing" in owner or owner in {"mp", "tmp"}):
            raise ForkRefused(f"{path.name} line {node.lineno} calls {owner}.{name}, which starts from a clean "
                              "interpreter")
