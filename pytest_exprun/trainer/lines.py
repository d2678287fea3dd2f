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

#: A step number, its digits maybe grouped by threes with ``,``, ``_`` or a space (``1,000``,
#: ``1_000``, ``1 000``); a ``.`` is never read as a separator (``1.000`` is not a step).
STEP_NUMBER = r"(?:\d{1,3}(?:[,_ \u00a0\u202f\u2009]\d{3})+|\d+)(?![\d%]|\.\d)"
#: ``Step 240 | val_loss: 1.9876 | ...`` anywhere in a line (after a logging prefix, a progress
#: bar's text or a colour code): the protocol records the val_loss at the highest step. Also
#: ``step: 240, val_loss=1.98``, ``Step [240/500] | lr: 3e-4 | val_loss 1.98``, a JSON line
#: ``{"step": 240, "val_loss": 1.98}``: the step, then up to 16 fields separated by ``|`` or ``,``,
#: one of them the val_loss.
STEP_LINE = re.compile(
    r"(?<![A-Za-z])step['\"]?\s*[:=#]?\s*\[?(?P<step>" + STEP_NUMBER + r")(?:\s*/\s*\d[\d,_]*)?\]?['\"]?\s*[|,]"
    r"(?:[^|,]*[|,]){0,16}?\s*['\"]?val_loss(?!\w)['\"]?\s*[:=]?\s*(?P<value>[^\s|;]+)",
    re.IGNORECASE,
)
#: ``key: value`` or ``key=value`` pairs, quoted or not (a JSON line, a printed dict, ``val_loss=1.9 step=240``):
#: what reads an evaluation whose val_loss comes before its step.
_PAIR = re.compile(r"(?<![\w.-])['\"]?([A-Za-z_][\w]*)['\"]?\s*[:=]\s*['\"]?([^\s|;,{}()\[\]'\"]+)")
#: Keys that give an evaluation's step in a line of pairs, the most specific first.
STEP_KEYS = ("global_step", "step", "iter", "iteration")
#: Any mention of a step (``Step 250 | train_loss ...``, ``step 250: ...``, ``iter 250``,
#: tqdm's postfix ``step=250``, ``'global_step': 250``, ``Step [250/1000]``, ``it 250/1000``)
#: anywhere in a line: how far training went, so that a final evaluation can be told from an early one.
PROGRESS_LINE = re.compile(
    r"(?<![\w.])(?:global_step|step|iter|iteration)\b['\"]?\s*[:=#]?\s*[\['\"]?(" + STEP_NUMBER + ")", re.IGNORECASE)
#: ``it 250/1000``: "it" is a step only with a total after it.
_IT_OF = re.compile(r"(?<![\w.])it\s+\[?(" + STEP_NUMBER + r")\s*/\s*\d", re.IGNORECASE)
#: A value as trainers print it: ``2.0``, ``-0.5``, ``.5``, ``1.23e+00``, ``nan``, ``inf``. Stricter than
#: ``float()``, which would read ``2_0`` as 20.
_VALUE = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)", re.IGNORECASE)
#: A distributed run's rank prefix at the start of a line: ``[rank1]:`` (PyTorch), ``[default1]:``
#: (torchrun's ``--tee``, named after the role), Lightning's ``[rank: 1]``, mpirun's ``[1,1]<stdout>:``;
#: never a progress word (``[epoch 3]:``).
_RANK = re.compile(r"\s*(?:\[(?!(?:epoch|step|iter|iteration|batch|it|eval|val)[ \d])[A-Za-z_]+ ?(\d+)\]:|\[rank:? ?(\d+)\]|\[\d+,(\d+)\]<std(?:out|err)>:)", re.IGNORECASE)
#: The step an evaluation line without one is at (a pattern with no ``step`` group, a hook's
#: own parser): the highest step the output reported so far.
UNSTEPPED = -1
#: An epoch (``Epoch 3/10``, ``'epoch': 2.96``, transformers 5's ``'epoch': '2.96'``): how far a trainer that counts epochs went.
EPOCH = re.compile(r"(?<![\w.])epoch\b['\"]?\s*[:=]?\s*['\"]?(\d+(?:\.\d+)?)(?![\d.])", re.IGNORECASE)
#: A line that names a validation loss and gives it a number within a few characters
#: (``val_loss: 2.0``, ``val loss 2,0``, ``'eval_loss': 2.0``, ``Validation loss (step 1,000): 2.01``):
#: if no parser took it, an evaluation may have been missed.
METRIC_MENTION = re.compile(
    r"(?<![^\W_])(?:e?val|validation)[ _/-]?loss\b[^|\d\n]{0,24}?(?=[-+]?(?:\d|\.\d|nan\b|inf))",
    re.IGNORECASE,
)
#: Terminal escape sequences: CSI (colours, erase line, cursor moves), OSC (titles, hyperlinks),
#: and the other two-byte escapes; then any control character but a tab.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"          # CSI: ESC [ params intermediates final
    r"|\x9b[0-?]*[ -/]*[@-~]"            # the same, as one C1 byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\|$)"  # OSC: ESC ] ... BEL or ST
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\|$)"    # DCS, SOS, PM, APC: ... ST
    r"|\x1b[ -/]*[0-~]"                 # other escapes (charset, keypad, ESC 7 / ESC 8)
    r"|[\x00-\x08\x0b-\x1f\x7f]"
)

#: Whether a line needs ``_ESCAPES`` at all: most lines hold no control character.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")

MAX_LINE_CHARS = 2000

LineParser = Callable[[str], tuple[int, float] | None]


def plain(text: str) -> str:
    """``text`` as a reader sees it: terminal escape sequences and control characters removed."""
    return _ESCAPES.sub("", text) if _CONTROL.search(text) else text


def step_number(text: str) -> int:
    """A step as printed (``1,000``, ``1_000``, ``1 000``) as an integer; raises ``ValueError``."""
    return int(re.sub(r"[,_ \u00a0\u202f\u2009]", "", text))


def number(text: str) -> float:
    """A printed value as a float (``2.0000,`` ``1.2e-01``, ``nan``); raises ``ValueError`` for any other text.

    ``float()`` alone reads ``2_0`` as 20 and `` 2.0`` as 2.0: a value a trainer printed must look
    like one, or the line is not an evaluation (and fails the run if it is a later one).
    """
    text = text.rstrip(",;}")
    if _VALUE.fullmatch(text) is None:
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def parse_step_line(line: str) -> tuple[int, float] | None:
    """(step, val_loss) from a trainer's evaluation line, or None for any other line.

    A line holding two evaluations (a progress bar redrawn without a line end) gives the one at
    the highest step, the later one on the line when steps tie.
    """
    low = line.lower()
    if "val_loss" not in low or "step" not in low:  # most lines: no regex search at all
        return None
    found: tuple[int, float] | None = None
    for match in STEP_LINE.finditer(line):
        try:
            step, value = step_number(match.group("step")), number(match.group("value"))
        except ValueError:
            continue
        if found is None or step >= found[0]:
            found = (step, value)
    return found if found is not None else _pairs_evaluation(line)


def _pairs_evaluation(line: str) -> tuple[int, float] | None:
    """(step, val_loss) from a line of ``key: value`` pairs in any order (``{"val_loss": 2.0, "step": 50}``)."""
    pairs: dict[str, str] = {}
    for key, value in _PAIR.findall(line):
        pairs.setdefault(key.lower(), value)
    if "val_loss" not in pairs:
        return None
    for key in STEP_KEYS:
        if key in pairs:
            try:
                return step_number(pairs[key]), number(pairs["val_loss"])
            except ValueError:
                return None
    return None


def rank_of(line: str) -> int | None:
    """The rank a distributed run's line is prefixed with (``[rank1]:``, ``[default1]:``, ``[rank: 1]``), or None."""
    if not line[:8].lstrip().startswith("["):  # most lines: no regex match at all
        return None
    match = _RANK.match(line)
    return None if match is None else int(next(group for group in match.groups() if group is not None))


def progress_step(line: str) -> int | None:
    """The highest step a line reports, or None when it names none."""
    low = line.lower()
    steps = [step_number(m.group(1)) for m in PROGRESS_LINE.finditer(line)] if "step" in low or "iter" in low else []
    if "it " in low:
        steps += [step_number(m.group(1)) for m in _IT_OF.finditer(line)]
    return max(steps) if steps else None


def progress_epoch(line: str) -> float | None:
    """The highest epoch a line reports, or None when it names none."""
    if "epoch" not in line.lower():
        return None
    epochs = [float(m.group(1)) for m in EPOCH.finditer(line)]
    return max(epochs) if epochs else None


def mentions_metric(line: str) -> bool:
    """Whether a line gives a validation loss a number, parsed or not."""
    return "loss" in line.lower() and METRIC_MENTION.search(line) is not None


def mentioned_value(line: str) -> tuple[float, float] | None:
    """The number a line gives its validation loss and half a unit of its last printed digit
    (``final val loss = 2.00`` gives (2.0, 0.005)), or None."""
    match = METRIC_MENTION.search(line) if "loss" in line.lower() else None
    value = None if match is None else _VALUE.match(line, match.end())
    if value is None:
        return None
    text = value.group().lower()
    digits = text.partition("e")[0].partition(".")[2]
    exponent = int(text.partition("e")[2] or 0) if text[-1:].isdigit() else 0
    return float(text), 0.5 * 10.0 ** (exponent - len(digits))


def log_lines(path: Path) -> Iterator[str]:
    """A log file's lines, split and capped as a running trainer's output is."""
    splitter = _LineSplitter()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            yield from splitter.feed(block)
    yield from splitter.flush()


class _LineSplitter:
    """Split a byte stream into text lines, keeping at most about ``2 * MAX_LINE_CHARS`` bytes of each.

    A line ends at ``\n``, ``\r\n`` or a lone ``\r``: progress bars (tqdm) redraw with ``\r``,
    and an evaluation printed after one must still start a line of its own. Terminal escape
    sequences are removed from each line (see ``plain``), so that parsers, the echo and the
    failure messages see the text a terminal would show.

    A longer line keeps its head, its tail (where an evaluation glued behind a megabyte of
    progress-bar redraws stands) and the text around the last few val_loss mentions in the
    part between, so no evaluation is lost to the cap while memory stays bounded.
    """

    def __init__(self) -> None:
        self._partial = bytearray()
        self._tail = bytearray()
        self._mentions: list[bytes] = []
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
        room = _HEAD_BYTES - len(self._partial)
        if room > 0:
            self._partial += piece[:room]
            piece = piece[room:]
        if not piece:
            return
        self._overflow = True
        self._tail += piece
        cut = len(self._tail) - _HEAD_BYTES
        if cut <= 0:
            return
        if b"loss" in self._tail.lower():
            for match in _MENTION_BYTES.finditer(self._tail, 0, cut + _CONTEXT_BYTES):
                if match.start() < cut:
                    self._mentions.append(bytes(self._tail[max(0, match.start() - _CONTEXT_BYTES):
                                                           match.start() + _CONTEXT_BYTES]))
            del self._mentions[:-_MAX_MENTIONS]
        del self._tail[:cut]

    def _take(self) -> str:
        text = plain(self._partial.decode("utf-8", "replace"))
        if self._overflow:
            between = [plain(m.decode("utf-8", "replace")) for m in self._mentions]
            text = " [...] ".join([text[:MAX_LINE_CHARS], *between, plain(self._tail.decode("utf-8", "replace"))])
            text += " [line truncated]"
        self._partial.clear()
        self._tail.clear()
        self._mentions.clear()
        self._overflow = False
        return text


#: How much of an overlong line's head and of its tail is kept, and the text around a val_loss
#: mention in between (before and after it), and how many of those.
_HEAD_BYTES = MAX_LINE_CHARS * 2
_CONTEXT_BYTES = 160
_MAX_MENTIONS = 4
_MENTION_BYTES = re.compile(rb"(?i)(?:e?val|validation)[ _/-]?loss")
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
