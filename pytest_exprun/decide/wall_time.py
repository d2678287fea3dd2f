"""Wall time as a measurement: a stated test of the change and a stated rule for a loaded machine.

Wall time is noisy in a way val_loss is not: another job on the machine stretches some runs and
not others, and then a difference in means says more about the machine than about the change.
So the comparison is a test with a stated error rate (Welch's t on log wall time, reported as a
ratio with its interval), and it is declared untrustworthy when a run looks loaded.

The loaded-machine rule (``LOADED_FRACTION``): a run is loaded when its throughput (tokens per
second) is under 0.7x its own group's median, or, where the trainer's CPU time is known, its CPU
use (CPU seconds per wall second) is under 0.7x its group's median. Within one group a run at
0.7x the median throughput took 1.43x the median time; a quiet machine's run-to-run spread is a
few percent, so such a run is far outside it. ``bench/bench_wall_time.py`` measures, for 5 vs 3
runs with log-normal noise (20,000 trials each): false alarms 0.00% at a 2% or 5% spread, 0.45%
at 10%, 26% at 20% (so spread that wide is itself reported as a loaded machine); one run slowed
1.5x is caught 72% of the time, 2x always. The group's own median is the reference, never the
pooled one: a change that truly makes training 2x slower must not read as a loaded machine.

Load can also differ between the groups as a whole: the baseline is measured once and reused by
later sessions, so its runs and an experiment's may come from a busy afternoon and a quiet night.
No run then stands out within its group. A change to the model leaves the CPU seconds a run gets
per wall second about where they were (a slower step still keeps its process busy), while other
jobs on the machine lower them; so when both groups' CPU times are known and one group's median
CPU use is under 0.7x the other's (``unequal_load``; judged only where the busier group keeps at
least half a core busy), the comparison is declared untrustworthy
too. A change that itself alters how many cores a run keeps busy (more data-loading workers, a
different thread count) trips this rule as well: the report then says why and the wall-clock
figures should be measured again in one session on a quiet machine.

The test's false alarm rate at α = 0.05 measures 4.4% (normal log noise) and 3.3% (t3 tails).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from ..model import RunRecord

#: The test's two-sided level: when nothing changed, it calls a difference this often.
ALPHA = 0.05
#: A run under this fraction of its group's median throughput (or CPU use) was slowed by load.
LOADED_FRACTION = 0.7
#: Below this many CPU seconds per wall second (the busier group's median) ``unequal_load`` does not judge.
BUSY = 0.5


@dataclass(frozen=True)
class Timing:
    """One run's timing: its wall time, and what the trainer's process tree used, where known."""

    seed: int
    wall_time: float
    cpu_time: float | None = None
    tokens_per_second: float | None = None


@dataclass(frozen=True)
class LoadedRun:
    group: str
    seed: int
    why: str


@dataclass(frozen=True)
class WallTimeTest:
    """Welch's t on log wall time: the experiment's time as a ratio of the baseline's, with its interval."""

    ratio: float | None
    low: float | None
    high: float | None
    p_value: float | None
    alpha: float
    loaded: tuple[LoadedRun, ...]
    #: Why no ratio could be computed (None when it was).
    reason: str | None = None
    #: Why the two groups look measured under different load (``unequal_load``), or None.
    unequal: str | None = None

    @property
    def trusted(self) -> bool:
        return self.ratio is not None and not self.loaded and self.unequal is None

    @property
    def significant(self) -> bool | None:
        return None if self.p_value is None else self.p_value < self.alpha

    def finding(self) -> str:
        """What the test says, in one clause, without 'noise' and without a σ label."""
        if self.ratio is None or self.p_value is None:
            return f"n/a ({self.reason})"
        change = describe_ratio(self.ratio)
        interval = f"{1 - self.alpha:.0%} interval {describe_ratio(self.low)} to {describe_ratio(self.high)}" \
            if self.low is not None and self.high is not None else "no interval"
        if self.p_value < self.alpha:
            return (f"{change} ({interval}); Welch's t on log wall time rejects no change "
                    f"(p = {self.p_value:.3g} < α = {self.alpha:g})")
        return (f"{change} ({interval}); Welch's t on log wall time does not reject no change "
                f"(p = {self.p_value:.3g} ≥ α = {self.alpha:g})")

    def headline(self) -> str:
        """The comparison in one clause, for the verdict line: the change, the test, and the trust."""
        if self.ratio is None:
            return f"n/a ({self.reason})"
        change = describe_ratio(self.ratio)
        why = self._why()
        if why:
            return f"{change}, not to be trusted: {why}"
        if self.p_value is None:
            return f"{change} ({self.reason})"
        shown = "shown" if self.p_value < self.alpha else "not shown"
        return f"{change}, {shown} at α = {self.alpha:g} (Welch's t on log wall time, p = {self.p_value:.3g})"

    def distrust(self) -> str | None:
        """Why the wall-clock comparison cannot be trusted, or None."""
        why = self._why(stated=True)
        if not why:
            return None
        return f"the wall-clock comparison cannot be trusted: {why}; measure wall time again on a quiet machine"

    def _why(self, stated: bool = False) -> str:
        """The loaded runs and the groups' unequal load, in one clause ('' when neither)."""
        parts = []
        if self.loaded:
            runs = "; ".join(f"{r.group}[seed{r.seed}] {r.why}" for r in self.loaded)
            rule = (f"; a run under {LOADED_FRACTION:g}x its group's median throughput or CPU use counts as "
                    "loaded") if stated else ""
            parts.append(f"the machine looks loaded ({runs}{rule})")
        if self.unequal is not None:
            parts.append(self.unequal)
        return "; and ".join(parts)


def describe_ratio(ratio: float | None) -> str:
    """``0.885`` -> ``11.5% faster``; ``1.2`` -> ``20.0% slower``."""
    if ratio is None:
        return "n/a"
    if ratio <= 1:
        return f"{(1 - ratio) * 100:.1f}% faster"
    return f"{(ratio - 1) * 100:.1f}% slower"


def loaded_runs(group: str, runs: Sequence[Timing], fraction: float = LOADED_FRACTION) -> list[LoadedRun]:
    """The runs of one group that the loaded-machine rule flags (see the module's docstring)."""
    found: list[LoadedRun] = []
    if len(runs) < 3:  # with two runs the median is their mean: one slow run is not told from a fast one
        return found
    speeds = [_throughput(r) for r in runs]
    median_speed = statistics.median(speeds)
    median_usage = _median_usage(runs)
    for run, speed in zip(runs, speeds):
        if median_speed > 0 and speed < fraction * median_speed:
            found.append(LoadedRun(group, run.seed, f"ran at {speed / median_speed:.2f}x its group's median "
                                                    "throughput"))
        elif median_usage and run.cpu_time is not None and run.wall_time > 0 \
                and run.cpu_time / run.wall_time < fraction * median_usage:
            found.append(LoadedRun(group, run.seed, f"used {run.cpu_time / run.wall_time / median_usage:.2f}x its "
                                                    "group's median CPU seconds per wall second"))
    return found


def unequal_load(names: tuple[str, str], baseline: Sequence[Timing], experiment: Sequence[Timing],
                 fraction: float = LOADED_FRACTION) -> str | None:
    """Why the two groups look measured under different load, or None (see the module's docstring).

    Only where every run of both groups has its CPU time, and the busier group kept at least
    ``BUSY`` of a core busy (a trainer that mostly waits, on a GPU or on I/O, has a CPU use too
    small and too variable to tell load by): one group's median CPU seconds per wall second under
    ``fraction`` times the other's.
    """
    base_usage, exp_usage = _median_usage(baseline), _median_usage(experiment)
    if base_usage is None or exp_usage is None:
        return None
    usage = (base_usage, exp_usage)
    low, high = (0, 1) if usage[0] < usage[1] else (1, 0)
    if usage[high] < BUSY or usage[low] >= fraction * usage[high]:
        return None
    return (f"the two groups ran under different load ({names[low]}'s runs got {usage[low] / usage[high]:.2f}x "
            f"the CPU seconds per wall second of {names[high]}'s, median against median; under {fraction:g}x "
            "counts as different load)")


def _median_usage(runs: Sequence[Timing]) -> float | None:
    """The group's median CPU seconds per wall second; None unless every run has its CPU time."""
    usage = [r.cpu_time / r.wall_time for r in runs if r.cpu_time is not None and r.wall_time > 0]
    return statistics.median(usage) if usage and len(usage) == len(runs) else None


def _throughput(run: Timing) -> float:
    """Tokens per second as reported, else the inverse wall time (the same train tokens in a group)."""
    if run.tokens_per_second is not None and run.tokens_per_second > 0:
        return run.tokens_per_second
    return 1.0 / run.wall_time if run.wall_time > 0 else 0.0


def compare(baseline: Sequence[Timing], experiment: Sequence[Timing], alpha: float = ALPHA,
            names: tuple[str, str] = ("baseline", "experiment")) -> WallTimeTest:
    """Welch's t-test on log wall time at ``alpha``, and the loaded runs of either group."""
    loaded = tuple(loaded_runs(names[0], baseline) + loaded_runs(names[1], experiment))
    unequal = unequal_load(names, baseline, experiment)
    if len(baseline) < 2 or len(experiment) < 2:
        return WallTimeTest(None, None, None, None, alpha, loaded, "fewer than 2 runs in a group", unequal)
    if any(r.wall_time <= 0 for r in (*baseline, *experiment)):
        return WallTimeTest(None, None, None, None, alpha, loaded, "a run's wall time is 0", unequal)
    from scipy import stats as scipy_stats

    logs_b = [math.log(r.wall_time) for r in baseline]
    logs_e = [math.log(r.wall_time) for r in experiment]
    vb, ve = statistics.variance(logs_b) / len(logs_b), statistics.variance(logs_e) / len(logs_e)
    diff = statistics.fmean(logs_e) - statistics.fmean(logs_b)
    se = math.sqrt(vb + ve)
    if se == 0:
        return WallTimeTest(math.exp(diff), None, None, None, alpha, loaded,
                            "every run of both groups took the same time", unequal)
    df = (vb + ve) ** 2 / ((vb ** 2 / (len(logs_b) - 1) if vb else 0.0) + (ve ** 2 / (len(logs_e) - 1) if ve else 0.0))
    t = diff / se
    p = float(2 * scipy_stats.t.sf(abs(t), df))
    q = float(scipy_stats.t.ppf(1 - alpha / 2, df))
    return WallTimeTest(math.exp(diff), math.exp(diff - q * se), math.exp(diff + q * se), p, alpha, loaded,
                        unequal=unequal)


def timing_of(record: "RunRecord") -> Timing:
    return Timing(record.seed, record.wall_time, record.cpu_time, record.tokens_per_second)


def compare_records(baseline: Sequence["RunRecord"], runs: Sequence["RunRecord"], alpha: float = ALPHA) -> WallTimeTest:
    """``compare`` on stored runs (the experiment's group is named by its runs)."""
    group = runs[0].group if runs else "experiment"
    return compare([timing_of(r) for r in baseline], [timing_of(r) for r in runs], alpha, ("baseline", group))
