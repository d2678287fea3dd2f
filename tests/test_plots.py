"""The report's figures: everything drawn lies on the canvas (a legend beside the plot included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_every_figure_keeps_its_legend_and_labels_on_the_canvas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                with_plots: None) -> None:
    from pytest_exprun.decide.curves import learning_curves
    from pytest_exprun.reports import plots

    figures: dict[str, Any] = {}
    save = plots._save

    def keep(fig: Any, path: Path) -> None:
        figures[path.name] = fig
        save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    seeds = (42, 137, 256, 512, 1024)
    curve = [(0, 3.0), (10, 2.5), (20, 2.1)]
    drawn = plots.draw(tmp_path, "experiment_a_long_experiment_name_1M", plots.PlotData(
        name="a_long_experiment_name", scale="1M", baseline_val={s: 2.0 + 0.01 * i for i, s in enumerate(seeds)},
        experiment_val={s: 1.95 + 0.01 * i for i, s in enumerate(seeds)},
        baseline_wall={s: 230.0 + 10 * i for i, s in enumerate(seeds)},
        experiment_wall={s: 250.0 + 5 * i for i, s in enumerate(seeds)},
        baseline_mean=2.02, baseline_std=0.016, experiment_mean=1.97,
        curves=learning_curves([curve] * 5, [curve] * 5, 1000, 2.05),
        baseline_curves=[curve] * 5, experiment_curves=[curve] * 5,
    ))
    assert sorted(figures) == sorted(p.file for p in drawn.plots) and len(figures) == 3
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        width, height = fig.get_size_inches()
        box = fig.get_tightbbox(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, (name, box)
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None, name
            extent = legend.get_window_extent(renderer)
            assert extent.x1 <= fig.bbox.x1 and extent.x0 >= 0, name  # the wall-time legend was cut off here
        assert (tmp_path / name).stat().st_size > 0
