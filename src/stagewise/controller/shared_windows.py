"""The freeze windows every service shares: a `kind: Windows` file the server reads (`--windows FILE`).

Read again whenever the file changes (its modification time, size and inode),
so a freeze for an incident or a holiday is declared by editing one file,
without restarting the server or re-applying any service. A file that
cannot be read or is invalid keeps the windows read last — a typo must not
lift a freeze — and says why once, in the log and through `problem`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from stagewise.core.gates_spec import WindowSpec
from stagewise.errors import SpecError
from stagewise.spec import load_windows

log = logging.getLogger("stagewise.windows")


class SharedWindows:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._windows: list[WindowSpec] = []
        self.problem: str | None = None
        """Why the file's last version was not taken (the windows read before it still hold)."""

    def current(self) -> list[WindowSpec]:
        """The windows of the file as last read well."""
        if self.path is None:
            return []
        try:
            info = os.stat(self.path)
            seen = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError as exc:
            self._report(f"{self.path}: cannot read the windows file: {exc.strerror or exc}")
            return self._windows
        if seen != self._seen:
            self._seen = seen
            try:
                self._windows = list(load_windows(self.path).windows)
                self.problem = None
                log.info("windows from %s: %d", self.path, len(self._windows))
            except SpecError as exc:
                self._report(f"the windows file is invalid, the windows read before still hold: {exc}")
        return self._windows

    def _report(self, problem: str) -> None:
        if problem != self.problem:
            log.error("%s", problem)
        self.problem = problem
