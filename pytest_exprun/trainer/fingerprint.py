"""What defines a setup, found without the user listing files: the setup's fingerprint.

A baseline is only worth reusing while the code that produced it is unchanged. The
fingerprint holds the sha256 of:

- the trainer script, whatever the command's form: ``python train.py``, ``python -m
  pkg.train``, ``./train.py`` (an executable with a shebang), an absolute path, a wrapper
  such as ``bash -c "cd x && python train.py"``, ``env``, ``torchrun`` or a shell script;
- the project's own modules the trainer imports, directly or not, found statically (an
  ``ast`` walk: nothing is imported or run), keeping only files inside the project, so that
  editing ``model.py`` changes the fingerprint and editing a test or a README does not;
- files named in the command or the experiment's flags (``--config conf.yaml``,
  ``--data=prep.json``): every argument that names an existing file inside the project;
- extra files or globs the analysis cannot see (``exprun_fingerprint_include``), less the
  excluded paths (``exprun_fingerprint_exclude``);

plus the trainer interpreter's Python version and the torch version it would import
(read from package metadata, without importing torch). The files are found by
``trainer_files``; this module hashes them and keeps the record. What could not be
resolved is said in ``notes``; a fingerprint without any file is ``empty``, and the
session says so.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import TrainerScan, scan_trainer

#: Packages whose version is part of a setup when the trainer's interpreter can import them.
PACKAGES = ("torch",)
#: Files larger than this are hashed by their size, first and last MiB (a corpus can be gigabytes).
FULL_HASH_LIMIT = 64 * 1024 * 1024
_EDGE = 1024 * 1024


@dataclass(frozen=True)
class Fingerprint:
    """The files and versions a setup is made of; two setups are the same only if these are."""

    #: (path relative to the project, or absolute outside it; sha256), sorted by path.
    files: tuple[tuple[str, str], ...] = ()
    #: (name, version), e.g. ("python", "3.11.7"), ("torch", "2.5.1"), sorted by name.
    versions: tuple[tuple[str, str], ...] = ()
    #: What could not be resolved, in words a user can act on.
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """No file fingerprinted: a changed trainer would go unseen."""
        return not self.files

    def digest(self) -> str:
        """A short key of the files and versions (notes do not change what was measured)."""
        blob = json.dumps({"files": self.files, "versions": self.versions}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"files": dict(self.files), "versions": dict(self.versions), "notes": list(self.notes)}

    @classmethod
    def from_json(cls, data: Any) -> "Fingerprint":
        """Read one back; a value of the wrong shape raises ``ValueError`` saying which part."""
        if not isinstance(data, dict):
            raise ValueError("a fingerprint must be a JSON object")
        parts = []
        for key in ("files", "versions"):
            value = data.get(key, {})
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in value.items()):
                raise ValueError(f"a fingerprint's {key!r} must map strings to strings")
            parts.append(tuple(sorted(value.items())))
        notes = data.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ValueError("a fingerprint's 'notes' must be a list of strings")
        return cls(files=parts[0], versions=parts[1], notes=tuple(notes))

    def differences(self, other: "Fingerprint") -> list[str]:
        """What changed from ``other`` (the old one) to this one, one phrase per change."""
        changes = _file_changes(dict(other.files), dict(self.files))
        mine, theirs = dict(self.versions), dict(other.versions)
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                changes.append(f"{name} {theirs.get(name, 'absent')} → {mine.get(name, 'absent')}")
        return changes


def _file_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if after is None:
            changes.append(f"{name} is no longer part of the setup (was sha256 {_short(before)})")
        elif before is None:
            changes.append(f"{name} is new in the setup (sha256 {_short(after)})")
        else:
            changes.append(f"{name} changed (sha256 {_short(before)} → {_short(after)})")
    return changes


def _short(digest: str | None) -> str:
    return (digest or "")[-64:][:12]


def recheck(fp: Fingerprint, rootdir: Path) -> list[str]:
    """What changed in ``fp``'s files since it was taken (cheap: the files are hashed again, not found again).

    Meant for before and after every run, so a trainer edited during a session fails
    that run instead of mixing two versions of the code under one fingerprint.
    """
    changes = []
    for name, digest in fp.files:
        path = Path(name) if Path(name).is_absolute() else rootdir / name
        try:
            now = file_digest(path)
        except OSError as exc:
            changes.append(f"{name} cannot be read any more ({exc.strerror or exc})")
            continue
        if now != digest:
            changes.append(f"{name} changed (sha256 {_short(digest)} → {_short(now)})")
    return changes


def file_digest(path: Path) -> str:
    """sha256 of a file; of its size, first and last MiB for one over ``FULL_HASH_LIMIT``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return digest.hexdigest()
        digest.update(str(size).encode() + b"\0" + handle.read(_EDGE))
        handle.seek(size - _EDGE)
        digest.update(handle.read(_EDGE))
    return f"size-head-tail:{digest.hexdigest()}"


def setup_files(
    command: Sequence[str],
    flags: Sequence[str],
    rootdir: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    env_names: Sequence[str] = (),
) -> Fingerprint:
    """The fingerprint of a trainer command plus an experiment's flags, run from ``rootdir``.

    ``command`` is the trainer command as the user wrote it (a leading ``python`` is
    pytest's own interpreter); ``env`` the environment it runs with (default: this one);
    ``env_names`` the variables (names or globs, ``exprun_fingerprint_env``) whose values
    join the setup.
    """
    scan = scan_trainer(command, flags, rootdir, include, exclude, env, file_digest)
    versions = _versions(scan) + environment_values(env_names, os.environ if env is None else env)
    files = tuple(sorted((scan.name(path), digest) for path, digest in scan.files.items()))
    return Fingerprint(files=files, versions=versions, notes=tuple(dict.fromkeys(scan.notes)))


# ------------------------------------------------------------ environment values
#: A variable whose name holds one of these is recorded by a hash of its value, never the value itself.
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
ENV_PREFIX = "env "


def environment_values(patterns: Sequence[str], env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``("env NAME", value)`` for every variable a pattern names, so a changed value changes the setup.

    A plain name that is not set is recorded as unset (setting it later is a change); a glob
    records the variables it matches, so one appearing or going away is a change too.
    """
    found: dict[str, str] = {}
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            found[ENV_PREFIX + pattern] = _shown(pattern, env[pattern]) if pattern in env else "(unset)"
            continue
        for name in sorted(env):
            if fnmatch.fnmatchcase(name, pattern):
                found[ENV_PREFIX + name] = _shown(name, env[name])
    return tuple(sorted(found.items()))


def _shown(name: str, value: str) -> str:
    if any(word in name.upper() for word in SECRET_WORDS):
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return value


# ---------------------------------------------------------------------- versions
def _versions(scan: TrainerScan) -> tuple[tuple[str, str], ...]:
    interpreter = scan.interpreter
    if interpreter is None:
        scan.notes.append("the trainer's Python interpreter was not identified; Python and torch versions "
                          "are not part of the setup")
        return ()
    try:
        same = os.path.samefile(interpreter, sys.executable)
    except OSError:
        same = False
    found: dict[str, str] | None
    if same:
        found = _versions_here()
    else:
        found = _versions_of(interpreter, scan.env.get("PYTHONPATH", ""))
        if found is None:
            scan.notes.append(f"cannot ask {interpreter} for its Python and torch versions; they are not part "
                              "of the setup")
            return ()
    if "torch" not in found and scan.imports_torch:
        scan.notes.append(f"the trainer imports torch but {interpreter} has no torch installed")
    return tuple(sorted(found.items()))


_VERSION_PROBE = """
import json, platform
from importlib import metadata
found = {"python": platform.python_version()}
for name in %r:
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps(found))
"""


def _versions_here() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


@functools.lru_cache(maxsize=16)
def _versions_of(interpreter: str, pythonpath: str) -> dict[str, str] | None:
    """Another interpreter's versions, from its package metadata (torch is not imported); asked once."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    try:
        out = subprocess.run([interpreter, "-c", _VERSION_PROBE % (PACKAGES,)], capture_output=True, text=True,
                             timeout=30, env=env, stdin=subprocess.DEVNULL, check=False)
        found = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        return None
    return found
