"""Zero dropped requests: every kind of traffic switch, under load, through each router.

For each router kind (builtin, HAProxy, nginx) and each switch — a weight
step, a blue-green switch, a rollback, adding an instance, removing one — a
closed-loop load of 32 keep-alive connections on loopback runs through the
router while the switch happens, and the users must see no non-2xx response
and no socket error. The load must span the switch however long the switch
takes (an nginx reload takes half a second on a busy machine): it runs from
before the switch until AFTER_SWITCH more requests have been sent once the
switch is over, bounded by MAX_REQUESTS and MAX_SECONDS.

The router drivers are driven directly (not through the controller), in the
controller's order: apply the new table first; an instance that leaves is
drained — `stats().inflight` polled until nothing runs on it, as
`controller.reconcile` does — and only then stopped with SIGTERM. Upstreams
are real processes of the bundled sample service.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from stagewise.basics import waiting
from stagewise.basics.ports import free_port
from stagewise.core.routes import Endpoint, HeaderRoute, RouteTable
from stagewise.examples.load import LoadInBackground, LoadReport
from stagewise.routers import Router, get_router
from tests.routers.conftest import short_dir
from tests.routers.programs import need_router

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROUTERS = ["builtin", "haproxy", "nginx"]
AFTER_SWITCH = 3_000
"""Requests sent after the switch is over, before the load stops: on connections opened before it, and new ones."""
MAX_REQUESTS = 200_000
MAX_SECONDS = 60.0
"""Bounds of one case's load, far above what it needs: it stops AFTER_SWITCH requests after the switch."""
CONNECTIONS = 32


@dataclass
class Instance:
    id: str
    release: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(id=self.id, release=self.release, address=f"127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


class Case:
    """One router, its service and its instances; the switches are methods that act as the controller does."""

    def __init__(self, router: Router, kind: str, instances: dict[str, Instance]) -> None:
        self.router = router
        self.kind = kind
        self.instances = instances
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"

    def table(self, names: list[str], weights: dict[str, int] | None = None) -> RouteTable:
        return RouteTable(
            service="zd", listen=f"127.0.0.1:{self.port}", stable="v1",
            endpoints=tuple(self.instances[n].endpoint for n in names), weights=weights,
            # a preview route as in blue-green: HAProxy needs no reload for it later
            header_routes=(HeaderRoute(header="X-Preview", value="1", release="v2"),),
        )

    async def apply(self, names: list[str], weights: dict[str, int] | None = None) -> None:
        await self.router.apply(table=self.table(names, weights))

    async def remove(self, keep: list[str], gone: str, weights: dict[str, int] | None = None) -> None:
        """Take `gone` out of the table, wait until nothing runs on it, stop it."""
        await self.apply(keep, weights)
        async def drained() -> bool:
            return not (await self.router.stats(service="zd")).inflight.get(gone, 0)

        await waiting.until_awaited(drained, timeout=10, interval=0.02)
        self.instances[gone].stop()


async def weight_step(case: Case) -> None:
    await case.apply(["a1", "a2", "b1"], {"v1": 90, "v2": 10})
    await asyncio.sleep(0.3)
    await case.apply(["a1", "a2", "b1"], {"v1": 50, "v2": 50})


async def blue_green_switch(case: Case) -> None:
    await case.apply(["a1", "a2", "b1", "b2"], {"v1": 0, "v2": 100})


async def rollback(case: Case) -> None:
    await case.apply(["a1", "a2", "b1"], {"v1": 100, "v2": 0})
    await asyncio.sleep(0.3)
    await case.remove(["a1", "a2"], "b1", {"v1": 100})


async def add_instance(case: Case) -> None:
    await case.apply(["a1", "a2", "b1"])


async def remove_instance(case: Case) -> None:
    await case.remove(["a1", "b1"], "a2")


SWITCHES: dict[str, tuple[list[str], dict[str, int] | None, Callable[[Case], Awaitable[None]]]] = {
    "weight-step": (["a1", "a2", "b1"], {"v1": 100, "v2": 0}, weight_step),
    "blue-green-switch": (["a1", "a2", "b1", "b2"], {"v1": 100, "v2": 0}, blue_green_switch),
    "rollback": (["a1", "a2", "b1"], {"v1": 50, "v2": 50}, rollback),
    "add-instance": (["a1", "b1"], None, add_instance),
    "remove-instance": (["a1", "a2", "b1"], None, remove_instance),
}


@pytest_asyncio.fixture
async def case(request: pytest.FixtureRequest) -> AsyncIterator[Case]:
    kind = request.param
    need_router(kind)
    state = short_dir()
    instances = start_instances({"a1": "v1", "a2": "v1", "b1": "v2", "b2": "v2"})
    router = get_router(kind, state_dir=state)
    try:
        yield Case(router, kind, instances)
    finally:
        await router.stop(service="zd")
        await router.close()
        for instance in instances.values():
            instance.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("switch", list(SWITCHES))
@pytest.mark.parametrize("case", ROUTERS, indirect=True)
async def test_no_request_is_dropped(case: Case, switch: str) -> None:
    names, weights, act = SWITCHES[switch]
    await case.apply(names, weights)
    await wait_serving(case)
    sent = Sent()
    load = LoadInBackground(case.url, connections=CONNECTIONS, max_requests=MAX_REQUESTS, max_seconds=MAX_SECONDS,
                            headers_for=sent.headers_for).start()
    try:
        await asyncio.sleep(0.3)  # the switch lands while the load runs
        before = sent.count
        started = time.monotonic()
        await act(case)
        switched = time.monotonic() - started
        over = sent.count
        deadline = time.monotonic() + MAX_SECONDS / 2
        while sent.count < over + AFTER_SWITCH and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        report = await asyncio.to_thread(load.stop, 30)
    print(f"\nzero-drop router={case.kind} switch={switch} requests={report.requests} "
          f"non_2xx={report.non_2xx} socket_errors={report.socket_errors} by_version={report.by_version} "
          f"switch_seconds={switched:.3f} before={before} after={sent.count - over} duration={report.duration:.2f}")
    assert_clean(report)
    assert report.responses == report.requests
    assert before > 0, "the load had not started when the switch began"
    assert sent.count >= over + AFTER_SWITCH, f"the load stopped ({report.stopped_by}) before the switch was long over"


class Sent:
    """Counts the requests the load has sent, as it sends them (its `headers_for` is called once per request)."""

    def __init__(self) -> None:
        self.count = 0

    def headers_for(self, i: int) -> dict[str, str]:
        self.count = max(self.count, i + 1)  # called from the load's thread only
        return {"X-Preview": "1"} if i % 10 == 0 else {}


def assert_clean(report: LoadReport) -> None:
    assert report.non_2xx == 0 and report.socket_errors == 0, (
        report.status_counts, report.socket_error_kinds, report.socket_error_sample)


async def wait_serving(case: Case, timeout: float = 10.0) -> None:
    """Until a burst on fresh connections is all 200 (an nginx reload's old worker accepts for 100 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = await asyncio.to_thread(
            LoadInBackground(case.url, connections=4, max_requests=40, max_seconds=5).start().join, 10)
        if report.responses == 40 and report.non_2xx == 0:
            await asyncio.sleep(0.15)
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{case.kind} did not start serving")


def start_instances(releases: dict[str, str]) -> dict[str, Instance]:
    """Sample-service processes, one per name, each on a free port; waits until all listen."""
    instances = {}
    for name, release in releases.items():
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "stagewise.examples.sample_service", "--port", str(port), "--version", release],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        instances[name] = Instance(name, release, port, proc)
    deadline = time.monotonic() + 15
    for instance in instances.values():
        while not _listens(instance.port):
            if time.monotonic() > deadline or instance.proc.poll() is not None:
                for i in instances.values():
                    i.stop()
                raise AssertionError(f"sample service {instance.id} did not start")
            time.sleep(0.02)
    return instances


def _listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
