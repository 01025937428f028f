"""Per-release counters of an nginx, read from its JSON access log.

nginx's open-source build exposes no per-upstream counters, but logs every
request; `config` makes each line `{"r": release, "s": status, "t":
seconds, "a": upstream address, "p": worker pid, "m": time}` (the last three
for people reading the log). The reader keeps its file offset and the
tallies so far, and reads only what was appended since — so a stats call costs
what the traffic since the last one costs.

The log is truncated when the driver starts a new nginx, so the tallies of one
log are those of one nginx master (`boot`). A new reader (after a controller
restart) reads the log from the start and arrives at the same counts.
"""

from __future__ import annotations

import json
from pathlib import Path

from stagewise.routers.common.tallies import Tallies, Tally

CHUNK = 4 * 1024 * 1024


class AccessLog:
    """Tallies of one nginx's access log, read incrementally."""

    def __init__(self, path: Path, boot: str) -> None:
        self.path = path
        self.boot = boot
        self.offset = 0
        self.tallies: Tallies = {}
        self._partial = b""

    def read(self) -> Tallies:
        """Fold the lines appended since the last read into the tallies; the tallies."""
        try:
            with open(self.path, "rb") as log:
                size = log.seek(0, 2)
                if size < self.offset:  # truncated under us: a new nginx began a new log
                    self.offset, self.tallies, self._partial = 0, {}, b""
                log.seek(self.offset)
                while data := log.read(CHUNK):
                    self.offset += len(data)
                    self._take(data)
        except FileNotFoundError:
            pass
        return self.tallies

    def _take(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                entry = json.loads(line)
                release, status, seconds = str(entry["r"]), int(entry["s"]), float(entry["t"])
            except (ValueError, KeyError, TypeError):
                continue
            if not release:
                continue  # nginx answered without an upstream (none reachable): no release to blame
            tally = self.tallies.get(release)
            if tally is None:
                tally = self.tallies[release] = Tally()
            tally.add(error=status >= 500, latency_ms=seconds * 1000.0)
