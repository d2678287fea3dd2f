"""How exprun reads and writes its JSON files: strict on reading, one format on writing.

Shared by the typed model, the store and the reports; standard library only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any


def load_json(raw: bytes) -> Any:
    """Parse a stored JSON file; anything unreadable (including absurd nesting) is a ValueError."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("it is nested too deeply to be one of exprun's files") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text ({exc.reason})") from None


def plain(value: Any) -> Any:
    """JSON-ready copy: enums by value, tuples as lists, NaN and infinities as null."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def to_json_text(data: Mapping[str, Any]) -> str:
    """The one way exprun writes JSON: indented, no NaN, a final newline."""
    return json.dumps(plain(dict(data)), indent=1, allow_nan=False) + "\n"
