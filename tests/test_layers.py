"""The package's shape: every module short enough to read in one sitting, and no import cycles.

Imports are read from the source (``ast``), never run. An import counts at *module level* when
it runs as its module is imported: in the module's body, also under ``if``, ``try``, ``with``
and class bodies. Imports inside functions run later and are checked on their own; imports
under ``if TYPE_CHECKING:`` never run and are not counted at all, nor are modules imported by a
name computed at run time (``importlib``), which cannot be read.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


PACKAGE = Path(__file__).resolve().parent.parent / "pytest_exprun"
MAX_LINES = 400
#: Modules whose functions import the implementations they choose between on first use: a
#: cycle through such an import is the registry's design (the executors' hook, for example).
LAZY_REGISTRIES = {"pytest_exprun.executors"}


@dataclass(frozen=True)
class Import:
    """One import of a module inside the package, from the module that has it."""

    source: str
    target: str
    line: int
    in_function: bool


def modules(package: Path) -> dict[str, Path]:
    """Every module of ``package`` by its dotted name; a package's ``__init__`` by the package's."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = (package.name, *path.relative_to(package).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``body`` that can run, and whether it runs inside a function."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _imports(node.body, True)
        elif isinstance(node, ast.If) and _type_checking(node.test):
            yield from _imports(node.orelse, in_function)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, []):
                    inner = child.body if isinstance(child, (ast.ExceptHandler, ast.match_case)) else [child]
                    yield from _imports(inner, in_function)


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """The package modules that ``name`` imports, ``from . import x`` and relative forms resolved.

    ``from pkg import x`` needs the module ``pkg.x`` when there is one, else ``pkg`` itself (even
    when ``pkg`` is the importer's own package). Importing ``a.b.c`` also runs the packages ``a``
    and ``a.b`` first; those count too, unless they are the importer's own (already running).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node, in_function in _imports(tree.body, False):
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parent = here.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            named = subs + ([base] if len(subs) < len(node.names) else [])
        for target in named:
            parts = target.split(".")
            for module in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                running = module != target and (name + ".").startswith(module + ".")
                if module in known and module != name and not running:
                    found.append(Import(name, module, node.lineno, in_function))
    return found


def import_graph(package: Path, with_functions: bool) -> dict[str, dict[str, Import]]:
    """Module -> the modules it imports (with the first import that does it)."""
    known = modules(package)
    graph: dict[str, dict[str, Import]] = {name: {} for name in known}
    for name, path in known.items():
        for imp in imports_of(name, path, known):
            if imp.in_function and (not with_functions or name in LAZY_REGISTRIES):
                continue
            graph[name].setdefault(imp.target, imp)
    return graph


def cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def describe(group: list[str], graph: dict[str, dict[str, Import]]) -> str:
    """One cycle as the imports that close it: ``a (line 3) -> b``."""
    edges = [f"{imp.source}:{imp.line} -> {imp.target}" for source in group for imp in graph[source].values()
             if imp.target in group]
    return "; ".join(edges)


# ------------------------------------------------------------------ the package
def test_no_module_is_over_400_lines() -> None:
    lengths = {path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
               for path in modules(PACKAGE).values()}
    over = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: " + ", ".join(f"{name} ({n})" for name, n in over.items())


def test_no_import_cycle_between_the_packages_modules_at_module_level() -> None:
    graph = import_graph(PACKAGE, with_functions=False)
    assert len(graph) > 30  # the package was found
    found = cycles(graph)
    assert not found, "import cycles at module level: " + " | ".join(describe(g, graph) for g in found)


def test_imports_inside_functions_close_no_cycle_except_in_a_lazy_registry() -> None:
    graph = import_graph(PACKAGE, with_functions=True)
    found = cycles(graph)
    assert not found, "import cycles through imports in functions: " + " | ".join(describe(g, graph) for g in found)


# ------------------------------------------------------------------ the checker itself
def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_checker_finds_a_cycle_through_from_dot_import_and_relative_forms(tmp_path: Path) -> None:
    package = write(tmp_path, {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "try:\n    from .sub.c import X\nexcept ImportError:\n    X = None\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..a import thing\n",
        "alone.py": "import pkg.a\nimport os\n",
    })
    graph = import_graph(package, with_functions=False)
    assert set(graph["pkg.b"]) == {"pkg.sub", "pkg.sub.c"}  # a sub-package's __init__ runs first
    assert set(graph["pkg.alone"]) == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert describe(cycles(graph)[0], graph) == ("pkg.a:1 -> pkg.b; pkg.b:2 -> pkg.sub.c; "
                                                  "pkg.sub.c:1 -> pkg.a")


def test_the_checker_finds_a_module_that_needs_its_own_package_while_the_package_imports_it(
        tmp_path: Path) -> None:
    package = write(tmp_path, {
        "__init__.py": "from .impl import Impl\n",
        "base.py": "class Base: ...\n",
        "impl.py": "from . import base\nfrom . import Base\n",
    })
    graph = import_graph(package, with_functions=False)
    assert set(graph["pkg.impl"]) == {"pkg.base", "pkg"}
    assert cycles(graph) == [["pkg", "pkg.impl"]]


def test_the_checker_counts_function_imports_apart_and_type_checking_imports_not_at_all(tmp_path: Path) -> None:
    package = write(tmp_path, {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nelse:\n    B = None\n",
        "b.py": "from .a import B\n\ndef later():\n    from . import c\n",
        "c.py": "import typing\nif typing.TYPE_CHECKING:\n    import pkg.b\n\nclass C:\n    def f(self):\n"
                "        from pkg import b\n",
    })
    assert cycles(import_graph(package, with_functions=False)) == []
    assert cycles(import_graph(package, with_functions=True)) == [["pkg.b", "pkg.c"]]
