"""How exprun talks to a trainer it did not write: the arguments and environment each run
gets, how experiment flags are spelled, and where the run's result is read from
(``result_file`` reads it).

Everything here is checked when the session starts, so a typo in an ini value costs a
one-line error before any run, not a wasted baseline. The functions are pure.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..names import TrainerIOError as TrainerIOError  # raised here, defined with the other errors
from ..names import experiment_flags as plain_experiment_flags
from .lines import UNSTEPPED, number, step_number
from .result_file import ResultSource
from .runner import DEFAULT_EXPECTED

DEFAULT_ARGV = "--train_tokens {train_tokens} --seed {seed} --output_dir {output_dir}"
#: The fields an argv template may use; ``{steps}`` needs ``exprun_tokens_per_step``.
FIELDS = ("seed", "train_tokens", "output_dir", "steps")
#: What the recorded value is called when it comes from printed lines.
DEFAULT_METRIC = "val_loss"
FLAG_STYLES = ("space", "equals")

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
     "regular expression with named groups 'value' and (if the line has one) 'step', searched anywhere in each "
     "printed line (terminal colour codes removed; ^ anchors at the line's start); without 'step' an evaluation is "
     "at the highest step printed before it; name the value's group after the metric instead of 'value' "
     "(e.g. (?P<eval_bpb>...)) and reports call it so (default: 'Step N | val_loss: X' lines)"),
    ("result", "exprun_result", "",
     "FILE:KEY, a JSON file the trainer writes in its output dir and the key of the value to record, "
     "e.g. eval_results.json:eval_loss; read after the run, it takes precedence over printed lines; "
     "one from before the run's last step fails the run"),
)




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
    """A parser of ``(step, value)`` from lines matching ``pattern`` anywhere (``re.search``).

    A pattern without a ``step`` group reads evaluations that print none (a Hugging Face
    Trainer's ``{'eval_loss': ...}``, Lightning's bar postfix, Keras' ``- val_loss: ...``): each
    is at the highest step the output reported so far (``UNSTEPPED``), the last printed wins.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise TrainerIOError(f"exprun_line_pattern {pattern!r} is not a valid regular expression: {exc}") from None
    value = value_group(regex)
    if value is None:
        raise TrainerIOError(
            f"exprun_line_pattern {pattern!r} has no named group 'value'; mark the value with (?P<value>...) "
            r"and, if the line has one, its step with (?P<step>...), e.g. 'step (?P<step>\d+): .*val loss "
            r"(?P<value>\S+)' (or name the value's group after the metric, e.g. (?P<eval_bpb>\S+))"
        )
    stepped = "step" in regex.groupindex

    def parse(line: str) -> tuple[int, float] | None:
        match = regex.search(line)
        if match is None or match.group(value) is None or (stepped and match.group("step") is None):
            return None
        try:
            return (step_number(match.group("step")) if stepped else UNSTEPPED), number(match.group(value))
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


def expected_lines(io: TrainerIO) -> str:
    """What an evaluation line looks like to this session, for the message of a run that printed none."""
    if io.line_pattern:
        return f"lines matching exprun_line_pattern {io.line_pattern!r}"
    return DEFAULT_EXPECTED
