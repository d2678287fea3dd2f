"""A run's log file: every byte the trainer printed, capped, and marked where it was cut short.

A full disk or a file-size limit while writing it fails the run in one line (the log says
where it stopped) rather than leave a log that silently ends early.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

#: The most a run's log file holds; past it only a marker is written, and the tail at the end.
MAX_LOG_BYTES = 64 * 1024 * 1024


class RunLog:
    """The run's log file, capped: past the cap only a marker is written, and the tail at the end.

    A log that cannot be written (a full disk, a file-size limit) does not stop the run, but
    it fails it: the log is the run's record. The log's last few KiB are given up to say so
    in the log itself, where a reader of the file looks.
    """

    def __init__(self, path: Path, limit: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: output reaches the file as it arrives, so `tail -f` follows a long run.
        self._file = open(path, "wb", buffering=0)
        self._limit = limit
        self._written = 0
        self.truncated = False
        self.error: OSError | None = None
        # Which stream's output the log ends in the middle of a line of (None: at a line end).
        self._open_line: int | None = None

    def write_from(self, stream: int, data: bytes) -> None:
        """Output of one of the trainer's streams: a line the other one left open is ended first,
        so that the log, read again, gives the lines the live streams gave."""
        if self._open_line is not None and self._open_line != stream:
            self.write(b"\n")
        self.write(data)
        self._open_line = None if data.endswith((b"\n", b"\r")) else stream

    def write(self, data: bytes) -> None:
        if self.truncated or self.error is not None:
            return
        room = self._limit - self._written
        if len(data) > room:
            self._write_all(data[:room])
            self._write_all(b"\n[exprun: log truncated here; the last lines follow]\n")
            self.truncated = True
            return
        self._write_all(data)
        self._written += len(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) or 0 :]
        except OSError as exc:
            self.error = exc
            self._mark_cut_short()

    def _mark_cut_short(self) -> None:
        """Say in the log where it stops: make room by dropping its last whole blocks (a full
        disk or a file-size limit leaves none), then write the marker there."""
        marker = f"\n[exprun: the log was cut short here: {self.describe_error()}; the run failed]\n".encode()
        try:
            end = self._file.tell()
            keep = max(0, (end - 8192) // 4096 * 4096)
            self._file.truncate(keep)
            self._file.seek(keep)
            self._file.write(marker)
        except OSError:
            pass  # the marker is a courtesy; the run fails on self.error either way

    def describe_error(self) -> str:
        """The write error in a few words (``No space left on device``), or ""."""
        if self.error is None:
            return ""
        return self.error.strerror or str(self.error)

    def close(self, tail: deque[str]) -> None:
        if self.truncated and self.error is None:
            self._write_all("\n".join(tail).encode() + b"\n")
        try:
            self._file.close()
        except OSError as exc:
            self.error = self.error or exc
        if self.error is not None:
            tail.append(f"[exprun: the log file could not be written: {self.describe_error()}]")
