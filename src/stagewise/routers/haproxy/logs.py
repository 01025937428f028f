"""Per-request latency from HAProxy: its log lines, received on a Unix datagram socket.

`show stat` counts responses per server but has no latency distribution, so
the managed HAProxy sends one line per request (`swlog <pid> <server> <status>
<t0 µs> <t1 µs> <backend> <termination state>`, see `config.render`) to `log.sock`, where the
driver inside the controller process listens.

The controller may be restarted at any moment while HAProxy runs on; so:

- one process owns the socket at a time, by an exclusive lock on
  `log.sock.lock` (a second driver object, say a test reading stats, reads
  the owner's persisted tallies instead of stealing the socket);
- the owner persists its tallies to `latency.json` twice a second, and a new
  owner starts from them: counts keep growing within one HAProxy worker
  (`boot`), and lines sent while no controller listened are simply lost.

Tallies are kept per HAProxy worker pid, so a reload (a new worker, counters
from zero in `show stat`) starts new tallies too. The receiver is a daemon
thread, not a task: the driver may be used from several event loops in turn.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from stagewise.basics import files
from stagewise.routers.common.tallies import Tallies, Tally

log = logging.getLogger("stagewise.router.haproxy")

PERSIST_EVERY = 0.5
KEEP_WORKERS = 4
"""Tallies of this many most recent HAProxy workers are kept."""


class LogReceiver:
    """Listens on `<folder>/log.sock` (when it can take the lock) and tallies latency per worker and release."""

    def __init__(self, folder: Path) -> None:
        self.socket_path = folder / "log.sock"
        self.lock_path = folder / "log.sock.lock"
        self.persist_path = folder / "latency.json"
        self._lock_fd: int | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._workers: dict[str, Tallies] = {}
        self._dirty = False

    @property
    def owner(self) -> bool:
        return self._thread is not None

    def start(self) -> bool:
        """Listen, unless another process does; whether this one is the owner."""
        if self._thread is not None:
            return True
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        fd = files.hold_lock(self.lock_path)
        if fd is None:
            return False
        self._lock_fd = fd
        self._workers = self._read_persisted()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left by an owner that died; we hold the lock now
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.settimeout(0.2)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._receive, name=f"haproxy-log {self.socket_path}", daemon=True)
        self._thread.start()
        return True

    def close(self) -> None:
        """Stop listening and release the lock (the tallies are persisted first)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(5.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._lock_fd is not None:
            self._persist()
            os.close(self._lock_fd)
            self._lock_fd = None

    def tallies(self, worker_pid: str) -> Tallies:
        """Latency tallies of one HAProxy worker, per release (a copy)."""
        if self.owner:
            with self._mutex:
                current = self._workers.get(worker_pid, {})
                return {r: Tally.from_json(t.to_json()) for r, t in current.items()}
        return self._read_persisted().get(worker_pid, {})

    # -- the receiving thread ------------------------------------------------------

    def _receive(self) -> None:
        sock = self._sock
        assert sock is not None
        last_persist = time.monotonic()
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                data = b""
            except OSError:
                return
            if data:
                self._take(data)
            now = time.monotonic()
            if self._dirty and now - last_persist >= PERSIST_EVERY:
                self._persist()
                last_persist = now

    def _take(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) != 8 or parts[0] != "swlog" or parts[2].startswith("<"):
                continue  # not a request line (HAProxy also logs events), or no server was chosen
            _, pid, server, status, t0, t1, _backend, _termination = parts
            try:
                error = int(status) >= 500
                latency_ms = max(0, int(t1) - int(t0)) / 1000.0
            except ValueError:
                continue
            release = server.split(":", 1)[0]
            with self._mutex:
                worker = self._workers.get(pid)
                if worker is None:
                    worker = self._workers[pid] = {}
                    for old in list(self._workers)[:-KEEP_WORKERS]:
                        del self._workers[old]
                tally = worker.get(release)
                if tally is None:
                    tally = worker[release] = Tally()
                tally.add(error=error, latency_ms=latency_ms)
                self._dirty = True

    def _persist(self) -> None:
        with self._mutex:
            text = json.dumps({pid: {r: t.to_json() for r, t in w.items()} for pid, w in self._workers.items()})
            self._dirty = False
        try:
            files.write_atomic(self.persist_path, text)
        except OSError as exc:  # the state directory went away (a test cleaning up): nothing to keep
            log.debug("cannot persist HAProxy latency tallies: %s", exc)

    def _read_persisted(self) -> dict[str, Tallies]:
        try:
            data = json.loads(self.persist_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(pid): {str(r): Tally.from_json(t) for r, t in w.items()} for pid, w in data.items()}
