"""What a trainer reads while it runs is part of its setup: a stale baseline is never reused.

Each case is a small trainer of the user's own whose loss depends on something the static
scan cannot see. After the baseline and an experiment that is truly 0.1 better are measured,
that input changes so every loss rises by 0.2: the stale baseline (2.0) against the
experiment's new runs (2.1) would call the experiment a LOSER. The session must refuse the
baseline naming the input, and re-measuring gives the right verdict, WINNER.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_exprun.trainer import provenance

from conftest import Project

#: Prints the loss ``2.0 + offset + jitter(seed) - 0.1 if --better``, the offset found by ``LEVEL``.
TRAINER = '''
import argparse, importlib, os, subprocess, sys
parser = argparse.ArgumentParser()
parser.add_argument("--train_tokens"); parser.add_argument("--seed", type=int); parser.add_argument("--output_dir")
parser.add_argument("--better", action="store_true")
args = parser.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
{level}
loss = 2.0 + offset + (args.seed % 5) * 0.004 - (0.1 if args.better else 0.0)
print(f"Step 10 | val_loss: {{loss + 0.5:.4f}}")
print(f"Step 20 | val_loss: {{loss:.4f}}")
'''

#: How the trainer reaches its offset, what holds it, and how to raise it by 0.2.
CASES = {
    "module imported by a computed name": (
        'offset = importlib.import_module("lev" + "el_mod").OFFSET',
        {"level_mod.py": "OFFSET = 0.0\n"}, ("level_mod.py", "OFFSET = 0.2\n")),
    "helper found through a sys.path entry the trainer adds": (
        'sys.path.insert(0, os.path.join(here, "third" + "_party")); import lvl_helper; offset = lvl_helper.OFFSET',
        {"third_party/lvl_helper.py": "OFFSET = 0.0\n"}, ("third_party/lvl_helper.py", "OFFSET = 0.2\n")),
    "config opened at a path built in code": (
        'import json; offset = json.load(open(os.path.join(here, "conf", "run" + ".json")))["offset"]',
        {"conf/run.json": '{"offset": 0.0}'}, ("conf/run.json", '{"offset": 0.2}')),
    "data read by a Python child process": (
        'offset = float(subprocess.check_output([sys.executable, "-c", '
        '"import os; print(open(os.path.join(\\"data\\", \\"lev\\" + \\"el.bin\\")).read())"]))',
        {"data/level.bin": "0.0"}, ("data/level.bin", "0.2")),
}


def _trainer(project: Project, level: str, files: dict[str, str], command: str = "python train.py") -> None:
    (project.path / "train.py").write_text(TRAINER.format(level=level))
    for name, text in files.items():
        (project.path / name).parent.mkdir(parents=True, exist_ok=True)
        (project.path / name).write_text(text)
    project.pytester.makeini(f"[pytest]\nexprun_command = {command}\n")


def _winner(result: pytest.RunResult) -> None:
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*better: WINNER*"])


def _reused(result: pytest.RunResult) -> None:
    """Nothing changed: the baseline and the experiment's runs are all reused, none starts."""
    assert result.ret == 0, result.stdout.str()
    assert " started" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*baseline: 5/5 seeds*(reused from*", "*better: WINNER*"])


@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_run_time_input_refuses_the_stale_baseline(project: Project, case: str) -> None:
    level, files, (name, changed) = CASES[case]
    _trainer(project, level, files)
    result = project.run("--experiment=better")
    _winner(result)
    result.stdout.fnmatch_lines([f"*found only at run time*{name}*"] if not name.startswith("data") else ["*traced*"])

    _reused(project.run("--experiment=better"))

    (project.path / name).write_text(changed)
    refused = project.run("--experiment=better")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines([f"*measured with a different setup ({name} (read by the trainer at run time) "
                                  "changed*--exprun-rerun-baseline*"])

    fixed = project.run("--experiment=better", "--exprun-rerun-baseline")
    fixed.stdout.fnmatch_lines([f"*better*seed*not reused, what it read changed ({name}*"])
    _winner(fixed)


def test_a_trainer_started_by_a_shell_wrapper_is_traced(project: Project) -> None:
    level = 'offset = float(open(os.path.join(here, "inputs", "lev" + "el.txt")).read())'
    _trainer(project, level, {"inputs/level.txt": "0.0"}, command="sh run.sh")
    (project.path / "run.sh").write_text(f'cd "$(dirname "$0")"\nexec "{sys.executable}" train.py "$@"\n')
    _winner(project.run("--experiment=better"))
    _reused(project.run("--experiment=better"))
    (project.path / "inputs" / "level.txt").write_text("0.2")
    refused = project.run("--experiment=better")
    refused.stderr.fnmatch_lines(["*inputs/level.txt (read by the trainer at run time) changed*"])


def test_an_environment_variable_in_fingerprint_env_joins_the_setup(project: Project,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _trainer(project, 'offset = float(os.environ.get("LEVEL_OFFSET", "0"))', {})
    project.pytester.makeini("[pytest]\nexprun_command = python train.py\nexprun_fingerprint_env = LEVEL_* HOME_DIR_UNSET\n")
    monkeypatch.setenv("LEVEL_OFFSET", "0.0")
    monkeypatch.setenv("LEVEL_API_TOKEN", "hunter2")
    _winner(project.run("--experiment=better"))
    _reused(project.run("--experiment=better"))
    snapshot = next((project.research / ".exprun" / "results").rglob("baseline.json")).read_text()
    assert "hunter2" not in snapshot and "env LEVEL_API_TOKEN" in snapshot
    monkeypatch.setenv("LEVEL_OFFSET", "0.2")
    refused = project.run("--experiment=better")
    refused.stderr.fnmatch_lines(["*different setup (env LEVEL_OFFSET 0.0 → 0.2)*"])
    _winner(project.run("--experiment=better", "--exprun-rerun-baseline"))


def test_a_file_changed_between_two_runs_of_one_session_is_never_mixed_in(project: Project) -> None:
    level = 'import json; offset = json.load(open(os.path.join(here, "conf", "run" + ".json")))["offset"]'
    _trainer(project, level, {"conf/run.json": '{"offset": 0.0}'})
    project.pytester.makeconftest("""
        from pathlib import Path

        def pytest_exprun_run_finished(record):
            if record.group == "baseline" and record.seed == 137:  # someone edits the config mid-session
                (Path(__file__).parent / "conf" / "run.json").write_text('{"offset": 0.2}')
    """)
    result = project.run("-m", "baseline")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(["*baseline[[]seed256[]]: it read conf/run.json (sha256 * → *) in another version "
                                 "than the baseline's runs*never mixed*--exprun-rerun-baseline*"])


def test_a_bad_fingerprint_env_name_is_refused_in_one_line(project: Project) -> None:
    result = project.run("-m", "baseline", "--exprun-fingerprint-env=BAD-NAME")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--exprun-fingerprint-env: 'BAD-NAME' is not an environment variable name*"])


def test_the_baseline_report_lists_what_was_traced_by_group(project: Project) -> None:
    level = 'import numpy; offset = float(open(os.path.join(here, "data", "lev" + "el.bin")).read())'
    _trainer(project, level, {"data/level.bin": "0.0", "conf.json": "{}"})
    project.run("-m", "baseline").assert_outcomes(passed=5)
    report = (project.research / "baseline_variance_1M.md").read_text()
    assert "- Read by the trainer while it ran" in report
    assert "  - code: `train.py`" in report
    assert "data: `data/level.bin`" in report
    assert f"packages: `numpy {__import__('numpy').__version__}`" in report


def test_a_failed_re_measure_keeps_the_old_baseline_in_force(project: Project) -> None:
    project.run("-m", "baseline").assert_outcomes(passed=5)
    old = (project.research / "baseline_variance_1M.md").read_text()
    project.plan(losses={"": {"42": 3.0, "137": 3.0, "256": 3.0, "512": 3.0, "1024": 3.0}},
                 behaviour={"512": "exit3"})
    failed = project.run("-m", "baseline", "--exprun-rerun-baseline")
    failed.assert_outcomes(passed=4, failed=1)
    failed.stdout.fnmatch_lines(["*re-measure of the baseline not completed (4 of 5 seeds measured); the baseline "
                                 "in docs/research/baseline_variance_1M.md stays in force*"])
    assert (project.research / "baseline_variance_1M.md").read_text() == old
    reused = project.run("-m", "baseline")
    reused.assert_outcomes(skipped=5)
    reused.stdout.fnmatch_lines(["*baseline: 5/5 seeds, val_loss 2.0000*"])

    project.plan(losses={"": {"42": 3.0, "137": 3.0, "256": 3.0, "512": 3.0, "1024": 3.0}})
    done = project.run("-m", "baseline", "--exprun-rerun-baseline")
    done.assert_outcomes(passed=5)
    done.stdout.fnmatch_lines(["*the re-measured baseline is complete and now in force; the previous report is kept*",
                               "*baseline: 5/5 seeds, val_loss 3.0000*"])
    project.run("-m", "baseline").stdout.fnmatch_lines(["*baseline: 5/5 seeds, val_loss 3.0000*"])


def test_runs_of_a_warm_worker_are_not_traced_into_the_first_runs_trace(project: Project) -> None:
    """The worker outlives its runs: started traced, it would write every run's reads into the first one's trace."""
    project.run("-m", "baseline", "--exprun-executor=warm").assert_outcomes(passed=5)
    records = list((project.research / ".exprun" / "runs").rglob("seed*.json"))
    assert len(records) == 5
    assert not [r.name for r in records if "traced" in json.loads(r.read_text())]


# ---------------------------------------------------------------- the tracer alone
def _traced(tmp_path: Path, code: str, pythonpath: str = "", **env: str) -> provenance.Provenance:
    trace = tmp_path / "run.trace"
    (tmp_path / "main.py").write_text(textwrap.dedent(code))
    full = {**os.environ, **provenance.environment(trace, tmp_path, [tmp_path / "out"],
                                                   {"PYTHONPATH": pythonpath}), **env}
    subprocess.run([sys.executable, "main.py"], cwd=tmp_path, env=full, check=True, timeout=60)
    found = provenance.read_trace(trace, tmp_path)
    assert found is not None
    return found


def test_writes_outputs_and_the_standard_library_are_not_inputs(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "in.json").write_text("{}")
    (tmp_path / "out" / "prev.txt").write_text("x")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper.py").write_text("X = 1\n")
    found = _traced(tmp_path, """
        import json, csv, os, sys
        sys.path.insert(0, "lib")
        import helper  # the import system lists lib/: not a folder the trainer listed
        json.load(open("in.json"))
        open("written.txt", "w").write("1")
        open("written.txt").read()
        open("out/prev.txt").read()
    """)
    assert [f.name for f in found.files] == ["in.json", "lib/helper.py", "main.py"]
    assert found.grouped()["config"] == ["in.json"]
    assert found.dirs == ()


def test_a_path_with_a_newline_or_an_odd_byte_is_traced_whole(tmp_path: Path) -> None:
    odd = tmp_path / "two\nlines\t\udcff.json"
    odd.write_text("{}")
    found = _traced(tmp_path, r"""
        import os
        open(os.fsdecode(b"two\nlines\t\xff.json")).read()
    """)
    assert [f.name for f in found.files] == ["main.py", "two\nlines\t\udcff.json"]


def test_the_users_own_sitecustomize_still_runs(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nos.environ['OWN_SITE'] = 'ran'\n")
    found = _traced(tmp_path, """
        import os
        assert os.environ["OWN_SITE"] == "ran", "the user's sitecustomize was shadowed"
        open("seen.txt", "w").write(os.environ["OWN_SITE"])
    """, pythonpath=str(own))
    assert (tmp_path / "seen.txt").read_text() == "ran"
    assert "own/sitecustomize.py" in [f.name for f in found.files]


def test_multiprocessing_children_and_listed_data_folders_are_traced(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        (shards / f"s{i}.bin").write_bytes(bytes([i]) * 10)
    found = _traced(tmp_path, """
        import multiprocessing, os
        def read(name):
            return open(os.path.join("shards", name), "rb").read()[0]
        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(2) as pool:
                print(pool.map(read, sorted(os.listdir("shards"))))
    """)
    assert {"shards/s0.bin", "shards/s1.bin", "shards/s2.bin"} <= {f.name for f in found.files}
    assert [name for name, _ in found.dirs] == ["shards"]
    (shards / "s3.bin").write_bytes(b"new")
    assert provenance.changes(found, tmp_path) == ["shards/ (listed by the trainer at run time) has other entries now"]


def test_the_trace_is_bounded(tmp_path: Path) -> None:
    found = _traced(tmp_path, """
        open("first.txt", "w").close()
        open("first.txt").read()
        for i in range(20000):  # the audit event comes before the open fails: nothing touches the disk
            try:
                open(f"missing-{i:05d}-" + "x" * 240)
            except FileNotFoundError:
                pass
    """)
    assert (tmp_path / "run.trace").stat().st_size < 4 * 1024 * 1024 + 1024
    assert any("size limit" in note for note in found.notes)


def test_same_stat_is_not_read_again_and_a_touched_file_is_not_a_change(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 1000)
    found = _traced(tmp_path, "open('data.bin', 'rb').read()")
    assert provenance.changes(found, tmp_path) == []
    os.utime(data, ns=(1, 1))  # touched: stat differs, content the same
    assert provenance.changes(found, tmp_path) == []
    data.write_bytes(b"b" * 1000)  # same size, other content
    os.utime(data, ns=(2, 2))
    (change,) = provenance.changes(found, tmp_path)
    assert change.startswith("data.bin (read by the trainer at run time) changed (sha256 ")


def test_installed_packages_are_recorded_by_distribution_and_version(tmp_path: Path) -> None:
    found = _traced(tmp_path, "import numpy, jinja2")
    packages = dict(found.packages)
    assert packages["numpy"] == __import__("numpy").__version__
    assert packages["Jinja2"] == __import__("jinja2").__version__
    assert not any("site-packages" in f.name for f in found.files)
    assert provenance.changes(found, tmp_path) == []
    older = provenance.Provenance(found.files, found.dirs, (("numpy", "0.1"),), found.sites)
    assert provenance.changes(older, tmp_path) == [f"numpy 0.1 → {packages['numpy']} (imported by the trainer)"]


def test_reading_package_metadata_is_not_using_the_package(tmp_path: Path) -> None:
    # Libraries scan every installed package's entry points at import (torch does); upgrading an
    # unrelated tool must not make the baseline look measured with another setup.
    found = _traced(tmp_path, "import importlib.metadata as m\n"
                              "m.version('pytest'), m.version('jinja2'), list(m.entry_points(group='console_scripts'))")
    assert dict(found.packages) == {}


def test_a_trainer_that_drops_the_tracer_is_not_traced(tmp_path: Path) -> None:
    trace = tmp_path / "run.trace"
    env = {**os.environ, **provenance.environment(trace, tmp_path, [], {})}
    subprocess.run([sys.executable, "-I", "-c", "open('x', 'w')"], cwd=tmp_path, env=env, check=True)
    assert provenance.read_trace(trace, tmp_path) is None


def test_merge_names_a_file_read_in_two_versions() -> None:
    a = provenance.Provenance((provenance.TracedFile("d.bin", 1, 1, "aa"),))
    b = provenance.Provenance((provenance.TracedFile("d.bin", 1, 2, "bb"),))
    merged = provenance.merge([a, None, b])
    assert merged is not None and merged.notes == ("d.bin was read in two versions by the runs of this group "
                                                   "(it changed between them)",)
    assert provenance.merge([None]) is None
    assert provenance.Provenance.from_json(json.loads(json.dumps(merged.to_json()))) == merged


def test_a_trainer_that_is_not_python_keeps_the_static_setup_and_its_report(project: Project) -> None:
    trainer = project.path / "train.sh"
    trainer.write_text('#!/bin/sh\nseed=0\nwhile [ $# -gt 0 ]; do [ "$1" = --seed ] && seed=$2; shift; done\n'
                       'echo "Step 20 | val_loss: 2.$((seed % 7 + 10))"\n')
    trainer.chmod(0o755)
    project.run("-m", "baseline", "--exprun-command=./train.sh").assert_outcomes(passed=5)
    report = (project.research / "baseline_variance_1M.md").read_text()
    assert "`train.sh` sha256" in report and "Read by the trainer while it ran" not in report
    assert not list(project.research.rglob("seed*.trace"))
