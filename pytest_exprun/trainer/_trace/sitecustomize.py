"""pytest-exprun's run-time tracer: which files a trainer's Python processes read.

exprun puts this folder first on a run's ``PYTHONPATH``, so every Python process of the run
(the trainer as a script, with ``-m``, by a shebang or from a shell wrapper, and its Python
children) imports it at start-up. It adds a PEP 578 audit hook that appends to the file named
by ``EXPRUN_TRACE_FILE`` one line per path, the first time a process sees it:

- ``r<TAB>path``: a file opened for reading, or a module's source executed (``exec`` gives
  the source path even when Python read a cached ``.pyc``);
- ``w<TAB>path``: a file opened for writing (what a run writes is not one of its inputs);
- ``d<TAB>path``: a directory listed by the trainer's code (a glob over a data folder), not
  by the import system;
- ``p<TAB>site-dir<TAB>top-level name``: something read from an installed package, which
  exprun maps to the distribution and its version afterwards;
- ``!<TAB>reason``: the trace stopped early (it is bounded in size).

A path holding a newline, carriage return or tab is written escaped (``unicode_escape``), its
kind in capitals (``R``, ``W``, ``D``).

The interpreter's own library, system and cache folders outside the project, the bytecode cache
(``sys.pycache_prefix``, wherever it is), version-control metadata (``.git/``), and the folders in
``EXPRUN_TRACE_SKIP`` (the run's output, checkpoints and research dirs) are left out here, so a
run pays for a few hundred lines at most. Model caches (the Hugging Face hub and datasets caches,
torch hub) are traced wherever they are: downloaded weights and tokenizers are inputs. Folders
listed by the import system or by package-metadata scans (``importlib.metadata``, ``pkgutil``) are
not the trainer's listings and are left out. Files a C extension maps into memory (safetensors,
numpy and Arrow memory maps) raise no audit event; the ones still mapped when a process exits are
read from ``/proc/self/maps`` then. The hook does as little as it can: a set lookup
for a path seen before. Then the user's own ``sitecustomize``, if there is one further along
``sys.path``, is imported as it would have been without exprun.
"""

from __future__ import annotations

import _thread
import atexit
import os
import sys

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing would slow every run's start-up
if TYPE_CHECKING:
    from typing import Any

_TRACE_ENV = "EXPRUN_TRACE_FILE"
_SKIP_ENV = "EXPRUN_TRACE_SKIP"
_ROOT_ENV = "EXPRUN_TRACE_ROOT"
_LIMIT = 4 * 1024 * 1024
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | getattr(os, "O_CREAT", 0) | getattr(os, "O_TRUNC", 0)


def _folder(path: str) -> str:
    return os.path.join(os.path.abspath(path), "")


def _install(trace: str) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    home = os.path.expanduser("~")
    root = os.environ.get(_ROOT_ENV)
    roots = (_folder(root),) if root else ()
    # Outside the project these are the interpreter's, the system's, or rebuilt caches.
    outside = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, "/proc", "/sys", "/dev",
               "/run", "/etc", "/usr/share", "/tmp", "/var/tmp", os.environ.get("TMPDIR", "/tmp"),
               os.path.join(home, ".cache"), os.path.join(home, ".triton"), os.path.join(home, ".nv"),
               os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")}
    outside.add(os.path.dirname(os.__file__))  # the standard library, without importing sysconfig
    skipped = tuple(_folder(p) for p in os.environ.get(_SKIP_ENV, "").split(os.pathsep) if p)
    skipped += (_folder(here),)
    if sys.pycache_prefix:  # the bytecode cache (exprun's in the user's cache dir, or the user's own)
        skipped += (_folder(sys.pycache_prefix),)
    outside_t = tuple(_folder(p) for p in outside if p)
    inside = roots + _model_caches(home)
    seen: set[str] = set()
    # ``busy``: the thread writing a line, whose own ``open`` of the trace must not be traced.
    state: dict[str, Any] = {"fd": None, "off": False, "busy": None}
    ident = _thread.get_ident

    def emit(line: str) -> None:
        if state["off"]:
            return
        state["busy"] = ident()
        try:
            if state["fd"] is None:
                state["fd"] = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fd = state["fd"]
            if os.fstat(fd).st_size > _LIMIT:
                state["off"] = True
                line = "!\tthe trace reached its size limit; later files were not traced\n"
            os.write(fd, line.encode("utf-8", "surrogateescape"))
        except OSError:
            state["off"] = True
        finally:
            state["busy"] = None

    def note(kind: str, path: Any) -> None:
        # The hot path (thousands of module sources while torch imports): an absolute path seen before.
        if type(path) is str and path[:1] == "/":
            key = kind + path
            if key in seen:
                return
            seen.add(key)
            if "/." in path or "//" in path:
                path = os.path.normpath(path)
        else:
            try:
                path = os.path.abspath(os.fsdecode(path))  # relative to the cwd of this moment
            except (TypeError, ValueError):
                return
            key = kind + path
            if key in seen:
                return
            seen.add(key)
        # A folder is inside itself: the project root's own listing is the project's.
        probe = path + "/"
        if path == trace or probe.startswith(skipped) or any(vcs in probe for vcs in _VCS):
            return
        for marker in ("/site-packages/", "/dist-packages/"):
            at = path.find(marker)
            if at >= 0:
                if kind == "r":
                    line = "p\t" + path[:at + len(marker) - 1] + "\t" + path[at + len(marker):].split("/", 1)[0] + "\n"
                    if line not in seen:
                        seen.add(line)
                        emit(line)
                return
        if not probe.startswith(inside) and probe.startswith(outside_t):
            return
        if "\n" in path or "\r" in path or "\t" in path:  # one line per path: escaped, the kind in capitals
            kind, path = kind.upper(), path.encode("unicode_escape").decode("ascii")
        emit(kind + "\t" + path + "\n")

    wanted = frozenset(("open", "exec", "import", "os.listdir", "os.scandir"))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in wanted or (state["busy"] is not None and state["busy"] == ident()):
            return
        try:
            trace_event(event, args)
        except Exception:  # noqa: BLE001 - tracing must never break the trainer's own call
            pass

    def trace_event(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path = args[0]
            if isinstance(path, int):
                return
            mode, flags = args[1], args[2]
            if mode is None:
                writing = bool(flags & _WRITE_FLAGS)
            else:
                writing = "w" in mode or "a" in mode or "x" in mode or "+" in mode
            if not writing and str(path).endswith(".pyc"):
                return  # the module's source is traced by its ``exec``
            note("w" if writing else "r", path)
        elif event == "exec":
            filename = getattr(args[0], "co_filename", "")
            if filename and filename[0] != "<":
                note("r", filename)
        elif event == "import":
            if len(args) > 1 and isinstance(args[1], str):
                note("r", args[1])  # an extension module (.so): loaded without an ``open`` event
        elif event == "os.listdir" or event == "os.scandir":
            if _by_machinery(sys._getframe(2)):  # past this function and ``hook``
                return
            path = args[0]
            if path is None or isinstance(path, int):
                path = "."
            note("d", path)

    def mapped() -> None:
        """Files still mapped into memory at exit: what a C extension read without an audit event."""
        try:
            with open("/proc/self/maps", "rb") as handle:
                maps = handle.read().decode("utf-8", "surrogateescape")
        except OSError:
            return
        for row in maps.splitlines():
            fields = row.split(None, 5)
            if len(fields) < 6 or fields[5][:1] != "/" or fields[5].endswith(" (deleted)"):
                continue
            path = fields[5]
            base = path.rpartition("/")[2]
            if path.startswith(_SYSTEM) or base.endswith(".so") or ".so." in base:
                continue  # shared libraries the loader mapped: code, traced as packages by their import
            note("r", path)

    sys.addaudithook(hook)
    atexit.register(mapped)


#: System folders whose mapped files (libraries, locales) are the machine's, not the project's.
_SYSTEM = ("/usr/", "/lib/", "/lib64/", "/bin/", "/sbin/", "/var/", "/snap/", "/nix/")
#: Folders of version-control metadata: a new commit is not a new setup.
_VCS = ("/.git/", "/.hg/", "/.svn/")
#: Code of the import system and of package-metadata scans: the folders it lists are not the trainer's.
_MACHINERY = ("<frozen importlib", "<frozen zipimport", "/importlib/", "/pkgutil.py", "/pkg_resources/", "/site.py")


def _by_machinery(frame: Any) -> bool:
    """Whether a listing comes from the import system or a package-metadata scan, anywhere up the stack."""
    depth = 0
    while frame is not None and depth < 64:
        name = frame.f_code.co_filename
        if name.startswith(_MACHINERY[:2]) or any(part in name for part in _MACHINERY[2:]):
            return True
        frame, depth = frame.f_back, depth + 1
    return False


def _model_caches(home: str) -> tuple[str, ...]:
    """Where downloaded models, tokenizers and datasets are kept: traced even under ~/.cache or /tmp."""
    env = os.environ
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    hf_home = env.get("HF_HOME") or os.path.join(xdg, "huggingface")
    torch_home = env.get("TORCH_HOME") or os.path.join(xdg, "torch")
    found = [os.path.join(hf_home, "hub"), os.path.join(hf_home, "datasets"), os.path.join(torch_home, "hub")]
    found += [env[name] for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE",
                                     "HF_DATASETS_CACHE") if env.get(name)]
    return tuple(_folder(p) for p in found)


def _chain() -> None:
    """Import the user's own ``sitecustomize``, the one Python would have found without exprun."""
    # importlib's frozen halves are loaded already: nothing more is imported at start-up.
    bootstrap, external = sys.modules["_frozen_importlib"], sys.modules["_frozen_importlib_external"]
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = external.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = bootstrap.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if os.environ.get(_TRACE_ENV):
    _install(os.environ[_TRACE_ENV])
_chain()
