"""The builtin router's fast path: plain requests served by protocol callbacks, no streams, no tasks.

Most requests through a reverse proxy are the same: an HTTP/1.1 request with no
body, answered with a body of known length on a pooled keep-alive connection.
For those, asyncio streams cost more than the proxying itself (a task switch,
futures and buffer copies per read), so a client connection starts as a
`FastClient` protocol and serves such requests straight from
`data_received`: parse the head (with `wire`, the same strict parser), pick an
endpoint (with `plan`), write the rewritten head to a `FastUpstream`
(`fast_upstream`) — a pooled protocol connection — which writes the response
back as it arrives, with flow control both ways.

Anything else — a request body, HTTP/1.0, HEAD, Upgrade, Expect; a response
that is interim, chunked, delimited by the close, or a failure to report —
is handed over to the stream path of `streams`, which handles every case: the
connection (and, mid-exchange, the upstream connection too) is switched to a
`StreamReaderProtocol` with the bytes received so far fed back in, and
`Traffic.serve` carries on. The two paths rewrite heads (`rewrite`), count and
choose endpoints the same way, so a client cannot tell which one served it.

`FastUpstream` reports back through the `fast_upstream.ExchangeOwner` methods
of `FastClient`; the dependency goes one way, this module → `fast_upstream`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from stagewise.errors import BadMessageError, UpstreamBrokenError, UpstreamSilentError
from stagewise.routers.builtin.exchange import CONNECT_TIMEOUT, response_head
from stagewise.routers.builtin.fast_upstream import FastUpstream, Pending
from stagewise.routers.builtin.plan import Endpoint
from stagewise.routers.builtin.pool import Upstream
from stagewise.routers.builtin.rewrite import plain_request_head, request_headers
from stagewise.routers.builtin.streams import Traffic
from stagewise.routers.builtin.wire import (
    MAX_HEAD,
    NO_BODY,
    BodyReader,
    build_head,
    parse_head,
    request_framing,
    tokens,
)

HandOver = Callable[[asyncio.Transport, bytes, "bytes | None", "Pending | None"], None]
"""Switch a client connection to the stream path: transport, client bytes not yet used, and — mid
exchange — the upstream's bytes so far and the exchange they belong to."""
_NO_HEADERS: dict[bytes, bytes] = {}


class FastClient(asyncio.Protocol):
    """One client connection while its requests are plain (see the module docstring)."""

    def __init__(self, traffic: Traffic, preview: bool, hand_over: HandOver) -> None:
        self.traffic = traffic
        self.preview = preview
        self.hand_over_to_streams = hand_over
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.client_ip = b"unknown"
        self.pending: Pending | None = None
        self.busy = False
        self.idle_since = time.monotonic()
        self.gone = False
        self.paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client_ip = str(peer[0]).encode()
        self.traffic.clients.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.pending is None:
            self._next()
        elif len(self.buffer) > MAX_HEAD and self.transport is not None:
            self.transport.pause_reading()  # a pipelining client must wait for its answers

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.traffic.clients.discard(self)
        pending = self.pending
        if pending is not None and pending.upstream is not None:
            pending.upstream.client_gone()

    def pause_writing(self) -> None:
        self.paused = True
        if self.pending is not None and self.pending.upstream is not None:
            self.pending.upstream.pause()

    def resume_writing(self) -> None:
        self.paused = False
        if self.pending is not None and self.pending.upstream is not None:
            self.pending.upstream.resume()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- requests --------------------------------------------------------------------------

    def _next(self) -> None:
        """Serve the next request in the buffer, if its head is all there."""
        transport = self.transport
        if transport is None or self.gone:
            return
        if self.traffic.draining:
            transport.close()
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._to_streams()  # the stream path answers 431
            return
        started = time.perf_counter()
        data = self.buffer[: end + 4]
        plan = self.traffic.plan
        if plan is None:
            self._to_streams()
            return
        # a request that needs no rewriting, to a table that routes on no header: no parse at all
        method = None
        if self.preview or not (plan.header_routes or plan.cohort is not None):
            method = plain_request_head(data)
        if method is not None:
            keep = True
            request = data[:-2] + b"X-Forwarded-For: " + self.client_ip + b"\r\n\r\n"
            release, group, start = plan.choose_preview() if self.preview else plan.choose(_NO_HEADERS)
        else:
            try:
                head = parse_head(data, request=True)
                kind, _ = request_framing(head.index)
            except BadMessageError:
                self._to_streams()  # the stream path answers with the right status and closes
                return
            method, target, version = head.start
            index = head.index
            if (kind != NO_BODY or version != b"HTTP/1.1" or method == b"HEAD" or b"expect" in index
                    or b"upgrade" in index):
                self._to_streams()
                return
            connection = tokens(index.get(b"connection"))
            keep = b"close" not in connection
            release, group, start = plan.choose_preview() if self.preview else plan.choose(index)
            headers = request_headers(head, connection, self.client_ip)
            request = build_head(method + b" " + target + b" HTTP/1.1", headers)
        if not group:
            self._to_streams()  # it answers 502 with the reason, and counts it
            return
        self.buffer = self.buffer[end + 4:]
        self.busy = True
        self.traffic.begin()
        ep = group[start % len(group)]
        upstream = ep.pool.take_fast()
        if upstream is not None:  # endpoints take turns, as on the stream path: this one, warm
            self._send(Pending(ep, release, method, keep, started), upstream, request, data)
            return
        # no idle connection to it: open one (off the hot path), or to the next endpoint that takes one
        pending = Pending(ep, release, method, keep, started)
        self.pending = pending
        asyncio.get_running_loop().create_task(self._connect(group, start, pending, request, data))

    async def _connect(self, group: tuple[Endpoint, ...], start: int, pending: Pending, request: bytes,
                       data: bytes) -> None:
        loop = asyncio.get_running_loop()
        n = len(group)
        for k in range(n):
            ep = group[(start + k) % n]
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    _, upstream = await loop.create_connection(
                        lambda ep=ep: FastUpstream(ep), ep.pool.host, ep.pool.port)  # type: ignore[misc]
            except (OSError, TimeoutError):
                continue
            pending.ep = ep
            self._send(pending, upstream, request, data)
            return
        self._finish()
        self.buffer = data + self.buffer
        self._to_streams()  # it finds no endpoint either, and answers 502 saying why

    def _send(self, pending: Pending, upstream: FastUpstream, request: bytes, data: bytes) -> None:
        self.pending = pending
        pending.upstream = upstream
        pending.ep.inflight += 1
        upstream.start(self, pending, request, data)
        if self.gone:
            upstream.client_gone()

    def _finish(self) -> None:
        """The exchange is over (or handed over): account for it."""
        self.pending = None
        self.busy = False
        self.idle_since = time.monotonic()
        self.traffic.end()

    def _to_streams(self, upstream_bytes: bytes | None = None, pending: Pending | None = None) -> None:
        transport = self.transport
        self.traffic.clients.discard(self)
        self.transport = None
        if transport is None or transport.is_closing():
            return
        buffered, self.buffer = self.buffer, b""
        transport.resume_reading()  # we may have paused it; the stream reader does its own flow control
        self.hand_over_to_streams(transport, buffered, upstream_bytes, pending)

    # -- fast_upstream.ExchangeOwner: how the upstream side reports back -------------------

    @property
    def draining(self) -> bool:
        return self.traffic.draining

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.gone:
            self.transport.write(data)

    def exchange_done(self, pending: Pending, *, status: int, keep: bool) -> None:
        pending.ep.inflight -= 1
        self.traffic.counters.record(pending.release, error=status >= 500,
                                     latency_ms=(time.perf_counter() - pending.started) * 1000.0)
        self._finish()
        if not keep or self.gone or self.traffic.draining:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is not None and len(self.buffer) <= MAX_HEAD:
            self.transport.resume_reading()
        if self.buffer:
            self._next()

    def exchange_cut(self, pending: Pending) -> None:
        pending.ep.inflight -= 1
        # a client that left is not the release's fault; an upstream failing mid-response is
        self.traffic.counters.record(pending.release, error=not self.gone,
                                     latency_ms=(time.perf_counter() - pending.started) * 1000.0)
        self._finish()
        if self.transport is not None:
            self.transport.abort()

    def retry_on_streams(self, pending: Pending, request: bytes) -> None:
        pending.ep.inflight -= 1
        self.buffer = request + self.buffer
        self._finish()
        self._to_streams()

    def hand_over_mid_exchange(self, pending: Pending, upstream_bytes: bytes) -> None:
        self.pending = None
        self.busy = False
        self._to_streams(upstream_bytes, pending)


async def finish_on_streams(traffic: Traffic, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            upstream: Upstream, pending: Pending, *, preview: bool) -> None:
    """Finish on the stream path an exchange the fast path began, then serve the connection on."""
    ep = pending.ep
    try:
        try:
            head = await response_head(upstream.reader)
        except (UpstreamSilentError, UpstreamBrokenError) as exc:
            upstream.abort()
            why = f"instance {ep.id} failed before answering: {exc}"
            keep = await traffic.refuse(writer, ep.release, pending.started, why, pending.keep_client,
                                        BodyReader(reader, NO_BODY))
        else:
            keep = await traffic.relay(reader, writer, ep, upstream, head, None, None, pending.method, False,
                                       pending.keep_client, pending.started)
    finally:
        ep.inflight -= 1
        traffic.end()
    if keep:
        await traffic.serve(reader, writer, preview=preview)
    else:
        writer.close()
