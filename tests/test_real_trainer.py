"""The whole protocol against the real ``train_llm.py`` on CPU, at a tiny token count."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import Project

pytest.importorskip("torch", reason="train_llm.py needs the 'train' extra: pip install -e '.[train]'")

TRAINER = Path(__file__).resolve().parent.parent / "train_llm.py"


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of the embedded corpus for the whole session, built by the first run."""
    return tmp_path_factory.mktemp("train_llm_cache")


@pytest.mark.slow
def test_full_protocol_with_the_real_trainer(project: Project, corpus_cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(TRAINER, project.path / "train_llm.py")
    project.pytester.makeini("[pytest]\nexprun_command = python train_llm.py --num_threads 1\n")
    monkeypatch.setenv("TRAIN_LLM_CACHE", str(corpus_cache))
    result = project.run("--experiment=use_qk_norm", "--exprun-train-tokens=16384", "-q")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 8, result.stdout.str()[-3000:]
    assert result.ret in (0, 1)  # WINNER passes; NEUTRAL or LOSER fail the verdict test

    baseline = (project.research / "baseline_variance_16.384K.md").read_text()
    losses = [float(v) for v in re.findall(r"^\| \d+ \| (\d+\.\d+) \|", baseline, re.M)]
    assert len(losses) == 5 and len(set(losses)) == 5  # seeds really vary the run
    assert all(2.0 < v < 6.0 for v in losses)  # a byte-level model after 4 steps: near ln(256) = 5.5 or below
    report = (project.research / "experiment_use_qk_norm_16.384K.md").read_text()
    assert re.search(r"^## Verdict: (WINNER|NEUTRAL|LOSER)$", report, re.M)
    # What the runs reported about where they ran is part of what the baseline says it was measured with.
    assert re.search(r"^- Run environment: .*data_fingerprint `[0-9a-f]+`.*device `cpu`", baseline, re.M)
    assert not any((project.path / "checkpoints").iterdir())


@pytest.mark.slow
def test_warm_executor_gives_bit_identical_val_loss_to_a_process_per_run(
    project: Project, corpus_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(TRAINER, project.path / "train_llm.py")
    project.pytester.makeini("[pytest]\nexprun_command = python train_llm.py --num_threads 1\n")
    monkeypatch.setenv("TRAIN_LLM_CACHE", str(corpus_cache))
    args = ("-m", "baseline", "--exprun-train-tokens=16384", "--exprun-baseline-seeds=42,137,256", "-q",
            "--exprun-keep-checkpoints")
    measured = {}
    for executor in ("local", "warm"):
        project.run(*args, f"--exprun-executor={executor}", "--exprun-rerun-baseline").assert_outcomes(passed=3)
        records = sorted((project.research / ".exprun" / "runs").rglob("seed*.json"))
        data = [json.loads(p.read_text()) for p in records]
        assert {d["extra"]["environment"]["timing"] for d in data} == {"process" if executor == "local" else "warm worker"}
        (run_root,) = (project.path / "checkpoints").iterdir()  # one folder per research dir
        metrics = {d["seed"]: json.loads((run_root / f"baseline_16.384K_seed{d['seed']}"
                                          / "metrics.json").read_text()) for d in data}
        # The trainer's own full-precision floats, not only the 4 decimals the plugin reads.
        measured[executor] = {seed: (m["val_loss"], [h["val_loss"] for h in m["history"]], m["train_loss"])
                              for seed, m in metrics.items()}
        shutil.rmtree(project.research / ".exprun" / "runs")
        shutil.rmtree(project.path / "checkpoints")
    assert sorted(measured["warm"]) == [42, 137, 256]
    assert measured["warm"] == measured["local"]
