"""The reference trainer, train_llm.py, run as the plugin runs it: a subprocess per run, or
many runs through one warm worker process (--worker).

Runs are short (a few steps of the tiny model on a small generated text) and start two at a
time, one CPU thread each, because importing torch dominates each run's cost.
"""
from __future__ import annotations

import gc
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="train_llm.py needs the 'train' extra: pip install -e '.[train]'")
np = pytest.importorskip("numpy")

TRAINER = Path(__file__).resolve().parent.parent / "train_llm.py"
STEP_LINE = re.compile(r"^Step (\d+) \| val_loss: ([0-9.]+|nan|inf)", re.MULTILINE)
# 10 steps of 8 x 32 tokens; a small fixed validation set; one thread so two runs share 2 cores.
FAST = ["--batch_size", "8", "--block_size", "32", "--train_tokens", "2560", "--eval_tokens", "512",
        "--eval_every", "5", "--num_threads", "1", "--device", "cpu"]
FLAG_ON = {"use_qk_norm": ["--use_qk_norm"], "use_swiglu": ["--use_swiglu"],
           "tie_embeddings": ["--tie_embeddings"], "optimizer": ["--optimizer", "muon"]}
FLAG_DEFAULTS = ["--use_qk_norm", "false", "--use_swiglu", "false", "--tie_embeddings", "false",
                 "--optimizer", "adamw"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def val_losses(self) -> list[str]:
        """As printed: comparing the strings checks bit-identical runs to the printed precision."""
        return [m.group(2) for m in STEP_LINE.finditer(self.stdout)]

    @property
    def metrics(self) -> dict:
        return json.loads((self.output_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One corpus cache per test session, so the standard-library corpus is built once."""
    return tmp_path_factory.mktemp("train_llm_cache")


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    """About 40 KB of deterministic pseudo-English: enough for train and val splits."""
    rng = random.Random(0)
    words = "the of and to in is was he for it with as his on be at by had not are but from".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + "."
             for _ in range(1000)]
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def run_trainer(tmp_path_factory, cache_dir):
    def run(*args: str, **env_vars: str) -> Run:
        out = tmp_path_factory.mktemp("run")
        env = dict(os.environ, TRAIN_LLM_CACHE=str(cache_dir), PYTHONUNBUFFERED="1", **env_vars)
        proc = subprocess.run([sys.executable, str(TRAINER), "--output_dir", str(out), *args],
                              capture_output=True, text=True, env=env, timeout=300)
        return Run(proc.returncode, proc.stdout, proc.stderr, out)
    return run


def run_all(run_trainer, specs: dict[str, list[str]]) -> dict[str, Run]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(specs, pool.map(lambda args: run_trainer(*args), specs.values())))


@pytest.fixture(scope="session")
def runs(run_trainer, text_file, tmp_path_factory) -> dict[str, Run]:
    """Every successful run the fast tests look at, started together."""
    folder = tmp_path_factory.mktemp("texts")
    text = text_file.read_text(encoding="utf-8")
    for i in range(3):
        (folder / f"part{i}.txt").write_text(text[i * len(text) // 3:(i + 1) * len(text) // 3], encoding="utf-8")
    bins = tmp_path_factory.mktemp("bins")
    ids = np.random.default_rng(0).integers(0, 300, size=30_000).astype(np.uint16)
    ids[:27_000].tofile(bins / "train.bin")
    ids[27_000:].tofile(bins / "val.bin")
    data = ["--data", str(text_file)]
    specs = {
        "baseline": [*FAST, *data, "--seed", "1"],
        "baseline_again": [*FAST, *data, "--seed", "1"],
        "other_seed": [*FAST, *data, "--seed", "2"],
        "explicit_defaults": [*FAST, *data, "--seed", "1", *FLAG_DEFAULTS],
        "qk_norm_true": [*FAST, *data, "--seed", "1", "--use_qk_norm", "true"],
        "folder": [*FAST, "--data", str(folder)],
        "bin_folder": [*FAST, "--data", str(bins)],
        "stdlib": [*FAST],
        **{name: [*FAST, *data, "--seed", "1", *flag] for name, flag in FLAG_ON.items()},
    }
    return run_all(run_trainer, specs)


@pytest.fixture(scope="session")
def bad_runs(run_trainer, text_file, tmp_path_factory) -> dict[str, Run]:
    empty_file = tmp_path_factory.mktemp("empty") / "empty.txt"
    empty_file.write_text("")
    data = ["--data", str(text_file)]
    specs = {
        "missing_data": [*FAST, "--data", str(empty_file.parent / "no_such_file.txt")],
        "empty_file": [*FAST, "--data", str(empty_file)],
        "empty_folder": [*FAST, "--data", str(tmp_path_factory.mktemp("no_text"))],
        "zero_train_tokens": [*FAST, *data, "--train_tokens", "0"],
        "negative_train_tokens": [*FAST, *data, "--train_tokens", "-5"],
        "less_than_one_step": [*FAST, *data, "--train_tokens", "100"],
        "unknown_config": [*FAST, *data, "--config", "huge"],
        "bad_boolean": [*FAST, *data, "--use_qk_norm", "maybe"],
    }
    if not torch.cuda.is_available():
        specs["cuda_without_cuda"] = [*FAST, *data, "--device", "cuda"]
    return run_all(run_trainer, specs)


def test_step_lines_match_the_plugin_pattern(runs):
    run = runs["baseline"]
    assert run.returncode == 0, run.stderr
    steps = [int(m.group(1)) for m in STEP_LINE.finditer(run.stdout)]
    assert steps == [5, 10]  # every --eval_every steps, and the last line at --train_tokens
    line = re.compile(r"^Step \d+ \| val_loss: \d+\.\d{4} \| train_loss: \d+\.\d{4} \| "
                      r"tok/s: [\d,]+ \| elapsed: \d+\.\d+s$")
    assert all(line.match(text) for text in run.stdout.splitlines() if text.startswith("Step "))


def test_first_lines_give_fingerprint_and_train_tokens(runs):
    head = runs["baseline"].stdout.splitlines()[:2]
    fingerprint = runs["baseline"].metrics["data_fingerprint"]
    assert fingerprint[:16] in head[0]
    assert "train tokens: 2,560 (10 steps x 8 x 32; asked 2,560)" in head[1]


def test_same_seed_gives_identical_losses(runs):
    assert runs["baseline"].val_losses == runs["baseline_again"].val_losses
    assert runs["baseline"].metrics["val_loss"] == runs["baseline_again"].metrics["val_loss"]


def test_different_seeds_give_different_losses(runs):
    assert runs["baseline"].metrics["val_loss"] != runs["other_seed"].metrics["val_loss"]


@pytest.mark.parametrize("flag", sorted(FLAG_ON))
def test_each_experiment_flag_changes_the_result(runs, flag):
    assert runs[flag].returncode == 0, runs[flag].stderr
    assert runs[flag].metrics["val_loss"] != runs["baseline"].metrics["val_loss"]


def test_explicit_flag_defaults_give_the_baseline(runs):
    assert runs["explicit_defaults"].metrics["val_loss"] == runs["baseline"].metrics["val_loss"]


def test_bare_boolean_flag_means_true(runs):
    assert runs["qk_norm_true"].metrics["val_loss"] == runs["use_qk_norm"].metrics["val_loss"]
    assert runs["use_qk_norm"].metrics["flags"]["use_qk_norm"] is True


@pytest.mark.parametrize("name", ["folder", "bin_folder", "stdlib"])
def test_data_sources_train(runs, name):
    run = runs[name]
    assert run.returncode == 0, run.stderr
    assert len(run.val_losses) == 2
    assert all(0 < float(v) < 10 for v in run.val_losses)


def test_bin_folder_vocab_is_max_id_rounded_up(runs):
    assert runs["bin_folder"].metrics["config"]["vocab_size"] == 320  # ids < 300, rounded up to 64


def test_stdlib_corpus_is_cached_and_reused(runs, run_trainer, cache_dir):
    fingerprint = runs["stdlib"].metrics["data_fingerprint"]
    cached = sorted(p.name for p in cache_dir.iterdir())
    assert any(name.startswith(f"corpus-{fingerprint[:16]}") for name in cached)
    assert not any(name.endswith(".tmp") for name in cached)
    again = run_trainer(*FAST, "--train_tokens", "256")
    assert again.returncode == 0, again.stderr
    assert again.metrics["data_fingerprint"] == fingerprint
    assert sorted(p.name for p in cache_dir.iterdir()) == cached
    assert again.metrics["one_time_s"] == 0.0  # nothing built: its wall time is its run alone


def test_one_time_work_is_part_of_the_wall_time_and_told_apart(runs):
    for run in (runs["stdlib"], runs["baseline"]):
        metrics = run.metrics
        assert 0.0 <= metrics["one_time_s"] <= metrics["startup_s"] < metrics["wall_time_s"]
    assert runs["baseline"].metrics["one_time_s"] == 0.0  # a text file needs no cache


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's choice")
def test_default_preset_is_tiny_without_cuda_and_says_why(runs):
    run = runs["baseline"]
    assert run.metrics["config"]["preset"] == "tiny" and run.metrics["flags"]["config"] == "tiny"
    assert run.metrics["preset_chosen_by"] == "auto: no CUDA"
    assert "model: tiny (auto: no CUDA) |" in run.stdout


def test_metrics_json_holds_what_a_comparison_needs(runs):
    run = runs["baseline"]
    metrics = run.metrics
    assert metrics["val_loss"] == pytest.approx(float(run.val_losses[-1]), abs=1e-4)
    assert metrics["train_tokens"] == 2560
    assert metrics["seed"] == 1
    assert metrics["device"] == "cpu"
    assert metrics["torch_version"] == torch.__version__
    assert len(metrics["data_fingerprint"]) == 64
    assert metrics["n_params"] > 0 and metrics["flops_per_token"] > 0
    assert metrics["wall_time_s"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["config"]["n_layer"] == 4 and metrics["config"]["block_size"] == 32
    assert metrics["flags"]["optimizer"] == "adamw" and metrics["flags"]["use_swiglu"] is False
    assert (run.output_dir / "ckpt.pt").exists()
    assert not list(run.output_dir.glob("*.tmp"))


@pytest.mark.parametrize("name, words", [
    ("missing_data", "does not exist"),
    ("empty_file", "too little"),
    ("empty_folder", "too little"),
    ("zero_train_tokens", "--train_tokens"),
    ("negative_train_tokens", "--train_tokens"),
    ("less_than_one_step", "less than one step"),
    ("unknown_config", "huge"),
    ("bad_boolean", "maybe"),
    ("cuda_without_cuda", "CUDA"),
])
def test_bad_input_gives_one_line_error(bad_runs, name, words):
    if name not in bad_runs:
        pytest.skip("CUDA is available here")
    run = bad_runs[name]
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert not STEP_LINE.search(run.stdout)


def test_diverging_run_stops_with_exit_code_3(run_trainer, text_file):
    run = run_trainer(*FAST, "--data", str(text_file), "--lr", "1e12", "--grad_clip", "0")
    assert run.returncode == 3
    assert "Traceback" not in run.stderr
    assert re.search(r"NaN|inf", run.stderr.strip().splitlines()[-1])


# -----------------------------------------------------------------------------
# Worker mode: `train_llm.py <common args> --worker` runs one job per stdin line, each of which
# must come out exactly as `train_llm.py <common args> <job args>` in a fresh process.

READY = "exprun-worker: ready"
DONE = re.compile(r"exprun-worker: done (\d+)")
# FAST less --num_threads, so that a job without it gets torch's default; OMP_NUM_THREADS=1 makes
# that default one thread, in fresh processes and in the worker alike, on any machine.
WORKER_COMMON = FAST[:FAST.index("--num_threads")] + FAST[FAST.index("--num_threads") + 2:]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# One step of a wider model: its losses depend on the thread count here (val_loss differs in the
# 7th digit between 1 and 2 threads with torch 2.13 on CPU), so a job left at the previous job's
# --num_threads 2 would not match its fresh process.
WIDE = ["--n_embd", "512", "--n_layer", "1", "--train_tokens", "256"]
WORKER_JOBS = {
    "baseline": ["--seed", "1"],
    "use_qk_norm": ["--seed", "1", "--use_qk_norm"],
    "other_seed": ["--seed", "2"],
    "muon": ["--seed", "1", "--optimizer", "muon"],
    "wide_two_threads": [*WIDE, "--seed", "1", "--num_threads", "2"],
    "wide_default_threads": [*WIDE, "--seed", "1"],
    "baseline_again": ["--seed", "1"],  # after all the others: nothing they left behind counts
}


@dataclass
class WorkerRun:
    returncode: int
    output: str  # stdout and stderr together, as the plugin reads them

    @property
    def jobs(self) -> list[tuple[int, str]]:
        """Each job's exit code and printed lines: the output after `ready`, cut at each `done`."""
        jobs, lines = [], []
        for line in self.output.partition(READY + "\n")[2].splitlines():
            if match := DONE.fullmatch(line):
                jobs.append((int(match.group(1)), "\n".join(lines)))
                lines = []
            else:
                lines.append(line)
        return jobs


def job_line(out: Path, *argv: str) -> str:
    return json.dumps({"argv": [*argv, "--output_dir", str(out)]})


@pytest.fixture(scope="session")
def run_worker(cache_dir):
    def run(args: list[str], lines: list[str]) -> WorkerRun:
        env = dict(os.environ, TRAIN_LLM_CACHE=str(cache_dir), PYTHONUNBUFFERED="1", **ONE_THREAD)
        proc = subprocess.run([sys.executable, str(TRAINER), *args], input="".join(f"{line}\n" for line in lines),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300)
        return WorkerRun(proc.returncode, proc.stdout)
    return run


@pytest.fixture(scope="session")
def worker_and_fresh(run_worker, run_trainer, text_file, tmp_path_factory):
    """WORKER_JOBS through one worker (then EOF), and each (but the repeat) in a fresh process."""
    common = [*WORKER_COMMON, "--data", str(text_file)]
    out = tmp_path_factory.mktemp("worker")
    lines = [job_line(out / name, *argv) for name, argv in WORKER_JOBS.items()]
    fresh_jobs = {name: argv for name, argv in WORKER_JOBS.items() if name != "baseline_again"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        worker = pool.submit(run_worker, ["--worker", *common], lines)
        fresh = dict(zip(fresh_jobs, pool.map(lambda argv: run_trainer(*common, *argv, **ONE_THREAD),
                                              fresh_jobs.values())))
    return worker.result(), out, fresh


def test_worker_says_ready_once_then_done_per_job_and_exits_0_at_eof(worker_and_fresh):
    worker, _, _ = worker_and_fresh
    assert worker.returncode == 0, worker.output
    assert worker.output.startswith(READY + "\n"), worker.output  # the warm-up prints nothing
    assert worker.output.count(READY) == 1
    assert [code for code, _ in worker.jobs] == [0] * len(WORKER_JOBS)


# Two threads: torch's CPU kernels may then sum in a different order from run to run (seen under
# load: the 7th digit of val_loss, between fresh processes alike), so that job is compared within
# rounding below; the one-thread job after it is compared exactly, which is what checks the reset.
NOT_REPEATABLE = {"wide_two_threads"}


@pytest.mark.parametrize("name", [n for n in WORKER_JOBS if n != "baseline_again" and n not in NOT_REPEATABLE])
def test_worker_job_is_bit_identical_to_a_fresh_process(worker_and_fresh, name):
    worker, out, fresh = worker_and_fresh
    run = fresh[name]
    assert run.returncode == 0, run.stderr
    printed = dict(zip(WORKER_JOBS, worker.jobs))[name][1]
    metrics = json.loads((out / name / "metrics.json").read_text())
    assert metrics["val_loss"] == run.metrics["val_loss"]
    assert [(h["step"], h["val_loss"], h["train_loss"]) for h in metrics["history"]] == \
        [(h["step"], h["val_loss"], h["train_loss"]) for h in run.metrics["history"]]
    assert [m.group(2) for m in STEP_LINE.finditer(printed)] == run.val_losses
    assert printed.splitlines()[:3] == run.stdout.splitlines()[:3]  # data, train tokens, model
    flags = {k: v for k, v in metrics["flags"].items() if k != "output_dir"}
    assert flags == {k: v for k, v in run.metrics["flags"].items() if k != "output_dir"}
    ours, theirs = (torch.load(d / "ckpt.pt", weights_only=True) for d in (out / name, run.output_dir))
    assert ours["model"].keys() == theirs["model"].keys()
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in ours["model"])
    # Times count from the job's start, not the worker's: no Python or torch start-up in them.
    assert metrics["startup_s"] < run.metrics["startup_s"]


def test_two_thread_job_matches_its_fresh_process_within_rounding(worker_and_fresh):
    worker, out, fresh = worker_and_fresh
    for name in NOT_REPEATABLE:
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["flags"]["num_threads"] == 2
        assert metrics["val_loss"] == pytest.approx(fresh[name].metrics["val_loss"], rel=1e-5)


def test_worker_repeats_a_job_exactly_after_others(worker_and_fresh):
    _, out, _ = worker_and_fresh
    first, again = (json.loads((out / name / "metrics.json").read_text()) for name in ("baseline", "baseline_again"))
    assert again["val_loss"] == first["val_loss"]
    assert again["history"][-1]["train_loss"] == first["history"][-1]["train_loss"]


def test_worker_job_leaves_nothing_alive(text_file, cache_dir, monkeypatch, tmp_path):
    """A job's model, optimizers and training step go when it ends, by reference counts alone (no
    garbage collection runs here), after a failure too: the next job starts with nothing of them."""
    spec = importlib.util.spec_from_file_location("train_llm_in_process", TRAINER)
    train_llm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_llm)
    monkeypatch.setenv("TRAIN_LLM_CACHE", str(cache_dir))
    fresh = {"num_threads": torch.get_num_threads(), "matmul_precision": torch.get_float32_matmul_precision()}
    kinds = (train_llm.GPT, train_llm.AdamW, train_llm.Muon, train_llm.TrainStep)
    gc.collect()
    gc.disable()
    try:
        for argv, code in ((["--optimizer", "muon"], 0), (["--lr", "1e12", "--grad_clip", "0"], 3)):
            job = [*FAST, "--data", str(text_file), *argv, "--output_dir", str(tmp_path)]
            assert train_llm.run_job(job, fresh, 0.0) == code
            assert not [o for o in gc.get_objects() if type(o) in kinds]
    finally:
        gc.enable()
        torch.set_num_threads(fresh["num_threads"])
        torch.set_float32_matmul_precision(fresh["matmul_precision"])


@pytest.fixture(scope="session")
def bad_workers(run_worker, text_file, tmp_path_factory) -> dict[str, WorkerRun]:
    common = [*WORKER_COMMON, "--data", str(text_file)]
    out = tmp_path_factory.mktemp("bad_worker")
    good = job_line(out / "good", "--seed", "1")  # follows each failing job: it must not run
    specs = {
        "bad_job": ([*common, "--worker"], [job_line(out / "bad", "--batch_size", "0"), good]),
        "malformed_line": ([*common, "--worker"], ["--seed 1", good]),
        "diverging_job": ([*common, "--worker"], [job_line(out / "nan", "--lr", "1e12", "--grad_clip", "0"), good]),
        "bad_common_args": ([*common, "--config", "huge", "--worker"], [good]),
        "missing_data": ([*WORKER_COMMON, "--worker", "--data", str(text_file.parent / "no_such_file.txt")], [good]),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(specs, pool.map(lambda spec: run_worker(*spec), specs.values())))


@pytest.mark.parametrize("name, code, words", [
    ("bad_job", 2, "--batch_size"),
    ("malformed_line", 2, "argv"),
    ("diverging_job", 3, "NaN"),
])
def test_failed_job_ends_the_worker_with_its_exit_code(bad_workers, name, code, words):
    run = bad_workers[name]
    assert run.returncode == code, run.output
    assert run.output.count(READY) == 1
    assert [c for c, _ in run.jobs] == [code]  # the job after it never ran
    assert "Traceback" not in run.output
    printed = run.jobs[0][1].splitlines()
    assert printed[-1].startswith("error: ") and words in printed[-1]
    if code == 2:
        assert len(printed) == 1


@pytest.mark.parametrize("name, words", [("bad_common_args", "huge"), ("missing_data", "does not exist")])
def test_bad_common_args_end_the_worker_before_ready(bad_workers, name, words):
    run = bad_workers[name]
    assert run.returncode == 2
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], run.output
