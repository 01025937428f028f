"""Per-request latency from HAProxy: its log lines, read from a pipe (or a datagram socket).

`show stat` counts responses per server but has no latency distribution, so
HAProxy writes one line per request (`swlog <pid> <server> <status> <t0 µs>
<t1 µs> <backend> <termination state>`, see `config.render`), which the driver
inside the controller process reads and tallies.

A managed HAProxy writes them to `log.pipe`, a named pipe handed to it as a
descriptor (`log fd@<n>`). HAProxy writes a pipe without blocking and drops a
line only when the pipe is full: at 1 MiB (`PIPE_SIZE`, some ten thousand
lines) that is a controller far behind, not one busy for a moment. A datagram
socket, by contrast, queues ten datagrams by default (`net.unix.max_dgram_qlen`)
and HAProxy drops the rest: a controller box short of CPU for a few
milliseconds lost lines that way. The pipe lives as long as HAProxy holds it,
so lines written while no controller reads wait there for the next one.

An external HAProxy cannot be handed a descriptor; it is told to send its lines
to the datagram socket `log.sock`, which the receiver listens on too.

The controller may be restarted at any moment while HAProxy runs on; so:

- one process reads at a time, by an exclusive lock on `log.sock.lock` (a
  second driver object, say a test reading stats, reads the owner's persisted
  tallies instead);
- the owner persists its tallies to `latency.json` twice a second, and a new
  owner starts from them: counts keep growing within one HAProxy worker
  (`boot`). Lines the old owner read after its last persist are lost; lines
  it had not read are still in the pipe.

Tallies are kept per HAProxy worker pid, so a reload (a new worker, counters
from zero in `show stat`) starts new tallies too. The receiver is a daemon
thread, not a task: the driver may be used from several event loops in turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import socket
import stat
import threading
import time
from pathlib import Path

from stagewise.basics import files
from stagewise.routers.common.tallies import Tallies, Tally

log = logging.getLogger("stagewise.router.haproxy")

PERSIST_EVERY = 0.5
KEEP_WORKERS = 4
"""Tallies of this many most recent HAProxy workers are kept."""
PIPE_SIZE = 1 << 20
"""The pipe's capacity (Linux's `fs.pipe-max-size` by default, which any user may ask for)."""
MAX_LINE = 1024
"""HAProxy cuts a log line at this length (`len`/`maxlen` in the configuration)."""


def open_pipe(path: Path) -> int:
    """The named pipe at `path` (made if missing, mode 0600), open to read and write without blocking, at
    `PIPE_SIZE` where the system allows it.

    Both ends at once: HAProxy is handed this descriptor, so the pipe always has a reader and a line
    written while no controller reads waits in it, instead of failing with EPIPE; and a receiver
    holding it never sees end-of-file when HAProxy stops."""
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path, 0o600)
    if not stat.S_ISFIFO(os.stat(path).st_mode):
        path.unlink()  # not ours to keep: a pipe is made in its place
        os.mkfifo(path, 0o600)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # above the system's limit: the default 64 KiB
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return fd


class LogReceiver:
    """Reads `<folder>/log.pipe` and `<folder>/log.sock` (when it can take the lock) and tallies latency per
    worker and release."""

    def __init__(self, folder: Path) -> None:
        self.socket_path = folder / "log.sock"
        self.pipe_path = folder / "log.pipe"
        self.lock_path = folder / "log.sock.lock"
        self.persist_path = folder / "latency.json"
        self._lock_fd: int | None = None
        self._sock: socket.socket | None = None
        self._pipe: int | None = None
        self._partial = b""
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
        sock.setblocking(False)
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
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
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
            if self._pipe is None and self.pipe_path.exists():
                # made by the driver when it starts HAProxy; lines written before this wait in it
                with contextlib.suppress(OSError):
                    self._pipe = open_pipe(self.pipe_path)
            sources: list[int] = [sock.fileno()] if self._pipe is None else [sock.fileno(), self._pipe]
            try:
                ready, _, _ = select.select(sources, [], [], 0.2)
            except (OSError, ValueError):
                return  # closed under us
            if sock.fileno() in ready:
                self._take_datagrams(sock)
            if self._pipe is not None and self._pipe in ready:
                self._take_pipe(self._pipe)
            now = time.monotonic()
            if self._dirty and now - last_persist >= PERSIST_EVERY:
                self._persist()
                last_persist = now

    def _take_datagrams(self, sock: socket.socket) -> None:
        """Every datagram waiting (one or more lines each)."""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:  # nothing more waiting (or the socket closed under us)
                return
            self._take(data)

    def _take_pipe(self, fd: int) -> None:
        """What the pipe holds, in whole lines; a line cut by the read waits for its end."""
        chunks = [self._partial]
        for _ in range(PIPE_SIZE >> 16):  # at most what the pipe held, so that the socket and persisting get turns
            try:
                data = os.read(fd, 1 << 16)
            except OSError:  # nothing more waiting
                break
            chunks.append(data)
            if len(data) < 1 << 16:
                break
        text = b"".join(chunks)
        end = text.rfind(b"\n") + 1
        self._partial = text[end:][-MAX_LINE:]  # no line is longer; a longer rest is no line of ours
        if end:
            self._take(text[:end])

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
