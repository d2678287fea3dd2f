"""Which project files a trainer's Python code imports, found by reading it (``ast``), never by running it.

The other half of ``files``: a Python file can run a script in turn (nanoGPT's
``exec(open("configurator.py").read())``), which goes back to ``TrainerScan.script``, so the
two halves call each other through the scan and only ``files`` imports this module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: files imports this module
    from .files import TrainerScan


def follow_file(scan: TrainerScan, path: Path, entry: bool) -> None:
    """Follow one Python file's imports, once; an entry script's folder is where Python starts its search."""
    resolved = scan.resolve(path)
    if resolved in scan.scanned:
        return
    scan.scanned.add(resolved)
    try:
        source = resolved.read_bytes()
    except OSError:
        return
    follow_source(scan, source, resolved, resolved.parent if entry else None, scan.name(resolved))


def follow_source(scan: TrainerScan, source: str | bytes, path: Path, entry_dir: Path | None, what: str) -> None:
    """Follow the imports of one Python source (every ``import``, also inside functions and ``try``).

    Absolute imports resolve against the import roots: a script's own folder (Python puts
    it first on ``sys.path``), PYTHONPATH and ``src/``; relative ones against the file's folder.
    """
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError) as exc:
        scan.notes.append(f"cannot parse {what} ({type(exc).__name__}: {exc}); the modules it imports are "
                          "not fingerprinted")
        return
    roots = [entry_dir, *scan.extra_paths] if entry_dir is not None else list(scan.roots or scan.extra_paths)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                follow_module(scan, alias.name, roots, f"imported by {what}")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            search = roots
            if node.level:
                folder = path.parent
                for _ in range(node.level - 1):
                    folder = folder.parent
                search = [folder]
            found = follow_module(scan, base, search, f"imported by {what}") if base else False
            for alias in node.names:
                if alias.name != "*":
                    sub = f"{base}.{alias.name}" if base else alias.name
                    found = follow_module(scan, sub, search, f"imported by {what}") or found
            if node.level and not found:
                scan.notes.append(f"{what}: relative import on line {node.lineno} not found in the project")
        elif isinstance(node, ast.Call):
            _dynamic(scan, node, roots, path, what)


def _dynamic(scan: TrainerScan, node: ast.Call, roots: list[Path], path: Path, what: str) -> None:
    """``importlib.import_module("x")``, ``__import__("x")`` and nanoGPT's ``exec(open("configurator.py").read())``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    first = node.args[0] if node.args else None
    if name in {"import_module", "__import__"}:
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            follow_module(scan, first.value, roots, f"imported by {what}")
        elif first is not None:
            scan.notes.append(f"{what} imports a module chosen at run time (line {node.lineno}); add it with "
                              "exprun_fingerprint_include")
    elif name in {"exec", "runpy", "run_path"} and first is not None:
        for inner in ast.walk(first):
            if (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id == "open"
                    and inner.args and isinstance(inner.args[0], ast.Constant) and isinstance(inner.args[0].value, str)):
                target = Path(inner.args[0].value)
                for base in (scan.rootdir, path.parent):
                    candidate = target if target.is_absolute() else base / target
                    if candidate.is_file() and scan.inside(candidate):
                        scan.script(candidate, f"run by {what}")
                        break


def follow_module(scan: TrainerScan, dotted: str, roots: Iterable[Path], why: str) -> bool:
    """Fingerprint the project files an import of ``dotted`` runs: each package's ``__init__.py`` and the module."""
    if not dotted or not all(part.isidentifier() for part in dotted.split(".")):
        return False
    parts = dotted.split(".")
    if parts[0] == "torch":
        scan.imports_torch = True
    key = (dotted, tuple(roots))
    if key not in scan.modules:
        scan.modules[key] = False  # an import cycle ends here
        scan.modules[key] = _find_module(scan, parts, key[1], why)
    return scan.modules[key]


def _find_module(scan: TrainerScan, parts: list[str], roots: tuple[Path, ...], why: str) -> bool:
    for root in roots:
        found: list[Path] = []
        folder = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            module_file = folder / f"{part}.py"
            package_init = folder / part / "__init__.py"
            if package_init.is_file():
                found.append(package_init)
                folder = folder / part
            elif module_file.is_file() and last:
                found.append(module_file)
            elif (folder / part).is_dir() and not last:
                folder = folder / part  # a namespace package
            else:
                found = [] if i == 0 else found
                break
        if found and all(scan.inside(p) for p in found):
            for path in found:
                if scan.add(path, why):
                    follow_file(scan, path, entry=False)
            return True
    return False
