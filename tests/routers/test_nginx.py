"""The nginx router against a real nginx (Debian's package) and real upstream servers.

Each test gets its own nginx with its files under a fresh state directory (its
workers' logs in a folder of their own when the tests run as root), on
loopback ports the kernel picks. What the driver
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
import pwd
import shutil
import signal
import stat
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
from tests.routers.conftest import Upstream, short_dir, stale_pid_file, wait_until
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
    port = free_port()
    preview = free_port(avoid={port})  # two calls may get the same port from the kernel
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


async def test_a_pid_file_naming_another_process_is_not_taken_for_nginx(nginx: NginxRouter, upstreams: Any) -> None:
    """A pid file outlives its nginx (a SIGKILL, a reboot) and its number may be another process's by now: that
    process is never signalled (a reload would send it SIGHUP) nor taken for nginx — the next apply starts one."""
    with stale_pid_file(nginx.state_dir / "nginx" / "shop" / "nginx.pid") as other:
        port = free_port()
        await nginx.apply(table=table(port, upstreams))
        assert (await versions(port, 10)).total() == 10
        assert master(nginx) != other.pid
        await nginx.stop(service="shop")


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
        logs = nginx.paths("shop").access_log
        assert logs.stat().st_size < 2048 + 4096, "the log grew past its threshold"
        assert sorted(p.name for p in logs.parent.glob("access.log*")) == ["access.log"], "a rotated file was left"
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
    port = free_port()
    dead = free_port(avoid={port})  # two calls may get the same port from the kernel
    endpoints = (Endpoint(id="gone", release="v2", address=f"127.0.0.1:{dead}"),
                 Endpoint(id="a1", release="v1", address=upstreams["a1"].address))
    await nginx.apply(table=RouteTable(service="shop", listen=f"127.0.0.1:{port}", stable="v1", endpoints=endpoints))
    assert await versions(port, 20) == {"v1": 20}  # nginx tried the dead one first, then a1
    stats = await nginx.stats(service="shop")
    assert stats.release("v1").requests == 20 and stats.release("v2").requests == 0


def uids(pid: int) -> tuple[int, int]:
    """(real, effective) uid of a process, from /proc/PID/status."""
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
    real, effective = line.split()[1:3]
    return int(real), int(effective)


@pytest.mark.skipif(os.geteuid() != 0, reason="only nginx started as root runs its workers as another user")
@pytest.mark.parametrize("user", [None, "www-data"], ids=["nobody", "configured"])
async def test_started_as_root_the_workers_run_unprivileged_and_write_only_their_own_folder(
        upstreams: Any, user: str | None) -> None:
    state = short_dir()
    nginx = NginxRouter(state, workers=2, rotate_bytes=512, rotate_every=0.02, worker_user=user)
    worker = pwd.getpwnam(user or "nobody")
    port = free_port()
    client = Client(port)
    try:
        await nginx.apply(table=table(port, pick(upstreams, "a1")))
        assert uids(master(nginx)) == (0, 0), "the master binds the ports and reads the configuration: root"
        # the master forks its workers after it answers the reload: wait for both, as a user would look again
        assert await wait_until(lambda: len(proc.children(master(nginx))) == 2), proc.children(master(nginx))
        workers = proc.children(master(nginx))
        # a worker drops root right after it is forked, before it takes its first request
        assert await wait_until(lambda: all(uids(w) == (worker.pw_uid,) * 2 for w in workers)), (
            f"workers as {[uids(w) for w in workers]}, not {worker.pw_name}")
        for _ in range(60):  # past the rotation threshold a few times: the workers reopen what the driver made
            assert (await client.get("/")).status == 200
        assert (await nginx.stats(service="shop")).release("v1").requests == 60
        paths = nginx.paths("shop")
        runtime = paths.runtime
        assert state not in runtime.parents, "the workers' folder is outside the state directory"
        assert _mode(runtime) == (0, worker.pw_gid, 0o710), "the workers may pass through, not list or create"
        assert _mode(runtime.parent) == (0, 0, 0o711), "no one may list whose nginx runs"
        for log in (paths.access_log, paths.error_log):
            assert _mode(log) == (worker.pw_uid, worker.pw_gid, 0o600)
        owned = [p for p in state.rglob("*") if p.lstat().st_uid == worker.pw_uid]
        assert owned == [], "nothing of the state directory is the workers' user's"
        assert f"user {user or 'nobody'} " in paths.config.read_text()
    finally:
        await client.close()
        await nginx.stop(service="shop")
        await nginx.close()
        shutil.rmtree(state, ignore_errors=True)
    assert not runtime.exists(), "stop removes the workers' folder"


@pytest.mark.skipif(os.geteuid() != 0, reason="the workers' user only matters when nginx starts as root")
async def test_a_workers_user_that_does_not_exist_is_refused_by_name(upstreams: Any) -> None:
    state = short_dir()
    nginx = NginxRouter(state, worker_user="no-such-user-here")
    try:
        with pytest.raises(RouterConfigError, match=r"'no-such-user-here'.*STAGEWISE_NGINX_USER"):
            await nginx.apply(table=table(free_port(), pick(upstreams, "a1")))
    finally:
        await nginx.close()
        shutil.rmtree(state, ignore_errors=True)


def _mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
