"""`delete`: the controller stops a service's data plane, forgets the service, and keeps its history (on fakes)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from stagewise.controller.lifecycle import Listeners
from stagewise.core.delivery import Phase
from stagewise.errors import ConflictError, NotFoundError
from tests.controller.conftest import World, make_spec

PAUSED_CANARY: dict[str, Any] = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}


async def test_delete_stops_router_and_instances_and_keeps_the_history(world: World) -> None:
    [first] = world.controller.store.deliveries("shop")
    deletion = await world.controller.delete("shop")

    assert deletion.service == "shop" and not deletion.kept_running and deletion.ended_delivery is None
    assert sorted(i.id for i in deletion.instances) == sorted(f"shop-v1-{n}" for n in range(1, 5))
    assert deletion.router.kind == "builtin" and deletion.router.addresses == ["127.0.0.1:18080"]
    assert world.platform.instances["shop"] == {} and "shop" not in world.router.tables
    store = world.controller.store
    assert store.get_service("shop") is None and store.list_services() == []
    assert store.deliveries("shop") == [first]
    assert "deleted; stopped: router builtin on 127.0.0.1:18080" in store.events("shop")[-1].message
    assert [d.record.stable.version for d in store.deleted_services("shop") if d.record.stable] == ["v1"]

    await world.run(seconds=5)  # the loop leaves a deleted service alone
    assert world.platform.instances["shop"] == {} and "shop" not in world.router.tables
    with pytest.raises(NotFoundError, match="no service named 'shop'"):
        await world.controller.delete("shop")


async def test_the_name_makes_a_new_service_after_delete(world: World) -> None:
    await world.controller.delete("shop")
    result, delivery = await world.controller.apply(make_spec("v1", {"full": {}}))
    assert result == "delivery started" and delivery is not None and delivery.stable is None
    assert await world.run() is Phase.SUCCEEDED
    assert world.platform.count("shop", "v1", ready=True) == 4
    assert [d.id for d in world.controller.store.deliveries("shop")] == [delivery.id, 1]


async def test_a_delivery_in_flight_refuses_delete_unless_forced(world: World) -> None:
    await world.controller.apply(make_spec("v2", PAUSED_CANARY))
    assert await world.run(until={Phase.PAUSED}) is Phase.PAUSED
    with pytest.raises(ConflictError, match=r"delivery 2 \(v1 → v2\) is Paused; abort it .* or delete with force"):
        await world.controller.delete("shop")
    assert world.controller.store.get_service("shop") is not None
    assert world.platform.count("shop", "v2") > 0 and "shop" in world.router.tables

    deletion = await world.controller.delete("shop", force=True)
    assert deletion.ended_delivery == 2
    assert {i.release for i in deletion.instances} == {"v1", "v2"}
    ended = world.controller.store.get_delivery(2)
    assert ended is not None and ended.phase is Phase.FAILED and ended.finished_at is not None
    assert "deleted (force) while this delivery was Paused" in ended.message
    assert world.controller.store.active_deliveries() == []
    assert world.platform.instances["shop"] == {} and "shop" not in world.router.tables
    await world.controller.apply(make_spec("v2", PAUSED_CANARY))  # not blocked by the ended delivery


async def test_the_loop_goes_on_while_a_delete_drains(world: World) -> None:
    draining, drained = asyncio.Event(), asyncio.Event()
    stop = world.router.stop

    async def slow_stop(*, service: str) -> None:
        draining.set()
        await drained.wait()
        await stop(service=service)

    world.router.stop = slow_stop
    deleting = asyncio.create_task(world.controller.delete("shop"))
    await asyncio.wait_for(draining.wait(), 5)
    await asyncio.wait_for(world.controller.tick(), 1)  # passes the service by: no wait for the drain
    assert world.platform.count("shop", "v1") == 4, "the loop must not bring back what is being stopped"
    drained.set()
    await deleting
    assert world.platform.instances["shop"] == {}


async def test_keep_running_forgets_the_service_and_leaves_its_data_plane(world: World) -> None:
    deletion = await world.controller.delete("shop", keep_running=True)
    assert deletion.kept_running and len(deletion.instances) == 4
    assert world.platform.count("shop", "v1", ready=True) == 4 and "shop" in world.router.tables
    assert world.controller.store.get_service("shop") is None
    assert "kept running (unmanaged from now on)" in world.controller.store.events("shop")[-1].message
    assert [p.service for p in await world.controller.data_planes()] == []


async def test_data_planes_lists_what_runs(world: World) -> None:
    [plane] = await world.controller.data_planes()
    assert plane.service == "shop" and len(plane.instances) == 4
    assert all(i.address.startswith("127.0.0.1:") for i in plane.instances)


LISTENER = """
import socket, sys, time

def bound(family, host, port, v6only=False):
    sock = socket.socket(family)
    if v6only:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    return sock

def listening(family, host, reserved):
    # A listener, and its port bound (not listening) at the addresses the test asks about too: on a machine
    # shared with other test runs, another process may listen on the same port number there (an IPv6 port
    # the kernel picked for it), and the test must see only this one.
    while True:
        server = socket.create_server((host, 0), family=family)
        port = server.getsockname()[1]
        try:
            return server, [bound(f, h, port, v6only) for f, h, v6only in reserved]
        except OSError:
            server.close()

v4 = listening(socket.AF_INET, "127.0.0.1", [(socket.AF_INET6, "::", True), (socket.AF_INET, "127.0.0.2", False)])
v6 = listening(socket.AF_INET6, "::1", [(socket.AF_INET, "0.0.0.0", False)])
anywhere = listening(socket.AF_INET, "0.0.0.0", [(socket.AF_INET6, "::", True)])
print(*(s[0].getsockname()[1] for s in (v4, v6, anywhere)), flush=True)
time.sleep(30)
"""


def test_listeners_finds_who_listens_on_an_address() -> None:
    proc = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        v4, v6, anywhere = proc.stdout.readline().split()
        listeners = Listeners()
        assert listeners.pids([f"127.0.0.1:{v4}"]) == [proc.pid]
        assert listeners.pids([f"[::1]:{v6}"]) == [proc.pid]
        assert listeners.pids([f"localhost:{v4}"]) == [proc.pid], "a name matches any address"
        assert listeners.pids([f"127.0.0.2:{anywhere}"]) == [proc.pid], "0.0.0.0 takes every address"
        assert listeners.pids([f"127.0.0.2:{v4}", f"[::1]:{v4}"]) == []
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
