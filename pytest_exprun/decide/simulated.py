"""Simulated figures remembered by what they were simulated from, so the store can keep them.

Every simulation of the rules draws from a fixed seed, so the same inputs and the same code give
the same figures to the last digit: a later session need not simulate again. ``simulated`` wraps
such a function; its results are kept here in memory, as JSON-ready values, keyed by the
function and its arguments. Pure: reading and writing them is ``simcache``'s, outside ``decide``.
An argument or a result this module cannot write down exactly (an array, say) is never kept:
the function then simply runs, as it would without this module.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
#: Results by key: the ones read from the store and the ones simulated in this process.
_KNOWN: dict[str, Any] = {}
#: The ones simulated in this process since they were last taken (``taken``).
_NEW: dict[str, Any] = {}


def encode(value: Any) -> Any:
    """``value`` as JSON that ``decode`` turns back into an equal value; TypeError if it cannot."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"float": repr(float(value))}
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: encode(v) for k, v in value.items()}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and _ours(type(value)):
        cls = type(value)
        return {"dataclass": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}}
    kind = type(value).__module__.split(".")[0]
    if kind == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return encode(value.item())  # a numpy scalar: the same number
    raise TypeError(f"cannot keep a {type(value).__name__}")


def decode(data: Any) -> Any:
    """The value ``encode`` wrote down; ValueError for anything it would not have written."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict) and len(data) == 1 and "tuple" in data and isinstance(data["tuple"], list):
        return tuple(decode(v) for v in data["tuple"])
    if isinstance(data, dict) and len(data) == 1 and "dict" in data and isinstance(data["dict"], dict):
        return {k: decode(v) for k, v in data["dict"].items()}
    if isinstance(data, dict) and len(data) == 1 and data.get("float") in ("nan", "inf", "-inf"):
        return float(data["float"])
    if isinstance(data, dict) and set(data) == {"dataclass", "fields"} and isinstance(data["fields"], dict):
        module, _, name = str(data["dataclass"]).partition(":")
        cls = getattr(importlib.import_module(module), name, None) if module.startswith(__package__ or "") else None
        if not isinstance(cls, type) or not dataclasses.is_dataclass(cls) or not _ours(cls):
            raise ValueError(f"not a dataclass of exprun's rules: {data['dataclass']!r}")
        made: Any = cls
        return made(**{k: decode(v) for k, v in data["fields"].items()})
    raise ValueError(f"not a kept value: {str(data)[:80]}")


def _ours(cls: type) -> bool:
    return cls.__module__.startswith(__package__ or "pytest_exprun.decide")


def simulated(func: F) -> F:
    """Remember ``func``'s results by its arguments (the function must be deterministic)."""
    name = f"{func.__module__}.{func.__qualname__}"

    @functools.wraps(func)
    def remembered(*args: Any, **kwargs: Any) -> Any:
        try:
            key = json.dumps([name, encode(list(args)), encode(dict(sorted(kwargs.items())))])
        except TypeError:
            return func(*args, **kwargs)
        if key in _KNOWN:
            try:
                return decode(_KNOWN[key])
            except (TypeError, ValueError, AttributeError, ImportError):
                del _KNOWN[key]  # a damaged entry: simulated again below, and replaced
        value = func(*args, **kwargs)
        try:
            kept = encode(value)
        except TypeError:
            return value
        if decode(kept) == value:  # written down exactly, or not kept at all
            _KNOWN[key] = _NEW[key] = kept
        return value

    return remembered  # type: ignore[return-value]


def preload(entries: Mapping[str, Any]) -> None:
    """Results read from the store; what this process simulated itself is kept over them."""
    for key, value in entries.items():
        _KNOWN.setdefault(key, value)


def taken() -> dict[str, Any]:
    """The results simulated in this process since the last call, for the store to keep."""
    new = dict(_NEW)
    _NEW.clear()
    return new
