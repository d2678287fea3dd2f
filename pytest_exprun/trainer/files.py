"""Which files make up a trainer, found statically from its command: nothing is imported or run.

The command may take any common form: ``python train.py``, ``python -m pkg.train``,
``./train.py`` (an executable with a shebang), an absolute path, a wrapper such as
``bash -c "cd x && python train.py"``, ``env``, ``torchrun`` or a shell script. From the
trainer script the project's own modules it imports are followed (an ``ast`` walk), keeping
only files inside the project; arguments that name a file inside the project count too.
Each file is hashed as it is found, so one that cannot be read is said in the notes and
not followed; the hash function is the caller's (``fingerprint.file_digest``). Following
Python imports is ``python_imports``; it comes back here through ``TrainerScan.script``.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import python_imports

#: Programs that run the command that follows their own options.
_PASS_THROUGH = {"env", "nice", "nohup", "time", "stdbuf", "ionice", "taskset", "chrt", "timeout", "exec",
                 "command", "srun", "uv", "poetry", "pipenv", "conda", "mamba", "micromamba", "pixi", "hatch"}
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}
_SHELL_SEPARATORS = re.compile(r"&&|\|\||[;|&\n]")
_PYTHON = re.compile(r"^(?:python|pypy)(?:\d+(?:\.\d+)*)?$")
#: Python options that take a value as the next word.
_PYTHON_VALUE_OPTIONS = {"-W", "-X", "-Q", "--check-hash-based-pycs"}


@dataclass
class TrainerScan:
    """The state of one search: what was found and what could not be resolved."""

    rootdir: Path
    exclude: Sequence[str]
    env: Mapping[str, str]
    #: How a found file is hashed.
    digest: Callable[[Path], str]
    files: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interpreter: str | None = None
    scanned: set[Path] = field(default_factory=set)
    imports_torch: bool = False
    extra_paths: list[Path] = field(default_factory=list)
    #: Where the trainer's absolute imports resolve: its script's folder (or the cwd for -m), then extra_paths.
    roots: list[Path] = field(default_factory=list)

    #: Imports already looked up: (module, roots) -> found.
    modules: dict[tuple[str, tuple[Path, ...]], bool] = field(default_factory=dict)
    _resolved: dict[Path, Path] = field(default_factory=dict)

    def resolve(self, path: Path) -> Path:
        found = self._resolved.get(path)
        if found is None:
            try:
                found = path.resolve()
            except (OSError, RuntimeError):  # a symlink loop
                found = Path(os.path.abspath(path))
            self._resolved[path] = found
        return found

    def name(self, path: Path) -> str:
        resolved = self.resolve(path)
        return resolved.relative_to(self.root).as_posix() if self.inside(resolved) else str(resolved)

    @functools.cached_property
    def root(self) -> Path:
        return self.rootdir.resolve()

    def inside(self, path: Path) -> bool:
        return self.resolve(path).is_relative_to(self.root)

    def excluded(self, path: Path) -> bool:
        name = self.name(path)
        return any(fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern.rstrip("/") + "/*")
                   for pattern in self.exclude)

    def add(self, path: Path, why: str) -> bool:
        """Fingerprint one file; False if it is excluded or cannot be read (then said in the notes)."""
        path = self.resolve(path)
        if path in self.files:
            return True
        if self.excluded(path):
            return False
        try:
            self.files[path] = self.digest(path)
        except OSError as exc:
            self.notes.append(f"{self.name(path)} ({why}) cannot be read: {exc.strerror or exc}")
            return False
        return True

    def script(self, path: Path, why: str) -> None:
        """Fingerprint a trainer file and follow what it runs: Python code that runs a file calls this."""
        _script(self, path, why)


def scan_trainer(
    command: Sequence[str],
    flags: Sequence[str],
    rootdir: Path,
    include: Sequence[str],
    exclude: Sequence[str],
    env: Mapping[str, str] | None,
    digest: Callable[[Path], str],
) -> TrainerScan:
    """The files of a trainer command plus an experiment's flags, each hashed by ``digest`` (see ``setup_files``)."""
    scan = TrainerScan(rootdir=rootdir, exclude=tuple(exclude), env=dict(os.environ if env is None else env),
                       digest=digest)
    scan.extra_paths = _project_paths(scan)
    words = list(command)
    if words and words[0] in {"python", "python3"}:
        words[0] = sys.executable  # as the runner starts it
    _command(scan, words, rootdir)
    for arg in flags:
        _argument_file(scan, arg, rootdir, "named in the experiment's flags")
    for pattern in include:
        _include(scan, pattern)
    if not scan.files:
        scan.notes.insert(0, f"no trainer file found in the command {shlex.join(command)!r}: a changed trainer "
                             "would go unseen; name its files with exprun_fingerprint_include")
    return scan


def _project_paths(scan: TrainerScan) -> list[Path]:
    """Import roots inside the project besides the script's folder: PYTHONPATH's entries,
    and ``src/`` (where an editable install of a src layout points)."""
    found = []
    entries = [p for p in scan.env.get("PYTHONPATH", "").split(os.pathsep) if p] + ["src"]
    for entry in entries:
        path = (scan.rootdir / entry) if not os.path.isabs(entry) else Path(entry)
        if path.is_dir() and scan.inside(path):
            found.append(path.resolve())
    return list(dict.fromkeys(found))


def _command(scan: TrainerScan, words: list[str], cwd: Path) -> None:
    """Find the trainer in one simple command (a program and its arguments)."""
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # VAR=value before the program
    if not words:
        return
    program = words[0]
    base = os.path.basename(program)
    if _PYTHON.match(base):
        _python_command(scan, program, words[1:], cwd)
        return
    if base in _SHELLS:
        _shell_command(scan, words[1:], cwd)
        return
    path = _program_path(scan, program, cwd)
    if path is not None and scan.inside(path) or (path is not None and os.sep in program):
        _script(scan, path, "the trainer command's program")
    elif path is not None:
        shebang = _shebang(path)
        if shebang and _PYTHON.match(os.path.basename(shebang[-1] if shebang[0].endswith("env") else shebang[0])):
            scan.interpreter = scan.interpreter or _interpreter(scan, shebang)  # torchrun, accelerate, ...
    rest = words[1:]
    if base in _PASS_THROUGH:
        # Skip the wrapper's own options and sub-command words ("uv run", "conda run -n x").
        i = 0
        while i < len(rest) and (rest[i].startswith("-") or rest[i] in {"run", "exec"} or "=" in rest[i]):
            i += 2 if rest[i] in {"-n", "--name", "-p", "--prefix", "-u", "-C"} else 1
        if i < len(rest):
            _command(scan, rest[i:], cwd)
        return
    for arg in rest:
        _argument_file(scan, arg, cwd, "named in the trainer command")


def _program_path(scan: TrainerScan, program: str, cwd: Path) -> Path | None:
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        return path if path.is_file() else None
    found = shutil.which(program, path=scan.env.get("PATH"))
    return Path(found) if found else None


def _python_command(scan: TrainerScan, interpreter: str, args: list[str], cwd: Path) -> None:
    """``python [options] (script | -m module | -c code) [args]``."""
    scan.interpreter = scan.interpreter or _resolve_program(scan, interpreter, cwd)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m" or (arg.startswith("-m") and len(arg) > 2 and not arg.startswith("--")):
            module = args[i + 1] if arg == "-m" and i + 1 < len(args) else arg[2:]
            scan.roots = scan.roots or [cwd.resolve(), *scan.extra_paths]
            if not python_imports.follow_module(scan, module, scan.roots, "run with python -m"):
                scan.notes.append(f"module {module!r} (python -m) is not a file inside the project; its code "
                                  "is not fingerprinted")
            rest = args[i + 2 if arg == "-m" else i + 1 :]
            break
        if arg == "-c" and i + 1 < len(args):
            scan.roots = scan.roots or [cwd.resolve(), *scan.extra_paths]
            python_imports.follow_source(scan, args[i + 1], cwd / "-c", cwd, "python -c")
            rest = args[i + 2 :]
            break
        if arg in _PYTHON_VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        path = Path(arg) if os.path.isabs(arg) else cwd / arg
        if path.is_file():
            _script(scan, path, "the trainer script")
        else:
            scan.notes.append(f"trainer script {arg!r} does not exist")
        rest = args[i + 1 :]
        break
    else:
        return
    for word in rest:
        _argument_file(scan, word, cwd, "named in the trainer command")


def _resolve_program(scan: TrainerScan, program: str, cwd: Path) -> str | None:
    path = _program_path(scan, program, cwd)
    return str(path) if path is not None else None


def _shell_command(scan: TrainerScan, args: list[str], cwd: Path) -> None:
    """``bash -c "..."`` (the commands inside it) or ``bash script.sh`` (the script)."""
    for i, arg in enumerate(args):
        if arg == "-c" or (arg.startswith("-") and not arg.startswith("--") and arg.endswith("c")):
            if i + 1 < len(args):
                _shell_source(scan, args[i + 1], cwd)
            return
        if arg.startswith("-"):
            continue
        path = Path(arg) if os.path.isabs(arg) else cwd / arg
        if path.is_file():
            _script(scan, path, "the trainer script")
        for word in args[i + 1 :]:
            _argument_file(scan, word, cwd, "named in the trainer command")
        return


def _shell_source(scan: TrainerScan, text: str, cwd: Path) -> None:
    """Every simple command of a shell snippet; ``cd DIR`` moves where the next ones run."""
    for piece in _SHELL_SEPARATORS.split(text):
        piece = piece.strip()
        if not piece or piece.startswith("#"):
            continue
        try:
            words = shlex.split(piece, comments=True)
        except ValueError:
            scan.notes.append(f"cannot split the shell command {piece!r}; files it names are not fingerprinted")
            continue
        words = [w for w in words if not re.match(r"^\d*[<>]", w)]
        if words and words[0] == "cd" and len(words) > 1:
            target = Path(words[1]) if os.path.isabs(words[1]) else cwd / words[1]
            if target.is_dir():
                cwd = target
            continue
        if words and words[0] not in {"echo", "export", "set", "exit", "true", "false", "source", ".", "cd"}:
            _command(scan, words, cwd)


def _shebang(path: Path) -> list[str] | None:
    try:
        with open(path, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return words or None


def _script(scan: TrainerScan, path: Path, why: str) -> None:
    """A trainer file: fingerprint it and follow what it runs (a shebang says what it is)."""
    if not scan.add(path, why):
        return
    shebang = _shebang(path)
    interpreter = None
    if shebang:
        interpreter = os.path.basename(shebang[-1] if shebang[0].endswith("env") and len(shebang) > 1 else shebang[0])
    if path.suffix == ".py" or (interpreter and _PYTHON.match(interpreter)):
        if shebang and interpreter and _PYTHON.match(interpreter):
            scan.interpreter = scan.interpreter or _interpreter(scan, shebang)
        if not scan.roots:
            scan.roots = [path.resolve().parent, *scan.extra_paths]
        python_imports.follow_file(scan, path, entry=True)
    elif path.suffix in {".sh", ".bash"} or (interpreter in _SHELLS):
        if path.resolve() in scan.scanned:
            return
        scan.scanned.add(path.resolve())
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        _shell_source(scan, "\n".join(line for line in text.splitlines() if not line.startswith("#!")), scan.rootdir)


def _interpreter(scan: TrainerScan, shebang: list[str]) -> str | None:
    if shebang[0].endswith("env") and len(shebang) > 1:
        found = shutil.which(shebang[-1], path=scan.env.get("PATH"))
        return found
    return shebang[0] if os.path.isfile(shebang[0]) else None


def _argument_file(scan: TrainerScan, arg: str, cwd: Path, why: str) -> None:
    """An argument, or the value of ``--key=value``, that names a file inside the project."""
    candidates = [arg]
    if arg.startswith("-") and "=" in arg:
        candidates = [arg.split("=", 1)[1]]
    elif arg.startswith("-"):
        return
    for text in candidates:
        if not text or "\0" in text or len(text) > 4096:
            continue
        path = Path(text) if os.path.isabs(text) else cwd / text
        try:
            is_file, is_dir = path.is_file(), path.is_dir()
        except OSError:
            continue
        if is_file and scan.inside(path):
            if path.suffix == ".py":
                _script(scan, path, why)  # a Python config (nanoGPT's) may import project code
            else:
                scan.add(path, why)
        elif is_dir and scan.inside(path) and scan.name(path) not in {".", ""}:
            scan.notes.append(f"{scan.name(path)}/ ({why}) is a folder: its files are not fingerprinted; "
                              "list the ones that matter in exprun_fingerprint_include")


def _include(scan: TrainerScan, pattern: str) -> None:
    """Files a glob names: inside the project, or anywhere by an absolute or ``~`` pattern (a data
    file a non-Python tool or a C extension reads, a model outside the project)."""
    matched = False
    expanded = os.path.expanduser(pattern)
    try:
        if os.path.isabs(expanded):
            paths = sorted(Path(p) for p in glob.glob(expanded, recursive=True))
        else:
            paths = sorted(scan.rootdir.glob(pattern))
    except (ValueError, NotImplementedError) as exc:
        scan.notes.append(f"exprun_fingerprint_include pattern {pattern!r} cannot be used: {exc}")
        return
    for path in paths:
        if path.is_file():
            matched = True
            if path.suffix == ".py":
                _script(scan, path, "exprun_fingerprint_include")
            else:
                scan.add(path, "exprun_fingerprint_include")
    if not matched:
        scan.notes.append(f"exprun_fingerprint_include pattern {pattern!r} matches no file")
