"""The slurm executor against a real SLURM cluster (scripts/slurm-cluster.sh start one here).

Skipped, with the reason, where no cluster answers; CI starts one and runs these.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import Project, normalised_report

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}


def _slurm_unreachable() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("srun") is None:
        return "no SLURM here (sinfo/srun not on PATH); start one with scripts/slurm-cluster.sh start"
    if not os.environ.get("SLURM_CONF") and not os.path.exists("/etc/slurm/slurm.conf"):
        return "SLURM_CONF is not set; source the env.sh written by scripts/slurm-cluster.sh start"
    try:
        subprocess.run(["srun", "-N1", "hostname"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"SLURM does not run jobs ('srun -N1 hostname' failed: {exc})"
    return None


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    """Skip, saying why, unless a SLURM cluster answers (checked only when these tests run)."""
    reason = _slurm_unreachable()
    if reason is not None:
        pytest.skip(reason)


SLURM = ("--exprun-executor=slurm", "--exprun-slurm-gpus=0", "--exprun-slurm-time=5")


def test_protocol_through_slurm_gives_the_same_verdict_and_reports_as_local(project: Project, with_plots: None) -> None:
    project.plan(WINNER)
    local = project.run_subprocess("--experiment=use_x")  # a process of its own: a clean matplotlib
    local_reports = {p.name: normalised_report(p) for p in project.research.glob("*.md")}
    for path in project.research.glob("*.md"):
        path.unlink()
    shutil.rmtree(project.research / ".exprun")

    result = project.run_subprocess("--experiment=use_x", *SLURM, timeout=300)
    result.assert_outcomes(passed=9, skipped=2)
    assert result.parseoutcomes() == local.parseoutcomes()
    slurm_reports = {p.name: normalised_report(p) for p in project.research.glob("*.md")}
    assert slurm_reports == local_reports and len(slurm_reports) == 3  # baseline, experiment, summary
    # The job files went to the default folder, one per job, and the logs to the usual place.
    jobs = [p for p in (project.research / ".exprun" / "slurm").iterdir() if p.is_dir()]
    assert len(jobs) == 8
    assert list(project.research.glob(".exprun/**/*.log"))


def test_failing_job_fails_its_seed_with_the_job_id(project: Project) -> None:
    project.plan(behaviour={"137": "exit3"})
    result = project.run_subprocess("-m", "baseline", "--exprun-baseline-seeds=42,137", "--exprun-allow-small-baseline", *SLURM, timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*baseline[[]seed137[]]: trainer exited with a non-zero code (3)*SLURM job *"])
    result.stdout.fnmatch_lines(["*RuntimeError: boom*"])


def test_cancelled_job_fails_its_seed_as_cancelled(project: Project) -> None:
    project.plan(behaviour={"137": "hang"})
    stop = threading.Event()

    def scancel_the_hanging_job() -> None:
        # The hanging job is the one still running once the other seed's job is done.
        while not stop.is_set():
            if len(project.calls()) == 1:
                running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-n", "exprun", "-o", "%i"],
                                         capture_output=True, text=True).stdout.split()
                if len(running) == 1:
                    subprocess.run(["scancel", running[0]], check=False)
                    return
            time.sleep(0.5)

    watcher = threading.Thread(target=scancel_the_hanging_job, daemon=True)
    watcher.start()
    try:
        result = project.run_subprocess("-m", "baseline", "--exprun-baseline-seeds=42,137", "--exprun-allow-small-baseline", *SLURM, timeout=300)
    finally:
        stop.set()
        watcher.join()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*baseline[[]seed137[]]: trainer was cancelled*SLURM job *: job cancelled*"])
