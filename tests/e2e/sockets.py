"""Who listens where, as `ss -ltnp` tells it: the tests' independent view of bound ports and their holders.

The tests that check what the server leaves behind (a restart on its port, the
descriptors its children inherit, `stagewise delete`) ask the kernel through
iproute2's `ss`, not through stagewise's own code, so a defect there cannot
hide itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_USER = re.compile(r'\("(?P<name>(?:[^"\\]|\\.)*)",pid=(?P<pid>\d+),fd=(?P<fd>\d+)\)')


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket: its address, and every (pid, fd) that holds it."""

    address: str
    """host:port, IPv6 hosts without brackets."""
    holders: frozenset[tuple[int, int]]

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def pids(self) -> set[int]:
        return {pid for pid, _ in self.holders}


def listeners() -> list[Listener]:
    """Every listening TCP socket of this machine (as root, with every holder)."""
    ss = shutil.which("ss") or "/usr/bin/ss"
    out = subprocess.run([ss, "-Hltnp"], capture_output=True, text=True, timeout=20, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 5:
            continue
        local = fields[3].replace("[", "").replace("]", "")
        users = fields[5] if len(fields) > 5 else ""
        found.append(Listener(local, frozenset((int(m["pid"]), int(m["fd"])) for m in _USER.finditer(users))))
    return found


def listening_on(port: int, host: str | None = None) -> list[Listener]:
    """The listening sockets bound to `port` (on `host`, or on any address)."""
    return [x for x in listeners() if x.port == port and (host is None or x.address.rpartition(":")[0] == host)]


def held_by(pid: int) -> set[str]:
    """The addresses of the listening sockets process `pid` has open."""
    return {x.address for x in listeners() if pid in x.pids}


def ss_lines(*ports: int) -> str:
    """`ss -ltnp`'s lines for these ports, for a report or an assertion message."""
    ss = shutil.which("ss") or "/usr/bin/ss"
    out = subprocess.run([ss, "-Hltnp"], capture_output=True, text=True, timeout=20, check=True).stdout
    wanted = {f":{p} " for p in ports}
    return "\n".join(line for line in out.splitlines() if any(w in line + " " for w in wanted))
