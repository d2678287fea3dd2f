"""Where a run's value comes from when the trainer writes it to a file (``exprun_result``).

The file is read once the run has finished, inside its output dir and never through a link;
a file from before the run's last step (by its own step, its epoch, or its modification time)
fails the run rather than record an earlier evaluation.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from ..names import TrainerIOError
from .evaluations import EVALUATION_FAILURES, FINAL_STEP_TOLERANCE, Failure
from .runner import RunResult

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
