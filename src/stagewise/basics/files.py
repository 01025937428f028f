"""Files written whole, and the end of a log read cheaply.

A state file (an instance record, a pid file, counters, a daemon's
configuration) is read by other processes at any moment, and a process may be
killed while it writes one. So it is written to a temporary file beside it and
renamed over it: a reader sees the old content or the new, never half of
either. The rename is atomic against readers and against a crash of this
process; it is not flushed to disk (a power cut may lose the newest write,
never leave a torn one). The SQLite store, which must survive power cuts, has
its own journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

LAST_LINE_WINDOW = 4096
"""Bytes read from the end of a file to find its last line."""
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o666) -> None:
    """Replace `path` whole with `data`; `mode` is for a new file, less the umask (0o600: the owner's alone).

    The temporary name is unique to the writer, so two writers of one file (two threads, two
    processes) never write into each other's temporary file: the last rename wins, whole.
    """
    with _beside(path, data, mode) as tmp:
        os.replace(tmp, path)


def write_new(path: Path, data: str | bytes, *, mode: int = 0o666) -> bool:
    """Make `path` whole with `data` unless it exists: whether this call made it.

    Of writers racing to make one file (servers sharing a state directory, started together), exactly one
    wins, and a reader sees no file or the winner's whole content: the data goes to a temporary file first,
    which is then linked to `path` (a link, unlike a rename, fails when the name exists).
    """
    with _beside(path, data, mode) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    return True


@contextlib.contextmanager
def _beside(path: Path, data: str | bytes, mode: int) -> Iterator[Path]:
    """A temporary file beside `path`, named for this writer alone, holding `data`; gone after the block
    (unless the block renamed it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def tail(path: Path, size: int = 2000) -> str:
    """The last `size` bytes of a log, as text; "(no output)" when there is none or it cannot be read."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            data = f.read()
    except OSError:
        return "(no output)"
    return data.decode("utf-8", "replace").strip() or "(no output)"


def last_line(path: Path, limit: int = 300) -> str | None:
    """The last non-blank line of a log, cut to `limit` characters; None when there is none."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LAST_LINE_WINDOW))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1].strip()[:limit] if lines else None


def is_folder_name(name: str) -> bool:
    """Whether `name` (a service's) can name a folder of its own: no separator, no dot first, no space, ≤128 bytes."""
    return _FOLDER_NAME.fullmatch(name) is not None


def hold_lock(path: Path) -> int | None:
    """Take the exclusive lock of `path` (made if missing, mode 0600) without waiting: its descriptor, held until
    closed (or the process ends); None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of `path` (made if missing, mode 0600) for the block, waiting for it if need be."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
