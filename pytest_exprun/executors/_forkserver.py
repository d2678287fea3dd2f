"""The fork server's own program: run as ``<python> _forkserver.py FD TARGET KIND PRELOAD``.

It imports the trainer's third-party modules once, checks that forking from here is exact
(no thread started, CUDA not initialised, no clean-interpreter ``multiprocessing`` start
method chosen), then forks one child per request. A child becomes the run as a fresh
``python script.py`` would: its own session and process group, the run's argv, environment
and working directory, stdout and stderr on the pipe it was sent, stdin on /dev/null, the
script run as ``__main__`` (a module with ``python -m``, by ``runpy`` as the interpreter does). The server reaps children and reports each exit.

Messages are JSON lines on a Unix socket (file descriptor FD): to the server
``{"id", "argv", "env", "cwd"}`` with the output pipe's write end attached; from it
``{"ready"}`` or ``{"refused": why}``, ``{"started": id, "pid"}``, ``{"exit": pid, "code", "cpu"}``
(``cpu``: the child's user + system seconds and its waited-for descendants', from ``os.wait4``).

Only the standard library is imported here, before the preload: this file runs under the
trainer's interpreter, which need not have pytest-exprun installed.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.machinery
import io
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import types
from typing import Any

#: Most bytes one request may take (argv and environment).
MAX_MESSAGE = 1 << 22


def main(argv: list[str]) -> int:
    fd, target, kind, preload = int(argv[1]), argv[2], argv[3], json.loads(argv[4])
    sock = socket.socket(fileno=fd)
    # As `python script.py` / `python -m module` would: the script's folder (or the cwd) first.
    sys.path[0] = os.path.dirname(os.path.abspath(target)) if kind == "script" else os.getcwd()
    why = _preload(preload)
    if why is not None:
        _send(sock, {"refused": why})
        return 0
    _send(sock, {"ready": True})
    child = _serve(sock, target, kind)
    if child is None:
        return 0
    return _run(*child)


def _preload(modules: list[str]) -> str | None:
    """Import ``modules`` (those that fail are left for the run to import); why forking would not be exact, or None."""
    for name in modules:
        try:
            _import(name)
        except Exception:  # noqa: BLE001 - an optional import of the trainer's (try: import wandb ...)
            continue
    if threading.active_count() > 1:
        names = ", ".join(sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()))
        return f"importing the trainer's libraries started {threading.active_count() - 1} thread(s) ({names})"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        return "importing the trainer's libraries initialised CUDA"
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        method = multiprocessing.get_start_method(allow_none=True)
        if method in ("spawn", "forkserver"):
            return f"importing the trainer's libraries set the multiprocessing start method to {method!r}"
    return None


def _import(name: str) -> None:
    """``import name``, or for ``from package import Name`` (scanned as ``package.Name``) the
    attribute: libraries such as transformers import a class's module only when the attribute is
    first looked up (a lazy module), so importing the package alone would leave the run that work."""
    try:
        importlib.import_module(name)
        return
    except ModuleNotFoundError as exc:
        parent, _, attribute = name.rpartition(".")
        if not parent or exc.name != name:
            raise
    getattr(importlib.import_module(parent), attribute)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


def _serve(sock: socket.socket, target: str, kind: str) -> tuple[str, str, dict[str, Any], int, int] | None:
    """Fork a child per request until the socket closes. In a child, return what it runs."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    buffer = b""
    fds: list[int] = []  # pipes received, two per request (stdout, stderr), in order; a request may span reads
    children: set[int] = set()
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                os.read(wake_r, 4096)
            else:
                data, received, _, _ = socket.recv_fds(sock, 1 << 16, 8)
                fds.extend(received)
                if not data:
                    for fd in fds:
                        os.close(fd)
                    return None  # the session is over; running children go on until it ends them
                buffer += data
                if len(buffer) > MAX_MESSAGE:
                    return None
                while b"\n" in buffer and len(fds) >= 2:
                    line, buffer = buffer.split(b"\n", 1)
                    request, out, err = json.loads(line), fds.pop(0), fds.pop(0)
                    pid = os.fork()
                    if pid == 0:
                        selector.close()
                        sock.close()
                        os.close(wake_r)
                        os.close(wake_w)
                        return target, kind, request, out, err
                    os.close(out)
                    os.close(err)
                    children.add(pid)
                    _send(sock, {"started": request["id"], "pid": pid})
        for pid in list(children):
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                # The child's CPU time with its waited-for descendants', as a local run's is taken.
                _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status),
                             "cpu": usage.ru_utime + usage.ru_stime})


def _run(target: str, kind: str, request: dict[str, Any], out: int, err: int) -> int:
    """Become the run: what a fresh interpreter would set up, then the script as ``__main__``."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # its own session and process group, as the local executor starts a trainer
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)  # a stream of its own, as for a local run: a \r bar there never glues onto stdout
    os.close(null)
    os.close(out)
    os.close(err)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED")) or "-u" in getattr(sys, "orig_argv", ())
    sys.stdin = sys.__stdin__ = _stream(0, "r", False, sys.stdin.encoding, sys.stdin.errors, False)  # type: ignore[misc]
    sys.stdout = sys.__stdout__ = _stream(1, "w", unbuffered, sys.stdout.encoding, sys.stdout.errors,  # type: ignore[misc]
                                          False)
    sys.stderr = sys.__stderr__ = _stream(2, "w", unbuffered, sys.stderr.encoding,  # type: ignore[misc]
                                          "backslashreplace", True)
    _reseed()
    sys.argv = list(request["argv"])
    try:
        if kind == "script":
            _run_script(target)
        else:
            sys.argv[0] = target  # as -m does, until runpy puts the module's path there
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        return _exit_code(stop.code)
    except BaseException:  # noqa: BLE001 - as the interpreter does: the traceback, then exit code 1
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def _stream(fd: int, mode: str, unbuffered: bool, encoding: str, errors: str | None,
            line_buffering: bool) -> io.TextIOWrapper:
    """A standard stream on ``fd`` as the interpreter makes one for a pipe (``-u``: unbuffered)."""
    raw = io.FileIO(fd, mode, closefd=False)
    binary: io.RawIOBase | io.BufferedIOBase = raw
    if not (unbuffered and mode == "w"):
        binary = io.BufferedWriter(raw) if mode == "w" else io.BufferedReader(raw)
    return io.TextIOWrapper(binary, encoding=encoding, errors=errors, line_buffering=line_buffering,  # type: ignore[arg-type]
                            write_through=unbuffered and mode == "w")


def _run_script(target: str) -> None:
    """``python script.py``'s ``__main__``: ``sys.argv[0]`` as given, ``__file__`` absolute (Python 3.9+).

    ``runpy.run_path`` would set both to the one path it is given, so the script is executed
    here as the interpreter does it: a fresh ``__main__`` module, the source compiled uncached.
    """
    path = os.path.abspath(target)
    with io.open_code(path) as handle:
        code = compile(handle.read(), path, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=path, __cached__=None, __builtins__=builtins, __spec__=None, __package__=None,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", path))
    sys.modules["__main__"] = main
    sys.argv[0] = target
    exec(code, main.__dict__)


def _exit_code(code: object) -> int:
    """What ``sys.exit(code)`` makes the exit status, as the interpreter maps it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _reseed() -> None:
    """Random state a fresh interpreter draws from the OS, drawn again: forked children would share it."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()
    numpy_random = getattr(sys.modules.get("numpy"), "random", None)
    if numpy_random is not None:
        numpy_random.seed()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
