"""Small helpers for the daemons the HAProxy and nginx drivers run: liveness, waiting, logs.

The daemons outlive the controller on purpose (a controller restart must not
drop a request), so the drivers know them by pid files and `/proc`, never by
a child-process object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from stagewise.errors import RouterError


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not); reaps it first if it is our exited child."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: someone else reaps it
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (with the pid, it names one process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, if that process runs."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def children(pid: int) -> list[int]:
    """Pids of the children of `pid` (from /proc, no extra package)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def holders(path: Path) -> list[int]:
    """Pids of the processes that have `path` open (what a daemon's orphaned workers give away)."""
    target = os.path.realpath(path)
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (entry / "fd").iterdir()):
                out.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to look at
    return out


def inheritable_descriptors() -> list[int]:
    """Descriptors above stderr that this process would pass to a program it starts.

    Python marks its own descriptors close-on-exec, but one made inheritable by someone else (a socket
    handed down by a supervisor, a server's listener) goes to every child that does not close it —
    and a daemon we start lives on with it. `os.posix_spawn` (unlike subprocess with `close_fds`)
    closes nothing by itself, so its callers close these.
    """
    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                fds.append(fd)
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor among them)
    return fds


async def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def terminate(pid: int, *, first: signal.Signals, timeout: float) -> None:
    """Send `first`; SIGKILL after `timeout` seconds; RouterError if even that does not end it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
    if await wait_exit(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not await wait_exit(pid, 5.0):
        raise RouterError(f"process {pid} did not exit")


def tail(path: Path, size: int = 2000) -> str:
    try:
        data = path.read_bytes()[-size:]
    except OSError:
        return "(no output)"
    return data.decode("utf-8", "replace").strip() or "(no output)"


def binary(name: str, package: str) -> str:
    """The full path of an installed program, or a RouterError that says how to install it."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)
    if path is None:
        raise RouterError(f"{name} is not installed (Debian: apt-get install {package})", delay=60.0)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Replace a file whole, so a reader (or a daemon restarting) never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
