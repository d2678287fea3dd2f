"""The trainers' bytecode cache: on by default in the user's cache dir, off or elsewhere when asked,
kept out of what a run read, and never a reason to measure a baseline again."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import Project
from pytest_exprun.trainer import bytecode

FORK = ("--exprun-executor=warm", "--exprun-warm-start=fork")
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


def user_cache(project: Project) -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "pytest-exprun" / "pycache" / VERSION


@pytest.fixture
def image_without_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the GPU image: Python told not to write bytecode, and no prefix chosen."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)


@pytest.mark.parametrize("executor", [(), ("--exprun-executor=warm",), FORK], ids=["local", "worker", "fork"])
def test_every_trainer_process_keeps_its_bytecode_in_the_user_cache(project: Project, image_without_bytecode: None,
                                                                     executor: tuple[str, ...]) -> None:
    result = project.run("-m", "baseline", "-k", "seed42 or seed137", *executor)
    result.assert_outcomes(passed=2, deselected=3)
    calls = project.calls()
    assert [(c["pycache_prefix"], c["dont_write_bytecode"]) for c in calls] == [(str(user_cache(project)), 0)] * 2
    assert list(user_cache(project).rglob("argparse*.pyc"))  # what the trainer imported, compiled once


def test_the_cache_can_be_turned_off(project: Project, image_without_bytecode: None,
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    project.run("-m", "baseline", "-k", "seed42", "--exprun-bytecode-cache=off").assert_outcomes(passed=1, deselected=4)
    project.pytester.makeini("[pytest]\nexprun_command = python fake_trainer.py\nexprun_bytecode_cache = off\n")
    project.run("-m", "baseline", "-k", "seed137").assert_outcomes(passed=1, deselected=4)
    assert [(c["pycache_prefix"], c["dont_write_bytecode"]) for c in project.calls()] == [(None, 1)] * 2
    assert not user_cache(project).exists()


def test_a_folder_of_ones_own_is_used_instead(project: Project, image_without_bytecode: None) -> None:
    project.run("-m", "baseline", "-k", "seed42", "--exprun-bytecode-cache=build/pyc").assert_outcomes(
        passed=1, deselected=4)
    assert [c["pycache_prefix"] for c in project.calls()] == [str(project.path / "build" / "pyc")]


def test_a_prefix_the_user_set_is_kept(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path / "mine"))
    project.run("-m", "baseline", "-k", "seed42").assert_outcomes(passed=1, deselected=4)
    assert [c["pycache_prefix"] for c in project.calls()] == [str(tmp_path / "mine")]


def test_a_cache_that_cannot_be_made_is_one_warning_and_the_runs_go_on(project: Project,
                                                                        image_without_bytecode: None) -> None:
    (project.path / "blocked").write_text("a file where the cache folder would go")
    result = project.run("-m", "baseline", "-k", "seed42 or seed137", "--exprun-bytecode-cache=blocked/pyc")
    result.assert_outcomes(passed=2, deselected=3, warnings=1)
    result.stdout.fnmatch_lines(["*the bytecode cache *blocked/pyc cannot be used (*); trainer processes run without "
                                 "it. Give another folder with --exprun-bytecode-cache=PATH, or turn it off with "
                                 "--exprun-bytecode-cache=off"])
    assert [(c["pycache_prefix"], c["dont_write_bytecode"]) for c in project.calls()] == [(None, 1)] * 2


def test_the_cache_is_not_part_of_the_setup_and_the_baseline_is_reused(project: Project, image_without_bytecode: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The worst place for it: inside the project, where the tracer would otherwise see every .pyc written.
    monkeypatch.setenv("XDG_CACHE_HOME", str(project.path / ".cache"))
    project.run("-m", "baseline").assert_outcomes(passed=5)
    assert list(user_cache(project).rglob("*.pyc"))
    stored = [p.read_text() for p in sorted((project.research / ".exprun").rglob("*.json"))]
    assert stored and not any(".cache" in text or ".pyc" in text for text in stored)
    traces = [p.read_text() for p in (project.research / ".exprun").rglob("*.trace")]
    assert traces and not any(".cache" in text for text in traces)  # not even its writes are traced
    again = project.run("-m", "baseline")
    again.assert_outcomes(skipped=5)  # each seed skipped as already measured
    assert len(project.calls()) == 5  # every seed reused: nothing ran in the second session
    assert "runs again" not in again.stdout.str()


def test_the_default_folder_follows_xdg_and_falls_back_to_the_home_cache(tmp_path: Path) -> None:
    home = Path(os.path.expanduser("~"))
    assert bytecode.default_folder({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "pytest-exprun" / "pycache" / VERSION
    # The XDG rule: a relative XDG_CACHE_HOME is ignored.
    assert bytecode.default_folder({"XDG_CACHE_HOME": "rel"}) == home / ".cache" / "pytest-exprun" / "pycache" / VERSION
    assert bytecode.chosen_folder("off", tmp_path, {}) is None
    # exprun_bytecode_cache was an ini flag: its spellings are not folder names.
    assert bytecode.chosen_folder("false", tmp_path, {}) is None
    assert bytecode.chosen_folder("true", tmp_path, {"XDG_CACHE_HOME": str(tmp_path)}) == bytecode.default_folder(
        {"XDG_CACHE_HOME": str(tmp_path)})
    assert bytecode.chosen_folder("ON", tmp_path, {"PYTHONPYCACHEPREFIX": "/x"}) is None  # theirs is kept
    assert bytecode.chosen_folder("pyc", tmp_path, {"PYTHONPYCACHEPREFIX": "/x"}) == tmp_path / "pyc"
    assert bytecode.chosen_folder("~/pyc", tmp_path, {}) == home / "pyc"
    with pytest.raises(ValueError, match="NUL"):
        bytecode.chosen_folder("a\0b", tmp_path, {})


def test_runs_on_other_machines_get_no_cache_of_this_one() -> None:
    env = {"EXPRUN_SEED": "42", bytecode.PREFIX_ENV: "/home/me/.cache/x", bytecode.DONT_WRITE_ENV: ""}
    assert bytecode.without_cache(env) == {"EXPRUN_SEED": "42"}


def test_the_cache_environment_is_a_prefix_and_an_empty_dont_write(tmp_path: Path) -> None:
    assert bytecode.unusable(tmp_path / "a" / "b") is None and (tmp_path / "a" / "b").is_dir()
    assert bytecode.environment(tmp_path / "a" / "b") == {"PYTHONPYCACHEPREFIX": str(tmp_path / "a" / "b"),
                                                          "PYTHONDONTWRITEBYTECODE": ""}
    assert bytecode.environment(None) == {} and bytecode.unusable(None) is None
