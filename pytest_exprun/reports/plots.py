"""PNG figures next to an experiment report, drawn with matplotlib when it is installed.

matplotlib is an optional extra (``pip install 'pytest-exprun[plots]'``), imported only here
and only when a report is written; figures are drawn on the Agg canvas directly, so no
pyplot state or display is involved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..decide.curves import Curves
from ..names import safe_name

INSTALL_HINT = "pip install 'pytest-exprun[plots]'"
FIGSIZE = (8.0, 4.5)
DPI = 100  # 800 × 450 pixels
MARGINS = dict(left=0.09, right=0.98, bottom=0.12, top=0.9)
BASELINE_COLOUR = "#4C72B0"
EXPERIMENT_COLOUR = "#DD8452"


@dataclass(frozen=True)
class Plot:
    title: str
    file: str  # name of the PNG next to the report


@dataclass(frozen=True)
class PlotSet:
    plots: tuple[Plot, ...]
    missing: str | None  # why there are no plots, with how to get them


@dataclass(frozen=True)
class PlotData:
    """The numbers the figures show; computed elsewhere, only drawn here."""

    name: str
    scale: str
    baseline_val: Mapping[int, float]
    experiment_val: Mapping[int, float]
    baseline_wall: Mapping[int, float]
    experiment_wall: Mapping[int, float]
    baseline_mean: float
    baseline_std: float
    experiment_mean: float
    curves: Curves
    baseline_curves: Sequence[Sequence[tuple[int, float]]]
    experiment_curves: Sequence[Sequence[tuple[int, float]]]
    metric: str = "val_loss"  # what a run's value is called: its result key or pattern group


#: The per-seed figure's file suffix when the metric is val_loss, the name reports of other metrics once used.
DEFAULT_SUFFIX = "val_loss"


def metric_suffix(metric: str) -> str:
    """The per-seed figure's file-name suffix: the metric's name in a safe file-name form, never
    the suffix of another figure (a metric called ``curves`` gets ``metric_curves``)."""
    suffix = safe_name(metric)
    return f"metric_{suffix}" if suffix in ("curves", "wall_time", "forest") else suffix


def figures(metric: str = "val_loss") -> tuple[tuple[str, str], ...]:
    """The figures ``draw`` makes, as (file suffix, title); the curves only where curves were stored."""
    return ((metric_suffix(metric), f"{metric} per seed"), ("curves", "Learning curves"),
            ("wall_time", "Wall time per seed"))


def _matplotlib() -> tuple[Any, Any] | None:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def draw(folder: Path, stem: str, data: PlotData) -> PlotSet:
    """Write ``<stem>_<metric>.png`` (``<stem>_val_loss.png`` by default), ``<stem>_curves.png`` and
    ``<stem>_wall_time.png``; a per-seed figure left under the default name by an earlier version
    of a report of another metric is removed once its successor is written."""
    found = _matplotlib()
    if found is None:
        return PlotSet((), f"matplotlib is not installed; `{INSTALL_HINT}` and run again for plots")
    figure_cls, canvas_cls = found
    plots = []
    for (suffix, title), painter in zip(figures(data.metric), (_per_seed, _curves, _wall_time)):
        if painter is _curves and not data.curves.points:
            continue
        fig = figure_cls(figsize=FIGSIZE, dpi=DPI)
        fig.subplots_adjust(**MARGINS)  # fixed: a layout engine measures every text again first
        canvas_cls(fig)
        ax = fig.add_subplot()
        painter(ax, data)
        _style(ax)
        ax.set_title(f"{data.name} · {data.scale} · {title}", fontsize=11, loc="left")
        _fit_inside(fig, ax)
        file = f"{stem}_{suffix}.png"
        _save(fig, folder / file)
        plots.append(Plot(title, file))
    if metric_suffix(data.metric) != DEFAULT_SUFFIX:
        old = folder / f"{stem}_{DEFAULT_SUFFIX}.png"
        if old.is_file() and not old.is_symlink():
            old.unlink()
    return PlotSet(tuple(plots), None)


def existing(folder: Path, stem: str, metric: str = "val_loss") -> PlotSet | None:
    """The figures already drawn for a report of ``metric``, or None when one is missing (draw them
    again: a report drawn under the old per-seed name ``<stem>_val_loss.png`` for another metric is
    redrawn under the metric's name)."""
    shown = figures(metric)
    found = tuple(Plot(title, f"{stem}_{suffix}.png") for suffix, title in shown
                  if (folder / f"{stem}_{suffix}.png").is_file())
    names = {p.file for p in found}
    if f"{stem}_{shown[0][0]}.png" not in names or f"{stem}_wall_time.png" not in names:
        return None
    return PlotSet(found, None)


def _save(fig: Any, path: Path) -> None:
    """Write the PNG under a temporary name first: an interrupted session never leaves half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    if temporary.is_symlink():  # never write through a link planted at the temporary name
        temporary.unlink()
    try:
        fig.savefig(temporary, dpi=DPI, format="png")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _fit_inside(fig: Any, ax: Any, pad: float = 0.08) -> None:
    """Shrink the axes until what is drawn around them (a legend beside the plot, tick labels,
    axis labels) lies on the canvas: fixed margins cannot know how wide a legend's labels are,
    and savefig crops whatever sticks out."""
    renderer = fig.canvas.get_renderer()
    width, height = fig.get_size_inches()
    for _ in range(4):  # a shrunken axes may re-wrap its ticks: measure again
        box = fig.get_tightbbox(renderer)  # in inches
        left, right = max(0.0, pad - box.x0), max(0.0, box.x1 - (width - pad))
        bottom, top = max(0.0, pad - box.y0), max(0.0, box.y1 - (height - pad))
        if not (left or right or bottom or top):
            return
        pos = ax.get_position()
        ax.set_position([pos.x0 + left / width, pos.y0 + bottom / height,
                         pos.width - (left + right) / width, pos.height - (bottom + top) / height])


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(labelsize=9)


def _jitter(count: int) -> np.ndarray:
    """Deterministic horizontal spread so equal values stay visible side by side."""
    return np.linspace(-0.12, 0.12, count) if count > 1 else np.zeros(count)


def _per_seed(ax: Any, data: PlotData) -> None:
    mean, sigma = data.baseline_mean, data.baseline_std
    if np.isfinite(sigma) and sigma > 0:
        ax.axhspan(mean - 2 * sigma, mean + 2 * sigma, color=BASELINE_COLOUR, alpha=0.12,
                   label="baseline mean ± 2σ (NEUTRAL zone)")
    ax.axhline(mean, color=BASELINE_COLOUR, lw=1, ls=":")
    groups = (("baseline", data.baseline_val, BASELINE_COLOUR, mean),
              ("experiment", data.experiment_val, EXPERIMENT_COLOUR, data.experiment_mean))
    for x, (label, values, colour, group_mean) in enumerate(groups):
        seeds = sorted(values)
        ys = [values[s] for s in seeds]
        xs = x + _jitter(len(ys))
        ax.scatter(xs, ys, s=46, color=colour, edgecolor="white", linewidth=0.8, zorder=3,
                   label=f"{label} (n={len(ys)})")
        for xi, yi, seed in zip(xs, ys, seeds):
            ax.annotate(str(seed), (xi, yi), xytext=(6, 0), textcoords="offset points", fontsize=7,
                        color="#555555", va="center")
        ax.hlines(group_mean, x - 0.3, x + 0.3, color=colour, lw=2.5, zorder=2)
    ax.set_xticks([0, 1], ["baseline", "experiment"])
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylabel(f"final {data.metric} (lower is better)")
    ax.legend(fontsize=8, frameon=False, loc="best")


def _curves(ax: Any, data: PlotData) -> None:
    points = data.curves.points
    steps = np.array([p.step for p in points], dtype=float)
    for curves, colour in ((data.baseline_curves, BASELINE_COLOUR), (data.experiment_curves, EXPERIMENT_COLOUR)):
        for curve in curves:
            if curve:
                xs, ys = zip(*curve)
                ax.plot(xs, ys, color=colour, lw=0.6, alpha=0.35)
    for label, colour, means, stds in (
        ("baseline", BASELINE_COLOUR, [p.baseline_mean for p in points], [p.baseline_std for p in points]),
        ("experiment", EXPERIMENT_COLOUR, [p.experiment_mean for p in points], [p.experiment_std for p in points]),
    ):
        m = np.array([np.nan if v is None else v for v in means], dtype=float)
        if np.all(np.isnan(m)):
            continue
        s = np.array([0.0 if v is None else v for v in stds], dtype=float)
        keep = ~np.isnan(m)
        ax.plot(steps[keep], m[keep], color=colour, lw=2, label=f"{label} mean")
        ax.fill_between(steps[keep], (m - s)[keep], (m + s)[keep], color=colour, alpha=0.2,
                        label=f"{label} ± std")
    target = data.curves.to_target
    ax.axhline(target.target, color="#333333", lw=1, ls="--", label="baseline final mean")
    if target.step is not None:
        ax.axvline(target.step, color=EXPERIMENT_COLOUR, lw=1, ls=":",
                   label=f"experiment reaches it (step {target.step})")
    ax.set_xlabel("step")
    ax.set_ylabel(data.metric)
    ax.legend(fontsize=8, frameon=False, loc="upper right")


def _wall_time(ax: Any, data: PlotData) -> None:
    seeds = sorted(set(data.baseline_wall) | set(data.experiment_wall))
    x = np.arange(len(seeds))
    width = 0.38
    for offset, label, values, colour in ((-width / 2, "baseline", data.baseline_wall, BASELINE_COLOUR),
                                          (width / 2, "experiment", data.experiment_wall, EXPERIMENT_COLOUR)):
        heights = [values.get(s, np.nan) for s in seeds]
        ax.bar(x + offset, heights, width, color=colour, label=label)
        present = [h for h in heights if np.isfinite(h)]
        if present:
            ax.axhline(float(np.mean(present)), color=colour, lw=1, ls="--", label=f"{label} mean")
    ax.set_xticks(x, [f"seed {s}" for s in seeds])
    ax.set_ylabel("wall time (s)")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


@dataclass(frozen=True)
class ForestRow:
    """One experiment in the summary's forest plot: its Δ and the interval of Δ."""

    name: str
    verdict: str
    delta: float
    low: float | None
    high: float | None


def forest(folder: Path, stem: str, rows: Sequence[ForestRow], confidence: float = 0.95,
           metric: str = "val_loss") -> tuple[str | None, str | None]:
    """``<stem>_forest.png``: every experiment's Δ of the metric with its interval, one row each, best first.

    Returns (file, None), or (None, why there is no figure and how to get one).
    """
    found = _matplotlib()
    if found is None:
        return None, f"matplotlib is not installed; `{INSTALL_HINT}` and run again for the forest plot"
    if not rows:
        return None, "no experiment is decided yet"
    figure_cls, canvas_cls = found
    height = max(2.5, 0.9 + 0.35 * len(rows))
    fig = figure_cls(figsize=(FIGSIZE[0], height), dpi=DPI)
    canvas_cls(fig)
    ax = fig.add_subplot()
    colours = {"WINNER": "#55A868", "LOSER": "#C44E52", "EQUIVALENT": BASELINE_COLOUR}
    for y, row in enumerate(reversed(rows)):
        colour = colours.get(row.verdict, "#8C8C8C")
        if row.low is not None and row.high is not None:
            ax.plot([row.low, row.high], [y, y], color=colour, linewidth=2)
        ax.plot([row.delta], [y], marker="o", color=colour)
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)), [f"{r.name} ({r.verdict})" for r in reversed(rows)], fontsize=9)
    ax.set_xlabel(f"Δ {metric} (experiment − baseline) with its {confidence:.0%} Welch interval; left is better",
                  fontsize=9)
    ax.set_title("Every experiment on this baseline", fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", alpha=0.3)
    _fit_inside(fig, ax)
    file = f"{stem}_forest.png"
    _save(fig, folder / file)
    return file, None
