"""The data planes a router driver starts inherit no descriptor of the process that starts them.

The processes the drivers start outlive their parent on purpose (a controller
restart must not drop a request). A descriptor they inherited by accident
lives on with them: the API server's listening socket, inherited by a
builtin proxy, kept the server's port open after the server had exited.
Python's `os.posix_spawn` closes only the descriptors marked close-on-exec,
so a parent holding an inheritable one — a listening socket here, as a
server started by systemd socket activation or by a supervisor holds — must
not pass it on. Each router kind is started from this test process holding
such a socket, and no process of the router (builtin proxy; HAProxy master
and worker; nginx master and worker) may hold it.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagewise.basics import proc
from stagewise.basics.ports import free_port
from stagewise.routers import get_router
from stagewise.routers.common import process
from tests.routers.balancers import table, versions
from tests.routers.conftest import short_dir
from tests.routers.programs import need_router

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PID_FILES = {"builtin": "routers/shop/pid", "haproxy": "haproxy/shop/haproxy.pid", "nginx": "nginx/shop/nginx.pid"}


@pytest.fixture
def inheritable_listener() -> Iterator[socket.socket]:
    """A listening socket this process would pass to every child that does not close it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.set_inheritable(True)
    yield listener
    listener.close()


def held_sockets(pid: int) -> set[str]:
    """The sockets `pid` has open, as /proc names them (`socket:[inode]`)."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.startswith("socket:"):
            held.add(target)
    return held


@pytest.mark.parametrize("kind", ["builtin", "haproxy", "nginx"])
async def test_a_router_holds_no_descriptor_its_starter_left_inheritable(
    kind: str, upstreams: dict[str, Any], inheritable_listener: socket.socket
) -> None:
    need_router(kind)
    state = short_dir()
    router = get_router(kind, state_dir=state)
    ours = f"socket:[{os.fstat(inheritable_listener.fileno()).st_ino}]"
    port = free_port()
    try:
        await router.apply(table=table(port, upstreams))
        assert sum((await versions(port, 4)).values()) == 4
        main = process.read_pid(Path(state) / PID_FILES[kind])
        assert main is not None
        pids = [main, *proc.children(main)]
        if kind != "builtin":
            assert len(pids) >= 2, "a master and its worker"
        for pid in pids:
            assert ours not in held_sockets(pid), f"{kind} process {pid} holds the listening socket of its starter"
    finally:
        await router.stop(service="shop")
        await router.close()
        shutil.rmtree(state, ignore_errors=True)
