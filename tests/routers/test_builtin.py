"""The builtin router against real proxy processes and real upstream servers.

Proxies are started through `BuiltinRouter` (or, for the process's own
contract, as `python -m stagewise.routers.builtin.proxy`) and get real HTTP on
loopback. Tests that only apply tables and send traffic share one proxy — a
table replaces the last one whole, and counters are read relative to a
snapshot — while tests of the life cycle get a proxy of their own. Counts are
exact where the design promises exactness: smooth weighted round-robin makes a
20/80 split exactly 100/400 of 500 requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagewise.basics.ports import free_port
from stagewise.core.routes import CohortRoute, Endpoint, HeaderRoute, RouteTable, cohort_bucket, in_cohort
from stagewise.core.stats import LATENCY_BOUNDS_MS, RouterStats
from stagewise.errors import RouterError
from stagewise.routers.builtin import BuiltinRouter
from tests.routers.conftest import (
    RawClient,
    RawUpstream,
    Upstream,
    raw_client,
    raw_connection,
    read_response,
    stop_all,
    wait_until,
)

# one event loop per module: the shared proxy's admin client lives in it
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.integration, pytest.mark.timeout(40)]


def make_table(port: int, upstreams: dict[str, Any], **kw: Any) -> RouteTable:
    endpoints = tuple(Endpoint(id=n, release=u.release, address=u.address) for n, u in upstreams.items())
    return RouteTable(service="shop", listen=f"127.0.0.1:{port}", stable="v1", endpoints=endpoints, **kw)


@contextlib.asynccontextmanager
async def client(port: int, **kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0, **kw) as c:
        yield c


def pick(upstreams: dict[str, Upstream], *names: str) -> dict[str, Upstream]:
    return {n: upstreams[n] for n in names}


# -- routing -------------------------------------------------------------------------


async def test_weighted_split_is_exact_with_smooth_round_robin(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=make_table(port, upstreams, weights={"v1": 20, "v2": 80}))
    before = await router.stats(service="shop")
    async with raw_client(port) as c:
        versions = [await c.version() for _ in range(500)]
    assert Counter(versions) == {"v1": 100, "v2": 400}
    assert all(versions[i : i + 5].count("v1") == 1 for i in range(0, 500, 5)), "interleaved, not bunched"
    # endpoints of a release take turns
    assert upstreams["a1"].requests == upstreams["a2"].requests == 50
    assert upstreams["b1"].requests == upstreams["b2"].requests == 200
    stats = (await router.stats(service="shop")).since(before)
    assert stats.release("v1").requests == 100 and stats.release("v2").requests == 400


async def test_zero_weight_gets_nothing_and_no_weights_means_every_endpoint_alike(
    router: BuiltinRouter, upstreams: Any
) -> None:
    port = free_port()
    await router.apply(table=make_table(port, upstreams, weights={"v1": 100, "v2": 0}))
    async with raw_client(port) as c:
        assert {await c.version() for _ in range(40)} == {"v1"}
        # the only weighted release has no endpoint: zero-weight ones serve rather than none
        await router.apply(table=make_table(port, pick(upstreams, "b1"), weights={"v1": 100, "v2": 0}))
        assert await c.version() == "v2"
        await router.apply(table=make_table(port, pick(upstreams, "a1", "b1", "b2")))
        got = Counter([await c.version() for _ in range(30)])
    assert got == {"v1": 10, "v2": 20}


def keys_by_bucket(lo: int, hi: int, n: int) -> list[str]:
    """n cohort keys whose bucket is in [lo, hi)."""
    keys = (f"user-{i}" for i in itertools.count())
    return list(itertools.islice((k for k in keys if lo <= cohort_bucket(k) < hi), n))


async def test_cohort_is_sticky_and_monotone(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    on_at_5 = keys_by_bucket(0, 500, 20)
    joins_at_10 = keys_by_bucket(500, 1000, 20)
    never = keys_by_bucket(1000, 10_000, 20)
    assert all(in_cohort(k, 5) for k in on_at_5) and not any(in_cohort(k, 5) for k in joins_at_10)

    async def versions(c: RawClient, keys: list[str]) -> set[str]:
        return {await c.version(headers={"X-User": k}) for k in keys}

    cohort5 = CohortRoute(release="v2", percent=5, header="X-User")
    await router.apply(table=make_table(port, upstreams, weights={"v1": 50, "v2": 50}, cohort=cohort5))
    async with raw_client(port) as c:
        assert await versions(c, on_at_5) == {"v2"}
        assert await versions(c, joins_at_10 + never) == {"v1"}
        # no key: stable, whatever the weights say
        assert {await c.version() for _ in range(20)} == {"v1"}
        cohort10 = CohortRoute(release="v2", percent=10, header="X-User")
        await router.apply(table=make_table(port, upstreams, cohort=cohort10))
        assert await versions(c, on_at_5 + joins_at_10) == {"v2"}
        assert await versions(c, never) == {"v1"}


async def test_cohort_key_from_cookie_and_fallthrough_without_endpoints(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    inside, outside = keys_by_bucket(0, 2000, 1)[0], keys_by_bucket(2000, 10_000, 1)[0]
    cohort = CohortRoute(release="v2", percent=20, cookie="uid")
    await router.apply(table=make_table(port, upstreams, cohort=cohort))
    async with raw_client(port) as c:
        for _ in range(3):
            assert await c.version(headers={"Cookie": f"theme=dark; uid={inside}; x=1"}) == "v2"
            assert await c.version(headers={"Cookie": f"uid={outside}"}) == "v1"
        # the cohort release has no endpoint: weights decide (here: every endpoint alike, all v1)
        await router.apply(table=make_table(port, pick(upstreams, "a1", "a2"), cohort=cohort))
        assert await c.version(headers={"Cookie": f"uid={inside}"}) == "v1"


async def test_header_routes_come_first(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    routes = (HeaderRoute(header="X-Canary", value="always", release="v2"),)
    cohort = CohortRoute(release="v2", percent=0, header="X-User")
    await router.apply(table=make_table(port, upstreams, weights={"v1": 100, "v2": 0}, header_routes=routes))
    async with raw_client(port) as c:
        assert await c.version(headers={"x-canary": "always"}) == "v2"
        assert await c.version(headers={"X-Canary": "sometimes"}) == "v1"
        assert await c.version() == "v1"
        await router.apply(table=make_table(port, upstreams, header_routes=routes, cohort=cohort))
        assert await c.version(headers={"X-Canary": "always", "X-User": "u"}) == "v2"
        # a header route to a release without endpoints falls through to the weights
        await router.apply(table=make_table(port, pick(upstreams, "a1"), header_routes=routes))
        assert await c.version(headers={"X-Canary": "always"}) == "v1"


async def test_preview_listener_opens_and_closes(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    preview = free_port(avoid={port})  # two calls may get the same port from the kernel
    weights = {"v1": 100, "v2": 0}
    await router.apply(
        table=make_table(port, upstreams, weights=weights, preview_listen=f"127.0.0.1:{preview}", preview_release="v2")
    )
    before = await router.stats(service="shop")
    async with raw_client(port) as main, raw_client(preview) as pre:
        assert {await pre.version() for _ in range(10)} == {"v2"}
        assert {await main.version() for _ in range(10)} == {"v1"}
    await router.apply(table=make_table(port, upstreams, weights=weights))
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", preview)
    stats = (await router.stats(service="shop")).since(before)
    assert stats.release("v2").requests == 10


async def test_listen_address_moves_and_unbindable_listener_is_refused(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    other = free_port(avoid={port})  # two calls may get the same port from the kernel
    await router.apply(table=make_table(port, upstreams))
    await router.apply(table=make_table(other, upstreams))
    async with raw_client(other) as c:
        assert (await c.get()).status == 200
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RouterError, match=r"409.*cannot listen"):
            await router.apply(table=make_table(taken.getsockname()[1], upstreams))
    async with raw_client(other) as c:  # the refused table changed nothing
        assert (await c.get()).status == 200


# -- counting ------------------------------------------------------------------------


async def test_stats_count_requests_errors_and_latency(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=make_table(port, pick(upstreams, "a1", "b1"), weights={"v1": 50, "v2": 50}))
    before = await router.stats(service="shop")
    async with client(port) as c:
        for _ in range(10):
            await c.get("/")
        for _ in range(4):
            await c.get("/", params={"status": "503"})
        for _ in range(4):
            await c.get("/", params={"status": "404", "ms": "30"})
    stats = (await router.stats(service="shop")).since(before)
    assert sum(s.requests for s in stats.releases.values()) == 18
    assert sum(s.errors for s in stats.releases.values()) == 4
    for s in stats.releases.values():
        assert len(s.latency_buckets) == len(LATENCY_BOUNDS_MS) + 1
        assert sum(s.latency_buckets) == s.requests == 9
        assert s.latency_sum_ms >= 2 * 30
        assert s.quantile_ms(1.0) >= 30  # the slow ones were timed until sent
    assert stats.inflight == {"a1": 0, "b1": 0}
    assert stats.boot == before.boot != ""


async def test_no_endpoint_is_a_counted_502(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=make_table(port, {}))
    before = await router.stats(service="shop")
    async with client(port) as c:
        r = await c.get("/")
        assert r.status_code == 502 and "no ready instance of service shop" in r.text
        # an endpoint that refuses connections: 502 too, counted on its release
        dead = free_port()
        endpoints = (Endpoint(id="gone", release="v2", address=f"127.0.0.1:{dead}"),)
        await router.apply(table=make_table(port, {}).model_copy(update={"endpoints": endpoints}))
        r = await c.get("/")
        assert r.status_code == 502 and "gone" in r.text
    stats = (await router.stats(service="shop")).since(before)
    assert stats.release("v1").errors == stats.release("v1").requests == 1
    assert stats.release("v2").errors == 1


# -- HTTP on the wire ------------------------------------------------------------------


async def test_chunked_bodies_both_ways_and_http10(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=make_table(port, pick(upstreams, "a1")))
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"hello ", b"chunked ", b"world")) + b"0\r\n\r\n"
    async with raw_connection(port) as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        r = await read_response(reader)
        assert r.status == 200 and r.body == b"hello chunked world"
        writer.write(b"GET /chunked?n=4 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = await read_response(reader)
        assert r.chunked and r.body == b"piece 0;piece 1;piece 2;piece 3;"
    async with raw_connection(port) as (reader, writer):  # HTTP/1.0 gets no chunks: read until close
        writer.write(b"GET /chunked?n=2 HTTP/1.0\r\nHost: x\r\n\r\n")
        r = await read_response(reader)
        assert not r.chunked and r.body == b"piece 0;piece 1;"
        assert r.headers["connection"] == "close"
    async with raw_connection(port) as (reader, writer):  # HTTP/1.0 keep-alive with a known length
        for _ in range(2):
            writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = await read_response(reader)
            assert r.body == b"v1" and r.headers["connection"].lower() == "keep-alive"


async def test_head_expect_continue_upgrade_and_smuggling(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    echo = RawUpstream("upgrade")
    try:
        await router.apply(table=make_table(port, pick(upstreams, "a1")))
        async with raw_connection(port) as (reader, writer):
            writer.write(b"HEAD /big?n=100 HTTP/1.1\r\nHost: x\r\n\r\n")
            r = await read_response(reader, head_request=True)
            assert r.status == 200 and r.headers["content-length"] == "100"
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            assert (await read_response(reader)).body == b"hello"
            writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
            r = await read_response(reader)
            assert r.status == 400 and r.headers["connection"] == "close"
            assert await reader.read() == b""
        assert upstreams["a1"].requests == 2, "the ambiguous request must not reach the upstream"
        await router.apply(table=make_table(port, {"e1": echo}))
        async with raw_connection(port) as (reader, writer):
            writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            r = await read_response(reader, head_request=True)
            assert r.status == 101 and r.headers["upgrade"] == "echo"
            writer.write(b"tunnelled bytes")
            assert await reader.readexactly(15) == b"TUNNELLED BYTES"
    finally:
        echo.stop()


def proxy_pid(state_dir: Path) -> int:
    return int((state_dir / "routers" / "shop" / "pid").read_text())


def peak_rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1))  # type: ignore[union-attr]


async def test_large_bodies_stream_both_ways(router: BuiltinRouter, upstreams: Any, router_dir: Path) -> None:
    port = free_port()
    await router.apply(table=make_table(port, pick(upstreams, "a1")))
    payload = os.urandom(5 * 1024 * 1024)
    async with client(port) as c:
        await c.get("/")
        peak_before = peak_rss_kib(proxy_pid(router_dir))
        r = await c.post("/echo", content=payload)
        assert r.status_code == 200 and r.content == payload

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 256 * 1024):
                yield payload[i : i + 256 * 1024]

        r = await c.post("/echo", content=pieces())  # chunked upload
        assert r.status_code == 200 and hashlib.sha256(r.content).digest() == hashlib.sha256(payload).digest()
        r = await c.get("/big", params={"n": str(len(payload))})
        assert len(r.content) == len(payload)
    grown = peak_rss_kib(proxy_pid(router_dir)) - peak_before
    assert grown < 3 * 1024, f"the proxy's peak memory grew by {grown} KiB: a body was held whole"


async def test_keep_alive_is_reused_both_sides(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=make_table(port, pick(upstreams, "a1")))
    async with raw_connection(port) as (reader, writer):
        for _ in range(20):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).status == 200
    assert upstreams["a1"].requests == 20 and upstreams["a1"].connections == 1


async def test_connection_close_is_honoured_both_ways(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=make_table(port, pick(upstreams, "a1")))
    async with raw_connection(port) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = await read_response(reader)
        assert r.status == 200 and r.headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the proxy closed its side
    async with raw_connection(port) as (reader, writer):
        for _ in range(3):  # the upstream closes: the client's connection stays, the upstream's does not
            writer.write(b"GET /?close=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            r = await read_response(reader)
            assert r.status == 200 and "connection" not in r.headers
    # one kept from the first exchange, used once more; then one new per closed connection
    assert upstreams["a1"].connections == 3


async def test_forwarded_for_and_hop_by_hop_headers(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=make_table(port, pick(upstreams, "a1")))
    async with client(port) as c:
        r = await c.get("/")
        assert r.headers["x-seen-forwarded-for"] == "127.0.0.1"
        r = await c.get(
            "/",
            headers={
                "X-Forwarded-For": "10.1.2.3",
                "Connection": "keep-alive, X-Private",
                "X-Private": "secret",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "X-Kept": "yes",
            },
        )
    assert r.headers["x-seen-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    seen = set(r.headers["x-seen-headers"].split(","))
    assert "x-kept" in seen and not seen & {"x-private", "keep-alive", "te", "connection"}


async def test_stale_pooled_connection_is_retried(router: BuiltinRouter) -> None:
    stale = RawUpstream("second")
    idle = RawUpstream("idle")
    try:
        port = free_port()
        await router.apply(table=make_table(port, {"s1": stale}))
        before = await router.stats(service="shop")
        async with client(port) as c:
            for i in range(10):
                r = await c.post("/", content=b"body %d" % i)
                assert r.status_code == 200 and r.content == b"body %d" % i
            assert stale.connections >= 10  # every reuse found the connection dead
            await router.apply(table=make_table(port, {"s1": idle}))
            for _ in range(5):
                assert (await c.get("/")).status_code == 200
                await asyncio.sleep(0.12)
        stats = (await router.stats(service="shop")).since(before)
        assert stats.release("v1").requests == 15 and stats.release("v1").errors == 0
    finally:
        stale.stop()
        idle.stop()


# -- tables changing under load --------------------------------------------------------


async def test_removed_endpoint_finishes_in_flight_and_closes_idle(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    a1 = upstreams["a1"]
    await router.apply(table=make_table(port, pick(upstreams, "a1")))
    async with client(port) as c:
        # overlapping requests: the proxy opens, then pools, one upstream connection each
        await asyncio.gather(*(c.get("/", params={"ms": "100"}) for _ in range(4)))
        assert a1.open == 4
        slow = asyncio.create_task(c.get("/", params={"ms": "600"}))
        assert await wait_until(lambda: a1.requests == 5)
        await router.apply(table=make_table(port, pick(upstreams, "a2")))
        assert await wait_until(lambda: a1.open == 1), "idle connections to a1 were not closed"
        assert (await router.stats(service="shop")).inflight.get("a1") == 1
        r = await slow
        assert r.status_code == 200 and r.content == b"v1"
        assert await wait_until(lambda: a1.open == 0)
        assert (await c.get("/")).status_code == 200 and upstreams["a2"].requests == 1
    assert "a1" not in (await router.stats(service="shop")).inflight


async def test_table_swaps_under_load_drop_nothing(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    tables = [
        make_table(port, upstreams, weights={"v1": 50, "v2": 50}),
        make_table(port, pick(upstreams, "a1", "b1"), weights={"v1": 90, "v2": 10}),
        make_table(port, pick(upstreams, "a2", "b2")),
        make_table(port, pick(upstreams, "a1", "a2", "b2"), weights={"v1": 0, "v2": 100}),
        make_table(port, upstreams, cohort=CohortRoute(release="v2", percent=30, header="X-User")),
    ]
    await router.apply(table=tables[0])
    before = await router.stats(service="shop")
    statuses: Counter[int] = Counter()
    failures: list[BaseException] = []
    total, workers = 3000, 16
    done = asyncio.Event()

    async def worker(w: int) -> None:
        async with raw_client(port) as c:
            for i in range(total // workers):
                try:
                    statuses[(await c.get(headers={"X-User": f"u{w}-{i}"})).status] += 1
                except (OSError, asyncio.IncompleteReadError) as exc:
                    failures.append(exc)
                    await c.close()
            assert c.connections == 1, "the proxy closed a keep-alive connection"

    async def swapper() -> int:
        swaps = 0
        while not done.is_set():
            await router.apply(table=tables[swaps % len(tables)])
            swaps += 1
            await asyncio.sleep(0.02)
        return swaps

    started = time.monotonic()
    swaps_task = asyncio.create_task(swapper())
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(w) for w in range(workers))), timeout=20)
    finally:
        done.set()
        swaps = await swaps_task
    assert not failures, failures[:3]
    assert statuses == {200: total // workers * workers}
    assert swaps >= 5, "the tables did not change during the load"
    assert time.monotonic() - started < 20
    stats = (await router.stats(service="shop")).since(before)
    assert sum(s.requests for s in stats.releases.values()) == total // workers * workers
    assert sum(s.errors for s in stats.releases.values()) == 0


# -- metrics, life cycle -----------------------------------------------------------------


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name; fails on anything the text exposition format does not allow."""
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            assert name not in types, f"second TYPE for {name}"
            types[name] = kind
            continue
        if line.startswith("#"):
            assert line.startswith("# HELP ")
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        name, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no TYPE line before it"
        parsed = dict(_LABEL.findall(labels or ""))
        assert len(parsed) == (labels or "").count('="'), f"bad labels: {labels!r}"
        samples.setdefault(name, []).append((parsed, float(value)))
    return samples


async def test_metrics_parse_as_prometheus_text(own_router: BuiltinRouter, upstreams: Any, state_dir: Path) -> None:
    port = free_port()
    await own_router.apply(table=make_table(port, pick(upstreams, "a1", "b1"), weights={"v1": 50, "v2": 50}))
    async with client(port) as c:
        for status in ("200", "200", "500", "200"):
            await c.get("/", params={"status": status})
    sock = state_dir / "routers" / "shop" / "admin.sock"
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock))) as admin:
        r = await admin.get("http://router/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(r.text)
    requests = {s[0]["release"]: s[1] for s in samples["stagewise_router_requests_total"]}
    errors = {s[0]["release"]: s[1] for s in samples["stagewise_router_errors_total"]}
    assert requests == {"v1": 2, "v2": 2} and sum(errors.values()) == 1
    for release in ("v1", "v2"):
        buckets = [
            (labels["le"], v)
            for labels, v in samples["stagewise_router_request_duration_seconds_bucket"]
            if labels["release"] == release and labels["service"] == "shop"
        ]
        assert buckets[-1][0] == "+Inf" and len(buckets) == len(LATENCY_BOUNDS_MS) + 1
        values = [v for _, v in buckets]
        assert values == sorted(values) and values[-1] == 2
        bounds = [float(le) for le, _ in buckets]
        assert bounds == sorted(bounds) and math.isclose(bounds[0], LATENCY_BOUNDS_MS[0] / 1000)
        (count,) = [
            v for lb, v in samples["stagewise_router_request_duration_seconds_count"] if lb["release"] == release
        ]
        assert count == 2
    inflight = {lb["endpoint"]: v for lb, v in samples["stagewise_router_inflight"]}
    assert inflight == {"a1": 0, "b1": 0}


async def test_a_new_driver_reattaches_to_the_running_proxy(
    own_router: BuiltinRouter, upstreams: Any, state_dir: Path
) -> None:
    port = free_port()
    await own_router.apply(table=make_table(port, pick(upstreams, "a1")))
    pid, boot = proxy_pid(state_dir), (await own_router.stats(service="shop")).boot
    await own_router.close()
    again = BuiltinRouter(state_dir)
    try:
        await again.apply(table=make_table(port, pick(upstreams, "b1")))
        async with client(port) as c:
            assert (await c.get("/")).headers["x-version"] == "v2"
        stats = await again.stats(service="shop")
        assert proxy_pid(state_dir) == pid and stats.boot == boot
        assert stats.release("v2").requests == 1
    finally:
        await again.close()


async def test_stop_leaves_no_process_and_no_socket(own_router: BuiltinRouter, upstreams: Any, state_dir: Path) -> None:
    port = free_port()
    await own_router.apply(table=make_table(port, pick(upstreams, "a1")))
    pid = proxy_pid(state_dir)
    folder = state_dir / "routers" / "shop"
    assert stat.S_IMODE((folder / "admin.sock").stat().st_mode) == 0o600
    await own_router.stop(service="shop")
    assert not Path(f"/proc/{pid}").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["router.log"]
    assert await own_router.stats(service="shop") == RouterStats()
    assert await own_router.stats(service="unknown") == RouterStats()
    await own_router.stop(service="shop")  # stopping twice is fine
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_proxy_process_contract(upstreams: Any, state_dir: Path) -> None:
    """The process itself: stale socket, admin errors, --metrics-listen, draining on SIGTERM."""
    sock = state_dir / "a.sock"
    with socket.socket(socket.AF_UNIX) as stale:  # a socket file nobody listens on
        stale.bind(str(sock))
    port = free_port()
    metrics = free_port(avoid={port})  # two calls may get the same port from the kernel
    argv = [sys.executable, "-m", "stagewise.routers.builtin.proxy", "--admin-socket", str(sock)]
    argv += ["--metrics-listen", f"127.0.0.1:{metrics}"]
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            transport = httpx.AsyncHTTPTransport(uds=str(sock))
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as admin:
                assert await wait_until(lambda: _answers(sock), timeout=10)
                assert (await admin.get("/table")).status_code == 404
                r = await admin.put("/table", content=b'{"service": "shop"}')
                assert r.status_code == 400 and "listen" in r.text
                table = make_table(port, pick(upstreams, "a1"))
                assert (await admin.put("/table", content=table.model_dump_json())).status_code == 204
                assert RouteTable.model_validate_json((await admin.get("/table")).content) == table
                assert (await admin.get("/healthz")).json()["pid"] == proc.pid
            async with httpx.AsyncClient() as c:
                r = await c.get(f"http://127.0.0.1:{metrics}/metrics")
                assert r.status_code == 200 and "# TYPE stagewise_router_requests_total counter" in r.text
                assert (await c.get(f"http://127.0.0.1:{metrics}/table")).status_code == 404
                slow = asyncio.create_task(c.get(f"http://127.0.0.1:{port}/", params={"ms": "500"}))
                assert await wait_until(lambda: upstreams["a1"].requests == 1)
                proc.send_signal(signal.SIGTERM)
                r = await slow
                assert r.status_code == 200 and r.content == b"v1"
            assert await asyncio.to_thread(proc.wait, 5) == 0
            assert not sock.exists()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _answers(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
        return True


async def test_the_proxy_log_is_rotated_and_no_count_is_lost(upstreams: Any, state_dir: Path) -> None:
    """A line per table applied: with a small threshold the log turns over many times, staying bounded,
    and every request through it is counted once."""
    router = BuiltinRouter(state_dir, log_max_bytes=1024)
    folder = state_dir / "routers" / "shop"
    port, sent = free_port(), 0
    try:
        async with client(port) as c:
            for i in range(40):  # ~250 bytes a table's line: ten rotations
                weights = {"v1": 100 - i, "v2": i}
                await router.apply(table=make_table(port, pick(upstreams, "a1", "b1"), weights=weights))
                for _ in range(5):
                    assert (await c.get("/")).status_code == 200
                    sent += 1
        stats = await router.stats(service="shop")
        assert stats.release("v1").requests + stats.release("v2").requests == sent == 200
        log, older = folder / "router.log", folder / "router.log.1"
        assert log.stat().st_size <= 1024 and 0 < older.stat().st_size <= 1024
        assert "serving table of shop" in older.read_text() and "weights {'v1': 61, 'v2': 39}" in log.read_text()
        assert sorted(p.name for p in folder.glob("router.log*")) == ["router.log", "router.log.1"]
    finally:
        await stop_all(router, state_dir)
