"""Time outside the runs: the breakdown a session prints, the worker started before collection
ends (and closed when nothing runs), simulated figures kept in the store for a later session."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import Project, normalised_report
from pytest_exprun import simcache
from pytest_exprun.decide import rates, simulated
from pytest_exprun.reports import aside

#: Within 2σ of the baseline: the experiment runs all five seeds (a 5 + 5 session).
A_A = {"--use_x": {"42": 2.00, "137": 2.02, "256": 1.98, "512": 2.01, "1024": 1.99}}

#: A conftest that notes, when collection ends and before each test, which warm workers are alive.
WORKER_PROBE = '''
import json
import os
from pathlib import Path


def workers():
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().split(b"\\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"--worker" in cmdline:
            found.append(int(proc.name))
    return found


def note(when):
    with open("workers.jsonl", "a") as handle:
        handle.write(json.dumps({"when": when, "workers": workers()}) + "\\n")


def pytest_collection_finish(session):
    note("collection finished")


def pytest_runtest_setup(item):
    note(item.name)
'''


def notes(project: Project) -> list[dict[str, object]]:
    return [json.loads(line) for line in (project.path / "workers.jsonl").read_text().splitlines()]


@pytest.fixture
def fresh_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's remembered figures emptied, so a session must read the store's (or simulate)."""
    monkeypatch.setattr(simulated, "_KNOWN", {})
    monkeypatch.setattr(simulated, "_NEW", {})
    clear_caches()


def clear_caches() -> None:
    """The rules' in-process caches (``functools.lru_cache``) emptied, as in a new process."""
    for name, module in list(sys.modules.items()):
        if name.startswith("pytest_exprun.decide."):
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


# ------------------------------------------------------------------ the breakdown
def test_exprun_timings_prints_where_the_session_time_went(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.plan(A_A)
    monkeypatch.setenv("EXPRUN_TIMINGS", "1")
    result = project.run_subprocess("--experiment=use_x", "--exprun-executor=warm", "--exprun-accept=neutral")
    result.assert_outcomes(passed=11)
    text = result.stderr.str()
    assert "exprun timings: start, seconds, step" in text
    lines = text.split("exprun timings:", 1)[1].splitlines()[1:]
    labels = [line[18:].strip() for line in lines]
    for label in ("pytest start to exprun's configure", "start the executor early", "collection",
                  "run baseline[seed42]", "store the record", "baseline report", "decide use_x",
                  "experiment reports, twins, plots, summary", "render experiment.md.j2", "pytest exits"):
        assert any(found.startswith(label) for found in labels), label
    run = next(line for line in lines if "run use_x[seed1024]" in line)
    assert "its own wall time" in run and run[18:20] == "  "  # indented: nested under its test
    starts = [float(line.split()[0]) for line in lines]
    assert starts == sorted(starts)
    assert labels.index("collection") < next(i for i, x in enumerate(labels) if x.startswith("run baseline[seed42]"))


def test_without_exprun_timings_nothing_is_printed(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPRUN_TIMINGS", raising=False)
    result = project.run_subprocess("-m", "baseline", "--exprun-executor=warm")
    result.assert_outcomes(passed=5)
    assert "exprun timings" not in result.stderr.str() + result.stdout.str()


# ------------------------------------------------------------ the worker, early
def test_the_warm_worker_is_started_before_collection_ends(project: Project) -> None:
    project.plan(A_A)
    project.pytester.makeconftest(WORKER_PROBE)
    project.run("--experiment=use_x", "--exprun-executor=warm", "--exprun-accept=neutral").assert_outcomes(passed=11)
    found = notes(project)
    assert found[0]["when"] == "collection finished" and len(found[0]["workers"]) == 1  # type: ignore[arg-type]
    assert all(n["workers"] == found[0]["workers"] for n in found)  # the same worker ran every seed


def test_a_session_with_every_run_stored_starts_no_worker(project: Project) -> None:
    project.plan(A_A)
    args = ("--experiment=use_x", "--exprun-executor=warm", "--exprun-accept=neutral")
    project.run(*args).assert_outcomes(passed=11)
    project.pytester.makeconftest(WORKER_PROBE)
    project.run(*args).assert_outcomes(passed=1, skipped=10)
    assert all(n["workers"] == [] for n in notes(project))


def test_a_worker_started_early_for_nothing_is_ended_before_the_first_test(project: Project) -> None:
    """The early look sees no stored run; ``-k verdict`` then leaves nothing to run: it is ended at once."""
    project.pytester.makeconftest(WORKER_PROBE)
    result = project.run("--experiment=use_x", "--exprun-executor=warm", "-k", "verdict")
    result.assert_outcomes(failed=1, deselected=10)
    found = notes(project)
    assert found[0]["when"] == "collection finished" and len(found[0]["workers"]) == 1  # type: ignore[arg-type]
    assert found[1]["when"] == "use_x[verdict]" and found[1]["workers"] == []


# ------------------------------------------------------- simulated figures, kept
def test_a_later_session_does_not_simulate_again(project: Project, fresh_memory: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    project.plan(A_A)
    project.run("--experiment=use_x", "--exprun-accept=neutral").assert_outcomes(passed=11)
    (kept,) = (project.research / ".exprun" / "simulated").glob("*.json")
    assert kept.name == f"{simcache.code_version()}.json"
    figures = json.loads(kept.read_text())["figures"]
    assert any("fixed_rule_rates" in key for key in figures) and any("fixed_rule_null_rates" in key for key in figures)
    before = {p.name: normalised_report(p) for p in project.research.glob("*.md")}
    stamp = kept.stat().st_mtime_ns
    monkeypatch.setattr(simulated, "_KNOWN", {})  # a new process: only the store remembers
    clear_caches()
    for path in project.research.glob("*"):
        if path.is_file():
            path.unlink()
    for name in ("runs", "results"):
        for path in sorted((project.research / ".exprun" / name).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    project.run("--experiment=use_x", "--exprun-accept=neutral").assert_outcomes(passed=11)
    assert kept.stat().st_mtime_ns == stamp  # nothing new was simulated, so nothing was written
    assert simulated._NEW == {}
    assert {p.name: normalised_report(p) for p in project.research.glob("*.md")} == before


def test_a_damaged_cache_file_is_ignored_and_written_again(project: Project, fresh_memory: None) -> None:
    kept = project.research / ".exprun" / "simulated" / f"{simcache.code_version()}.json"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"code": "' + simcache.code_version() + '", "figures": {"[\\"pytest_exprun.decide.rates.'
                    'fixed_rule_rates\\"": {"tuple": [{"dataclass": "os:system", "fields": {}}]}}')  # cut short
    project.plan(A_A)
    project.run("--experiment=use_x", "--exprun-accept=neutral").assert_outcomes(passed=11)
    data = json.loads(kept.read_text())
    assert data["code"] == simcache.code_version() and len(data["figures"]) > 3


def test_a_figure_from_another_code_version_is_never_read(tmp_path: Path, fresh_memory: None) -> None:
    simcache.write(tmp_path, {"key": 1.5})
    assert simcache.read(tmp_path) == {"key": 1.5}
    path = simcache.cache_path(tmp_path)
    path.write_text(path.read_text().replace(simcache.code_version(), "0" * 16))
    assert simcache.read(tmp_path) == {}


def test_a_kept_entry_that_is_not_exprun_s_is_simulated_again(fresh_memory: None) -> None:
    expected = rates.fixed_rule_rates(trials=2000)
    (key,) = simulated.taken()
    simulated._KNOWN.clear()
    simulated.preload({key: {"tuple": [{"dataclass": "os:system", "fields": {"command": "true"}}]}})
    assert rates.fixed_rule_rates(trials=2000) == expected  # the bad entry was dropped, not called
    assert simulated._KNOWN[key] != {"tuple": [{"dataclass": "os:system", "fields": {"command": "true"}}]}


@pytest.mark.parametrize("value", [
    (rates.RateRow(0.0, 0.03, 0.03, 4.9), rates.RateRow(1.0, 0.22, 0.001, 4.6)),
    {"normal": 0.0305, "t3": 0.046}, (math.nan, math.inf, -math.inf, 1e-300), [1, "a", None, True],
])
def test_kept_values_come_back_equal(value: object) -> None:
    text = json.dumps(simulated.encode(value))
    back = simulated.decode(json.loads(text))
    assert repr(back) == repr(value)


def test_a_numpy_scalar_is_kept_as_its_number_and_an_array_not_at_all() -> None:
    assert simulated.decode(simulated.encode(np.float64(0.25))) == 0.25
    with pytest.raises(TypeError):
        simulated.encode(np.zeros(3))


# ------------------------------------------------------------- the aside helper
def test_a_warning_given_in_the_helper_is_given_in_the_session(with_aside: None) -> None:
    helper = aside.start()
    assert helper is not None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            helper.call(warnings.warn, "a report was kept aside", UserWarning)
        assert [str(w.message) for w in caught] == ["a report was kept aside"]
    finally:
        helper.close()


def test_calls_sent_before_their_replies_are_read_are_answered_in_order(with_aside: None) -> None:
    helper = aside.start()
    assert helper is not None
    try:
        sent = [helper.submit(os.path.join, "a", str(i)) for i in range(5)]
        assert [p.result() for p in reversed(sent)] == [os.path.join("a", str(i)) for i in reversed(range(5))]
    finally:
        helper.close()


def test_what_starts_the_worker_imports_no_statistics(pytester: pytest.Pytester) -> None:
    """The early start comes before exprun's heavier imports: it must not pull them in itself."""
    result = pytester.run(sys.executable, "-c", "import sys, pytest_exprun.prestart; print(sorted(m for m in "
                          "sys.modules if m.split('.')[0] in ('numpy', 'scipy', 'jinja2', 'matplotlib') or "
                          "m.startswith(('pytest_exprun.decide', 'pytest_exprun.session'))))")
    assert result.ret == 0 and result.outlines[-1] == "[]"


def test_a_plot_the_helper_cannot_write_fails_the_verdict_in_one_line(project: Project, with_plots: None,
                                                                     with_aside: None) -> None:
    project.plan(A_A)
    (project.research / "experiment_use_x_1M_val_loss.png").mkdir(parents=True)  # where the plot goes
    result = project.run("--experiment=use_x", "--exprun-accept=neutral")
    result.assert_outcomes(passed=10, failed=1)
    result.stdout.fnmatch_lines(["*could not draw the plots of use_x next to docs/research/experiment_use_x_1M.md "
                                 "(*Is a directory*); no report of it was written*"])
    assert "Traceback" not in result.stdout.str()
    assert not (project.research / "experiment_use_x_1M.md").exists()
    assert [p.name for p in project.research.glob("*.png.*")] == []  # no temporary file left behind
