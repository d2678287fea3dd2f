"""A plain ``pytest`` run, with no experiment, pays for nothing the protocol needs."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import Project

HEAVY = ("numpy", "scipy", "jinja2", "matplotlib")
#: exprun's layers a plain run must not import: the rules and statistics, the reports, the session.
LAYERS = ("pytest_exprun.decide", "pytest_exprun.reports", "pytest_exprun.session", "pytest_exprun.verdicts",
          "pytest_exprun.items", "pytest_exprun.store", "pytest_exprun.baseline")

PROBE = '''
import json
import sys


def test_what_is_imported():
    with open("imported.json", "w") as handle:
        json.dump(sorted(sys.modules), handle)
'''


@pytest.mark.parametrize("args", [
    (), ("-m", "not baseline"),
    pytest.param(("-p", "xdist", "-n", "0"), marks=pytest.mark.skipif(
        importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist: pip install -e '.[dev]'")),
])
def test_a_plain_run_imports_no_statistics_reports_or_protocol_modules(project: Project, args: tuple[str, ...]) -> None:
    project.pytester.makepyfile(test_probe=PROBE)
    result = project.run_subprocess(*args)
    result.assert_outcomes(passed=1)
    imported = json.loads((project.path / "imported.json").read_text())
    assert "pytest_exprun.plugin" in imported  # the plugin itself is loaded, through its entry point
    heavy = [m for m in imported if m.split(".")[0] in HEAVY]
    layers = [m for m in imported if m.startswith(LAYERS)]
    assert heavy == [] and layers == []


def test_collecting_only_imports_no_protocol_modules_either(project: Project) -> None:
    project.pytester.makepyfile(test_probe=PROBE.replace("def test_what_is_imported():",
                                                         "with open('imported.json', 'w') as handle:\n"
                                                         "    json.dump(sorted(sys.modules), handle)\n\n\n"
                                                         "def test_what_is_imported():"))
    result = project.run_subprocess("--co")
    assert result.ret == 0
    imported = json.loads((project.path / "imported.json").read_text())
    assert [m for m in imported if m.split(".")[0] in HEAVY or m.startswith(LAYERS)] == []
