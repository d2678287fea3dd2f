"""A trainer's output as text lines: split from a byte stream, capped, parsed, echoed at a bounded rate.

A trainer that prints one line of 100 MB, redraws a progress bar with ``\r`` or floods its
output must cost bounded memory and a readable terminal; the same splitting applies to a
running trainer's pipe and to a finished run's log read again.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: ``Step 240 | val_loss: 1.9876 | ...``: the protocol records the val_loss at the highest step.
STEP_LINE = re.compile(r"^\s*Step\s+(\d+)\s*\|\s*val_loss:\s*([^\s|]+)")
#: Any line that reports a step (``Step 250 | train_loss ...``, ``step 250: ...``, ``iter 250``):
#: how far training went, so that a final evaluation can be told from an early one.
PROGRESS_LINE = re.compile(r"^\s*(?:step|iter)\s+(\d+)\b", re.IGNORECASE)

MAX_LINE_CHARS = 2000

LineParser = Callable[[str], tuple[int, float] | None]


def parse_step_line(line: str) -> tuple[int, float] | None:
    """(step, val_loss) from a trainer's evaluation line, or None for any other line."""
    match = STEP_LINE.match(line)
    if match is None:
        return None
    try:
        return int(match.group(1)), float(match.group(2))
    except ValueError:
        return None


def log_lines(path: Path) -> Iterator[str]:
    """A log file's lines, split and capped as a running trainer's output is."""
    splitter = _LineSplitter()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            yield from splitter.feed(block)
    yield from splitter.flush()


class _LineSplitter:
    """Split a byte stream into text lines, keeping at most ``MAX_LINE_CHARS`` of each.

    A line ends at ``\n``, ``\r\n`` or a lone ``\r``: progress bars (tqdm) redraw with ``\r``,
    and an evaluation printed after one must still start a line of its own.
    """

    def __init__(self) -> None:
        self._partial = bytearray()
        self._overflow = False
        self._after_cr = False  # the last chunk ended with \r: a \n starting the next one is its pair

    def feed(self, data: bytes) -> list[str]:
        lines = []
        start = 0
        if self._after_cr and data[:1] == b"\n":
            start = 1
        self._after_cr = False
        for match in _LINE_END.finditer(data, start):
            self._keep(data[start : match.start()])
            lines.append(self._take())
            start = match.end()
        self._keep(data[start:])
        self._after_cr = data.endswith(b"\r")
        return lines

    def flush(self) -> list[str]:
        return [self._take()] if self._partial else []

    def _keep(self, piece: bytes) -> None:
        room = MAX_LINE_CHARS * 4 - len(self._partial)
        if len(piece) > room:
            self._overflow = True
        self._partial += piece[: max(room, 0)]

    def _take(self) -> str:
        text = self._partial.decode("utf-8", "replace")
        if self._overflow or len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line truncated]"
        self._partial.clear()
        self._overflow = False
        return text


_LINE_END = re.compile(rb"\r\n|\r|\n")


class LineThrottle:
    """Let through a burst of lines, then at most ``rate`` a second; count the ones held back.

    Echoing a trainer's output keeps a long run watchable, but a trainer that floods its
    output must not flood the terminal or a CI log too: every line is in the run's log anyway.
    """

    def __init__(self, rate: float = 20.0, burst: int = 1000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._held_back = 0
        self._told = -math.inf

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._held_back += 1
        return False

    def take_held_back(self, every: float = 10.0) -> int:
        """Lines held back since last told, at most once per ``every`` seconds (else 0)."""
        now = time.monotonic()
        if not self._held_back or now - self._told < every:
            return 0
        count, self._held_back, self._told = self._held_back, 0, now
        return count
