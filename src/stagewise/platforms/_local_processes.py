"""The local platform's processes: what /proc says of them, signals, reaping, and finding a lost one.

A process is named by its pid *and* its kernel start time (field 22 of
/proc/PID/stat): a bare pid may by now belong to an unrelated process, and
nothing here ever signals a process whose start time is not the one recorded.

Processes spawned by this controller process are kept referenced in a
module-level registry until reaped: a `Popen` collected while its child runs
warns and leaves a zombie, and a fresh `LocalPlatform` in the same process must
still be able to reap what its predecessor spawned.

Each instance also carries a launch token in its environment
(`STAGEWISE_INSTANCE_LAUNCH`), written into its record before it is spawned:
if the controller dies between the spawn and the record of its pid, the next
one finds the process by that token (`find_launched`) instead of leaving it
running unknown, holding its port.

Linux only. It must never run a shell, and never import another driver.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from stagewise.basics import proc as procfs  # `proc` names a process here
from stagewise.basics import waiting
from stagewise.errors import PlatformError

LAUNCH_VARIABLE = "STAGEWISE_INSTANCE_LAUNCH"
"""Environment variable of an instance: its launch token, as in its record."""
POLL_INTERVAL = 0.05
"""Seconds between liveness checks while waiting for a stopped instance to exit."""


class Named(Protocol):
    """What names one process: the pid and the kernel start time it had when recorded."""

    @property
    def pid(self) -> int: ...

    @property
    def proc_start(self) -> int: ...


@dataclass
class Child:
    """A process spawned by this controller process; kept referenced until reaped."""

    popen: subprocess.Popen[bytes]
    proc_start: int
    record: Path


children: dict[int, Child] = {}

_P = TypeVar("_P", bound=Named)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, or None if there is none with that pid."""
    found = _stat(pid)
    return None if found is None else (found.state, found.start_time)


def _stat(pid: int) -> procfs.Stat | None:
    """/proc/PID/stat, or None without such a process; a PlatformError if /proc cannot be read."""
    try:
        return procfs.stat(pid)
    except OSError as exc:
        raise PlatformError(f"cannot read /proc/{pid}/stat: {exc}") from exc


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def ending(proc: Named) -> str | None:
    """None while the process lives; else how it ended, in words. Reaps our children."""
    stat = proc_stat(proc.pid)
    if stat is not None and stat[1] != proc.proc_start:
        return f"is gone: pid {proc.pid} now belongs to another process"
    child = children.get(proc.pid)
    if child is not None and child.proc_start == proc.proc_start:
        code = child.popen.poll()
        if code is not None:
            del children[proc.pid]
            return describe_exit(code)
        return None if stat is not None else "is gone"
    if stat is None:
        return "is gone (exit status unknown: another controller process started it)"
    if stat[0] in "ZX":
        # Started by an earlier controller process: the waitpid only works if that was us.
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                return describe_exit(os.waitstatus_to_exitcode(status))
        return "exited (status unknown: another controller process started it)"
    return None


def signal_group(proc: Named, sig: signal.Signals, name: str) -> None:
    """Signal the process's group, unless its pid now names another process."""
    stat = proc_stat(proc.pid)
    if stat is None or stat[1] != proc.proc_start or stat[0] in "ZX":
        return
    try:
        os.killpg(proc.pid, sig)  # start_new_session made the instance its group's leader
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise PlatformError(f"not allowed to signal {name} (pid {proc.pid}): {exc}") from exc


async def wait_gone(procs: Iterable[_P], timeout: float) -> list[_P]:
    """Poll until these processes have exited (reaping ours); returns those still alive."""
    pending = list(procs)

    def all_gone() -> bool:
        pending[:] = [p for p in pending if ending(p) is None]
        return not pending

    await waiting.until(all_gone, timeout=timeout, interval=POLL_INTERVAL)
    return pending


def sweep_children() -> None:
    """Reap children whose records are gone (stopped or killed), so none lingers as a zombie."""
    for pid, child in list(children.items()):
        if not child.record.exists() and child.popen.poll() is not None:
            del children[pid]


def runs(pid: int, start: int) -> bool:
    """Whether the process with this pid and start time still runs (a zombie does not)."""
    stat = proc_stat(pid)
    return stat is not None and stat[1] == start and stat[0] not in "ZX"


def find_launched(token: str) -> tuple[int, int] | None:
    """(pid, start time) of the live instance launched with `token`, or None.

    The instance is the leader of its own session (it was spawned with
    `start_new_session`); processes it started inherit the token too, and are
    passed over. Processes this user may not read are someone else's.
    """
    needle = f"{LAUNCH_VARIABLE}={token}".encode()
    for pid in procfs.pids():
        environment = procfs.environ(pid)
        if environment is None or needle not in environment:
            continue  # gone meanwhile, not ours to read, or not launched with this token
        found = _stat(pid)
        if found is not None and not found.ended and found.session == pid:
            return pid, found.start_time
    return None
