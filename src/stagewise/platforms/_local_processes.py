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

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

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
    fields = _stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[19]))


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None without such a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        raise PlatformError(f"cannot read /proc/{pid}/stat: {exc}") from exc
    # The command name in field 2 may hold spaces and parentheses; it ends at the last ')'.
    return text[text.rindex(")") + 2 :].split()


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
    deadline = time.monotonic() + timeout
    pending = [p for p in procs if ending(p) is None]
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(POLL_INTERVAL)
        pending = [p for p in pending if ending(p) is None]
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
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle not in environment.split(b"\0"):
            continue
        fields = _stat_fields(pid)
        if fields is not None and fields[0] not in "ZX" and int(fields[3]) == pid:
            return pid, int(fields[19])
    return None
