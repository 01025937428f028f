"""The nginx router against a real nginx (Debian's package) and real upstream servers.

Each test gets its own nginx, run as the current user with every file under a
fresh state directory, on loopback ports the kernel picks. What the driver
promises: each table is a checked configuration and a graceful reload; one
nginx refuses leaves the running one serving; a removed endpoint has no
request in flight when `apply` returns; counters come from the access log,
grow within one master, and read the same from a second driver object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from stagewise.basics import proc
from stagewise.basics.ports import free_port
from stagewise.core.routes import CohortRoute, Endpoint, HeaderRoute, RouteTable
from stagewise.errors import PermanentError, RouterConfigError, TemporaryError
from stagewise.routers.common import process
from stagewise.routers.nginx import NginxRouter
from tests.routers.balancers import Client, each_user, slow_request, table, versions
from tests.routers.conftest import Upstream, short_dir, wait_until
from tests.routers.programs import need

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _nginx_installed() -> None:
    need("nginx")


@pytest_asyncio.fixture
async def nginx() -> AsyncIterator[NginxRouter]:
    state = short_dir()
    router = NginxRouter(state)
    try:
        yield router
    finally:
        for folder in sorted((state / "nginx").glob("*")):
            await router.stop(service=folder.name)
        await router.close()
        shutil.rmtree(state, ignore_errors=True)


def pick(upstreams: dict[str, Upstream], *names: str) -> dict[str, Upstream]:
    return {n: upstreams[n] for n in names}


def master(router: NginxRouter, service: str = "shop") -> int:
    pid = process.read_pid(router.state_dir / "nginx" / service / "nginx.pid")
    assert pid is not None
    return pid


async def test_weights_headers_and_preview(nginx: NginxRouter, upstreams: Any) -> None:
    port, preview = free_port(), free_port()
    await nginx.apply(table=table(port, upstreams, weights={"v1": 80, "v2": 20}))
    assert await versions(port, 100) == {"v1": 80, "v2": 20}  # smooth weighted round-robin: exact
    routes = (HeaderRoute(header="X-Canary", value="1", release="v2"),
              HeaderRoute(header="X-Tester", value="default", release="v2"))
    await nginx.apply(table=table(port, upstreams, weights={"v1": 100, "v2": 0}, header_routes=routes,
                                  preview_listen=f"127.0.0.1:{preview}", preview_release="v2"))
    assert await versions(port, 20) == {"v1": 20}
    assert await versions(port, 10, lambda i: {"X-Canary": "1"}) == {"v2": 10}
    assert await versions(port, 10, lambda i: {"X-Tester": "default"}) == {"v2": 10}, "a keyword, taken literally"
    assert await versions(port, 10, lambda i: {"X-Canary": "2"}) == {"v1": 10}
    assert await versions(preview, 10) == {"v2": 10}
    await nginx.apply(table=table(port, upstreams))  # no weights: every endpoint alike
    assert await versions(port, 100) == {"v1": 50, "v2": 50}


async def test_cohort_is_sticky_and_only_grows(nginx: NginxRouter, upstreams: Any) -> None:
    port = free_port()
    users = [f"user-{i}" for i in range(300)]
    before: set[str] = set()
    for percent in (0, 10, 30, 100):
        cohort = CohortRoute(release="v2", percent=percent, header="X-User")
        await nginx.apply(table=table(port, upstreams, weights={"v1": 100, "v2": 0}, cohort=cohort))
        seen = await each_user(port, users)
        inside = {u for u, v in seen.items() if v == "v2"}
        assert before <= inside, "a user in the cohort left it as it grew"
        assert abs(len(inside) - 3 * percent) <= 25, (percent, len(inside))
        assert seen == await each_user(port, users), "not sticky"
        before = inside
    assert await versions(port, 20) == {"v1": 20}, "requests without the key go to stable"


async def test_a_configuration_nginx_refuses_leaves_the_running_one(nginx: NginxRouter, upstreams: Any) -> None:
    port = free_port()
    await nginx.apply(table=table(port, upstreams, weights={"v1": 100, "v2": 0}))
    pid, config = master(nginx), (nginx.state_dir / "nginx" / "shop" / "nginx.conf").read_text()
    with pytest.raises(RouterConfigError, match="nginx refused the configuration") as refused:
        await nginx.apply(table=table(port, upstreams, preview_listen="127.0.0.1:99999", preview_release="v2"))
    # permanent: the same table fails the same way, so the controller must not retry it as if transient
    assert isinstance(refused.value, PermanentError) and not isinstance(refused.value, TemporaryError)
    assert (nginx.state_dir / "nginx" / "shop" / "nginx.conf").read_text() == config
    assert master(nginx) == pid
    assert await versions(port, 10) == {"v1": 10}


async def test_an_unchanged_table_does_not_reload(nginx: NginxRouter, upstreams: Any) -> None:
    port = free_port()
    await nginx.apply(table=table(port, upstreams))
    workers = proc.children(master(nginx))
    await nginx.apply(table=table(port, upstreams))
    assert proc.children(master(nginx)) == workers
    await nginx.apply(table=table(port, pick(upstreams, "a1")))
    assert proc.children(master(nginx)) != workers


async def test_apply_returns_once_a_removed_endpoint_has_nothing_in_flight(
    nginx: NginxRouter, upstreams: Any
) -> None:
    port = free_port()
    await nginx.apply(table=table(port, pick(upstreams, "a1")))
    async with slow_request(port, 500) as request:
        assert await wait_until(lambda: upstreams["a1"].requests == 1)
        started = time.monotonic()
        await nginx.apply(table=table(port, pick(upstreams, "a2")))
        waited = time.monotonic() - started
        # the old worker exits right after it wrote the response; our client may not have read it yet
        response = await asyncio.wait_for(request, 0.2)
        assert waited >= 0.3, "apply returned while a request to the removed endpoint ran"
        assert response.status == 200
    assert await versions(port, 10) == {"v1": 10}
    assert upstreams["a1"].requests == 1


async def test_counters_from_the_access_log(nginx: NginxRouter, upstreams: Any) -> None:
    port = free_port()
    await nginx.apply(table=table(port, upstreams))
    client = Client(port)
    try:
        for i in range(40):
            assert (await client.get("/?status=500" if i % 4 == 0 else "/")).status in (200, 500)
    finally:
        await client.close()
    stats = await nginx.stats(service="shop")
    assert stats.release("v1").requests + stats.release("v2").requests == 40
    assert stats.release("v1").errors + stats.release("v2").errors == 10
    assert sum(stats.release("v1").latency_buckets) == stats.release("v1").requests
    # a reload keeps the master, so the counters go on; another driver object reads the same
    await nginx.apply(table=table(port, pick(upstreams, "a1", "b1")))
    other = NginxRouter(nginx.state_dir)
    again = await other.stats(service="shop")
    assert again == await nginx.stats(service="shop") and again.boot == stats.boot
    assert again.release("v1").requests == stats.release("v1").requests
    # a new master starts counting from zero, under a new boot
    pid = master(nginx)
    os.kill(pid, signal.SIGKILL)
    assert await wait_until(lambda: not proc.alive(pid))
    await asyncio.sleep(0.1)  # the workers notice their master is gone
    assert (await nginx.stats(service="shop")).boot == ""
    await nginx.apply(table=table(port, pick(upstreams, "a1", "b1")))
    fresh = await nginx.stats(service="shop")
    assert fresh.boot not in ("", stats.boot) and fresh.releases == {}
    assert await versions(port, 10) == {"v1": 5, "v2": 5}


@contextlib.contextmanager
def worst_scheduling(workers: list[int]) -> Iterator[None]:
    """The scheduling a loaded machine may give nginx, made certain: its workers share one CPU with this
    thread and yield it to anyone (SCHED_IDLE) — so when a worker has written a response, this thread wakes
    and runs before the worker goes on to write the request's log line."""
    cpu = min(os.sched_getaffinity(0))
    mine = os.sched_getaffinity(0)
    for worker in workers:
        os.sched_setaffinity(worker, {cpu})
        os.sched_setscheduler(worker, os.SCHED_IDLE, os.sched_param(0))
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)


REQUESTS_UNDER_LOAD = 300


async def test_a_request_is_counted_once_it_has_completed_even_under_load(nginx: NginxRouter, upstreams: Any) -> None:
    """nginx writes a request's log line after it has sent the response: `stats` must wait for that line."""
    port = free_port()
    await nginx.apply(table=table(port, pick(upstreams, "a1")))
    other = NginxRouter(nginx.state_dir)  # another reader (a restarted controller, a test) takes turns
    client = Client(port)
    try:
        with worst_scheduling(proc.children(master(nginx))):
            for i in range(1, REQUESTS_UNDER_LOAD + 1):
                assert (await client.get("/")).status == 200
                reader = other if i % 7 == 0 else nginx
                counted = (await reader.stats(service="shop")).release("v1").requests
                assert counted == i, f"request {i} had completed, the stats counted {counted}"
    finally:
        await client.close()
        await other.close()


async def test_the_access_log_is_rotated_without_losing_or_repeating_a_count(upstreams: Any) -> None:
    """With a small threshold the log turns over many times while requests flow; every one is counted once.
    Two workers: each must have reopened the log before a rotated file is read."""
    state = short_dir()
    nginx = NginxRouter(state, workers=2, rotate_bytes=2048, rotate_every=0.02)
    folder = state / "nginx" / "shop"
    port = free_port()
    client = Client(port)
    sent = 0
    try:
        await nginx.apply(table=table(port, pick(upstreams, "a1", "b1")))
        for batch in range(6):
            before = rotated(folder)
            for _ in range(100):  # ~90 bytes a line: four times the threshold a batch
                assert (await client.get("/")).status == 200
                sent += 1
            assert await wait_until(lambda b=before: rotated(folder) > b, timeout=10.0), "no rotation"
            if batch % 2:  # and by the stats' own rotations, and by another reader, in between
                other = NginxRouter(state)
                stats = await other.stats(service="shop")
                await other.close()
                assert stats.release("v1").requests + stats.release("v2").requests == sent
        stats = await nginx.stats(service="shop")
        assert stats.release("v1").requests + stats.release("v2").requests == sent == 600
        assert rotated(folder) >= 6
        assert sum(stats.release("v1").latency_buckets) == stats.release("v1").requests
        assert (folder / "access.log").stat().st_size < 2048 + 4096, "the log grew past its threshold"
        assert sorted(p.name for p in folder.glob("access.log*")) == ["access.log"], "a rotated file was left"
    finally:
        await client.close()
        await nginx.stop(service="shop")
        await nginx.close()
        shutil.rmtree(state, ignore_errors=True)


def rotated(folder: Path) -> int:
    """How many rotated files of the access log have been read (and deleted)."""
    try:
        return int(json.loads((folder / "counts.json").read_text())["seq"])
    except (OSError, ValueError, KeyError):
        return 0


async def test_a_retried_request_is_counted_for_the_release_that_answered(nginx: NginxRouter, upstreams: Any) -> None:
    port, dead = free_port(), free_port()
    endpoints = (Endpoint(id="gone", release="v2", address=f"127.0.0.1:{dead}"),
                 Endpoint(id="a1", release="v1", address=upstreams["a1"].address))
    await nginx.apply(table=RouteTable(service="shop", listen=f"127.0.0.1:{port}", stable="v1", endpoints=endpoints))
    assert await versions(port, 20) == {"v1": 20}  # nginx tried the dead one first, then a1
    stats = await nginx.stats(service="shop")
    assert stats.release("v1").requests == 20 and stats.release("v2").requests == 0
