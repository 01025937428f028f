"""The fast path's side of an exchange with an upstream: a pooled protocol connection.

`FastUpstream` writes a request head and passes the response on to the
client side that asked — an `ExchangeOwner`, `fast.FastClient` in the proxy —
as it arrives: a head rewritten as the stream path would (`rewrite`), then a
body of known length, with one write for the head and what came of the body
with it. A response the fast path does not handle (interim, chunked,
delimited by the close, broken) is handed over, bytes and all, to the stream
path; a connection that fails before answering hands the request back, and
the stream path retries a stale one once or answers 502. See `fast` for the
whole picture.

This module calls the client side only through `ExchangeOwner`, never into
`fast` itself: the dependency goes one way, `fast` → `fast_upstream`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, cast

from stagewise.errors import BadMessageError
from stagewise.routers.builtin.exchange import RESPONSE_TIMEOUT
from stagewise.routers.builtin.plan import Endpoint
from stagewise.routers.builtin.pool import Upstream, stream_pair
from stagewise.routers.builtin.rewrite import plain_response_head, response_head
from stagewise.routers.builtin.wire import LENGTH, MAX_HEAD, NO_BODY, parse_head, response_framing


class Pending:
    """One request in flight on the fast path."""

    __slots__ = ("ep", "keep_client", "method", "release", "started", "upstream")

    def __init__(self, ep: Endpoint, release: str, method: bytes, keep_client: bool, started: float) -> None:
        self.ep = ep
        self.release = release
        self.method = method
        self.keep_client = keep_client
        self.started = started
        self.upstream: FastUpstream | None = None


class ExchangeOwner(Protocol):
    """The client side of a fast-path exchange, as `FastUpstream` calls back into it.

    Exactly one of `exchange_done`, `exchange_cut`, `retry_on_streams` and `hand_over_mid_exchange`
    ends each exchange that `FastUpstream.start` began.
    """

    @property
    def draining(self) -> bool:
        """Whether the proxy is stopping (a response then closes the client connection)."""

    @property
    def gone(self) -> bool:
        """Whether the client connection was lost."""

    def send(self, data: bytes) -> None:
        """Pass response bytes on to the client."""

    def exchange_done(self, pending: Pending, *, status: int, keep: bool) -> None:
        """The response was passed on whole; `keep`: the client connection stays open."""

    def exchange_cut(self, pending: Pending) -> None:
        """The upstream failed mid-response, or the client left: the exchange ends, the client is cut."""

    def retry_on_streams(self, pending: Pending, request: bytes) -> None:
        """The upstream failed before answering: the stream path takes `request` (as received) again."""

    def hand_over_mid_exchange(self, pending: Pending, upstream_bytes: bytes) -> None:
        """The response needs the stream path: both connections go there, with the upstream's bytes so far."""


class FastUpstream(asyncio.Protocol):
    """A keep-alive connection to an endpoint, serving one fast-path exchange at a time."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.transport: asyncio.Transport | None = None
        self.client: ExchangeOwner | None = None
        self.pending: Pending | None = None
        self.buffer = b""
        self.left = -1
        """Body bytes still to pass on; -1 while the head is awaited."""
        self.reused = False
        self.answered = False
        self.request = b""
        self.raw = b""
        """The client's request head as received, for the stream path to send again if this fails silently."""
        self.reusable = False
        self.status = 0
        self.idle_since = 0.0
        self.deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def start(self, client: ExchangeOwner, pending: Pending, request: bytes, raw: bytes) -> None:
        self.client, self.pending, self.request = client, pending, request
        self.buffer, self.left, self.answered = b"", -1, False
        self.deadline = time.monotonic() + RESPONSE_TIMEOUT
        self.ep.pool.busy_fast.add(self)
        self.raw = raw
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        client, pending = self.client, self.pending
        if client is None or pending is None:
            self._drop()  # bytes on an idle connection: it is not usable any more
            return
        self.answered = True
        if self.left < 0:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._hand_over()
                return
            self._head(client, pending, end)
            return
        self._body(client, pending, data)

    def _head(self, client: ExchangeOwner, pending: Pending, end: int) -> None:
        raw = self.buffer
        head = raw[: end + 4]
        plain = plain_response_head(head) if pending.method != b"HEAD" else None
        if plain is not None:  # the common case: the head goes on as it came, nothing to rewrite
            self.status, self.left, head = plain
            self.reusable = True
            keep = pending.keep_client = pending.keep_client and not client.draining
            self.buffer = b""
            self._body(client, pending, raw[end + 4:], head if keep else head[:-2] + b"Connection: close\r\n\r\n")
            return
        try:
            response = parse_head(head, request=False)
            status = int(response.start[1])
            kind, length = response_framing(pending.method, status, response.index)
        except BadMessageError:
            self._hand_over()  # the stream path reports the broken upstream with a 502
            return
        if status < 200 or kind not in (LENGTH, NO_BODY):
            self._hand_over()
            return
        head, self.reusable, pending.keep_client, _ = response_head(
            response, kind, length, keep_client=pending.keep_client and not client.draining, http10=False)
        self.status = status
        self.left = length if kind == LENGTH else 0
        self.buffer = b""
        # the head and what came of the body with it go out in one write: one packet for small responses
        self._body(client, pending, raw[end + 4:], head)

    def _body(self, client: ExchangeOwner, pending: Pending, data: bytes, head: bytes = b"") -> None:
        if len(data) > self.left:  # more than the response: the connection is not reusable
            data = data[: self.left]
            self.reusable = False
        self.left -= len(data)
        if head or data:
            client.send(head + data if data else head)
        if self.left == 0:
            self._complete(client, pending)

    def _complete(self, client: ExchangeOwner, pending: Pending) -> None:
        self.ep.pool.busy_fast.discard(self)
        self.client = self.pending = None
        self.left = -1
        if self.reusable and self.transport is not None and not self.transport.is_closing():
            self.reused = True
            self.ep.pool.give_fast(self)
        else:
            self.close()
        client.exchange_done(pending, status=self.status, keep=pending.keep_client)

    def _hand_over(self) -> None:
        """Pass this exchange (and both connections) to the stream path."""
        client, pending, transport = self.client, self.pending, self.transport
        self.ep.pool.busy_fast.discard(self)
        self.client = self.pending = None
        if client is None or pending is None or transport is None:
            return
        raw, self.buffer = self.buffer, b""
        client.hand_over_mid_exchange(pending, raw)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ep.pool.discard_fast(self)
        client, pending = self.client, self.pending
        self.client = self.pending = None
        self.transport = None
        if client is None or pending is None:
            return
        if not self.answered and not client.gone:
            # silent: a stale keep-alive connection, or the endpoint went away before answering;
            # the stream path retries a stale one once and otherwise answers 502 saying why
            client.retry_on_streams(pending, self.raw)
            return
        # the client left (not the release's fault), or the upstream failed mid-response: cut the client
        client.exchange_cut(pending)

    def client_gone(self) -> None:
        """The client left mid-exchange: this connection's state is unusable."""
        self._drop()

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        """Cut the connection (the pool's sweep does, to an exchange past RESPONSE_TIMEOUT)."""
        self._drop()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def as_stream(self, loop: asyncio.AbstractEventLoop, data: bytes) -> Upstream:
        """This connection as a stream-path `Upstream`, with `data` already received fed in."""
        transport = self.transport
        assert transport is not None
        transport.resume_reading()
        upstream = Upstream(*stream_pair(transport, data, loop))
        upstream.reused = self.reused
        return upstream
