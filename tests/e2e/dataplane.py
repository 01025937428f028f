"""The data plane as the kernel sees it: who listens where (`ss -ltnp`), and which processes run (/proc).

The tests that check what the server leaves behind (a restart on its port, the
descriptors its children inherit, `stagewise delete`) ask the kernel through
iproute2's `ss` and /proc, not through stagewise's own code, so a defect there
cannot hide itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.platforms.test_local import gone

__all__ = ["ROUTER_PIDS", "Listener", "descendants", "gone", "held_by", "listeners", "listening_on", "router_pid",
           "ss_lines"]

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


ROUTER_PIDS = {"builtin": "routers/{service}/pid", "haproxy": "haproxy/{service}/haproxy.pid",
               "nginx": "nginx/{service}/nginx.pid"}
"""Where each router kind keeps its (master) process's pid, under the state directory."""


def router_pid(state: Path, kind: str, service: str) -> int:
    """The pid of the service's router (its master process), from the file the driver keeps."""
    return int((state / ROUTER_PIDS[kind].format(service=service)).read_text().split()[0])


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found

