"""Where a trainer's Python processes keep compiled bytecode, so a fresh one need not compile torch again.

A ``pip install`` compiles a package's sources to ``.pyc`` files, but many GPU images ship
none and set ``PYTHONDONTWRITEBYTECODE=1``: every fresh interpreter then compiles torch's
Python sources again (``import torch`` 3.7-6.8 s on an H200 machine, 1.6 s cached). So a
trainer process exprun starts gets ``PYTHONPYCACHEPREFIX`` pointing at a folder in the user's
cache directory (beside pip's), and ``PYTHONDONTWRITEBYTECODE`` emptied (CPython reads only a
non-empty value), unless the user opts out or has chosen a prefix already.

The folder is the user's cache, not part of an experiment: never in a run's fingerprint or
provenance (the tracer skips ``sys.pycache_prefix``), and not one of the research or checkpoint
dirs exprun cleans. Python checks each ``.pyc`` against its source's size and mtime, so a stale
one is never used, and writes each atomically, so concurrent runs may share it. Standard
library only: a plain ``pytest`` imports this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

PREFIX_ENV = "PYTHONPYCACHEPREFIX"
DONT_WRITE_ENV = "PYTHONDONTWRITEBYTECODE"
#: What ``--exprun-bytecode-cache`` takes besides a folder.
ON, OFF = "on", "off"
#: Measured (docs/benchmarks.md): what one ``train_llm.py`` run puts there (torch, numpy, the standard library).
MEASURED_SIZE = "about 26 MB for train_llm.py on CPU"


def default_folder(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME`` (else ``~/.cache``) ``/pytest-exprun/pycache/<major.minor>``.

    One folder per Python version keeps a version's files together; the ``.pyc`` names carry
    the interpreter's tag too (``cpython-312``), so a trainer on another Python is still exact.
    """
    base = environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path(os.path.expanduser("~")) / ".cache"
    return root / "pytest-exprun" / "pycache" / f"{sys.version_info[0]}.{sys.version_info[1]}"


def chosen_folder(text: str, rootdir: Path, environ: Mapping[str, str]) -> Path | None:
    """The folder ``--exprun-bytecode-cache`` names, or None where exprun leaves the environment alone.

    ``on`` is the default folder, unless the user set ``PYTHONPYCACHEPREFIX`` (theirs is kept);
    ``off`` is none (``true`` and ``false``, an ini flag of earlier versions, read as ``on`` and
    ``off``); anything else is a folder (``~`` expanded, relative to the rootdir).
    Raises ``ValueError`` with a one-line message for a value that cannot be a folder.
    """
    value = text.strip()
    if value.lower() in (OFF, "false", "no", "0"):  # the ini's boolean spellings of earlier versions too
        return None
    if value.lower() in (ON, "", "true", "yes", "1"):
        return None if environ.get(PREFIX_ENV) else default_folder(environ)
    if "\0" in value:
        raise ValueError("--exprun-bytecode-cache holds a NUL character; give 'on', 'off' or a folder")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else rootdir / path


def unusable(folder: Path | None) -> str | None:
    """Why ``folder`` cannot hold the cache (one line saying what to do), or None; creates it.

    Checked once, before any run, so that a cache that cannot be used is said in words rather
    than Python failing silently to write into it in every process.
    """
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        return (f"the bytecode cache {folder} cannot be used ({exc.strerror or exc}); trainer processes run "
                "without it. Give another folder with --exprun-bytecode-cache=PATH, or turn it off with "
                "--exprun-bytecode-cache=off")
    return None


def environment(folder: Path | None) -> dict[str, str]:
    """What a trainer's own environment gets for ``folder`` (nothing for None)."""
    return {} if folder is None else {PREFIX_ENV: str(folder), DONT_WRITE_ENV: ""}


def without_cache(env: Mapping[str, str]) -> dict[str, str]:
    """A run's own environment (``RunSpec.env``) without the cache: for a run on another machine,
    whose Python keeps its own bytecode (and whose home may not be this one's). A prefix the
    user set is in the session's environment, never in a run's own, so it is left as it is."""
    return {k: v for k, v in env.items() if k not in (PREFIX_ENV, DONT_WRITE_ENV)}
