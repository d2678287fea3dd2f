"""The examples in ``examples/`` run as documented: the Hugging Face Trainer one through the whole protocol."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import QUIET_REWRITE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def copy_example(name: str, to: Path) -> None:
    for path in (EXAMPLES / name).iterdir():
        if path.is_file():
            shutil.copy(path, to / path.name)


@pytest.mark.slow
def test_hugging_face_trainer_example_reaches_a_verdict_with_ini_options_only(pytester: pytest.Pytester) -> None:
    pytest.importorskip("transformers", reason="the example needs the 'hf' extra: pip install -e '.[hf]'")
    copy_example("hf_trainer", pytester.path)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--experiment=learning_rate=3e-3", "-q",
                                           timeout=600)
    out = result.stdout.str()
    assert result.ret in (0, 1), out[-3000:]  # WINNER passes; NEUTRAL or LOSER fail the verdict test
    assert result.parseoutcomes().get("passed", 0) >= 8, out[-3000:]  # 5 baseline + 3 experiment seeds

    research = pytester.path / "docs" / "research"
    records = [json.loads(p.read_text()) for p in (research / ".exprun" / "runs").rglob("seed*.json")]
    baseline = [r for r in records if r["group"] == "baseline"]
    assert len(baseline) == 5
    losses = [r["val_loss"] for r in baseline]
    assert len(set(losses)) == 5, losses  # the seed reaches the Trainer: every seed trains differently
    assert all(3.0 < v < 5.6 for v in losses), losses  # below ln(256) = 5.55 after 16 steps, far from trained
    # The value is eval_results.json's eval_loss at the run's last step, not a printed line.
    assert {tuple(r["curve"][-1]) for r in records} == {(16, r["val_loss"]) for r in records}
    assert all(r["argv"][2:8] == ["--seed", str(r["seed"]), "--max_steps", "16", "--output_dir", r["argv"][7]]
               for r in records)
    experiment = [r for r in records if r["group"] != "baseline"]
    assert {tuple(r["argv"][8:]) for r in experiment} == {("--learning_rate", "3e-3")}
    assert re.search(r"eval_loss [0-9.]+", out)
    report = (research / "experiment_learning_rate-3e-3_16.384K.md").read_text()
    assert re.search(r"^## Verdict: (WINNER|NEUTRAL|LOSER)$", report, re.M)
    assert not any((pytester.path / "checkpoints").iterdir())


#: A stand-in with nanoGPT's command-line contract: config files and --key=value only, its seed
#: from EXPRUN_SEED (the one line the adapter adds to train.py), an evaluation every eval_interval
#: iterations from 0 to max_iters inclusive.
NANOGPT_STAND_IN = """
import os, sys
config = {"max_iters": 600000, "eval_interval": 2000, "out_dir": "out", "n_layer": 2}
for arg in sys.argv[1:]:
    if "=" not in arg:
        assert not arg.startswith("--") and os.path.exists(arg), arg
        continue
    assert arg.startswith("--"), arg
    key, value = arg[2:].split("=")
    if key in config:
        config[key] = type(config[key])(value)
seed = int(os.environ.get("EXPRUN_SEED", 1337))
for it in range(config["max_iters"] + 1):
    if it % config["eval_interval"] == 0:
        val = 4.0 - 0.05 * it - 0.01 * config["n_layer"] + seed * 1e-6
        print(f"step {it}: train loss {val - 0.1:.4f}, val loss {val:.4f}")
"""


def test_nanogpt_adapter_records_the_last_iterations_evaluation(pytester: pytest.Pytester) -> None:
    copy_example("nanogpt", pytester.path)
    (pytester.path / "train.py").write_text(NANOGPT_STAND_IN)
    (pytester.path / "config").mkdir()
    (pytester.path / "config" / "train_shakespeare_char.py").write_text("dataset = 'shakespeare_char'\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *QUIET_REWRITE, "--experiment=n_layer=3", "-q")
    result.assert_outcomes(passed=9, skipped=2)  # 5 + 3 seeds and the verdict; no extension seeds needed
    records = [json.loads(p.read_text()) for p in (pytester.path / "docs" / "research").rglob("seed*.json")]
    assert len(records) == 8
    for record in records:
        layers = 3 if record["group"] != "baseline" else 2
        assert record["curve"] == [[0, pytest.approx(4.0 - 0.01 * layers, abs=2e-3)],
                                   [20, pytest.approx(3.0 - 0.01 * layers, abs=2e-3)]]
        assert record["val_loss"] == record["curve"][-1][1]  # iteration 20 of 20, not step 0
        assert "--max_iters=20" in record["argv"] and "--eval_interval=20" in record["argv"]
    assert {r["argv"][-1] for r in records if r["group"] != "baseline"} == {"--n_layer=3"}


def test_nanogpt_adapter_needs_no_wrapper_script_nor_conftest() -> None:
    assert sorted(p.name for p in (EXAMPLES / "nanogpt").iterdir()) == ["README.md", "pytest-gpu.ini", "pytest.ini"]


def test_nanogpt_gpu_ini_keeps_warmup_and_trains_a_million_tokens_uncompiled(pytester: pytest.Pytester) -> None:
    copy_example("nanogpt", pytester.path)
    (pytester.path / "train.py").write_text(NANOGPT_STAND_IN)
    (pytester.path / "config").mkdir()
    (pytester.path / "config" / "train_shakespeare_char.py").write_text("dataset = 'shakespeare_char'\n")
    result = pytester.runpytest("-c", "pytest-gpu.ini", "-p", "no:cacheprovider", *QUIET_REWRITE,
                                "--experiment=n_layer=3", "-q")
    assert result.ret in (0, 1), result.stdout.str()[-2000:]
    records = [json.loads(p.read_text()) for p in (pytester.path / "docs" / "research").rglob("seed*.json")]
    assert len(records) >= 8
    for record in records:
        argv = record["argv"]
        assert "--compile=False" in argv and "--device=cpu" not in argv and "--dtype=float32" not in argv
        assert not any(a.startswith("--warmup_iters") for a in argv)  # the config's 100 warmup iterations stay
        assert "--max_iters=61" in argv and "--eval_interval=61" in argv  # 1M tokens / 16,384 per iteration
        assert record["curve"][-1][0] == 61
