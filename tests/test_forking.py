"""``--exprun-executor=warm`` for a trainer without the worker protocol: the fork server.

With the fake trainer (forced to fork with ``--exprun-warm-start=fork``, since it also speaks
the worker protocol), then with ``train_llm.py`` and the Hugging Face example on CPU, whose
per-run values must be bit-identical to ``local``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import Project, pid_alive
from pytest_exprun.executors.forkcheck import ForkRefused, python_invocation

FORK = ("--exprun-executor=warm", "--exprun-warm-start=fork")
WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}
NEUTRAL = {"--use_x": {"42": 2.00, "137": 2.01, "256": 1.99, "512": 2.00, "1024": 2.01}}
ROOT = Path(__file__).resolve().parent.parent


def records(project: Project) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((project.research / ".exprun" / "runs").rglob("seed*.json"))]


def test_each_run_is_a_fresh_child_forked_from_one_server(project: Project) -> None:
    project.plan()
    result = project.run("-m", "baseline", *FORK)
    result.assert_outcomes(passed=5)
    pids = [s["pid"] for s in project.started()]
    assert len(set(pids)) == 5 and not any(pid_alive(pid) for pid in pids)
    assert {r["extra"]["environment"]["timing"] for r in records(project)} == {"fork server"}
    assert "runs each seed as local does" not in result.stdout.str()


@pytest.mark.parametrize("losses", [WINNER, NEUTRAL], ids=["winner", "neutral-with-extension"])
def test_forked_runs_write_the_same_reports_as_local(project: Project, losses: dict) -> None:
    project.plan(losses)
    local, local_reports = project.reports_from_scratch("--experiment=use_x")
    forked, forked_reports = project.reports_from_scratch("--experiment=use_x", *FORK)
    assert forked.parseoutcomes() == local.parseoutcomes()
    assert sorted(forked_reports) == sorted(local_reports) and len(local_reports) == 3
    assert forked_reports == local_reports


def test_a_forked_run_sees_its_argv_environment_and_folder_as_a_fresh_process(project: Project) -> None:
    (project.path / "pkg").mkdir()
    (project.path / "pkg" / "__init__.py").write_text("")
    (project.path / "pkg" / "helper.py").write_text("VALUE = 'project module'\n")
    (project.path / "probe.py").write_text(textwrap.dedent("""
        import json, os, sys
        from pkg import helper
        if __name__ == "__main__":
            seed = int(sys.argv[sys.argv.index("--seed") + 1])
            out = sys.argv[sys.argv.index("--output_dir") + 1]
            os.makedirs(out, exist_ok=True)
            print(json.dumps({"argv": sys.argv[:3], "file": __file__, "cwd": os.getcwd(), "path0": sys.path[0],
                              "helper": helper.VALUE, "seed_env": os.environ.get("EXPRUN_SEED"),
                              "leader": os.getpgid(0) == os.getpid()}))
            print(f"Step 50 | val_loss: {2 + seed / 1e6:.4f}")
    """))
    project.pytester.makeini("[pytest]\nexprun_command = python -u probe.py --threads 1\n")
    result = project.run("-m", "baseline", "-k", "seed42", *FORK, "-s")
    result.assert_outcomes(passed=1, deselected=4)
    (log,) = (project.research / ".exprun" / "runs").rglob("seed42.log")
    seen = json.loads(log.read_text().splitlines()[0])
    assert seen == {"argv": ["probe.py", "--threads", "1"], "file": str(project.path / "probe.py"), "cwd": str(project.path),
                    "path0": str(project.path), "helper": "project module", "seed_env": "42", "leader": True}


def test_a_hanging_forked_run_times_out_with_its_children(project: Project) -> None:
    project.plan(behaviour={"42": "grandchild"})  # starts a child, then hangs
    result = project.run("-m", "baseline", "-k", "seed42", "--exprun-timeout=2", *FORK)
    result.assert_outcomes(failed=1, deselected=4)
    result.stdout.fnmatch_lines(["*trainer timed out after 2s*"])
    trainer, grandchild = map(int, (project.path / "fake_grandchild.pid").read_text().split())
    assert not pid_alive(trainer) and not pid_alive(grandchild)  # the run's process group was ended


def test_a_failing_forked_run_fails_only_its_test(project: Project) -> None:
    project.plan(behaviour={"137": "exit3"})
    result = project.run("-m", "baseline", *FORK)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*trainer exited with a non-zero code (3)*"])


def test_a_trainer_that_is_not_python_runs_as_local_with_one_line(project: Project) -> None:
    project.plan()
    project.pytester.makeini("[pytest]\nexprun_command = bash -c 'exec python fake_trainer.py \"$@\"' x\n")
    result = project.run("-m", "baseline", *FORK)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["exprun: --exprun-executor=warm runs each seed as local does: the trainer "
                                 "command does not start with python ('bash')"])
    assert {r["extra"]["environment"]["timing"] for r in records(project)} == {"process"}


def test_a_trainer_that_chooses_the_spawn_start_method_runs_as_local(project: Project) -> None:
    project.plan()
    source = (project.path / "fake_trainer.py").read_text()
    (project.path / "fake_trainer.py").write_text(
        source + "\ndef _unused():\n    import multiprocessing\n    multiprocessing.set_start_method('spawn')\n")
    result = project.run("-m", "baseline", "-k", "seed42", *FORK)
    result.assert_outcomes(passed=1, deselected=4)
    result.stdout.fnmatch_lines(["*runs each seed as local does: fake_trainer.py line * chooses the 'spawn' start "
                                 "method, which starts from a clean interpreter"])


def test_a_library_that_starts_a_thread_on_import_makes_it_fall_back(project: Project, tmp_path_factory:
                                                                     pytest.TempPathFactory,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path_factory.mktemp("site")  # outside the project: a third-party module
    (site / "threaded_lib.py").write_text("import threading, time\n"
                                          "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    project.plan()
    source = (project.path / "fake_trainer.py").read_text()
    (project.path / "fake_trainer.py").write_text(source.replace("import argparse\n", "import argparse\nimport threaded_lib\n", 1))
    result = project.run("-m", "baseline", "-k", "seed42", *FORK)
    result.assert_outcomes(passed=1, deselected=4)
    result.stdout.fnmatch_lines(["*runs each seed as local does: importing the trainer's libraries started 1 thread(s)*"])
    assert {r["extra"]["environment"]["timing"] for r in records(project)} == {"process"}


def test_the_trainer_speaking_the_worker_protocol_gets_the_worker_by_default(project: Project) -> None:
    project.plan()
    project.run("-m", "baseline", "--exprun-executor=warm").assert_outcomes(passed=5)
    assert {r["extra"]["environment"]["timing"] for r in records(project)} == {"warm worker"}
    assert len({s["pid"] for s in project.started()}) == 1


def test_bad_warm_start_is_one_line(project: Project) -> None:
    result = project.run("-m", "baseline", "--exprun-executor=warm", "--exprun-warm-start=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --exprun-warm-start must be one of auto, worker, fork, got 'sometimes'"])


@pytest.mark.parametrize(("command", "expected"), [
    (["python", "train.py", "--x"], (["python"], "script", "train.py", 2)),
    (["python3.11", "-u", "-X", "dev", "-m", "pkg.train"], (["python3.11", "-u", "-X", "dev"], "module", "pkg.train", 6)),
    (["/usr/bin/python", "-Wignore", "t.py"], (["/usr/bin/python", "-Wignore"], "script", "t.py", 3)),
])
def test_python_commands_the_fork_server_can_repeat(command: list[str], expected: tuple) -> None:
    assert python_invocation(command) == expected


@pytest.mark.parametrize("command", [["torchrun", "train.py"], ["python", "-c", "print(1)"], ["python"]])
def test_commands_it_cannot_repeat_are_refused(command: list[str]) -> None:
    with pytest.raises(ForkRefused):
        python_invocation(command)


# ------------------------------------------------------------------ real trainers, on CPU
@pytest.mark.slow
def test_train_llm_forked_is_bit_identical_to_local(project: Project, tmp_path_factory: pytest.TempPathFactory,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch", reason="train_llm.py needs the 'train' extra: pip install -e '.[train]'")
    shutil.copy(ROOT / "train_llm.py", project.path / "train_llm.py")
    project.pytester.makeini("[pytest]\nexprun_command = python train_llm.py --num_threads 1\n")
    monkeypatch.setenv("TRAIN_LLM_CACHE", str(tmp_path_factory.mktemp("train_llm_cache")))
    args = ("-m", "baseline", "--exprun-train-tokens=8192", "--exprun-baseline-seeds=42,137,256", "-q",
            "--exprun-keep-checkpoints", "--exprun-rerun-baseline")
    measured = {}
    for how in (("--exprun-executor=local",), FORK):
        project.run(*args, *how).assert_outcomes(passed=3)
        data = records(project)
        assert {d["extra"]["environment"]["timing"] for d in data} == {"process" if len(how) == 1 else "fork server"}
        (run_root,) = (project.path / "checkpoints").iterdir()
        metrics = {d["seed"]: json.loads((run_root / f"baseline_8.192K_seed{d['seed']}" / "metrics.json").read_text())
                   for d in data}
        # The trainer's own full-precision floats, not only the 4 decimals the plugin reads.
        measured[how[-1]] = {seed: (m["val_loss"], [h["val_loss"] for h in m["history"]], m["train_loss"])
                             for seed, m in metrics.items()}
        shutil.rmtree(project.research / ".exprun" / "runs")
        shutil.rmtree(project.path / "checkpoints")
    assert sorted(measured[FORK[-1]]) == [42, 137, 256]
    assert measured[FORK[-1]] == measured["--exprun-executor=local"]


@pytest.mark.slow
def test_hugging_face_example_forked_is_bit_identical_to_local(pytester: pytest.Pytester) -> None:
    pytest.importorskip("transformers", reason="the Hugging Face example needs the 'hf' extra: pip install -e '.[hf]'")
    for path in (ROOT / "examples" / "hf_trainer").iterdir():
        if path.is_file():
            shutil.copy(path, pytester.path / path.name)
    args = ("-p", "no:cacheprovider", "-m", "baseline", "--exprun-baseline-seeds=42,137,256", "-q",
            "--exprun-rerun-baseline")
    research = pytester.path / "docs" / "research"
    measured = {}
    for how in (("--exprun-executor=local",), FORK):
        result = pytester.runpytest_subprocess(*args, *how, timeout=600)
        assert result.ret == 0, result.stdout.str()[-3000:]
        assert "runs each seed as local does" not in result.stdout.str()
        data = [json.loads(p.read_text()) for p in (research / ".exprun" / "runs").rglob("seed*.json")]
        assert {d["extra"]["environment"]["timing"] for d in data} == {"process" if len(how) == 1 else "fork server"}
        measured[how[-1]] = {d["seed"]: (d["val_loss"], d["curve"]) for d in data}
        shutil.rmtree(research / ".exprun" / "runs")
    assert sorted(measured[FORK[-1]]) == [42, 137, 256]
    assert measured[FORK[-1]] == measured["--exprun-executor=local"]


def test_two_gpus_fork_two_runs_at_once_each_pinned(project: Project) -> None:
    project.plan(sleep=0.3)
    result = project.run("-m", "baseline", *FORK, "--exprun-gpus=0,1")
    result.assert_outcomes(passed=5)
    calls = project.calls()
    assert {c["cuda_visible_devices"] for c in calls} == {"0", "1"}
    first = sorted(calls, key=lambda c: c["start"])[:2]
    assert first[1]["start"] < first[0]["end"]  # the two GPUs worked at once
    assert {r["extra"]["environment"]["timing"] for r in records(project)} == {"fork server"}


def test_a_request_larger_than_one_read_reaches_the_child(tmp_path: Path) -> None:
    from pytest_exprun.executors.forking import ForkServer

    (tmp_path / "env_size.py").write_text("import os, sys\nprint(len(os.environ['BIG']), sys.argv[1:])\n")
    server = ForkServer([sys.executable], "script", "env_size.py", [], {}, tmp_path)
    try:
        assert server.wait_ready(60) is None
        for size in (10, 300_000):
            proc = server.fork(["env_size.py", "a", "b"], {**os.environ, "BIG": "x" * size}, tmp_path)
            assert proc.stdout.read().decode().split(maxsplit=1) == [str(size), "['a', 'b']\n"]
            assert proc.wait(timeout=30) == 0
            proc.stdout.close()
    finally:
        server.stop()
    assert server.proc.returncode == 0


# ------------------------------------------------------------------ robustness
@pytest.mark.parametrize("executor", [("--exprun-executor=local",), FORK, ("--exprun-executor=warm",)],
                         ids=["local", "fork", "worker"])
def test_each_run_records_its_own_cpu_time_with_its_childrens(project: Project, executor: tuple[str, ...]) -> None:
    project.plan(behaviour={"137": "burn"})  # 0.4 s of CPU in a child the trainer waits for
    # No bytecode cache: compiling the imports into a cold one would be CPU time of the first run.
    project.run("-m", "baseline", "-k", "seed42 or seed137 or seed256", "--exprun-bytecode-cache=off",
                *executor).assert_outcomes(passed=3, deselected=2)
    cpu = {r["seed"]: r["cpu_time"] for r in records(project)}
    assert cpu[137] >= 0.38
    # The runs before and after it are charged only their own work (a worker's time is not cumulative).
    assert cpu[42] is not None and cpu[256] is not None and cpu[42] < 0.35 and cpu[256] < 0.35


def test_a_preload_that_hangs_falls_back_to_local_within_the_fork_timeout(
        project: Project, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path_factory.mktemp("site")  # a third-party library whose import hangs in the server
    flag = project.path / "hang_once"
    flag.write_text("")
    (site / "hanging_lib.py").write_text(
        f"import os, time\nif os.path.exists({str(flag)!r}):\n    os.remove({str(flag)!r})\n"
        f"    open({str(project.path / 'server.pid')!r}, 'w').write(str(os.getpid()))\n    time.sleep(3600)\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    source = (project.path / "fake_trainer.py").read_text()
    (project.path / "fake_trainer.py").write_text(source.replace("import argparse\n", "import argparse\nimport hanging_lib\n", 1))
    started = time.monotonic()
    result = project.run("-m", "baseline", "-k", "seed42 or seed137", *FORK, "--exprun-fork-timeout=2")
    took = time.monotonic() - started
    result.assert_outcomes(passed=2, deselected=3)
    result.stdout.fnmatch_lines(["*runs each seed as local does: the fork server had not imported the trainer's "
                                 "libraries 2s after its start (an import that hangs?); raise --exprun-fork-timeout "
                                 "if they take that long*"])
    assert result.stdout.str().count("runs each seed as local does") == 1
    assert {r["extra"]["environment"]["timing"] for r in records(project)} == {"process"}
    assert took < 20
    assert not pid_alive(int((project.path / "server.pid").read_text()))  # the stuck server was ended


def test_a_bad_fork_timeout_is_one_line(project: Project) -> None:
    result = project.run("-m", "baseline", *FORK, "--exprun-fork-timeout=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --exprun-fork-timeout must be a positive number of seconds, got 'soon'"])


def test_a_class_of_a_lazy_library_imported_inside_a_function_is_preloaded(
        project: Project, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path_factory.mktemp("site")  # a library that imports a class's module on first lookup, as transformers
    (site / "lazy_lib").mkdir()
    (site / "lazy_lib" / "__init__.py").write_text(
        "import importlib\n"
        "def __getattr__(name):\n"
        "    if name == 'Model':\n"
        "        return importlib.import_module('lazy_lib.modeling').Model\n"
        "    raise AttributeError(name)\n")
    (site / "lazy_lib" / "modeling.py").write_text(
        f"import os\nopen({str(project.path / 'modeling_imported_by')!r}, 'w').write(str(os.getpid()))\n"
        "class Model:\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    (project.path / "probe.py").write_text(textwrap.dedent("""
        import os, sys

        def main():
            from lazy_lib import Model  # inside a function, as the Hugging Face example does
            out = sys.argv[sys.argv.index("--output_dir") + 1]
            os.makedirs(out, exist_ok=True)
            print(f"run pid {os.getpid()} model {Model.__name__}")
            print("Step 50 | val_loss: 2.0000")

        if __name__ == "__main__":
            main()
    """))
    project.pytester.makeini("[pytest]\nexprun_command = python probe.py\n")
    project.run("-m", "baseline", "-k", "seed42", *FORK).assert_outcomes(passed=1, deselected=4)
    (log,) = (project.research / ".exprun" / "runs").rglob("seed42.log")
    run_pid = int(log.read_text().split()[2])
    importer = int((project.path / "modeling_imported_by").read_text())
    assert importer != run_pid  # the class's module was imported once, by the fork server
    assert {r["extra"]["environment"]["timing"] for r in records(project)} == {"fork server"}
