"""The builtin router's fast path: plain requests served by protocol callbacks, no streams, no tasks.

Most requests through a reverse proxy are the same: an HTTP/1.1 request with no
body, answered with a body of known length on a pooled keep-alive connection.
For those, asyncio streams cost more than the proxying itself (a task switch,
futures and buffer copies per read), so a client connection starts as a
`FastClient` protocol and serves such requests straight from
`data_received`: parse the head (with `_http`, the same strict parser), pick an
endpoint (with `_plan`), write the rewritten head to a `FastUpstream`
(`_fast_upstream`) — a pooled protocol connection — which writes the response
back as it arrives, with flow control both ways.

Anything else — a request body, HTTP/1.0, HEAD, Upgrade, Expect; a response
that is interim, chunked, delimited by the close, or a failure to report —
is handed over to the stream path of `_forward`, which handles every case: the
connection (and, mid-exchange, the upstream connection too) is switched to a
`StreamReaderProtocol` with the bytes received so far fed back in, and
`Traffic.serve` carries on. The two paths rewrite heads, count and choose
endpoints the same way, so a client cannot tell which one served it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import cast

from stagewise.routers._exchange import CONNECT_TIMEOUT, Broken, Silent, response_head
from stagewise.routers._fast_upstream import FastUpstream, Pending
from stagewise.routers._forward import Traffic
from stagewise.routers._http import (
    MAX_HEAD,
    NO_BODY,
    BodyReader,
    HttpError,
    build_head,
    end_to_end,
    parse_head,
    request_framing,
    tokens,
)
from stagewise.routers._plan import Endpoint
from stagewise.routers._pool import Upstream

HandOver = Callable[[asyncio.Transport, bytes, "bytes | None", "Pending | None"], None]
"""Switch a client connection to the stream path: transport, client bytes not yet used, and — mid
exchange — the upstream's bytes so far and the exchange they belong to."""
_REPLACED = frozenset({b"x-forwarded-for", b"expect"})
_NO_HEADERS: dict[bytes, bytes] = {}
_PLAIN_REQUEST = re.compile(rb"([A-Z]{1,16}) \S+ HTTP/1\.1\r\n")
_NOT_PLAIN = re.compile(
    rb"\r\n(?:connection[ \t]*:|keep-alive[ \t]*:|proxy-|te[ \t]*:|trailer[ \t]*:|upgrade[ \t]*:|expect[ \t]*:"
    rb"|x-forwarded-for[ \t]*:|[ \t]|[^:\r]*\r\n)")
"""A header to rewrite, or a line `parse_head` would refuse (folded, without a colon), in a lower-cased head
after its request line; every alternative starts with CRLF, which lets the search skip ahead fast."""


def plain_request_head(head: bytes) -> bytes | None:
    """The method of a request head the proxy may pass on as it came (plus X-Forwarded-For), else None.

    That is: HTTP/1.1, not HEAD, no body, no hop-by-hop header, Expect or X-Forwarded-For to rewrite,
    no bare CR or LF, and nothing else `parse_head` would refuse. Anything else takes the full parse.
    """
    match = _PLAIN_REQUEST.match(head)
    if match is None or head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n"):
        return None
    method = match.group(1)
    lower = head[match.end() - 2: -2].lower()
    if (method == b"HEAD" or len(head) == match.end() + 2 or b"content-length" in lower
            or b"transfer-encoding" in lower or b" :" in lower or b"\t:" in lower or _NOT_PLAIN.search(lower)):
        return None
    return method


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
        self.writer = self  # what Traffic.close_idle_clients calls close() on
        self.gone = False
        self.paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client_ip = str(peer[0]).encode()
        self.traffic.clients.add(self)  # type: ignore[arg-type]  # duck-typed like ClientConn

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
            except HttpError:
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
            headers = end_to_end(head.headers, connection | _REPLACED)
            prior = index.get(b"x-forwarded-for")
            headers.append((b"X-Forwarded-For", prior + b", " + self.client_ip if prior else self.client_ip))
            request = build_head(method + b" " + target + b" HTTP/1.1", headers)
        if not group:
            self._to_streams()  # it answers 502 with the reason, and counts it
            return
        self.buffer = self.buffer[end + 4:]
        self.busy = True
        self.traffic.busy += 1
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
        self._finish(pending)
        self.buffer = data + self.buffer
        self._to_streams()  # it finds no endpoint either, and answers 502 saying why

    def _send(self, pending: Pending, upstream: FastUpstream, request: bytes, data: bytes) -> None:
        self.pending = pending
        pending.upstream = upstream
        pending.ep.inflight += 1
        upstream.start(self, pending, request, data)
        if self.gone:
            upstream.client_gone()

    def _finish(self, pending: Pending) -> None:
        """The exchange is over (or handed over): account for it."""
        self.pending = None
        self.busy = False
        self.idle_since = time.monotonic()
        traffic = self.traffic
        traffic.busy -= 1
        if traffic.draining and traffic.busy == 0:
            traffic.quiet.set()

    def done(self, pending: Pending, *, keep: bool) -> None:
        """Called by the upstream when the response has been passed on whole."""
        pending.ep.inflight -= 1
        self._finish(pending)
        if not keep or self.traffic.draining:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is not None and len(self.buffer) <= MAX_HEAD:
            self.transport.resume_reading()
        if self.buffer:
            self._next()

    def _to_streams(self, upstream_bytes: bytes | None = None, pending: Pending | None = None) -> None:
        transport = self.transport
        self.traffic.clients.discard(self)
        self.transport = None
        if transport is None or transport.is_closing():
            return
        buffered, self.buffer = self.buffer, b""
        transport.resume_reading()  # we may have paused it; the stream reader does its own flow control
        self.hand_over_to_streams(transport, buffered, upstream_bytes, pending)

    def hand_over_mid_exchange(self, pending: Pending, upstream_bytes: bytes) -> None:
        """The response needs the stream path: hand over both connections, the exchange going on there."""
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
        except (Silent, Broken) as exc:
            upstream.abort()
            why = f"instance {ep.id} failed before answering: {exc}"
            keep = await traffic.refuse(writer, ep.release, pending.started, why, pending.keep_client,
                                        BodyReader(reader, NO_BODY))
        else:
            keep = await traffic.relay(reader, writer, ep, upstream, head, None, None, pending.method, False,
                                       pending.keep_client, pending.started)
    finally:
        ep.inflight -= 1
        traffic.busy -= 1
        if traffic.draining and traffic.busy == 0:
            traffic.quiet.set()
    if keep:
        await traffic.serve(reader, writer, preview=preview)
    else:
        writer.close()
