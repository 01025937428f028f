"""The HAProxy router against a real HAProxy (Debian's package) and real upstream servers.

Each test gets its own master-worker HAProxy under a fresh state directory, on
loopback ports the kernel picks. What the driver promises and these tests
hold it to: traffic changes go through the Runtime API without a reload (the
worker pid stays), structure changes reload and keep the routes, a restart
after SIGKILL comes back with the same routes, counters only grow within a
worker, and removed servers are drained before they are deleted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from stagewise.basics import proc, waiting
from stagewise.basics.ports import free_port
from stagewise.core.routes import BUCKETS, CohortRoute, HeaderRoute
from stagewise.errors import PermanentError, RouterConfigError, TemporaryError
from stagewise.routers import get_router
from stagewise.routers.common import process
from stagewise.routers.haproxy import HaproxyRouter
from stagewise.routers.haproxy.api import RuntimeApi
from stagewise.routers.haproxy.config import cohort_bucket_crc32
from stagewise.routers.haproxy.driver import master_command
from tests.routers.balancers import Client, each_user, slow_request, table, versions
from tests.routers.conftest import Upstream, short_dir, stale_pid_file, wait_until
from tests.routers.programs import need

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _haproxy_installed() -> None:
    need("haproxy")


@pytest_asyncio.fixture
async def haproxy() -> AsyncIterator[HaproxyRouter]:
    state = short_dir()
    router = HaproxyRouter(state)
    try:
        yield router
    finally:
        for folder in sorted((state / "haproxy").glob("*")):
            await router.stop(service=folder.name)
        await router.close()
        shutil.rmtree(state, ignore_errors=True)


def pick(upstreams: dict[str, Upstream], *names: str) -> dict[str, Upstream]:
    return {n: upstreams[n] for n in names}


async def worker_pid(router: HaproxyRouter, service: str = "shop") -> str:
    return (await router.stats(service=service)).boot


async def test_weights_change_at_runtime_without_a_reload(haproxy: HaproxyRouter, upstreams: Any) -> None:
    port = free_port()
    await haproxy.apply(table=table(port, upstreams, weights={"v1": 80, "v2": 20}))
    boot = await worker_pid(haproxy)
    got = await versions(port, 200)
    assert abs(got["v2"] - 40) <= 4, got
    for weights, expected in (({"v1": 0, "v2": 100}, {"v2": 100}), ({"v1": 100, "v2": 0}, {"v1": 100})):
        await haproxy.apply(table=table(port, upstreams, weights=weights))
        assert await versions(port, 100) == expected
    await haproxy.apply(table=table(port, upstreams))  # no weights: every endpoint alike
    assert await versions(port, 100) == {"v1": 50, "v2": 50}
    assert await worker_pid(haproxy) == boot, "a weight change must not reload HAProxy"


async def test_header_routes_and_preview_listener(haproxy: HaproxyRouter, upstreams: Any) -> None:
    port = free_port()
    preview = free_port(avoid={port})  # two calls may get the same port from the kernel
    routes = (HeaderRoute(header="X-Canary", value="1", release="v2"),)
    await haproxy.apply(table=table(port, upstreams, weights={"v1": 100, "v2": 0}, header_routes=routes,
                                    preview_listen=f"127.0.0.1:{preview}", preview_release="v2"))
    assert await versions(port, 20, lambda i: {"X-Canary": "1"}) == {"v2": 20}
    assert await versions(port, 20, lambda i: {"X-Canary": "0"}) == {"v1": 20}
    assert await versions(preview, 20) == {"v2": 20}
    # a header route to a release without endpoints falls through to the weights
    await haproxy.apply(table=table(port, pick(upstreams, "a1", "a2"), header_routes=routes))
    assert await versions(port, 20, lambda i: {"X-Canary": "1"}) == {"v1": 20}


async def test_cohort_is_sticky_monotone_and_predictable(haproxy: HaproxyRouter, upstreams: Any) -> None:
    port = free_port()
    users = [f"user-{i}" for i in range(300)]
    before: set[str] = set()
    for percent in (0, 10, 30, 100):
        cohort = CohortRoute(release="v2", percent=percent, header="X-User")
        await haproxy.apply(table=table(port, upstreams, weights={"v1": 100, "v2": 0}, cohort=cohort))
        seen = await each_user(port, users)
        inside = {u for u, v in seen.items() if v == "v2"}
        # the bucket is crc32(key) mod 10000, as documented: which users are in is known in advance
        assert inside == {u for u in users if cohort_bucket_crc32(u.encode()) < percent * BUCKETS / 100}
        assert before <= inside, "a user in the cohort left it as it grew"
        assert seen == await each_user(port, users), "not sticky"
        before = inside
    assert await versions(port, 20) == {"v1": 20}, "requests without the key go to stable"


async def test_structure_changes_reload_and_keep_the_routes(haproxy: HaproxyRouter, upstreams: Any) -> None:
    port = free_port()
    await haproxy.apply(table=table(port, upstreams, weights={"v1": 0, "v2": 100}))
    boot = await worker_pid(haproxy)
    routes = (HeaderRoute(header="X-Beta", value="yes", release="v1"),)
    await haproxy.apply(table=table(port, upstreams, weights={"v1": 0, "v2": 100}, header_routes=routes))
    assert await worker_pid(haproxy) != boot, "a new header name needs a reload"
    assert await versions(port, 10, lambda i: {"X-Beta": "yes"}) == {"v1": 10}
    assert await versions(port, 10) == {"v2": 10}
    # the header name stays in the layout: dropping the route later needs no reload
    boot = await worker_pid(haproxy)
    await haproxy.apply(table=table(port, upstreams, weights={"v1": 0, "v2": 100}))
    assert await versions(port, 10, lambda i: {"X-Beta": "yes"}) == {"v2": 10}
    assert await worker_pid(haproxy) == boot


async def test_runtime_changes_survive_a_reload_and_a_sigkill(haproxy: HaproxyRouter, upstreams: Any) -> None:
    port = free_port()
    service = table(port, upstreams, weights={"v1": 100, "v2": 0})
    await haproxy.apply(table=service)
    changed = table(port, pick(upstreams, "a1", "b1", "b2"), weights={"v1": 0, "v2": 100})
    await haproxy.apply(table=changed)  # at run time: a weight flip and a server removed
    folder = haproxy.state_dir / "haproxy" / "shop"
    assert "v1:a2" not in (folder / "haproxy.cfg").read_text()
    assert "v2:b1" in (folder / "server-state").read_text()
    # a reload that stagewise did not ask for (an operator's) comes back with the same routes
    boot = await worker_pid(haproxy)
    await _master(folder, "reload")
    assert await wait_until_async(lambda: _boot_changed(haproxy, boot))
    assert await versions(port, 20) == {"v2": 20}
    # SIGKILL: stats say nothing runs; the next apply (the controller's) brings the same routes back
    master = process.read_pid(folder / "haproxy.pid")
    assert master is not None
    os.kill(master, signal.SIGKILL)
    assert await wait_until(lambda: not proc.alive(master))
    assert await wait_until_async(lambda: _stopped(haproxy))
    started = time.monotonic()
    await haproxy.apply(table=changed)
    assert time.monotonic() - started < 10.0  # a restart, not a wait for some timeout
    assert await versions(port, 20) == {"v2": 20}


async def test_counters_per_release_grow_through_removals(haproxy: HaproxyRouter, upstreams: Any) -> None:
    port = free_port()
    await haproxy.apply(table=table(port, upstreams))
    client = Client(port)
    try:
        for i in range(40):
            response = await client.get("/?status=500" if i % 4 == 0 else "/")
            assert response.status in (200, 500)
    finally:
        await client.close()
    stats = await haproxy.stats(service="shop")
    assert stats.release("v1").requests + stats.release("v2").requests == 40
    assert stats.release("v1").errors + stats.release("v2").errors == 10
    assert await wait_until_async(lambda: _latency_count(haproxy, 40), timeout=3.0), "latency lines missing"
    assert 0 < (await haproxy.stats(service="shop")).release("v1").quantile_ms(0.5) < 1000
    # removing servers deletes them from HAProxy, but their counts stay with their release
    await haproxy.apply(table=table(port, pick(upstreams, "a1", "b1")))
    assert await wait_until_async(lambda: _deleted(haproxy, {"a2", "b2"}))
    after = await haproxy.stats(service="shop")
    assert after.release("v1").requests == stats.release("v1").requests
    assert after.release("v2").errors == stats.release("v2").errors
    # another driver object (a restarted controller, a test) reads the same counters and latencies
    other = HaproxyRouter(haproxy.state_dir)
    try:
        assert await wait_until_async(lambda: _latency_count(other, 40), timeout=3.0)
        again = await other.stats(service="shop")
        assert (again.boot, again.release("v1").requests) == (after.boot, after.release("v1").requests)
    finally:
        await other.close()


async def test_latency_lines_wait_in_the_pipe_while_no_controller_reads(haproxy: HaproxyRouter,
                                                                        upstreams: Any) -> None:
    """A controller that reads late, busy or restarting, loses no line: a datagram socket queued ten and HAProxy
    dropped the rest, so a box short of CPU for a moment lost latency lines (and this test 290 of 300)."""
    port = free_port()
    await haproxy.apply(table=table(port, upstreams))
    await haproxy.close()  # the controller goes away; HAProxy runs on
    assert (await versions(port, 300)).total() == 300
    successor = HaproxyRouter(haproxy.state_dir)
    try:
        assert await wait_until_async(lambda: _latency_count(successor, 300))
        stats = await successor.stats(service="shop")
        assert sum(sum(s.latency_buckets) for s in stats.releases.values()) == 300, "each line once"
        # the pipe outlives a restart of HAProxy too: the new master is handed the same pipe
        master = process.read_pid(haproxy.state_dir / "haproxy" / "shop" / "haproxy.pid")
        assert master is not None
        os.kill(master, signal.SIGKILL)
        assert await wait_until(lambda: not proc.alive(master))
        await successor.apply(table=table(port, upstreams))
        assert (await versions(port, 20)).total() == 20
        assert await wait_until_async(lambda: _latency_count(successor, 20))
    finally:
        await successor.close()


async def test_a_removed_server_is_drained_before_it_is_deleted(haproxy: HaproxyRouter, upstreams: Any) -> None:
    port = free_port()
    await haproxy.apply(table=table(port, pick(upstreams, "a1")))
    async with slow_request(port, 600) as request:
        assert await wait_until_async(lambda: _inflight(haproxy, "a1"))
        await haproxy.apply(table=table(port, pick(upstreams, "a2")))
        assert (await haproxy.stats(service="shop")).inflight.get("a1") == 1, "in flight, so not deleted"
        assert await versions(port, 10) == {"v1": 10}
        assert upstreams["a1"].requests == 1, "a draining server takes no new request"
        response = await request
    assert response.status == 200
    assert await wait_until_async(lambda: _deleted(haproxy, {"a1"}))


async def test_metrics_listen_serves_haproxys_prometheus_exporter(haproxy: HaproxyRouter, upstreams: Any) -> None:
    port, metrics = free_port(), f"127.0.0.1:{free_port()}"
    await haproxy.apply(table=table(port, upstreams, weights={"v1": 0, "v2": 100}))
    boot = await worker_pid(haproxy)
    await haproxy.apply(table=table(port, upstreams, weights={"v1": 0, "v2": 100}, metrics_listen=metrics))
    assert await worker_pid(haproxy) != boot, "a new metrics listener needs a reload"
    boot = await worker_pid(haproxy)
    assert await versions(port, 10) == {"v2": 10}
    await haproxy.apply(table=table(port, upstreams, weights={"v1": 50, "v2": 50}, metrics_listen=metrics))
    assert await worker_pid(haproxy) == boot, "the same metrics listener must not reload"
    async with httpx.AsyncClient(base_url=f"http://{metrics}") as client:
        text = (await client.get("/metrics")).text
        assert (await client.get("/other")).status_code == 404
    served = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith('haproxy_server_http_responses_total{proxy="all",')}
    v2 = sum(v for k, v in served.items() if 'server="v2:' in k and 'code="2xx"' in k)
    assert v2 == 10, text[:2000]


async def test_a_configuration_haproxy_refuses_leaves_the_running_one(
    haproxy: HaproxyRouter, upstreams: Any
) -> None:
    port = free_port()
    await haproxy.apply(table=table(port, upstreams))
    boot = await worker_pid(haproxy)
    with pytest.raises(RouterConfigError, match="HAProxy refused the configuration") as refused:
        await haproxy.apply(table=table(port, upstreams, preview_listen="127.0.0.1:99999", preview_release="v2"))
    # permanent: the same table fails the same way, so the controller must not retry it as if transient
    assert isinstance(refused.value, PermanentError) and not isinstance(refused.value, TemporaryError)
    assert await worker_pid(haproxy) == boot
    got = await versions(port, 10)
    assert set(got) == {"v1", "v2"} and got.total() == 10


async def test_external_mode_drives_the_servers_of_one_backend(upstreams: Any, state_dir: Path) -> None:
    port = free_port()
    folder = state_dir / "theirs"
    folder.mkdir()
    config = folder / "haproxy.cfg"
    config.write_text(
        "global\n"
        f"    stats socket {folder}/admin.sock mode 600 level admin\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n"
        f"frontend web\n    bind 127.0.0.1:{port}\n    default_backend app\n"
        f"backend app\n    balance roundrobin\n    server theirs {upstreams['a1'].address}\n"
    )
    proc = subprocess.Popen(["haproxy", "-f", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    router = get_router("haproxy", state_dir=state_dir, socket=str(folder / "admin.sock"), backend="app")
    try:
        assert await wait_until(lambda: (folder / "admin.sock").exists())
        await RuntimeApi(folder / "admin.sock").run(["set server app/theirs weight 0"])
        ours = table(port, pick(upstreams, "a2", "b1"), weights={"v1": 0, "v2": 100})
        await router.apply(table=ours)
        assert await versions(port, 10) == {"v2": 10}
        with pytest.raises(RouterConfigError, match="weights only"):
            await router.apply(table=ours.model_copy(update={"header_routes": (
                HeaderRoute(header="X-Canary", value="1", release="v1"),)}))
        with pytest.raises(RouterConfigError, match="metricsListen is not supported with an external HAProxy"):
            await router.apply(table=ours.model_copy(update={"metrics_listen": f"127.0.0.1:{free_port()}"}))
        assert (await router.stats(service="shop")).release("v2").requests == 10
        await router.stop(service="shop")  # removes our servers, leaves theirs
        names = [s.name for s in await RuntimeApi(folder / "admin.sock").servers()]
        assert names == ["theirs"]
    finally:
        await router.close()
        proc.terminate()
        proc.wait(10)


async def test_a_pid_file_naming_another_process_is_not_taken_for_haproxy(haproxy: HaproxyRouter,
                                                                         upstreams: Any) -> None:
    """A pid file outlives its HAProxy (a SIGKILL, a reboot) and its number may be another process's by now: that
    process is never signalled (the recovery of a master that does not answer would end it) nor taken for
    HAProxy — the next apply starts one."""
    with stale_pid_file(haproxy.state_dir / "haproxy" / "shop" / "haproxy.pid"):
        port = free_port()
        started = time.monotonic()
        await haproxy.apply(table=table(port, upstreams))
        assert time.monotonic() - started < 5.0, "started at once, not after waiting for the other process"
        assert (await versions(port, 10)).total() == 10
        await haproxy.stop(service="shop")


async def test_stats_of_a_service_with_no_haproxy_are_empty(haproxy: HaproxyRouter) -> None:
    stats = await haproxy.stats(service="nothing")
    assert stats.boot == "" and stats.releases == {}


# -- helpers ---------------------------------------------------------------------------------


async def wait_until_async(predicate: Any, timeout: float = 5.0) -> bool:
    return bool(await waiting.until_awaited(predicate, timeout=timeout))


async def _boot_changed(router: HaproxyRouter, boot: str) -> bool:
    with_boot = (await router.stats(service="shop")).boot
    return with_boot not in ("", boot)


async def _stopped(router: HaproxyRouter) -> bool:
    return (await router.stats(service="shop")).boot == ""


async def _latency_count(router: HaproxyRouter, n: int) -> bool:
    stats = await router.stats(service="shop")
    return sum(sum(s.latency_buckets) for s in stats.releases.values()) >= n


async def _inflight(router: HaproxyRouter, endpoint: str) -> bool:
    return (await router.stats(service="shop")).inflight.get(endpoint, 0) > 0


async def _deleted(router: HaproxyRouter, endpoints: set[str]) -> bool:
    return not endpoints & set((await router.stats(service="shop")).inflight)


async def _master(folder: Path, command: str) -> None:
    await master_command(folder / "master.sock", command)
