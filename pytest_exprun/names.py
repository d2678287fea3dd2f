"""The protocol's vocabulary: its default seeds, its groups, experiment names and scale labels,
and the two errors every layer raises.

Standard library only, so that the option table, the settings and the collection of a plain
``pytest`` run can use them without importing the statistics.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from decimal import Decimal

BASELINE_SEEDS: tuple[int, ...] = (42, 137, 256, 512, 1024)
EXPERIMENT_SEEDS: tuple[int, ...] = (42, 137, 256)
EXTENSION_SEEDS: tuple[int, ...] = (512, 1024)
DEFAULT_TRAIN_TOKENS = 1_000_000
#: The sequential mode's seeds in the order its looks use them, and its default design.
SEEDS: tuple[int, ...] = (42, 137, 256, 512, 1024) + tuple(2**k for k in range(11, 32))
MAX_SEEDS = len(SEEDS)
DEFAULT_ALPHA = 0.03
DEFAULT_MIN_EFFECT = 1.0
DEFAULT_LOOKS: tuple[int, ...] = (2, 3, 4, 6)
#: Fewer baseline seeds than this need --exprun-allow-small-baseline (the 2σ rule then errs far more).
MIN_BASELINE_SEEDS = 3

_UNITS = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K"))
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAME_LENGTH = 80


#: The group of the unmodified trainer's runs; every experiment is judged against it.
BASELINE = "baseline"
#: A fresh baseline-like run checked against the stored baseline; never reused across sessions.
CONTROL = "control"
CONTROL_SEED = 42


class ProtocolFailure(Exception):
    """A seed or a verdict failed for a reason the message fully explains (no traceback)."""


class ProtocolError(ValueError):
    """Input the protocol cannot accept; the message says what to change."""


def scale_label(train_tokens: int) -> str:
    """Short, exact label for a token count: 1000000 → '1M', 2500000 → '2.5M', 20000 → '20K'.

    Exact rather than rounded, so two different scales never share a file name.
    """
    if train_tokens <= 0:
        raise ProtocolError(f"train tokens must be a positive integer, got {train_tokens}")
    for size, unit in _UNITS:
        if train_tokens >= size:
            text = format(Decimal(train_tokens) / Decimal(size), "f")
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return str(train_tokens)


def experiment_flags(spec: str) -> list[str]:
    """Trainer arguments for one ``--experiment`` value.

    ``NAME`` → ``--NAME``; ``NAME=VALUE`` → ``--NAME VALUE``; a value that starts
    with ``-`` is split like a shell would and passed as is (never through a shell).
    """
    text = spec.strip()
    if not text:
        raise ProtocolError("--experiment needs a flag name, e.g. --experiment=use_qk_norm")
    if text.startswith("-"):
        try:
            args = shlex.split(text)
        except ValueError as exc:
            raise ProtocolError(f"cannot split --experiment={spec!r}: {exc}") from None
        if not args:
            raise ProtocolError("--experiment needs at least one trainer flag")
        return args
    name, sep, value = text.partition("=")
    if not name or any(ch.isspace() for ch in name):
        raise ProtocolError(
            f"--experiment={spec!r}: expected NAME or NAME=VALUE (or flags starting with '-')"
        )
    return [f"--{name}", value] if sep else [f"--{name}"]


def safe_name(text: str) -> str:
    """Reduce any text to a safe file-name part of ``[A-Za-z0-9_.-]`` that cannot climb directories.

    Different texts can give one name (``a/b`` and ``a_b``); a name chosen this way is
    checked against the flags its existing report was measured for before it is reused.
    """
    name = re.sub(r"\.{2,}", "_", _UNSAFE.sub("_", text))
    name = re.sub(r"_{2,}", "_", name).strip("._-")
    digest = _digest(text)
    if not name:
        return f"exp-{digest}"
    if len(name) > MAX_NAME_LENGTH:
        return f"{name[: MAX_NAME_LENGTH - 9].rstrip('._-')}-{digest}"
    return name


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def experiment_name(flags: list[str]) -> str:
    """Report name made from the flags: ``['--use_qk_norm']`` → ``use_qk_norm``, ``['--optimizer', 'muon']``
    → ``optimizer-muon``.

    Those two forms read back to one list of flags (an option name without ``-``, then at
    most one value); any other list, say ``['--better-yes']``, which would read like
    ``['--better', 'yes']``, gets a short hash of the flags appended, so that different
    flags never share a report name.
    """
    readable = "-".join(arg.lstrip("-") for arg in flags)
    option = flags[0][2:] if flags and flags[0].startswith("--") else ""
    faithful = (
        bool(option) and "-" not in option and safe_name(option) == option and len(flags) <= 2
        and (len(flags) == 1 or (not flags[1].startswith("-") and safe_name(flags[1]) == flags[1]))
    )
    if faithful and len(readable) <= MAX_NAME_LENGTH:
        return readable
    base = re.sub(r"_{2,}", "_", re.sub(r"\.{2,}", "_", _UNSAFE.sub("_", readable))).strip("._-")
    digest = hashlib.sha256("\0".join(flags).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{base[: MAX_NAME_LENGTH - 9].rstrip('._-')}-{digest}" if base else f"exp-{digest}"


def parse_seeds(text: str, what: str) -> tuple[int, ...]:
    """Parse '42,137,256' into seeds, refusing empty lists, non-integers and duplicates."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise ProtocolError(f"{what} is empty; give comma-separated integers such as 42,137,256")
    try:
        seeds = tuple(int(p) for p in parts)
    except ValueError:
        raise ProtocolError(f"{what} must be comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise ProtocolError(f"{what} must be non-negative integers, got {text!r}")
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise ProtocolError(f"{what} lists seed(s) {duplicates} more than once")
    return seeds


class TrainerIOError(ValueError):
    """A trainer I/O setting that cannot work; the message names the ini option and the fix."""
