"""What Linux's /proc says of processes: their state, start time, command line, environment, descriptors.

stagewise knows the processes it leaves running (routers, daemons, instances)
by pid, never by a child-process object, since they outlive the process that
started them. A bare pid may by now name an unrelated process, so a pid is
paired with its kernel start time (`Stat.start_time`, field 22 of
/proc/PID/stat), or checked against its command line or environment, before
anything acts on it.

Reading never raises for a process that is gone or not ours to read: that is
an answer (None, an empty list). Other failures of /proc raise OSError, for the
caller to translate into its own error. Nothing here sends a signal.
Linux only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_GONE = (FileNotFoundError, ProcessLookupError)
_TCP_LISTEN = "0A"
"""TCP state LISTEN in /proc/net/tcp."""


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat that stagewise uses."""

    state: str
    """R, S, D, T, Z (zombie), X (dead), ..."""
    ppid: int
    session: int
    """The session id: equal to the pid for a session leader (a process started with `setsid`)."""
    start_time: int
    """Clock ticks since boot when the process started: with the pid, it names one process."""

    @property
    def ended(self) -> bool:
        """A zombie or a dead process: it has exited, though its pid is not free yet."""
        return self.state in "ZX"


def stat(pid: int) -> Stat | None:
    """The process's /proc/PID/stat, or None when there is no process with that pid."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except _GONE:
        return None
    # The command name (field 2) may hold spaces and parentheses: it ends at the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return Stat(state=fields[0], ppid=int(fields[1]), session=int(fields[3]), start_time=int(fields[19]))


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it is gone."""
    found = _quiet_stat(pid)
    return None if found is None else found.start_time


def running(pid: int, start: int | None = None) -> bool:
    """Whether `pid` runs (a zombie does not); with `start`, only if it is the process that started then."""
    found = _quiet_stat(pid)
    return found is not None and not found.ended and (start is None or found.start_time == start)


def alive(pid: int) -> bool:
    """Whether `pid` runs; if it is an exited child of this process, it is reaped first (and does not run)."""
    with contextlib.suppress(ChildProcessError):  # not our child: someone else reaps it
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return running(pid)


def cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None when it is gone or not ours to read."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    args = raw.split(b"\0")
    if args[-1] == b"":
        args.pop()  # the terminating NUL (a process that rewrote its argv may have none)
    return [os.fsdecode(arg) for arg in args]


def environ(pid: int) -> list[bytes] | None:
    """The process's environment as it started (NAME=value entries), or None when gone or not ours to read."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    return raw.split(b"\0")


def owner(pid: int) -> int | None:
    """The uid the process runs as (the owner of /proc/PID), or None when it is gone."""
    try:
        return (PROC / str(pid)).stat().st_uid
    except _GONE:
        return None


def children(pid: int) -> list[int]:
    """Pids of the children of `pid`'s main thread (empty when it is gone)."""
    try:
        text = (PROC / str(pid) / "task" / str(pid) / "children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def pids() -> Iterator[int]:
    """The pid of every process on this machine (some may be gone by the time they are looked at)."""
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def descriptors(pid: int) -> list[Path]:
    """The process's open descriptors, as /proc/PID/fd/N paths (links to what they are open on)."""
    folder = PROC / str(pid) / "fd"
    try:
        return [folder / name for name in os.listdir(folder)]
    except OSError:
        return []


def link(descriptor: Path) -> str | None:
    """What a /proc descriptor link points to (a path, `socket:[inode]`, `pipe:[inode]`), or None once closed."""
    try:
        return os.readlink(descriptor)
    except OSError:
        return None


def holders(path: Path) -> list[int]:
    """Pids of the processes, other than this one, that have `path` open."""
    target = os.path.realpath(path)
    return [pid for pid in pids() if pid != os.getpid()
            and any(link(fd) == target for fd in descriptors(pid))]


def own_descriptors() -> list[int]:
    """This process's descriptors above stderr."""
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    return [fd for fd in map(int, os.listdir(folder)) if fd > 2]


def inheritable_descriptors() -> list[int]:
    """This process's descriptors above stderr that a program it starts would inherit."""
    found = []
    for fd in own_descriptors():
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own descriptor among them)
            if os.get_inheritable(fd):
                found.append(fd)
    return found


def listening_sockets() -> dict[str, tuple[Address, int]]:
    """inode -> (address, port) of every listening TCP socket on this machine, IPv4 and IPv6."""
    found: dict[str, tuple[Address, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6 on this machine
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            address, _, port = fields[1].partition(":")
            found[fields[9]] = (_kernel_address(address), int(port, 16))
    return found


def socket_holders(inodes: Iterable[str]) -> dict[str, list[int]]:
    """inode -> pids of the processes (other than this one) holding that socket: one pass over every descriptor."""
    links = {f"socket:[{inode}]": inode for inode in inodes}
    holding: dict[str, list[int]] = {}
    for pid in pids():
        if pid == os.getpid():
            continue
        # a busy router opens and closes connections all the time: a descriptor closed meanwhile is passed over
        held = {links[target] for fd in descriptors(pid) if (target := link(fd)) in links}
        for inode in held:
            holding.setdefault(inode, []).append(pid)
    return holding


def _quiet_stat(pid: int) -> Stat | None:
    """`stat`, with a process that cannot be read counted as gone."""
    try:
        return stat(pid)
    except OSError:
        return None


def _kernel_address(text: str) -> Address:
    """An address as /proc/net/tcp writes it: 32-bit words in host byte order."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)
