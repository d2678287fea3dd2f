"""Results that outlive a session, and the one source of truth for every report.

Run records (one small JSON file per finished run) and what is derived from them (the
baseline snapshot a scale's experiments are judged against, each experiment's decision)
are written atomically, so an interrupted session loses nothing that finished and never
leaves a torn file. A record is found again only under the same setup key, so results
measured with another trainer, command or scale are never mixed in. Reports are rendered
from here and never read back as data. No write follows a symbolic link planted inside
the research dir.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

from .model import SCHEMA_VERSION, BaselineSnapshot, Decision, Kind, RunRecord, load_json, to_json_text


class StoreWarning(pytest.PytestWarning):
    """A stored file could not be used and was set aside."""


class UnsafePath(OSError):
    """A path inside the research or checkpoints dir goes through a symbolic link."""


def refuse_links(path: Path, inside: Path) -> None:
    """Raise ``UnsafePath`` if ``path`` or a folder between ``inside`` and it is a symbolic link.

    A link planted there would make exprun write (or delete) a file outside the project.
    ``inside`` itself may be a link: the user chose it.
    """
    try:
        relative = path.relative_to(inside)
    except ValueError:
        return
    current = inside
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise UnsafePath(f"{current} is a symbolic link; exprun does not write through links inside {inside} "
                             "(remove it)")


def atomic_write_text(path: Path, text: str, inside: Path | None = None) -> None:
    """Write ``text`` so that a crash at any instant leaves the old file or the new, never a mix.

    The final rename replaces a link at ``path`` rather than following it; with ``inside``,
    folders on the way that are links are refused too.
    """
    if inside is not None:
        refuse_links(path, inside)
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


def now() -> str:
    """The local time a result is stored at, as the reports print it."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


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

    def record(self, group: str, setup_key: str, seed: int) -> RunRecord | None:
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
            record = RunRecord.from_json(raw)
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

    def save_record(self, record: RunRecord) -> Path:
        path = self.record_path(record.group, record.setup_key, record.seed)
        atomic_write_text(path, record.to_json(), inside=self.root)
        return path

    def records(self, group: str, setup_key: str, seeds: Iterable[int]) -> dict[int, RunRecord]:
        """The stored runs of these seeds (those that exist and are readable)."""
        return {seed: r for seed in seeds if (r := self.record(group, setup_key, seed)) is not None}

    def discard_records(self, group: str, setup_key: str) -> None:
        """Keep a group's runs aside (``--exprun-rerun-baseline``): nothing is deleted."""
        folder = self.folder(group, setup_key)
        if folder.exists():
            set_aside(folder, "replaced")

    # ----------------------------------------------------- derived results
    def save_snapshot(self, snapshot: BaselineSnapshot) -> None:
        """The baseline snapshot: what this scale's experiments are judged against."""
        self._save(Kind.SNAPSHOT, "baseline", snapshot.to_json())

    def snapshot(self) -> BaselineSnapshot | None:
        data = self._load(Kind.SNAPSHOT, "baseline")
        if data is None:
            return None
        try:
            return BaselineSnapshot.from_json(data)
        except (KeyError, TypeError, ValueError):
            return None

    def discard_snapshot(self) -> None:
        self._discard(Kind.SNAPSHOT, "baseline")

    def save_decision(self, decision: Decision) -> None:
        """An experiment's decision, under its name (only a decision with a verdict is stored)."""
        self._save(Kind.DECISION, decision.name, decision.to_json())

    def decision(self, name: str) -> Decision | None:
        """The stored decision of this name, or None; an unreadable one is set aside with a warning."""
        data = self._load(Kind.DECISION, name)
        if data is None:
            return None
        try:
            return Decision.from_json(name, data)
        except (KeyError, TypeError, ValueError) as exc:
            self._set_aside(self._path(Kind.DECISION, name), str(exc))
            return None

    def decisions(self) -> list[Decision]:
        """Every readable decision at this scale, ordered by name."""
        found = []
        for path in sorted((self.root / "results" / self.scale / Kind.DECISION.value).glob("*.json")):
            decision = self.decision(path.stem)
            if decision is not None:
                found.append(decision)
        return found

    def report_digest(self, report: Path, written: str | None = None) -> tuple[tuple[str, int], ...] | None:
        """The (SHA-256, size in bytes) of each version of ``report`` exprun wrote that may be on disk:
        the last, and the one before it (a crash between recording a digest and renaming the report
        into place leaves that one); None when none is recorded (a store from an earlier version).
        Given ``written``, the text about to be written there is recorded first. Lets a report's owner
        tell an untouched report from an edited one without reading the report back as data."""
        path = self.root / "results" / self.scale / "reports" / f"{report.name}.json"
        try:
            found = load_json(path.read_bytes())
            versions = tuple((str(v["sha256"]), int(v["size"])) for v in (found, *found.get("previous", [])[:1]))
        except FileNotFoundError:
            versions = None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            warnings.warn(StoreWarning(f"{path} is not a readable report digest ({exc}); {report.name} is checked by "
                                       "its data block instead"))
            versions = None
        if written is None:
            return versions
        data = written.encode("utf-8")
        new = (hashlib.sha256(data).hexdigest(), len(data))
        previous = [v for v in (versions or ())[:1] if v != new]
        atomic_write_text(path, to_json_text({"version": SCHEMA_VERSION, "report": report.name, "sha256": new[0],
                                              "size": new[1], "previous": [{"sha256": h, "size": n} for h, n in previous]}),
                          inside=self.root)
        return (new, *previous)

    def _path(self, kind: Kind, name: str) -> Path:
        return self.root / "results" / self.scale / kind.value / f"{name}.json"

    def _save(self, kind: Kind, name: str, data: dict[str, Any]) -> None:
        payload = {"version": SCHEMA_VERSION, "kind": kind.value, "name": name, **data}
        atomic_write_text(self._path(kind, name), to_json_text(payload), inside=self.root)

    def _load(self, kind: Kind, name: str) -> dict[str, Any] | None:
        path = self._path(kind, name)
        try:
            data = load_json(path.read_bytes())
            if not isinstance(data, dict) or data.get("version") != SCHEMA_VERSION or data.get("name") != name:
                raise ValueError("not a result of this version and name")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._set_aside(path, str(exc))
            return None
        return data

    def _set_aside(self, path: Path, why: str) -> None:
        if path.exists() and not path.is_symlink():
            moved = set_aside(path, "corrupt")
            warnings.warn(StoreWarning(f"{path} is not a valid exprun result ({why}); kept as {moved.name}"))

    def _discard(self, kind: Kind, name: str) -> None:
        path = self._path(kind, name)
        if path.exists() or path.is_symlink():
            set_aside(path, "replaced")


class SessionLock:
    """One protocol session per research dir at a time; a second one waits, saying why."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, wait: float, on_wait: Callable[[str], None] | None = None) -> bool:
        """Take the lock, waiting at most ``wait`` seconds (forever if negative)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a link planted at the lock's path must not make us truncate its target.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
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
    """Remove a run's checkpoint directory (a link is unlinked, never followed); a missing one is fine."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(OSError):
            path.unlink()
        return
    shutil.rmtree(path, ignore_errors=True)


def fresh_dir(path: Path, inside: Path) -> None:
    """An empty directory at ``path`` for a run to write into: whatever was there is removed first."""
    refuse_links(path.parent, inside)
    remove_tree(path)
    if path.exists():
        raise OSError(f"cannot empty {path} before the run; remove it by hand")
    path.mkdir(parents=True)
