"""Setup identity: which files and versions a trainer command is fingerprinted by.

Every test builds a small project in a temporary folder and edits its files for real.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from pytest_exprun.trainer import fingerprint
from pytest_exprun.trainer.fingerprint import Fingerprint, recheck, setup_files


def write(root: Path, name: str, text: str, mode: int | None = None) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def files(fp: Fingerprint) -> list[str]:
    return [name for name, _ in fp.files]


@pytest.fixture
def nanogpt(tmp_path: Path) -> Path:
    """nanoGPT's layout: train.py imports model.py, which imports a helper; tests and docs beside."""
    write(tmp_path, "train.py", "import os\nimport torch\nfrom model import GPT\n"
                                "exec(open('configurator.py').read())\n")
    write(tmp_path, "model.py", "import math\nfrom layers.attention import Attention\n")
    write(tmp_path, "layers/__init__.py", "")
    write(tmp_path, "layers/attention.py", "from .norm import RMSNorm\n")
    write(tmp_path, "layers/norm.py", "X = 1\n")
    write(tmp_path, "configurator.py", "import sys\n")
    write(tmp_path, "config/train_shakespeare.py", "batch_size = 12\n")
    write(tmp_path, "tests/test_model.py", "import model\n")
    write(tmp_path, "README.md", "# nanoGPT\n")
    return tmp_path


def test_the_trainer_and_the_project_modules_it_imports_are_fingerprinted(nanogpt: Path) -> None:
    fp = setup_files(["python", "train.py", "config/train_shakespeare.py"], [], nanogpt)
    assert files(fp) == ["config/train_shakespeare.py", "configurator.py", "layers/__init__.py",
                         "layers/attention.py", "layers/norm.py", "model.py", "train.py"]
    assert not fp.empty


def test_editing_an_imported_module_changes_the_fingerprint_and_a_test_or_readme_does_not(nanogpt: Path) -> None:
    before = setup_files(["python", "train.py"], [], nanogpt)
    (nanogpt / "tests/test_model.py").write_text("import model\nassert True\n")
    (nanogpt / "README.md").write_text("# nanoGPT, edited\n")
    assert setup_files(["python", "train.py"], [], nanogpt) == before
    assert recheck(before, nanogpt) == []
    (nanogpt / "layers/norm.py").write_text("X = 2\n")
    after = setup_files(["python", "train.py"], [], nanogpt)
    assert after.digest() != before.digest()
    assert after.differences(before) == [f"layers/norm.py changed (sha256 {dict(before.files)['layers/norm.py'][:12]} "
                                         f"→ {dict(after.files)['layers/norm.py'][:12]})"]
    assert recheck(before, nanogpt) == after.differences(before)


def test_an_executable_script_with_a_shebang_is_the_trainer(tmp_path: Path) -> None:
    write(tmp_path, "t.py", "#!/usr/bin/env python3\nimport helpers\n", mode=0o755)
    write(tmp_path, "helpers.py", "")
    assert files(setup_files(["./t.py", "--lr", "3e-4"], [], tmp_path)) == ["helpers.py", "t.py"]


def test_python_dash_m_resolves_the_module_and_its_package_inside_the_project(tmp_path: Path) -> None:
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/train.py", "from .model import GPT\nfrom pkg import data\nimport numpy\n")
    write(tmp_path, "pkg/model.py", "")
    write(tmp_path, "pkg/data.py", "")
    write(tmp_path, "pkg/unused.py", "")
    fp = setup_files(["python", "-u", "-m", "pkg.train"], [], tmp_path)
    assert files(fp) == ["pkg/__init__.py", "pkg/data.py", "pkg/model.py", "pkg/train.py"]


def test_python_dash_c_follows_imports_into_a_file_a_module_runs(tmp_path: Path) -> None:
    """An import that runs a file that imports again: the command, import and script scans call each other."""
    write(tmp_path, "model.py", "exec(open('configurator.py').read())\n")
    write(tmp_path, "configurator.py", "import defaults\n")
    write(tmp_path, "defaults.py", "")
    write(tmp_path, "unused.py", "")
    fp = setup_files(["python", "-c", "import model"], [], tmp_path)
    assert files(fp) == ["configurator.py", "defaults.py", "model.py"]


def test_a_shell_wrapper_is_looked_into(tmp_path: Path) -> None:
    write(tmp_path, "exp/train.py", "import model\n")
    write(tmp_path, "exp/model.py", "")
    write(tmp_path, "exp/conf.yaml", "lr: 3e-4\n")
    fp = setup_files(["bash", "-c", "cd exp && OMP_NUM_THREADS=1 python train.py --config conf.yaml \"$@\"",
                      "--"], [], tmp_path)
    assert files(fp) == ["exp/conf.yaml", "exp/model.py", "exp/train.py"]


def test_a_shell_script_trainer_and_the_python_it_runs(tmp_path: Path) -> None:
    write(tmp_path, "run.sh", "#!/bin/sh\nset -e\npython3 src_train.py \"$@\"\n", mode=0o755)
    write(tmp_path, "src_train.py", "")
    assert files(setup_files(["./run.sh"], [], tmp_path)) == ["run.sh", "src_train.py"]


def test_an_absolute_path_and_a_launcher_are_resolved(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "import model\n")
    write(tmp_path, "model.py", "")
    assert files(setup_files([sys.executable, str(tmp_path / "train.py")], [], tmp_path)) == ["model.py", "train.py"]
    assert files(setup_files(["env", "CUDA_VISIBLE_DEVICES=0", "python", "train.py"], [], tmp_path)) == [
        "model.py", "train.py"]


def test_config_files_named_in_the_command_or_the_flags_are_fingerprinted(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "")
    write(tmp_path, "conf.yaml", "a: 1\n")
    write(tmp_path, "data/prep.json", "{}\n")
    (tmp_path / "data/corpus").mkdir()
    fp = setup_files(["python", "train.py", "--config", "conf.yaml"], ["--data=data/prep.json", "--corpus",
                                                                       "data/corpus", "--lr", "3e-4"], tmp_path)
    assert files(fp) == ["conf.yaml", "data/prep.json", "train.py"]
    assert any("data/corpus/" in note and "is a folder" in note for note in fp.notes)


def test_included_globs_are_added_and_excluded_paths_left_out(nanogpt: Path) -> None:
    write(nanogpt, "data/prepare.py", "import numpy\n")
    write(nanogpt, "data/shakespeare/prepare.py", "")
    fp = setup_files(["python", "train.py"], [], nanogpt, include=["data/**/prepare.py"], exclude=["layers/"])
    assert files(fp) == ["configurator.py", "data/prepare.py", "data/shakespeare/prepare.py", "model.py", "train.py"]
    none = setup_files(["python", "train.py"], [], nanogpt, include=["nothing/*.py"])
    assert "exprun_fingerprint_include pattern 'nothing/*.py' matches no file" in none.notes


def test_a_setup_with_nothing_to_fingerprint_says_so(tmp_path: Path) -> None:
    fp = setup_files(["sleep", "1"], [], tmp_path)
    assert fp.empty
    assert fp.notes[0].startswith("no trainer file found in the command 'sleep 1'")


def test_a_file_that_cannot_be_parsed_is_still_fingerprinted_and_noted(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "def broken(:\n")
    fp = setup_files(["python", "train.py"], [], tmp_path)
    assert files(fp) == ["train.py"]
    assert any(note.startswith("cannot parse train.py (SyntaxError") for note in fp.notes)


def test_a_module_chosen_at_run_time_is_noted(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "import importlib, sys\nimportlib.import_module('plugins.fast')\n"
                                "importlib.import_module(sys.argv[1])\n")
    write(tmp_path, "plugins/fast.py", "")
    fp = setup_files(["python", "train.py"], [], tmp_path)
    assert files(fp) == ["plugins/fast.py", "train.py"]
    assert any("imports a module chosen at run time (line 3)" in note for note in fp.notes)


def test_python_and_torch_versions_of_this_interpreter(tmp_path: Path) -> None:
    write(tmp_path, "train.py", "")
    versions = dict(setup_files(["python", "train.py"], [], tmp_path).versions)
    assert versions["python"] == platform.python_version()
    try:
        installed = metadata.version("torch")
    except metadata.PackageNotFoundError:  # the plugin alone, without its [train] extra
        assert "torch" not in versions
    else:
        assert versions["torch"] == installed


def test_another_interpreter_is_asked_for_its_versions_once(tmp_path: Path) -> None:
    wrapper = write(tmp_path, "bin/python3", f"#!/bin/sh\necho x >> {tmp_path}/asked\nexec {sys.executable} \"$@\"\n",
                    mode=0o755)
    write(tmp_path, "train.py", "")
    fingerprint._versions_of.cache_clear()
    for _ in range(2):
        fp = setup_files([str(wrapper), "train.py"], [], tmp_path)
        assert dict(fp.versions)["python"] == platform.python_version()
    assert (tmp_path / "asked").read_text() == "x\n"


def test_json_round_trip_and_wrong_shapes(nanogpt: Path) -> None:
    fp = setup_files(["python", "train.py", "--config", "README.md"], ["--data=missing/"], nanogpt)
    assert Fingerprint.from_json(fp.to_json()) == fp
    for bad in ([], {"files": ["a"]}, {"files": {"a": 1}}, {"notes": "x"}):
        with pytest.raises(ValueError, match="fingerprint"):
            Fingerprint.from_json(bad)


def test_recheck_names_a_file_that_disappeared(nanogpt: Path) -> None:
    fp = setup_files(["python", "train.py"], [], nanogpt)
    (nanogpt / "model.py").unlink()
    assert recheck(fp, nanogpt) == ["model.py cannot be read any more (No such file or directory)"]


def test_a_large_data_file_is_hashed_by_its_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint, "FULL_HASH_LIMIT", 1024)
    monkeypatch.setattr(fingerprint, "_EDGE", 16)
    big = write(tmp_path, "corpus.txt", "a" * 5000)
    digest = fingerprint.file_digest(big)
    assert digest.startswith("size-head-tail:")
    big.write_text("a" * 4999 + "b")
    assert fingerprint.file_digest(big) != digest


def test_fingerprinting_a_project_of_two_hundred_modules_is_fast(tmp_path: Path) -> None:
    for i in range(200):
        write(tmp_path, f"pkg/m{i}.py", "".join(f"import pkg.m{j}\n" for j in range(i + 1, min(i + 4, 200))))
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "train.py", "import pkg.m0\nimport torch, numpy, os\n")
    start = time.perf_counter()
    fp = setup_files(["python", "train.py"], [], tmp_path)
    assert len(fp.files) == 202
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    assert recheck(fp, tmp_path) == []
    assert time.perf_counter() - start < 0.2


def test_the_repositorys_own_trainer_is_found() -> None:
    root = Path(__file__).resolve().parent.parent
    fp = setup_files(["python", "train_llm.py"], ["--use_qk_norm"], root)
    assert files(fp) == ["train_llm.py"]
    assert os.path.basename(sys.executable).startswith("python") and dict(fp.versions)["python"]


def test_environment_values_join_the_setup_by_name_or_glob() -> None:
    env = {"DATA_VERSION": "v2", "HF_HOME": "/h", "HF_TOKEN": "hunter2", "OTHER": "x"}
    found = dict(fingerprint.environment_values(["DATA_VERSION", "HF_*", "NOT_SET"], env))
    assert found["env DATA_VERSION"] == "v2" and found["env HF_HOME"] == "/h"
    assert found["env NOT_SET"] == "(unset)"  # setting it later is a change
    assert found["env HF_TOKEN"].startswith("sha256:") and "hunter2" not in found["env HF_TOKEN"]
    assert "env OTHER" not in found
    before = Fingerprint(versions=tuple(sorted(found.items())))
    after = Fingerprint(versions=fingerprint.environment_values(["DATA_VERSION", "HF_*", "NOT_SET"],
                                                                {**env, "DATA_VERSION": "v3", "HF_NEW": "1"}))
    assert after.differences(before) == ["env DATA_VERSION v2 → v3", "env HF_NEW absent → 1"]
    assert after.digest() != before.digest()
