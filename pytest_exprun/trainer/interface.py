"""How exprun talks to a trainer it did not write: the arguments and environment each run
gets, how experiment flags are spelled, and where the run's result is read from.

Everything here is checked when the session starts, so a typo in an ini value costs a
one-line error before any run, not a wasted baseline. The functions are pure except
``read_result``, which reads one file inside a run's output dir.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import stat
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from ..names import experiment_flags as plain_experiment_flags
from .lines import step_number
from .runner import (
    DEFAULT_EXPECTED,
    EVALUATION_FAILURES,
    FINAL_STEP_TOLERANCE,
    Failure,
    RunResult,
)

DEFAULT_ARGV = "--train_tokens {train_tokens} --seed {seed} --output_dir {output_dir}"
#: The fields an argv template may use; ``{steps}`` needs ``exprun_tokens_per_step``.
FIELDS = ("seed", "train_tokens", "output_dir", "steps")
#: What the recorded value is called when it comes from printed lines.
DEFAULT_METRIC = "val_loss"
FLAG_STYLES = ("space", "equals")
#: A result file is a few metrics; anything far larger is not one, and is not read whole.
MAX_RESULT_BYTES = 16 * 1024 * 1024
#: Keys of the result file's object (next to the value, else at its top) that say at which step
#: it was taken; ``epoch`` is compared with the epochs the output reported.
STEP_KEYS = ("global_step", "step", "iter", "iteration")
EPOCH_KEY = "epoch"
#: The Hugging Face Trainer's state, next to a result file that holds no step: its
#: ``log_history`` says at which step the value was logged, its ``global_step`` how far training went.
HF_STATE_FILE = "trainer_state.json"
#: A result file with no step of its own is stale when written this long before the output first
#: reported its final step (slack for the time between a line being printed and being read).
RESULT_MTIME_SLACK_S = 2.0

FlagStyle = Literal["space", "equals"]
LineParser = Callable[[str], "tuple[int, float] | None"]

# (option dest, ini name, default, help), in the shape of settings.OPTIONS so the same
# loop registers them.
OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("argv", "exprun_argv", DEFAULT_ARGV,
     "arguments every run gets after the command, shlex-split; fields {seed}, {train_tokens}, "
     "{output_dir} and {steps} (train tokens / exprun_tokens_per_step, rounded)"),
    ("tokens_per_step", "exprun_tokens_per_step", "",
     "training tokens in one optimizer step of your trainer (batch x sequence length x accumulation); "
     "needed for {steps} in exprun_argv"),
    ("flag_style", "exprun_flag_style", "space",
     "how --experiment=NAME=VALUE reaches the trainer: 'space' (--NAME VALUE, argparse) or "
     "'equals' (--NAME=VALUE, e.g. nanoGPT)"),
    ("line_pattern", "exprun_line_pattern", "",
     "regular expression with named groups 'step' and 'value', searched anywhere in each printed line "
     "(terminal colour codes removed; ^ anchors at the line's start); name the value's group after the metric "
     "instead of 'value' (e.g. (?P<eval_bpb>...)) and reports call it so (default: 'Step N | val_loss: X' lines)"),
    ("result", "exprun_result", "",
     "FILE:KEY, a JSON file the trainer writes in its output dir and the key of the value to record, "
     "e.g. eval_results.json:eval_loss; read after the run, it takes precedence over printed lines; "
     "one from before the run's last step fails the run"),
)


class TrainerIOError(ValueError):
    """A trainer I/O setting that cannot work; the message names the ini option and the fix."""


# ------------------------------------------------------------------ arguments
def parse_tokens_per_step(text: str) -> int | None:
    """``exprun_tokens_per_step`` as a positive integer, or None when it is not set."""
    text = text.strip().replace("_", "")
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise TrainerIOError(
            f"exprun_tokens_per_step must be a positive integer (tokens in one optimizer step), got {text!r}"
        )
    return int(text)


def steps_for(train_tokens: int, tokens_per_step: int) -> int:
    """Optimizer steps that train on ``train_tokens``, rounded half up; at least one must result."""
    steps = (2 * train_tokens + tokens_per_step) // (2 * tokens_per_step)
    if steps < 1:
        raise TrainerIOError(
            f"exprun_train_tokens ({train_tokens}) is less than half a step of exprun_tokens_per_step "
            f"({tokens_per_step}): no step would run; raise the tokens or lower the tokens per step"
        )
    return steps


@dataclass(frozen=True)
class ArgvTemplate:
    """The arguments a run gets after the command, with ``{field}``s filled in per run.

    Fields are filled in word by word after shlex-splitting, so an output dir with a space
    stays one argument and nothing ever goes through a shell.
    """

    words: tuple[str, ...]
    tokens_per_step: int | None = None

    @classmethod
    def parse(cls, text: str, tokens_per_step: int | None = None) -> ArgvTemplate:
        try:
            words = tuple(shlex.split(text))
        except ValueError as exc:
            raise TrainerIOError(f"exprun_argv cannot be split: {exc}; quote it as a shell would") from None
        template = cls(words, tokens_per_step)
        if "steps" in template.fields and tokens_per_step is None:
            raise TrainerIOError(
                "exprun_argv uses {steps} but exprun_tokens_per_step is not set; set it to the tokens "
                "in one optimizer step of your trainer (batch size x sequence length x accumulation)"
            )
        return template

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(name for word in self.words for _, name in _pieces(word) if name is not None)

    def steps(self, train_tokens: int) -> int | None:
        """The steps a run of ``train_tokens`` takes, when ``exprun_tokens_per_step`` says so."""
        return None if self.tokens_per_step is None else steps_for(train_tokens, self.tokens_per_step)

    def render(self, *, seed: int, train_tokens: int, output_dir: Path | str) -> list[str]:
        values = {"seed": str(seed), "train_tokens": str(train_tokens), "output_dir": str(output_dir)}
        if "steps" in self.fields:
            values["steps"] = str(self.steps(train_tokens))
        return ["".join(text if name is None else values[name] for text, name in _pieces(word)) for word in self.words]

    def protocol_options(self) -> tuple[str, ...]:
        """The trainer options that carry a field (``--seed``, ``--max_iters``...): an experiment
        flag must not set them again, or the last one given would silently win."""
        names: list[str] = []
        for i, word in enumerate(self.words):
            if not any(name is not None for _, name in _pieces(word)):
                continue
            if word.startswith("-") and "=" in word:
                names.append(word.split("=", 1)[0])
            elif word.startswith("-") and not word.startswith("-{"):
                names.append(word.split("{", 1)[0])  # -s{seed}
            elif i > 0 and self.words[i - 1].startswith("-"):
                names.append(self.words[i - 1])
        return tuple(dict.fromkeys(names))


def _pieces(word: str) -> list[tuple[str, str | None]]:
    """A template word as (literal text, None) and ("", field) pieces; bad fields raise."""
    try:
        parsed = list(string.Formatter().parse(word))
    except ValueError as exc:
        raise TrainerIOError(
            f"exprun_argv word {word!r} is not a valid template ({exc}); write literal braces as {{{{ and }}}}"
        ) from None
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if literal:
            pieces.append((literal, None))
        if name is None:
            continue
        if name not in FIELDS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise TrainerIOError(
                f"exprun_argv has an unknown field {shown}; the fields are "
                + ", ".join("{" + f + "}" for f in FIELDS)
            )
        pieces.append(("", name))
    return pieces


def run_environment(seed: int, train_tokens: int, output_dir: Path | str, steps: int | None = None) -> dict[str, str]:
    """What every run finds in its environment, so a trainer with no seed option needs one line
    (``torch.manual_seed(int(os.environ["EXPRUN_SEED"]))``)."""
    env = {"EXPRUN_SEED": str(seed), "EXPRUN_TRAIN_TOKENS": str(train_tokens), "EXPRUN_OUTPUT_DIR": str(output_dir)}
    if steps is not None:
        env["EXPRUN_STEPS"] = str(steps)
    return env


# --------------------------------------------------------- experiment flags
def parse_flag_style(text: str) -> FlagStyle:
    style = text.strip().lower()
    if style == "space":
        return "space"
    if style == "equals":
        return "equals"
    raise TrainerIOError(
        f"exprun_flag_style must be 'space' (--NAME VALUE) or 'equals' (--NAME=VALUE), got {text.strip()!r}"
    )


def experiment_flags(spec: str, style: FlagStyle = "space") -> list[str]:
    """The trainer arguments of one ``--experiment`` value, spelled the trainer's way.

    ``NAME=VALUE`` is ``--NAME VALUE`` or, with style ``equals``, ``--NAME=VALUE``; ``NAME``
    is ``--NAME`` in both; a value starting with ``-`` is the user's own spelling, kept as is.
    """
    flags = plain_experiment_flags(spec)
    if style == "equals" and not spec.strip().startswith("-") and len(flags) == 2:
        return [f"{flags[0]}={flags[1]}"]
    return flags


# ------------------------------------------------------------ printed lines
def line_parser(pattern: str) -> LineParser:
    """A parser of ``(step, value)`` from lines matching ``pattern`` anywhere (``re.search``)."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise TrainerIOError(f"exprun_line_pattern {pattern!r} is not a valid regular expression: {exc}") from None
    value = value_group(regex)
    missing = [g for g, found in (("step", "step" in regex.groupindex), ("value", value is not None)) if not found]
    if missing or value is None:
        raise TrainerIOError(
            f"exprun_line_pattern {pattern!r} has no named group {' or '.join(repr(g) for g in missing)}; "
            r"mark them with (?P<step>...) and (?P<value>...), e.g. 'step (?P<step>\d+): .*val loss (?P<value>\S+)' "
            r"(or name the value's group after the metric, e.g. (?P<eval_bpb>\S+))"
        )

    def parse(line: str) -> tuple[int, float] | None:
        match = regex.search(line)
        if match is None or match.group("step") is None or match.group(value) is None:
            return None
        try:
            return step_number(match.group("step")), float(match.group(value).rstrip(",;"))
        except ValueError:
            return None

    return parse


def value_group(regex: re.Pattern[str]) -> str | None:
    """The pattern's value group: ``value``, else its one named group besides ``step`` (named after the metric)."""
    if "value" in regex.groupindex:
        return "value"
    others = [name for name in regex.groupindex if name != "step"]
    return others[0] if len(others) == 1 else None


def pattern_metric(pattern: str) -> str | None:
    """The metric a line pattern names: its value group's name when that is not plain ``value``."""
    try:
        group = value_group(re.compile(pattern))
    except re.error:
        return None
    return group if group not in (None, "value") else None


# -------------------------------------------------------------- result file
@dataclass(frozen=True)
class ResultSource:
    """``FILE:KEY``: the JSON file a run leaves in its output dir and the key of its value."""

    file: PurePosixPath
    key: str

    @classmethod
    def parse(cls, text: str) -> ResultSource:
        how = "write it as FILE:KEY, e.g. eval_results.json:eval_loss"
        file_text, sep, key = text.strip().rpartition(":")
        file_text, key = file_text.strip(), key.strip()
        if not sep or not file_text or not key:
            raise TrainerIOError(f"exprun_result {text.strip()!r} is not FILE:KEY; {how}")
        path = PurePosixPath(file_text)
        if path.is_absolute() or ".." in path.parts or "\\" in file_text:
            raise TrainerIOError(
                f"exprun_result file {file_text!r} must be a relative path inside the run's output dir, "
                f"without '..'; {how}"
            )
        if any(not part for part in key.split(".")):
            raise TrainerIOError(f"exprun_result key {key!r} has an empty part; nest keys as a.b.c")
        return cls(path, key)

    @property
    def metric_name(self) -> str:
        """What reports call the value: the key itself (``eval_loss``)."""
        return self.key

    def __str__(self) -> str:
        return f"{self.file}:{self.key}"


@dataclass(frozen=True)
class ResultFile:
    """What a result file says: its value, and what tells whether it is the final evaluation."""

    value: float
    #: The step the value was taken at: the file's own, else the Trainer state's log entry of it.
    step: int | None = None
    epoch: float | None = None
    #: How far training went by the Trainer state next to it (its ``global_step``).
    state_step: int | None = None
    mtime: float | None = None


def read_result(source: ResultSource, output_dir: Path) -> tuple[int | None, float]:
    """``(step, value)`` from a finished run's result file (see ``read_result_file``)."""
    found = read_result_file(source, output_dir)
    return found.step, found.value


def read_result_file(source: ResultSource, output_dir: Path) -> ResultFile:
    """The value of a finished run's result file, and what says when it was taken.

    The step is the file's ``global_step`` (the Hugging Face Trainer's name), ``step``, ``iter``
    or ``iteration`` next to the value or at the file's top; failing that, the step of the
    Trainer state's (``trainer_state.json`` beside it) last logged entry with this value.
    Symlinks, from the output dir down, are refused, so a run cannot make exprun read a file
    outside its output dir. Non-finite values are returned as they are; the caller decides
    what a diverged run means. Raises ``TrainerIOError``.
    """
    data, mtime = _read_inside(output_dir, source.file)
    where = f"{source.file} in {output_dir}"
    document = _json(data, where)
    holder, value = _lookup(document, source.key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TrainerIOError(f"{where}: {source.key!r} is {json.dumps(value)[:60]}, not a number")
    top = document if isinstance(document, dict) else {}
    step = _step(holder)
    step = step if step is not None else _step(top)
    epoch = _number(holder.get(EPOCH_KEY, top.get(EPOCH_KEY)))
    state_step = None
    if step is None:
        step, state_step = _from_trainer_state(output_dir, source, float(value))
    return ResultFile(float(value), step, epoch, state_step, mtime)


def _json(data: bytes, where: str) -> object:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        reason = exc if isinstance(exc, ValueError) else "nested too deeply"
        raise TrainerIOError(f"{where} is not valid JSON ({reason}); exprun_result needs a JSON file") from None


def _from_trainer_state(output_dir: Path, source: ResultSource, value: float) -> tuple[int | None, int | None]:
    """(the step of the last ``log_history`` entry holding ``value`` under the key, ``global_step``)
    from the Hugging Face Trainer's state beside the result file, or in the output dir; Nones
    when there is none or it cannot be read (it is a hint, never a reason to fail by itself)."""
    name = source.key.rsplit(".", 1)[-1]
    for folder in dict.fromkeys((source.file.parent, PurePosixPath("."))):
        try:
            data, _ = _read_inside(output_dir, folder / HF_STATE_FILE)
            state = _json(data, HF_STATE_FILE)
        except TrainerIOError:
            continue
        if not isinstance(state, dict):
            continue
        step = None
        history = state.get("log_history")
        for entry in history if isinstance(history, list) else ():
            if isinstance(entry, dict) and _number(entry.get(name)) == value:
                step = _step(entry)
        global_step = _step({"global_step": state.get("global_step")})
        return step, global_step
    return None, None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _read_inside(root: Path, relative: PurePosixPath) -> tuple[bytes, float]:
    """The bytes and modification time of ``root/relative``, opened component by component with
    no symlink followed."""
    where = f"{relative} in {root}"
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    opened: list[int] = []
    try:
        try:
            opened.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | nofollow))
            for part in relative.parts[:-1]:
                opened.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=opened[-1]))
            fd = os.open(relative.name, os.O_RDONLY | nofollow | os.O_NONBLOCK, dir_fd=opened[-1])
            opened.append(fd)
        except FileNotFoundError:
            raise TrainerIOError(
                f"the run left no {where}; make the trainer write it there (exprun_result is {relative}:...)"
            ) from None
        except OSError as exc:
            if _is_symlink_error(root, relative):
                raise TrainerIOError(f"{where} goes through a symlink; exprun reads only real files there") from None
            raise TrainerIOError(f"cannot open {where}: {exc.strerror or exc}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TrainerIOError(f"{where} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_RESULT_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks), info.st_mtime
            chunks.append(chunk)
            size += len(chunk)
        raise TrainerIOError(f"{where} is larger than {MAX_RESULT_BYTES >> 20} MiB; it cannot be a result file")
    finally:
        for fd in opened:
            os.close(fd)


def _is_symlink_error(root: Path, relative: PurePosixPath) -> bool:
    """O_NOFOLLOW reports a symlink as ELOOP (a file) or ENOTDIR (a folder); check which it was."""
    paths = [root]
    for part in relative.parts:
        paths.append(paths[-1] / part)
    for path in paths:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return True
        except OSError:
            return False
    return False


def _lookup(document: object, key: str, where: str) -> tuple[dict[str, object], object]:
    """The value at ``key`` and the object holding it: the key as written, else a dotted path."""
    if not isinstance(document, dict):
        raise TrainerIOError(f"{where} holds a JSON {type(document).__name__}, not an object of metrics")
    if key in document:
        return document, document[key]
    holder: object = document
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(holder, dict) or part not in holder:
            seen = ", ".join(sorted(map(str, holder))[:12]) if isinstance(holder, dict) else "no keys"
            prefix = ".".join(parts[:depth])
            inside = f" under {prefix!r}" if prefix else ""
            raise TrainerIOError(f"{where} has no key {key!r} (keys{inside}: {seen}); fix exprun_result")
        if depth == len(parts) - 1:
            return holder, holder[part]
        holder = holder[part]
    raise AssertionError("unreachable")  # pragma: no cover


def _step(holder: dict[str, object]) -> int | None:
    for name in STEP_KEYS:
        step = holder.get(name)
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step):
            continue
        if step >= 0 and float(step).is_integer():
            return int(step)
    return None


# ------------------------------------------------------------------- bundle
@dataclass(frozen=True)
class TrainerIO:
    """The trainer I/O settings of one session, checked together."""

    argv: ArgvTemplate
    flag_style: FlagStyle = "space"
    line_pattern: str = ""
    result: ResultSource | None = None

    @classmethod
    def load(cls, get: Callable[[str], str], train_tokens: int) -> TrainerIO:
        """Build from option values (``get("exprun_argv")``...); raise ``TrainerIOError`` on the first bad one."""
        argv = ArgvTemplate.parse(get("exprun_argv"), parse_tokens_per_step(get("exprun_tokens_per_step")))
        argv.steps(train_tokens)  # a step count of zero is refused now, not at the first run
        pattern = get("exprun_line_pattern").strip()
        if pattern:
            line_parser(pattern)
        result_text = get("exprun_result").strip()
        return cls(
            argv=argv,
            flag_style=parse_flag_style(get("exprun_flag_style")),
            line_pattern=pattern,
            result=ResultSource.parse(result_text) if result_text else None,
        )

    @property
    def metric_name(self) -> str:
        """What reports call the recorded value: exprun_result's key, else the line pattern's value group
        when it is named after the metric (``(?P<eval_bpb>...)``), else val_loss."""
        if self.result is not None:
            return self.result.metric_name
        return (pattern_metric(self.line_pattern) if self.line_pattern else None) or DEFAULT_METRIC

    def parse_line(self) -> LineParser | None:
        """The parser ``exprun_line_pattern`` asks for, or None for the default (or a hook's)."""
        return line_parser(self.line_pattern) if self.line_pattern else None

    def flags(self, spec: str) -> list[str]:
        return experiment_flags(spec, self.flag_style)

    def identity(self) -> tuple[str, ...]:
        """What, beyond the command, decides what a run measures, for the setup's fingerprint.

        Empty with the defaults, so a baseline measured before these settings existed stays valid;
        the flag style needs no entry, since it shows in the experiment's flags.
        """
        parts: list[str] = []
        if self.argv.words != tuple(shlex.split(DEFAULT_ARGV)):
            parts += ["argv:", *self.argv.words]
        if self.argv.tokens_per_step is not None:
            parts.append(f"tokens_per_step:{self.argv.tokens_per_step}")
        if self.line_pattern:
            parts.append(f"line_pattern:{self.line_pattern}")
        if self.result is not None:
            parts.append(f"result:{self.result}")
        return tuple(parts)


def describe(io: TrainerIO, argv_prefix: Sequence[str] = ()) -> str:
    """One line for the session header: how runs are started and where their value comes from."""
    source = f"{io.result} (after the run)" if io.result is not None else (
        f"lines matching {io.line_pattern!r}" if io.line_pattern else "'Step N | val_loss: X' lines"
    )
    command = " ".join([*argv_prefix, *io.argv.words])
    return f"runs: {command} [+ flags, {io.flag_style} style]; {io.metric_name} from {source}"


def with_result_file(result: RunResult, source: "ResultSource | None") -> RunResult:
    """With ``exprun_result`` set, a cleanly finished run's value is the one in its result file.

    The file wins over printed lines; a missing file or key, or a non-finite value, fails the
    run with a message naming the file, and so does a file from before the run's last step
    (see ``stale``). Read before the output dir is removed.
    """
    if source is None or result.returncode != 0 or (result.failure is not None
                                                     and result.failure not in EVALUATION_FAILURES):
        return result
    try:
        found = read_result_file(source, result.spec.output_dir)
    except TrainerIOError as exc:
        return replace(result, val_loss=None, failure=Failure.NO_RESULT, where=str(exc))
    step, value = found.step, found.value
    if not math.isfinite(value):
        return replace(result, val_loss=value, failure=Failure.NON_FINITE)
    why = stale(found, result, source)
    if why:
        return replace(result, val_loss=None, failure=Failure.STALE_RESULT, detail=why)
    curve = tuple(result.curve)
    if step is not None and (not curve or curve[-1][0] < step):
        curve = (*curve, (step, value))
    return replace(result, val_loss=value, curve=curve, failure=None)


def stale(found: ResultFile, result: RunResult, source: ResultSource) -> str:
    """Why a result file holds an earlier evaluation than the run's last step, or "".

    Its own step decides when it has one (against the highest step the output reported, or
    the Trainer state's ``global_step``), else its epoch (against the output's highest),
    else its modification time (against when the output first reported its final step).
    """
    fix = "write it after the last step (or put the step in it as global_step)"
    if found.step is not None:
        final = max(s for s in (result.final_step, found.state_step, found.step) if s is not None)
        if final - found.step > max(1, math.floor(final * FINAL_STEP_TOLERANCE)):
            return f"{source} is from step {found.step}, but training went to step {final}; {fix}"
        return ""
    if found.epoch is not None and result.final_epoch is not None:
        if found.epoch < result.final_epoch * (1 - FINAL_STEP_TOLERANCE) - 1e-9:
            return f"{source} is from epoch {found.epoch:g}, but training went to epoch {result.final_epoch:g}; {fix}"
        return ""
    if found.mtime is not None and result.final_step_at is not None:
        early = result.final_step_at - found.mtime
        if early > RESULT_MTIME_SLACK_S:
            return (f"{source} was last written {early:.1f}s before the output first reported step "
                    f"{result.final_step}; {fix}")
    return ""


def expected_lines(io: TrainerIO) -> str:
    """What an evaluation line looks like to this session, for the message of a run that printed none."""
    if io.line_pattern:
        return f"lines matching exprun_line_pattern {io.line_pattern!r}"
    return DEFAULT_EXPECTED
