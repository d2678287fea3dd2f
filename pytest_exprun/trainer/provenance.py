"""Which files a run's Python processes read while it ran: the setup as the trainer saw it.

The static scan (``files``) is a first guess made before any run: it cannot see a module
imported by a computed name, a helper found through a ``sys.path`` entry the trainer adds,
or a config or data file opened at a path built in code. So every run is traced: the
``sitecustomize`` in ``_trace/`` (put first on the run's ``PYTHONPATH``) adds a PEP 578 audit
hook to each Python process of the run, which appends the paths it reads to a per-run trace
file. This module gives a run that environment, reads the trace back into a ``Provenance``
(files with their size, mtime and sha256; directories the trainer listed; installed
distributions with their versions), and tells later whether any of it changed.

Checking again is cheap: a file whose size and modification time are unchanged is taken as
unchanged without being read; only one whose stat differs is hashed, and hashes are kept for
the session, so a 1 GB corpus is read once per session at most (docs/benchmarks.md).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

TRACE_ENV = "EXPRUN_TRACE_FILE"
SKIP_ENV = "EXPRUN_TRACE_SKIP"
ROOT_ENV = "EXPRUN_TRACE_ROOT"
#: Where the tracer's ``sitecustomize.py`` lives (shipped with the package).
TRACER_DIR = Path(__file__).with_name("_trace")

CODE_SUFFIXES = frozenset({".py", ".pyi", ".pyx", ".so", ".pyd", ".sh", ".ipynb"})
CONFIG_SUFFIXES = frozenset({".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env", ".txt"})
#: A "config" file larger than this is data (a JSON corpus is not a config).
CONFIG_MAX_BYTES = 1 << 20
GROUPS = ("code", "config", "data", "packages")


@dataclass(frozen=True)
class TracedFile:
    """One file a run read: where, its stat when traced, and its content hash."""

    name: str  # relative to the project when inside it, absolute otherwise
    size: int
    mtime_ns: int
    sha256: str

    @property
    def kind(self) -> str:
        suffix = Path(self.name).suffix.lower()
        if suffix in CODE_SUFFIXES:
            return "code"
        if suffix in CONFIG_SUFFIXES and self.size <= CONFIG_MAX_BYTES:
            return "config"
        return "data"


@dataclass(frozen=True)
class Provenance:
    """What the Python processes of one run (or of several, merged) read."""

    files: tuple[TracedFile, ...] = ()
    #: (directory name, sha256 of its sorted listing): a folder the trainer listed (a glob over shards).
    dirs: tuple[tuple[str, str], ...] = ()
    #: (distribution, version), from the site-packages folders the run read from.
    packages: tuple[tuple[str, str], ...] = ()
    #: The site-packages folders those distributions were found in.
    sites: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "files": {f.name: [f.size, f.mtime_ns, f.sha256] for f in self.files},
            "dirs": dict(self.dirs),
            "packages": dict(self.packages),
            "sites": list(self.sites),
            "notes": list(self.notes),
            "grouped": self.grouped(),
        }

    @classmethod
    def from_json(cls, data: Any) -> Provenance:
        """Read one back; a value of the wrong shape raises ``ValueError``."""
        try:
            files = tuple(TracedFile(str(name), int(v[0]), int(v[1]), str(v[2]))
                          for name, v in sorted(dict(data.get("files", {})).items()))
            dirs = tuple(sorted((str(k), str(v)) for k, v in dict(data.get("dirs", {})).items()))
            packages = tuple(sorted((str(k), str(v)) for k, v in dict(data.get("packages", {})).items()))
            sites = tuple(str(s) for s in data.get("sites", []))
            notes = tuple(str(n) for n in data.get("notes", []))
        except (AttributeError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"a traced provenance is malformed ({exc})") from None
        return cls(files, dirs, packages, sites, notes)

    def grouped(self) -> dict[str, list[str]]:
        """Names by group (code, config, data, packages), for the report; no numbers to compute there."""
        groups: dict[str, list[str]] = {g: [] for g in GROUPS}
        for f in self.files:
            groups[f.kind].append(f.name)
        groups["data"] += [f"{name}/ (listing)" for name, _ in self.dirs]
        groups["packages"] = [f"{name} {version}" for name, version in self.packages]
        return groups


# ------------------------------------------------------------------ the run's side
def trace_path(log_path: Path) -> Path:
    """A run's trace file: next to its log, in the research dir's store."""
    return log_path.with_suffix(".trace")


def environment(trace: Path, root: Path, skip: Sequence[Path], inherited: Mapping[str, str]) -> dict[str, str]:
    """What a run's environment needs for its Python processes to be traced into ``trace``.

    The tracer's folder goes first on ``PYTHONPATH`` (the user's entries follow, and the
    user's own ``sitecustomize`` is still imported, by the tracer). ``skip`` holds the run's
    output, checkpoints and research dirs: what a run finds there is not a setup input.
    """
    pythonpath = [str(TRACER_DIR), *(p for p in inherited.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {
        "PYTHONPATH": os.pathsep.join(pythonpath),
        TRACE_ENV: str(trace),
        ROOT_ENV: str(root),
        SKIP_ENV: os.pathsep.join(str(p) for p in skip),
    }


def read_trace(trace: Path, rootdir: Path, exclude: Sequence[str] = ()) -> Provenance | None:
    """The provenance of one run from its trace file; None when nothing was traced at all.

    None means no Python process of the run loaded the tracer: a trainer that is not Python,
    one started with ``python -I``, ``-E`` or ``-S``, or a wrapper that replaced ``PYTHONPATH``.
    ``exclude``: globs of names (relative to ``rootdir``) left out, as ``exprun_fingerprint_exclude``.
    """
    try:
        with open(trace, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    reads: dict[str, None] = {}
    written: set[str] = set()
    listed: dict[str, None] = {}
    packages: dict[tuple[str, str], None] = {}
    notes: list[str] = []
    for line in raw.decode("utf-8", "surrogateescape").split("\n"):
        kind, _, rest = line.partition("\t")
        if kind in ("R", "W", "D"):  # a path with a newline or tab in it, written escaped
            kind, rest = kind.lower(), rest.encode("ascii", "backslashreplace").decode("unicode_escape")
        if kind == "r":
            reads[rest] = None
        elif kind == "w":
            written.add(rest)
        elif kind == "d":
            listed[rest] = None
        elif kind == "p":
            site, _, top = rest.partition("\t")
            packages[(site, top)] = None
        elif kind == "!":
            notes.append(f"{trace.name}: {rest}")
    files = []
    for path in reads:
        if path in written:
            continue  # written by the run itself: an output, not an input
        found = _traced_file(Path(path), rootdir)
        if found is not None and not excluded(found.name, exclude):
            files.append(found)
    dirs = []
    for path in listed:
        digest = listing_digest(Path(path))
        if digest is not None and not excluded(name_of(Path(path), rootdir), exclude):
            dirs.append((name_of(Path(path), rootdir), digest))
    versions, sites = _distributions(packages)
    return Provenance(tuple(sorted(files, key=lambda f: f.name)), tuple(sorted(set(dirs))), versions, sites,
                      tuple(notes))


def excluded(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p.rstrip("/") + "/*") for p in patterns)


def name_of(path: Path, rootdir: Path) -> str:
    try:
        return path.relative_to(rootdir).as_posix()
    except ValueError:
        return str(path)


def path_of(name: str, rootdir: Path) -> Path:
    return Path(name) if Path(name).is_absolute() else rootdir / name


def _traced_file(path: Path, rootdir: Path) -> TracedFile | None:
    try:
        st = path.stat()
        if not path.is_file():
            return None  # a device, a fifo, a folder opened for its fd
        digest = content_digest(str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        return None  # gone since (a temporary file): nothing to check later
    return TracedFile(name_of(path, rootdir), st.st_size, st.st_mtime_ns, digest)


@functools.lru_cache(maxsize=4096)
def content_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """sha256 of the whole file, once per (path, size, mtime, inode) in a session."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listing_digest(path: Path, hidden: bool = False) -> str | None:
    """sha256 of a folder's sorted entry names: a shard added to or removed from it changes it.

    Hidden entries (``.pytest_cache``, ``.git``) are left out unless ``hidden``: a glob does not
    see them, and a tool creating one in the project is no new data. Digests stored before
    counted them (``hidden=True``); ``changes`` accepts either.
    """
    try:
        names = sorted(name for name in os.listdir(path) if hidden or not name.startswith("."))
    except OSError:
        return None
    return hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()


@functools.lru_cache(maxsize=128)
def _top_levels(site: str, deep: bool) -> dict[str, tuple[str, str]]:
    """Top-level names in one site-packages folder -> (distribution, version), from its metadata.

    ``top_level.txt`` first (a few bytes per package); ``deep`` also reads each package's file
    list (RECORD), which wheels without ``top_level.txt`` need, at about a second for a large venv.
    """
    found: dict[str, tuple[str, str]] = {}
    for dist in metadata.distributions(path=[site]):
        name, version = _name(dist), dist.version or ""
        if not name:
            continue
        tops = set((dist.read_text("top_level.txt") or "").split())
        for entry in (dist.files or ()) if deep else ():
            top = entry.parts[0] if entry.parts else ""
            if top and top != ".." and not top.endswith(".pth"):
                tops.add(top[:-3] if top.endswith(".py") else top)
        for top in tops:
            found.setdefault(top, (name, version))
    return found


def _name(dist: metadata.Distribution) -> str:
    """A distribution's name, or "" when its metadata is missing or broken."""
    try:
        return str(dist.metadata["Name"] or "")
    except (OSError, KeyError, ValueError):
        return ""


@functools.lru_cache(maxsize=256)
def _named(site: str, top: str) -> tuple[str, str] | None:
    """The usual case, found without reading every package's file list: the import name is the distribution's."""
    if top.startswith(("_", ".")) or top.endswith((".dist-info", ".egg-info")):
        return None
    for dist in metadata.distributions(path=[site], name=top):
        if _name(dist):
            return _name(dist), dist.version
    return None


def _distributions(tops: Iterable[tuple[str, str]]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    versions: dict[str, str] = {}
    sites: dict[str, None] = {}
    for site, top in tops:
        sites[site] = None
        plain = top.removesuffix(".py")
        if top.endswith((".dist-info", ".egg-info")):
            # Only metadata was read: libraries scan every installed package's entry points
            # (torch does at import), which says nothing about the code the run used.
            continue
        known = (_named(site, plain) or _top_levels(site, False).get(plain)
                 or _top_levels(site, True).get(plain) or _top_levels(site, True).get(top))
        if known is None:
            if top not in ("__pycache__", "") and not top.endswith(".pth"):
                versions.setdefault(plain, "unknown (no package metadata)")
            continue
        versions[known[0]] = known[1]
    return tuple(sorted(versions.items())), tuple(sites)


# ------------------------------------------------------------------ several runs
def merge(found: Iterable[Provenance | None]) -> Provenance | None:
    """One provenance for a group of runs: the union of what each read (None if none was traced).

    A file two runs read in different versions is named in the notes (it changed between them).
    """
    items = [p for p in found if p is not None]
    if not items:
        return None
    files: dict[str, TracedFile] = {}
    dirs: dict[str, str] = {}
    packages: dict[str, str] = {}
    notes: dict[str, None] = {}
    for p in items:
        for f in p.files:
            old = files.get(f.name)
            if old is not None and old.sha256 != f.sha256:
                notes[f"{f.name} was read in two versions by the runs of this group (it changed between them)"] = None
            files[f.name] = f
        for name, digest in p.dirs:
            if dirs.get(name, digest) != digest:
                notes[f"the listing of {name}/ differed between the runs of this group"] = None
            dirs[name] = digest
        for name, version in p.packages:
            if packages.get(name, version) != version:
                notes[f"{name} was imported in two versions by the runs of this group"] = None
            packages[name] = version
        notes.update(dict.fromkeys(p.notes))
    sites = tuple(dict.fromkeys(s for p in items for s in p.sites))
    return Provenance(tuple(sorted(files.values(), key=lambda f: f.name)), tuple(sorted(dirs.items())),
                      tuple(sorted(packages.items())), sites, tuple(notes))


# ------------------------------------------------------------------ checking again
def changes(traced: Provenance, rootdir: Path) -> list[str]:
    """What differs now from what the runs read, one phrase per change naming the file.

    A file whose size and mtime are the same is not read again (the fast path); one whose
    stat differs is hashed, and counts as changed only if its content did.
    """
    found = []
    for f in traced.files:
        path = path_of(f.name, rootdir)
        try:
            st = path.stat()
            if st.st_size == f.size and st.st_mtime_ns == f.mtime_ns:
                continue
            now = content_digest(str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            found.append(f"{f.name} (read by the trainer at run time) is gone")
            continue
        if now != f.sha256:
            found.append(f"{f.name} (read by the trainer at run time) changed (sha256 {f.sha256[:12]} → {now[:12]})")
    for name, digest in traced.dirs:
        if digest not in (listing_digest(path_of(name, rootdir)), listing_digest(path_of(name, rootdir), hidden=True)):
            found.append(f"{name}/ (listed by the trainer at run time) has other entries now")
    for name, version in traced.packages:
        if version.startswith("unknown"):
            continue
        now_version = next((d.version for d in metadata.distributions(path=list(traced.sites), name=name)), None)
        if now_version != version:
            found.append(f"{name} {version} → {now_version or 'not installed'} (imported by the trainer)")
    return found


def runtime_only(traced: Provenance, static_files: Iterable[str]) -> list[str]:
    """Code and config files the trainer read that the static scan did not find."""
    static = set(static_files)
    return [f.name for f in traced.files if f.kind != "data" and f.name not in static]


def describe(traced: Provenance) -> str:
    """One line: how much was traced, by group."""
    g = traced.grouped()
    return ", ".join(f"{len(g[k])} {k}" for k in GROUPS)


# ------------------------------------------------------------------ as stored
def of_json(data: Mapping[str, Any] | None) -> Provenance | None:
    """What a stored record's or snapshot's runs read (its ``traced`` field), or None.

    None also for a field that does not parse: measured untraced, or by an older exprun.
    """
    if data is None:
        return None
    try:
        return Provenance.from_json(data)
    except ValueError:
        return None


def stored_changes(data: Mapping[str, Any] | None, rootdir: Path) -> list[str]:
    """What a stored baseline's runs read that differs now (files, listed folders, packages)."""
    traced = of_json(data)
    return [] if traced is None else changes(traced, rootdir)
