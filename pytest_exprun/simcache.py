"""The store's cache of simulated figures: a later session of the same design does not simulate again.

The rules' error rates, power, calibrated bounds and coverage are simulations of a second or more
each (``decide.simulated`` remembers them in memory by their inputs). They are kept in
``.exprun/simulated/<code version>.json``, the version being a hash of the rules' own code and
of numpy's version, so a change to either starts a new file and an old figure is never used.
The file is read when pytest's session starts (before the header, where the sequential design is
calibrated), handed to the aside helper that computes the reports' figures, and written again,
atomically and under the session's lock, when the session ends with figures it did not have.
A file that cannot be read or does not hold what this module writes is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import timings
from .decide import simulated
from .store import atomic_write_text

if TYPE_CHECKING:
    from .session import ProtocolSession

FOLDER = "simulated"


def code_version() -> str:
    """A hash of every module of the rules and of numpy's version: what the figures depend on."""
    digest = hashlib.sha256()
    for path in sorted(Path(simulated.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        digest.update(metadata.version("numpy").encode())
    except metadata.PackageNotFoundError:
        pass
    return digest.hexdigest()[:16]


def cache_path(state_dir: Path) -> Path:
    return state_dir / FOLDER / f"{code_version()}.json"


def read(state_dir: Path) -> dict[str, Any]:
    """The kept figures by key; nothing when the file is missing, unreadable or not exprun's."""
    try:
        data = json.loads(cache_path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("code") != code_version() or not isinstance(data.get("figures"), dict):
        return {}
    return {k: v for k, v in data["figures"].items() if isinstance(k, str)}


def write(state_dir: Path, figures: dict[str, Any]) -> None:
    """Keep ``figures`` with those already kept (rewriting a damaged file); OSError if it cannot."""
    merged = {**read(state_dir), **figures}
    text = json.dumps({"code": code_version(), "figures": merged}, indent=1, sort_keys=True) + "\n"
    path = cache_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, inside=state_dir)


def load(session: ProtocolSession) -> None:
    """Before anything is simulated: the kept figures, here and in the aside helper once it starts."""
    with timings.span("read the simulated figures"):
        figures = read(session.settings.state_dir)
    simulated.preload(figures)
    if figures:
        session.aside.first(simulated.preload, figures)


def save(session: ProtocolSession) -> None:
    """At the session's end, under its lock: keep what this session simulated (a cache: a failure is silent)."""
    if session.judge is None:  # the session never took its lock: it writes nothing
        return
    with timings.span("keep the simulated figures"):
        figures = simulated.taken()
        if session.aside.process is not None:
            figures.update(session.aside.call(simulated.taken))
        if figures:
            try:
                write(session.settings.state_dir, figures)
            except OSError:
                pass
