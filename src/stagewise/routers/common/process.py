"""The daemons the routers run, as the drivers see them: liveness by pid file, ending them, finding programs.

The daemons outlive the controller on purpose (a controller restart must not
drop a request), so the drivers know them by pid files and `/proc`
(`stagewise.basics.proc`), never by a child-process object. What is said here
in `RouterError`s is the drivers' own vocabulary; /proc itself is read in
`basics`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from stagewise.basics import proc, waiting
from stagewise.errors import RouterError

EXIT_POLL = 0.02
"""Seconds between two looks at a process that is ending."""
KILL_TIMEOUT = 5.0
"""Seconds a process gets to disappear after SIGKILL."""


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, if that process runs."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if proc.alive(pid) else None


def daemon_pid(path: Path) -> int | None:
    """The pid in the pid file of a daemon a driver started, if that process runs and is that daemon: its command
    line names the pid file's folder (`haproxy/<service>/`, `nginx/<service>/`, however the state directory
    was spelled when it started).

    A pid file outlives its process (a SIGKILL, a reboot), and the number in it may since be another
    process's: one that must never be signalled, nor taken for the daemon (the next apply starts a new one).
    """
    pid = read_pid(path)
    if pid is None:
        return None
    args = proc.cmdline(pid)
    mark = f"/{path.parent.parent.name}/{path.parent.name}/"
    return pid if args is not None and any(mark in f"/{arg}" for arg in args) else None


async def wait_exit(pid: int, timeout: float) -> bool:
    """Whether `pid` has exited (reaped, if it was our child) within `timeout` seconds."""
    return await waiting.until(lambda: not proc.alive(pid), timeout=timeout, interval=EXIT_POLL)


async def terminate(pid: int, *, first: signal.Signals, timeout: float, name: str = "") -> None:
    """Send `first`; SIGKILL after `timeout` seconds; RouterError if even that does not end it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
    if await wait_exit(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not await wait_exit(pid, KILL_TIMEOUT):
        raise RouterError(f"{name or 'process'} (pid {pid}) did not exit")


def binary(name: str, package: str) -> str:
    """The full path of an installed program, or a RouterError that says how to install it."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)
    if path is None:
        raise RouterError(f"{name} is not installed (Debian: apt-get install {package})", delay=60.0)
    return path
