"""The builtin router's fast path (`fast`): plain requests by protocol callbacks, the rest handed over.

`test_builtin.py` holds the proxy to its contract whichever path serves a
request; these tests aim at the seams between the two paths: pipelined
requests, a connection moving to the stream path in the middle of an
exchange and carrying on there, and a client that leaves mid-request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stagewise.basics.ports import free_port
from stagewise.core.routes import Endpoint, RouteTable
from stagewise.routers.builtin import BuiltinRouter
from stagewise.routers.builtin.rewrite import plain_request_head, plain_response_head
from stagewise.routers.builtin.wire import (
    LENGTH,
    NO_BODY,
    end_to_end,
    parse_head,
    request_framing,
    response_framing,
    tokens,
)
from tests.routers.conftest import raw_connection, read_response, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]
shared_loop = pytest.mark.asyncio(loop_scope="module")
"""The shared proxy's admin client lives in the module's event loop."""


def one_release(port: int, upstreams: dict[str, Any]) -> RouteTable:
    endpoints = (Endpoint(id="a1", release="v1", address=upstreams["a1"].address),)
    return RouteTable(service="shop", listen=f"127.0.0.1:{port}", stable="v1", endpoints=endpoints)


@shared_loop
async def test_pipelined_requests_are_answered_in_order(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=one_release(port, upstreams))
    async with raw_connection(port) as (reader, writer):
        writer.write(b"".join(b"GET /?status=%d HTTP/1.1\r\nHost: t\r\n\r\n" % s for s in (200, 404, 201)))
        statuses = [(await read_response(reader)).status for _ in range(3)]
    assert statuses == [200, 404, 201]


@shared_loop
async def test_a_connection_moves_to_the_stream_path_mid_exchange_and_carries_on(
    router: BuiltinRouter, upstreams: Any
) -> None:
    port = free_port()
    await router.apply(table=one_release(port, upstreams))
    async with raw_connection(port) as (reader, writer):
        for request, expected in (
            (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", b"v1"),  # fast
            (b"GET /chunked?n=3 HTTP/1.1\r\nHost: t\r\n\r\n", b"piece 0;piece 1;piece 2;"),  # chunked: handed over
            (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", b"v1"),  # on the stream path from now on
            (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        ):
            writer.write(request)
            response = await read_response(reader)
            assert (response.status, response.body) == (200, expected)


@shared_loop
async def test_a_request_with_a_body_goes_the_stream_way_from_the_start(router: BuiltinRouter, upstreams: Any) -> None:
    port = free_port()
    await router.apply(table=one_release(port, upstreams))
    async with raw_connection(port) as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        assert (await read_response(reader)).body == b"abc"
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
        response = await read_response(reader)
    assert response.headers["x-seen-forwarded-for"] == "10.0.0.1, 127.0.0.1"


@shared_loop
async def test_a_client_that_leaves_mid_request_is_not_the_release_s_error(
    router: BuiltinRouter, upstreams: Any
) -> None:
    port = free_port()
    await router.apply(table=one_release(port, upstreams))
    before = (await router.stats(service="shop")).release("v1")
    async with raw_connection(port) as (_, writer):
        writer.write(b"GET /?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.05)
    assert await wait_until(lambda: upstreams["a1"].open == 0, timeout=3)
    stats = await router.stats(service="shop")
    after = stats.release("v1")
    assert after.requests - before.requests == 1 and after.errors == before.errors
    assert stats.inflight.get("a1", 0) == 0
    async with raw_connection(port) as (reader, writer):  # and the endpoint serves on
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_response(reader)).status == 200


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"DELETE /x?y=1 HTTP/1.1\r\nHost: t\r\nAccept: */*\r\nCookie: a=b; c=d\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 503 Busy\r\nServer: s\r\nContent-Length: 10\r\nConnection: keep-alive\r\nX-Version: v1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n",
]


@pytest.mark.parametrize("head", REQUESTS)
def test_a_request_passed_on_unparsed_is_one_the_full_parse_would_pass_on_unchanged(head: bytes) -> None:
    method = plain_request_head(head)
    if method is None:
        return
    parsed = parse_head(head, request=True)  # the full parse must accept it ...
    assert parsed.start[0] == method and parsed.start[2] == b"HTTP/1.1"
    assert request_framing(parsed.index) == (NO_BODY, 0)
    # ... and would have forwarded the same headers (X-Forwarded-For is added after them either way)
    assert end_to_end(parsed.headers, tokens(parsed.index.get(b"connection"))) == parsed.headers
    assert b"x-forwarded-for" not in parsed.index and b"expect" not in parsed.index


@pytest.mark.parametrize("head", RESPONSES)
def test_a_response_passed_on_unparsed_is_one_the_full_parse_would_pass_on_unchanged(head: bytes) -> None:
    plain = plain_response_head(head)
    if plain is None:
        return
    status, length, sent = plain
    parsed = parse_head(head, request=False)
    assert int(parsed.start[1]) == status
    assert response_framing(b"GET", status, parsed.index) == (LENGTH, length)
    # what the full path forwards: the end-to-end headers, Content-Length among them (order aside)
    forwarded = end_to_end(parsed.headers, tokens(parsed.index.get(b"connection")))
    forwarded += [h for h in parsed.headers if h[0].lower() == b"content-length"]
    assert sorted(parse_head(sent, request=False).headers) == sorted(forwarded)

def test_the_plain_checks_take_the_common_heads() -> None:
    assert plain_request_head(REQUESTS[0]) == b"GET"
    assert plain_response_head(RESPONSES[1]) is not None
    assert [plain_request_head(h) for h in REQUESTS[2:]] == [None] * len(REQUESTS[2:])
    assert [plain_response_head(h) for h in RESPONSES[2:]] == [None] * len(RESPONSES[2:])
