"""Results that outlive a session: run records, atomic writes, the session lock, fingerprints.

Every finished run is written at once to its own small JSON file, replaced atomically,
so an interrupted session loses nothing that finished and never leaves a torn file.
A record is found again only under the same setup key, so results measured with
another trainer, command or scale are never mixed in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

RECORD_VERSION = 1


class StoreWarning(pytest.PytestWarning):
    """A stored file could not be used and was set aside."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that a crash at any instant leaves the old file or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _file_mode(path: Path) -> int:
    """The replaced file's permissions, or what a plain ``open`` would give a new file.

    ``mkstemp`` creates files readable by their owner alone; a report must stay readable
    by whoever could read the one it replaces.
    """
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def set_aside(path: Path, why: str) -> Path:
    """Rename a file we will not use or overwrite, so nothing is lost; return its new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.{why}-{stamp}-{counter}")
    os.replace(path, target)
    return target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(cwd: Path) -> str | None:
    """The commit checked out in ``cwd``, for the record; None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


@dataclass(frozen=True)
class Setup:
    """What a group of runs was measured with; runs under another setup are never mixed in."""

    command: tuple[str, ...]
    train_tokens: int
    flags: tuple[str, ...]
    trainer_files: tuple[tuple[str, str], ...]  # (path as given, sha256)

    def key(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "command": list(self.command),
            "train_tokens": self.train_tokens,
            "flags": list(self.flags),
            "trainer_files": {name: digest for name, digest in self.trainer_files},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Setup":
        return cls(
            command=tuple(str(a) for a in data["command"]),
            train_tokens=int(data["train_tokens"]),
            flags=tuple(str(a) for a in data.get("flags", [])),
            trainer_files=tuple(sorted((str(k), str(v)) for k, v in data["trainer_files"].items())),
        )

    def differences(self, other: "Setup") -> list[str]:
        """Human-readable list of what changed from ``other`` to this setup."""
        changes = []
        if self.command != other.command:
            changes.append(f"trainer command {' '.join(other.command)!r} → {' '.join(self.command)!r}")
        if self.train_tokens != other.train_tokens:
            changes.append(f"train tokens {other.train_tokens} → {self.train_tokens}")
        if self.flags != other.flags:
            changes.append(f"flags {list(other.flags)} → {list(self.flags)}")
        mine, theirs = dict(self.trainer_files), dict(other.trainer_files)
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                old, new = theirs.get(name, "absent"), mine.get(name, "absent")
                changes.append(f"{name} changed (sha256 {old[:12]} → {new[:12]})")
        return changes


def trainer_files(command: tuple[str, ...], cwd: Path) -> tuple[tuple[str, str], ...]:
    """Fingerprint the script files named in the trainer command (e.g. ``train_llm.py``)."""
    found = []
    for arg in command[1:]:
        if arg.startswith("-"):
            continue
        path = Path(arg) if Path(arg).is_absolute() else cwd / arg
        if path.suffix in {".py", ".sh"} and path.is_file():
            found.append((arg, sha256_file(path)))
    return tuple(sorted(found))


@dataclass
class RunRecord:
    """One finished, successful run: what the protocol's statistics are computed from."""

    group: str
    seed: int
    val_loss: float
    wall_time: float
    setup_key: str
    curve: list[tuple[int, float]] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    log: str = ""
    finished_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "RunRecord":
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            raise ValueError("not a run record of this version")
        record = cls(
            group=str(data["group"]),
            seed=int(data["seed"]),
            val_loss=float(data["val_loss"]),
            wall_time=float(data["wall_time"]),
            setup_key=str(data["setup_key"]),
            curve=[(int(s), float(v)) for s, v in data.get("curve", [])],
            argv=[str(a) for a in data.get("argv", [])],
            log=str(data.get("log", "")),
            finished_at=str(data.get("finished_at", "")),
            extra=dict(data.get("extra", {})),
        )
        if not (math.isfinite(record.val_loss) and math.isfinite(record.wall_time) and record.wall_time >= 0):
            raise ValueError("val_loss or wall_time is not a finite number, or wall_time is negative")
        return record


class RunStore:
    """Run records under ``<root>/runs/<scale>/<group>/<setup key>/seed<S>.json``."""

    def __init__(self, root: Path, scale: str) -> None:
        self.root = root
        self.scale = scale

    def folder(self, group: str, setup_key: str) -> Path:
        return self.root / "runs" / self.scale / group / setup_key

    def record_path(self, group: str, setup_key: str, seed: int) -> Path:
        return self.folder(group, setup_key) / f"seed{seed}.json"

    def log_path(self, group: str, setup_key: str, seed: int) -> Path:
        return self.folder(group, setup_key) / f"seed{seed}.log"

    def load(self, group: str, setup_key: str, seed: int) -> RunRecord | None:
        """The stored run, or None; an unreadable record is set aside with a warning, not used."""
        path = self.record_path(group, setup_key, seed)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.warn(StoreWarning(f"cannot read {path}: {exc}; seed {seed} will be run again"))
            return None
        try:
            record = RunRecord.from_json(raw.decode("utf-8"))
            if record.seed != seed or record.group != group or record.setup_key != setup_key:
                raise ValueError("its group, seed or setup does not match its location")
        except (ValueError, KeyError, TypeError) as exc:
            moved = set_aside(path, "corrupt")
            warnings.warn(
                StoreWarning(
                    f"{path} is not a valid run record ({exc}); kept as {moved.name}, "
                    f"seed {seed} will be run again"
                )
            )
            return None
        return record

    def save(self, record: RunRecord) -> Path:
        path = self.record_path(record.group, record.setup_key, record.seed)
        atomic_write_text(path, record.to_json())
        return path

    def iter_records(self) -> Iterator[tuple[Path, RunRecord]]:
        """Every readable record at this scale, for summaries across sessions."""
        base = self.root / "runs" / self.scale
        for path in sorted(base.glob("*/*/seed*.json")):
            try:
                yield path, RunRecord.from_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError):
                continue


class SessionLock:
    """One protocol session per research dir at a time; a second one waits, saying why."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, wait: float, on_wait: Callable[[str], None] | None = None) -> bool:
        """Take the lock, waiting at most ``wait`` seconds (forever if negative)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if wait < 0 else time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                os.close(fd)
                return False
            if not told and on_wait is not None:
                holder = self._holder()
                on_wait(f"another exprun session{holder} is using {self.path.parent}; waiting for it to finish")
                told = True
            time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def _holder(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.path.read_text().strip())
            return f" (pid {pid})"
        return ""

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def remove_tree(path: Path) -> None:
    """Remove a finished run's checkpoint directory; a missing one is fine."""
    shutil.rmtree(path, ignore_errors=True)
