"""Turn pytest options and ini values into one validated, immutable ``Settings``.

Validation happens before any run starts, so a typo costs a one-line error, not an hour.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import pytest

from . import experiments as experiments_mod
from . import names
from .decision_options import DECIDE_MODES as DECIDE_MODES
from .decision_options import FIXED as FIXED
from .decision_options import SEQUENTIAL as SEQUENTIAL
from .decision_options import decision_mode, number, program
from .executors import options as executor_options
from .experiments import Experiment, refuse_nul
from .model import Verdict
from .names import (
    BASELINE_SEEDS,
    DEFAULT_TRAIN_TOKENS,
    EXPERIMENT_SEEDS,
    EXTENSION_SEEDS,
    MIN_BASELINE_SEEDS,
    ProtocolError,
    parse_seeds,
    scale_label,
)
from .trainer import bytecode
from .trainer.interface import DEFAULT_ARGV, ArgvTemplate, TrainerIO, TrainerIOError
from .trainer.interface import OPTIONS as TRAINER_IO_OPTIONS

if TYPE_CHECKING:
    from .decide.equivalence import Margin
    from .decide.sequential_design import Design

DEFAULT_COMMAND = "python train_llm.py"
#: How a verdict is reached: the protocol's 2σ rule on 3 or 5 seeds, or the planned looks of ``sequential``.

# (option dest, ini name, default, help). One table so that the command line, the ini
# file and the defaults can never drift apart.
OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("command", "exprun_command", DEFAULT_COMMAND,
     "trainer command, shlex-split; exprun appends --train_tokens N --seed S --output_dir DIR "
     "and the experiment's flags. A leading 'python' runs under pytest's own interpreter"),
    ("train_tokens", "exprun_train_tokens", str(DEFAULT_TRAIN_TOKENS), "training tokens per run"),
    ("baseline_seeds", "exprun_baseline_seeds", ",".join(map(str, BASELINE_SEEDS)), "baseline seeds"),
    ("experiment_seeds", "exprun_experiment_seeds", ",".join(map(str, EXPERIMENT_SEEDS)),
     "experiment seeds always run"),
    ("extension_seeds", "exprun_extension_seeds", ",".join(map(str, EXTENSION_SEEDS)),
     "experiment seeds added when its mean lies within 2 sigma of the baseline's"),
    ("research_dir", "exprun_research_dir", "docs/research", "where reports and run records go"),
    ("checkpoints_dir", "exprun_checkpoints_dir", "checkpoints", "where runs write their output dirs"),
    ("timeout", "exprun_timeout", "0", "seconds one run may take before its process group is ended (0: no limit)"),
    ("accept", "exprun_accept", "winner", "verdicts that pass: 'winner', or 'neutral' to also pass NEUTRAL"),
    ("decide", "exprun_decide", FIXED,
     "how the verdict is reached: 'fixed' (the 2-sigma rule on 3 or 5 seeds) or 'sequential' (looks after "
     "2, 3, 4 and 6 experiment seeds, stopping once the evidence is clear; see docs/sequential.md)"),
    ("alpha", "exprun_alpha", str(names.DEFAULT_ALPHA),
     "sequential mode: the false-WINNER rate the design holds, between 0 and 0.5"),
    ("min_effect", "exprun_min_effect", str(names.DEFAULT_MIN_EFFECT),
     "sequential mode: the smallest improvement worth finding, in baseline sigma; a larger one stops "
     "hopeless experiments sooner while keeping the power to find that improvement (80 percent, or the default "
     "design's where it finds less)"),
    ("max_seeds", "exprun_max_seeds", "",
     "sequential mode: the most experiment seeds an experiment may use, 2 to "
     f"{names.MAX_SEEDS} (default: the design's {names.DEFAULT_LOOKS[-1]})"),
    ("margin", "exprun_margin", "",
     "equivalence margin: in val_loss units (0.01) or in baseline sigma (0.5sigma); with it the verdict is "
     "WINNER, LOSER, EQUIVALENT (a two one-sided test puts the change within the margin) or INCONCLUSIVE "
     "(default: none, WINNER / NEUTRAL / LOSER)"),
    ("program_alpha", "exprun_program_alpha", "",
     "bound the false WINNERs over every decision against one baseline, across sessions, at this "
     "false-discovery rate (e.g. 0.05; LOND, see docs/program.md; default: no program-wide control)"),
    ("templates", "exprun_templates", "", "folder of your own Jinja2 report templates (same file names)"),
    ("executor", "exprun_executor", "local", "how runs are started: local (a process per run), warm (start-up "
     "paid once: the trainer's worker protocol or a fork server), gpus, slurm, ray, or one a plugin adds"),
    ("lock_wait", "exprun_lock_wait", "-1",
     "seconds to wait for another session using the same research dir (-1: wait as long as it takes)"),
    ("fingerprint_include", "exprun_fingerprint_include", "",
     "more files or globs that define the setup (relative to the rootdir, comma- or space-separated), "
     "e.g. 'data/prepare.py configs/*.yaml'; the trainer and the project modules it imports are found by themselves"),
    ("fingerprint_exclude", "exprun_fingerprint_exclude", "",
     "paths or globs left out of the setup's fingerprint (relative to the rootdir), e.g. 'vendor/ scratch_*.py'"),
    ("fingerprint_env", "exprun_fingerprint_env", "",
     "environment variables whose values define the setup (names or globs, comma- or space-separated), "
     "e.g. 'DATA_VERSION HF_*'; a changed value re-measures the baseline (values of names holding KEY, TOKEN, "
     "SECRET or PASSWORD are recorded as a hash)"),
    *TRAINER_IO_OPTIONS,
    *executor_options.OPTIONS,
    # The bytecode cache of trainer processes (trainer/bytecode.py).
    ("bytecode_cache", "exprun_bytecode_cache", bytecode.ON,
     "where trainer processes keep compiled Python (PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE emptied), so a "
     "fresh process does not compile torch's sources again on images that ship no .pyc files: 'on' is "
     "$XDG_CACHE_HOME or ~/.cache, then pytest-exprun/pycache/<python version> (" + bytecode.MEASURED_SIZE +
     "; the first session fills it), 'off' leaves the environment as it is, or give a folder. A "
     "PYTHONPYCACHEPREFIX you set is kept"),
)
FLAGS: tuple[tuple[str, str, str], ...] = (
    ("keep_checkpoints", "exprun_keep_checkpoints", "keep each run's output dir after its results are recorded"),
    ("rerun_baseline", "exprun_rerun_baseline", "measure the baseline again even if a matching report exists; the old one is kept aside"),
    ("control", "exprun_control", "run seed 42 without experiment flags as its own test, control[seed42], and fail it "
     "(and the verdicts) when it neither reproduces the stored seed-42 value nor lies inside the baseline's 95 "
     "percent prediction interval (the baseline no longer matches the code)"),
    ("allow_small_baseline", "exprun_allow_small_baseline",
     f"accept fewer than {MIN_BASELINE_SEEDS} baseline seeds; the 2 sigma rule then calls a false WINNER far more "
     "often (about 1 in 6 with 2 seeds against 1 in 33 with 5), and each report states the rate"),
)


@dataclass(frozen=True)
class Settings:
    command: tuple[str, ...]
    train_tokens: int
    baseline_seeds: tuple[int, ...]
    experiment_seeds: tuple[int, ...]
    extension_seeds: tuple[int, ...]
    research_dir: Path
    checkpoints_dir: Path
    keep_checkpoints: bool
    rerun_baseline: bool
    control: bool
    timeout: float | None
    accept: frozenset[Verdict]
    template_dir: Path | None
    executor: str
    lock_wait: float
    experiments: tuple[Experiment, ...]
    rootdir: Path
    #: The executors' own options as given (dest -> text); the chosen executor reads and checks its own.
    executor_options: Mapping[str, str] = field(default_factory=dict)
    trainer_io: TrainerIO = field(default_factory=lambda: TrainerIO(ArgvTemplate.parse(DEFAULT_ARGV)))
    #: Extra files or globs, and excluded paths, for the setup's fingerprint (see fingerprint.py).
    fingerprint_include: tuple[str, ...] = ()
    fingerprint_exclude: tuple[str, ...] = ()
    #: Environment variables (names or globs) whose values are part of the setup.
    fingerprint_env: tuple[str, ...] = ()
    allow_small_baseline: bool = False
    #: The trainers' PYTHONPYCACHEPREFIX (``--exprun-bytecode-cache``); None leaves their environment as it is.
    bytecode_cache: Path | None = None
    decide: str = FIXED
    alpha: float = names.DEFAULT_ALPHA
    min_effect: float = names.DEFAULT_MIN_EFFECT
    max_seeds: int | None = None
    #: The equivalence margin (``--exprun-margin``), None without one.
    margin: Margin | None = None
    #: The program's false-discovery rate (``--exprun-program-alpha``), None without program-wide control.
    program_alpha: float | None = None

    @functools.cached_property
    def design(self) -> Design:
        """The sequential design, calibrated once per session (about a second, then cached)."""
        from .decide import sequential_design

        try:
            return sequential_design.make_design(self.alpha, self.min_effect, max_seeds=self.max_seeds)
        except ProtocolError as exc:
            raise pytest.UsageError(f"--exprun-decide=sequential cannot plan its looks: {exc}") from None

    @property
    def scale(self) -> str:
        return scale_label(self.train_tokens)

    @property
    def state_dir(self) -> Path:
        return self.research_dir / ".exprun"

    @property
    def baseline_report(self) -> Path:
        return self.research_dir / f"baseline_variance_{self.scale}.md"

    def experiment_report(self, name: str) -> Path:
        return self.research_dir / f"experiment_{name}_{self.scale}.md"

    @property
    def summary_report(self) -> Path:
        return self.research_dir / f"summary_{self.scale}.md"

    def argv_prefix(self) -> list[str]:
        """The command to execute: a leading ``python`` means this very interpreter."""
        argv = list(self.command)
        if argv and argv[0] in {"python", "python3"}:
            argv[0] = sys.executable
        return argv


def option_value(config: pytest.Config, dest: str, ini: str) -> str:
    value = config.getoption(f"exprun_{dest}", default=None)
    if value is None:
        value = config.getini(ini)
    return str(value)


def flag_value(config: pytest.Config, dest: str, ini: str) -> bool:
    return bool(config.getoption(f"exprun_{dest}", default=False)) or bool(config.getini(ini))


def _patterns(text: str, what: str) -> tuple[str, ...]:
    """Comma- or space-separated globs relative to the rootdir."""
    refuse_nul(text, what)
    patterns = tuple(p for p in re.split(r"[,\s]+", text.strip()) if p)
    for pattern in patterns:
        if os.path.isabs(pattern) or ".." in Path(pattern).parts:
            raise pytest.UsageError(f"{what}: {pattern!r} must be a path or glob inside the rootdir "
                                    "(relative, without '..')")
    return patterns


def _env_names(text: str, what: str) -> tuple[str, ...]:
    """Comma- or space-separated environment variable names or globs (``*``, ``?``, ``[...]``)."""
    refuse_nul(text, what)
    names = tuple(dict.fromkeys(n for n in re.split(r"[,\s]+", text.strip()) if n))
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_*?\[\]!]+", name):
            raise pytest.UsageError(f"{what}: {name!r} is not an environment variable name or glob "
                                    "(letters, digits, _ and the glob characters * ? [ ])")
    return names


def load(config: pytest.Config) -> Settings:
    """Read and check every exprun option; raise ``pytest.UsageError`` naming the first problem."""
    def get(dest: str) -> str:
        return option_value(config, dest, f"exprun_{dest}")

    rootdir = config.rootpath
    refuse_nul(get("command"), "--exprun-command")
    try:
        command = tuple(shlex.split(get("command")))
    except ValueError as exc:
        raise pytest.UsageError(f"--exprun-command cannot be split: {exc}") from None
    if not command:
        raise pytest.UsageError("--exprun-command is empty; give the trainer command, e.g. 'python train_llm.py'")

    tokens_text = get("train_tokens").replace("_", "")
    try:
        train_tokens = int(tokens_text)
    except ValueError:
        raise pytest.UsageError(f"--exprun-train-tokens must be a positive integer, got {tokens_text!r}") from None
    if train_tokens <= 0:
        raise pytest.UsageError(f"--exprun-train-tokens must be a positive integer, got {train_tokens}")

    try:
        baseline_seeds = parse_seeds(get("baseline_seeds"), "--exprun-baseline-seeds")
        experiment_seeds = parse_seeds(get("experiment_seeds"), "--exprun-experiment-seeds")
        ext_text = get("extension_seeds").strip()
        extension_seeds = parse_seeds(ext_text, "--exprun-extension-seeds") if ext_text else ()
    except ProtocolError as exc:
        raise pytest.UsageError(str(exc)) from None
    overlap = sorted(set(experiment_seeds) & set(extension_seeds))
    if overlap:
        raise pytest.UsageError(f"seed(s) {overlap} are both experiment and extension seeds; list each once")
    if len(baseline_seeds) < 2:
        raise pytest.UsageError("--exprun-baseline-seeds needs at least 2 seeds to measure variance")
    if len(experiment_seeds) < 2:
        raise pytest.UsageError(
            "--exprun-experiment-seeds needs at least 2 seeds: a verdict needs the experiment's variance too"
        )
    allow_small_baseline = flag_value(config, "allow_small_baseline", "exprun_allow_small_baseline")
    if len(baseline_seeds) < MIN_BASELINE_SEEDS and not allow_small_baseline:
        raise pytest.UsageError(
            f"--exprun-baseline-seeds has {len(baseline_seeds)} seeds; with fewer than {MIN_BASELINE_SEEDS} the 2σ "
            "rule calls a false WINNER about 15% of the time (3% with 5): give at least "
            f"{MIN_BASELINE_SEEDS}, or pass --exprun-allow-small-baseline to accept that rate"
        )

    timeout = number(get("timeout"), "--exprun-timeout", float, " of seconds")
    if timeout < 0:
        raise pytest.UsageError(f"--exprun-timeout must be 0 (no limit) or positive, got {timeout:g}")

    accept_text = get("accept").strip().lower()
    if accept_text not in {"winner", "neutral"}:
        raise pytest.UsageError(f"--exprun-accept must be 'winner' or 'neutral', got {accept_text!r}")
    accept = frozenset({Verdict.WINNER} if accept_text == "winner" else
                       {Verdict.WINNER, Verdict.NEUTRAL, Verdict.EQUIVALENT})  # never INCONCLUSIVE

    decide, alpha, min_effect, max_seeds = decision_mode(get, baseline_seeds, experiment_seeds, extension_seeds)
    margin, program_alpha = program(get)

    templates_text = get("templates").strip()
    template_dir = (rootdir / templates_text) if templates_text else None
    if template_dir is not None and not template_dir.is_dir():
        raise pytest.UsageError(f"--exprun-templates: {template_dir} is not a folder")

    executor = get("executor").strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", executor):
        # Other names are checked at session start: a plugin or conftest.py may provide them.
        raise pytest.UsageError(f"--exprun-executor must be a name such as {', '.join(executor_options.BUILTIN_NAMES)}, "
                                f"got {executor!r}")

    research_dir = _data_dir("--exprun-research-dir", rootdir, get("research_dir"))
    checkpoints_dir = _data_dir("--exprun-checkpoints-dir", rootdir, get("checkpoints_dir"))
    try:
        io = TrainerIO.load(lambda ini: get(ini[len("exprun_"):]), train_tokens)
    except TrainerIOError as exc:
        raise pytest.UsageError(str(exc)) from None
    experiments = experiments_mod.parse(config, command, rootdir, io)
    return Settings(
        command=command,
        train_tokens=train_tokens,
        baseline_seeds=baseline_seeds,
        experiment_seeds=experiment_seeds,
        extension_seeds=extension_seeds,
        research_dir=research_dir,
        checkpoints_dir=checkpoints_dir,
        keep_checkpoints=flag_value(config, "keep_checkpoints", "exprun_keep_checkpoints"),
        rerun_baseline=flag_value(config, "rerun_baseline", "exprun_rerun_baseline"),
        control=flag_value(config, "control", "exprun_control"),
        timeout=timeout or None,
        accept=accept,
        template_dir=template_dir,
        executor=executor,
        lock_wait=number(get("lock_wait"), "--exprun-lock-wait", float, " of seconds"),
        experiments=experiments,
        rootdir=rootdir,
        executor_options=MappingProxyType({dest: get(dest) for dest, *_ in executor_options.OPTIONS}),
        trainer_io=io,
        fingerprint_include=_patterns(get("fingerprint_include"), "--exprun-fingerprint-include"),
        fingerprint_exclude=_patterns(get("fingerprint_exclude"), "--exprun-fingerprint-exclude"),
        fingerprint_env=_env_names(get("fingerprint_env"), "--exprun-fingerprint-env"),
        allow_small_baseline=allow_small_baseline,
        bytecode_cache=_bytecode_folder(get("bytecode_cache"), rootdir),
        decide=decide,
        alpha=alpha,
        min_effect=min_effect,
        max_seeds=max_seeds,
        margin=margin,
        program_alpha=program_alpha,
    )


def _bytecode_folder(text: str, rootdir: Path) -> Path | None:
    try:
        return bytecode.chosen_folder(text, rootdir, os.environ)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _data_dir(option: str, rootdir: Path, text: str) -> Path:
    """A folder exprun writes into and cleans up; never the filesystem root or the home directory,
    where a run's output dirs and records would sit among (and be mistaken for) the user's own files."""
    path = rootdir / text
    resolved = Path(os.path.abspath(path)).resolve()
    homes: set[Path] = set()
    for home in (os.environ.get("HOME", ""), os.path.expanduser("~")):
        if home and home != "~":
            homes.add(Path(os.path.abspath(home)).resolve())
    if resolved == Path(resolved.anchor):
        where = "the filesystem root"
    elif resolved in homes:
        where = "your home directory"
    else:
        return path
    raise pytest.UsageError(f"{option} {text!r} is {where}; give a folder of its own, e.g. "
                            f"{'docs/research' if 'research' in option else 'checkpoints'}")

