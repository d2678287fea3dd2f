"""``pytest --exprun-status``: the program at a glance, from the store, without a run."""

from __future__ import annotations

import subprocess
import sys

from conftest import Project

from pytest_exprun.decide import program
from pytest_exprun.reports import status

WIN = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.92}}
SAME = {"--use_y": {"42": 2.00, "137": 2.01, "256": 1.99, "512": 2.00, "1024": 2.00}}


def test_status_shows_the_baseline_every_experiment_and_the_budget_left(project: Project) -> None:
    project.plan({**WIN, **SAME})
    project.run("--experiment=use_x", "--exprun-program-alpha=0.05")
    project.run("--experiment=use_y", "--exprun-program-alpha=0.05", "--exprun-margin=0.05")
    calls = len(project.calls())
    result = project.run("--exprun-status")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "baseline: 5 seeds [[]42, 137, 256, 512, 1024[]], val_loss 2.0000 ± 0.0158, setup *(python fake_trainer.py)*",
        "  use_x: WINNER Δ=-0.0900 [[]-0.*, -0.*[]], seeds 5+3, * s, step 1 at level * → "
        "docs/research/experiment_use_x_1M.md",
        "  use_y: EQUIVALENT Δ=+0.0000 [[]*[]], seeds 5+5, * s, margin ±0.05, step 2 at level *",
        "2 decision(s), * s of experiment runs in all",
        "program: false-discovery rate ≤ 0.05 (LOND); 2 controlled decision(s), 1 WINNER(s); *% of the no-WINNER "
        "budget spent, *% left; the next decision is tested at a false-WINNER level of about *",
    ])
    assert len(project.calls()) == calls  # nothing ran
    level = program.lond_level(0.05, 3, 1)
    assert f"level of about {level:.2g}" in result.stdout.str()


def test_status_without_a_baseline_says_how_to_measure_one(project: Project) -> None:
    result = project.run("--exprun-status")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["no baseline measured yet: pytest -m baseline measures it"])


def test_status_imports_no_scipy_and_takes_well_under_a_second(project: Project) -> None:
    project.plan(WIN)
    project.run("--experiment=use_x")
    code = ("import sys, time, pytest; t = time.perf_counter(); "
            "rc = pytest.main(['-q', '-p', 'no:cacheprovider', '--exprun-status']); "
            "print('SECONDS', time.perf_counter() - t); print('HEAVY', sorted(m for m in sys.modules "
            "if m.split('.')[0] in {'numpy', 'scipy', 'matplotlib', 'jinja2'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=project.path, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert "HEAVY []" in out, out
    seconds = float(out.split("SECONDS ")[1].split()[0])
    assert seconds < 1.0, out


def test_the_status_constant_is_lond_s_normaliser() -> None:
    assert abs(status.ZETA_1_5 - 1 / program.gamma(1)) < 1e-12


def test_the_summary_draws_every_experiment_s_delta_in_one_forest_plot(project: Project, with_plots: None) -> None:
    project.plan({**WIN, **SAME})
    project.run("--experiment=use_x")
    project.run("--experiment=use_y")
    summary = (project.research / "summary_1M.md").read_text()
    assert "## All Experiments at a Glance" in summary and "(summary_1M_forest.png)" in summary
    png = project.research / "summary_1M_forest.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
