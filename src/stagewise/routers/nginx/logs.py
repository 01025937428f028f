"""Per-release counters of an nginx, from its JSON access log, which is rotated as it is read.

nginx's open-source build exposes no per-upstream counters, but logs every
request; `config` makes each line `{"r": release, "s": status, "t": seconds,
"a": upstream address, "p": worker pid, "m": time}` (the last three for
people reading the log).

Two things make reading that log harder than tailing it:

- nginx writes a request's line *after* it has sent the response. A client
  can hold its answer while the worker that sent it has not written the line
  yet (a loaded machine preempts the worker between the two), so a count read
  from the file at that moment misses a request that has completed.
- the log must not grow without bound.

Both are solved by one rotation, done under a lock (`counts.lock`, so that
several readers — two driver objects, two processes — take turns):

1. rename `access.log` to `access.log.<n>` (nginx keeps writing to it: the
   descriptor follows the file);
2. send SIGUSR1 ("reopen your logs") to the master and every worker, and wait
   until none of them holds `access.log.<n>` any more. A worker handles the
   signal between two events, so by then it has finished whatever it was
   doing when `collect` began — the line of every request answered before
   is in `access.log.<n>`, whole;
3. fold that file into the tallies, persist them with `n` in `counts.json`
   (atomically), then delete the file. A reader that stops midway leaves
   either a file numbered above the persisted `n` (read next time) or one at
   or below it (already counted: deleted unread), so nothing is counted
   twice or lost.

`collect` does this on every `stats()` call; `Rotator` does it in the
background when the log passes a size, so a log nobody asks about stays
small too. The tallies belong to one nginx master (`boot`): the driver
clears the files when it starts a new one.

nginx workers reopen the log by its path, as the user they run as. Started
as root, they run as an unprivileged user (`runtime.WorkerUser`) that may
not create files where the log lives: so after each rename this module makes
the new, empty `access.log` itself, owned by that user (`owner`), before it
signals anyone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from stagewise.basics import files, proc, waiting
from stagewise.errors import RouterError
from stagewise.routers.common.tallies import Tallies, Tally
from stagewise.routers.nginx.config import Paths

log = logging.getLogger("stagewise.router.nginx")

ROTATE_BYTES = 16 * 1024 * 1024
"""The background rotation's threshold: the access log is read and emptied once it is this large."""
ROTATE_EVERY = 1.0
"""Seconds between two looks at the access log's size in the background."""
REOPEN_TIMEOUT = 10.0
"""Longest wait for every nginx process to reopen its log; a worker handles the signal between two events."""
_SIGNAL_AGAIN = 1.0
_REOPEN_POLL = 0.002


class AccessLog:
    """The counts of one nginx's access log, kept in `counts.json` in the state folder."""

    def __init__(self, paths: Paths, *, owner: tuple[int, int] | None = None) -> None:
        self.paths = paths
        self.owner = owner
        """(uid, gid) of the workers, when they run as another user: the owner of each new access.log."""

    def collect(self, master: int, boot: str, *, rotate_bytes: int = 0) -> Tallies:
        """The tallies of every request nginx has answered so far — rotating the log to be sure of it.

        With `rotate_bytes`, only a log at least that large is rotated (the background's way); then the
        tallies returned may lag. Blocking: call it from a thread.
        """
        with files.locked(self.paths.counts_lock):
            seq, tallies = self._load(boot)
            pending = []
            for n, path in self._rotated():
                if n <= seq:
                    path.unlink(missing_ok=True)  # counted by a reader that stopped before deleting it
                else:
                    pending.append((n, path))
            if not pending:
                if rotate_bytes and _size(self.paths.access_log) < rotate_bytes:
                    return tallies
                target = self.paths.access_log.with_name(f"{self.paths.access_log.name}.{seq + 1}")
                with contextlib.suppress(FileNotFoundError):  # none yet: the reopen below creates it
                    self.paths.access_log.rename(target)
                    pending.append((seq + 1, target))
                self.make_log()
            self._reopen(master, [path for _, path in pending])
            for n, path in pending:
                _fold(path, tallies)
                seq = max(seq, n)
            self._save(boot, seq, tallies)
            for _, path in pending:
                path.unlink(missing_ok=True)
            return tallies

    def clear(self) -> None:
        """Forget every count and log file (before a new nginx master starts: a new `boot`)."""
        with files.locked(self.paths.counts_lock):
            for _, path in self._rotated():
                path.unlink(missing_ok=True)
            for path in (self.paths.access_log, self.paths.counts):
                path.unlink(missing_ok=True)

    def make_log(self) -> None:
        """An empty access.log (and error.log) the workers may open, when they run as another user; else nothing.

        nginx's master would create the files on reopening (and hand them over to the workers' user), but a
        worker signalled directly may try first: it cannot create a file in a folder that is not its own.
        """
        if self.owner is None:
            return
        for path in (self.paths.access_log, self.paths.error_log):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.fchown(fd, *self.owner)
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)

    def log_files(self) -> list[Path]:
        """The access log and its rotated files that exist now."""
        return [self.paths.access_log, *(path for _, path in self._rotated())]

    # -- steps ---------------------------------------------------------------------------------

    def _reopen(self, master: int, logs: list[Path]) -> None:
        """Have nginx reopen its logs; return once no nginx process holds any of `logs`."""
        wanted = set()
        for path in logs:
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                wanted.add((st.st_dev, st.st_ino))
        held: dict[int, list[Path]] = {}
        """Per process, its descriptors that were open on a wanted file at the first look."""
        deadline = waiting.Deadline(REOPEN_TIMEOUT)
        signalled = -_SIGNAL_AGAIN
        while True:
            pids = [master, *proc.children(master)]
            if time.monotonic() - signalled >= _SIGNAL_AGAIN:
                # to every process, not only through the master: it passes the signal on over a channel
                # that a worker about to exit may no longer read; again now and then, in case a worker
                # got it while it was already reopening
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGUSR1)
                signalled = time.monotonic()
            if not wanted:
                return  # no log to wait for: the reopen makes one
            for pid in pids:
                if pid not in held:  # a worker's descriptors are many (its connections): look at all once
                    held[pid] = _descriptors_on(proc.descriptors(pid), wanted)
            holding = [pid for pid, fds in held.items() if fds and _descriptors_on(fds, wanted)]
            if not holding:
                return
            if deadline.expired:
                raise RouterError(f"nginx processes {holding} did not reopen their access log within "
                                  f"{REOPEN_TIMEOUT:.0f} s: {files.tail(self.paths.error_log)}")
            time.sleep(deadline.nap(_REOPEN_POLL))

    def _rotated(self) -> list[tuple[int, Path]]:
        prefix = self.paths.access_log.name + "."
        out = []
        for path in self.paths.access_log.parent.iterdir():
            suffix = path.name[len(prefix):] if path.name.startswith(prefix) else ""
            if suffix.isdigit():
                out.append((int(suffix), path))
        return sorted(out)

    def _load(self, boot: str) -> tuple[int, Tallies]:
        """The number of the last rotated file read, and the tallies of `boot` so far."""
        try:
            state = json.loads(self.paths.counts.read_text())
        except (OSError, ValueError):
            return 0, {}
        if not isinstance(state, dict) or not isinstance(state.get("seq"), int):
            return 0, {}
        tallies = state.get("tallies")
        if state.get("boot") != boot or not isinstance(tallies, dict):
            return state["seq"], {}  # a new master: its counts start from zero (its log did too)
        return state["seq"], {str(r): Tally.from_json(t) for r, t in tallies.items()}

    def _save(self, boot: str, seq: int, tallies: Tallies) -> None:
        data = {"boot": boot, "seq": seq, "tallies": {r: t.to_json() for r, t in tallies.items()}}
        files.write_atomic(self.paths.counts, json.dumps(data))


class Rotator:
    """Rotates one nginx's access log in the background whenever it has grown past `rotate_bytes`."""

    def __init__(self, access_log: AccessLog, master: int, boot: str, *, rotate_bytes: int = ROTATE_BYTES,
                 every: float = ROTATE_EVERY) -> None:
        self.access_log = access_log
        self.master, self.boot = master, boot
        self.rotate_bytes, self.every = rotate_bytes, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nginx-log {access_log.paths.folder}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(REOPEN_TIMEOUT + 5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if not proc.alive(self.master):
                return  # the next start makes a new one
            try:
                self.access_log.collect(self.master, self.boot, rotate_bytes=self.rotate_bytes)
            except (OSError, RouterError) as exc:
                log.warning("cannot rotate %s: %s", self.access_log.paths.access_log, exc)


def _fold(path: Path, tallies: Tallies) -> None:
    """Add the requests logged in a rotated file (which no process writes any more) to `tallies`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            entry = json.loads(line)
            release, status, seconds = str(entry["r"]), int(entry["s"]), float(entry["t"])
        except (ValueError, KeyError, TypeError):
            continue  # not a request line nginx finished writing (a disk that filled up)
        if not release:
            continue  # nginx answered without an upstream (none reachable): no release to blame
        tally = tallies.get(release)
        if tally is None:
            tally = tallies[release] = Tally()
        tally.add(error=status >= 500, latency_ms=seconds * 1000.0)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _descriptors_on(fds: list[Path], wanted: set[tuple[int, int]]) -> list[Path]:
    """Those of `fds` (a process's /proc descriptors) open on one of `wanted` (device, inode); none once it exited."""
    out = []
    for fd in fds:
        target = proc.link(fd)
        if target is None or not target.startswith("/"):
            continue  # closed meanwhile, or not a file: one of the many sockets
        with contextlib.suppress(OSError):
            st = os.stat(fd)
            if (st.st_dev, st.st_ino) in wanted:
                out.append(fd)
    return out
