"""The builtin proxy's log file: its stdout, its stderr and its log records, rotated by size.

A proxy runs for as long as its service does — months — and logs a line per
route table it is given, so its log must not grow without bound. The file is
also the process's stdout and stderr (descriptors 1 and 2), where a crash
writes its traceback; so rotating it means renaming it to `<log>.1` (the one
older file kept, replacing the one before) and pointing descriptors 1 and 2
at a new file, which is what `RotatingOutput` does before a record would
take the file past `max_bytes`.

Nothing here runs per request.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_MAX_BYTES = 1024 * 1024
"""Size past which the proxy's log is rotated; it and the one older file are kept."""


def log_to(path: Path | None, max_bytes: int = LOG_MAX_BYTES) -> None:
    """Send the process's log records to `path`, rotated (to stderr when None: run by hand)."""
    log_format = "%(asctime)s %(levelname)s %(message)s"
    if path is None:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=log_format)
        return
    output = RotatingOutput(path, max_bytes)
    output.setFormatter(logging.Formatter(log_format))
    logging.basicConfig(level=logging.INFO, handlers=[output])


class RotatingOutput(logging.Handler):
    """Writes records to `path`, which it makes this process's stdout and stderr, rotating it by size."""

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES) -> None:
        super().__init__()
        self.path = path
        self.max_bytes = max_bytes
        self._point_output_at_the_file()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
            if os.fstat(2).st_size + len(line) > self.max_bytes:
                self.rotate()
            os.write(2, line)
        except OSError:
            self.handleError(record)

    def rotate(self) -> None:
        """`path` becomes `path.1`; output goes on in a new `path`."""
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._point_output_at_the_file()

    def _point_output_at_the_file(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            for target in (1, 2):
                os.dup2(fd, target, inheritable=False)
        finally:
            os.close(fd)
