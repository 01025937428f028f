"""The fast path's side of an exchange with an upstream: a pooled protocol connection.

`FastUpstream` writes a request head and passes the response on to the
`FastClient` that asked, as it arrives: a head rewritten as the stream path
would (`_forward._relay`), then a body of known length, with one write for the
head and what came of the body with it. A response the fast path does not
handle (interim, chunked, delimited by the close, broken) is handed over,
bytes and all, to the stream path; a connection that fails before answering
hands the request back to it, which retries a stale one once or answers 502.
See `_fast` for the whole picture.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, cast

from stagewise.routers._exchange import RESPONSE_TIMEOUT
from stagewise.routers._http import (
    LENGTH,
    MAX_HEAD,
    NO_BODY,
    HttpError,
    build_head,
    end_to_end,
    parse_head,
    response_framing,
    tokens,
)
from stagewise.routers._plan import Endpoint
from stagewise.routers._pool import Upstream

if TYPE_CHECKING:
    from stagewise.routers._fast import FastClient


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


class FastUpstream(asyncio.Protocol):
    """A keep-alive connection to an endpoint, serving one fast-path exchange at a time."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.transport: asyncio.Transport | None = None
        self.client: FastClient | None = None
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

    def start(self, client: FastClient, pending: Pending, request: bytes, raw: bytes) -> None:
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

    def _head(self, client: FastClient, pending: Pending, end: int) -> None:
        raw = self.buffer
        head = raw[: end + 4]
        plain = plain_response_head(head) if pending.method != b"HEAD" else None
        if plain is not None:  # the common case: the head goes on as it came, nothing to rewrite
            self.status, self.left, head = plain
            self.reusable = True
            keep = pending.keep_client = pending.keep_client and not client.traffic.draining
            self.buffer = b""
            self._body(client, pending, raw[end + 4:], head if keep else head[:-2] + b"Connection: close\r\n\r\n")
            return
        try:
            response = parse_head(head, request=False)
            version, status_text, reason = response.start
            status = int(status_text)
            kind, length = response_framing(pending.method, status, response.index)
        except HttpError:
            self._hand_over()  # the stream path reports the broken upstream with a 502
            return
        if status < 200 or kind not in (LENGTH, NO_BODY):
            self._hand_over()
            return
        r_connection = tokens(response.index.get(b"connection"))
        self.reusable = b"close" not in r_connection and (version == b"HTTP/1.1" or b"keep-alive" in r_connection)
        headers = end_to_end(response.headers, r_connection)
        if kind == LENGTH:
            headers.append((b"Content-Length", b"%d" % length))
        elif b"content-length" in response.index and status != 204:
            headers.append((b"Content-Length", response.index[b"content-length"]))
        keep = pending.keep_client and not client.traffic.draining
        pending.keep_client = keep
        if not keep:
            headers.append((b"Connection", b"close"))
        self.status = status
        self.left = length if kind == LENGTH else 0
        self.buffer = b""
        # the head and what came of the body with it go out in one write: one packet for small responses
        self._body(client, pending, raw[end + 4:], build_head(b"HTTP/1.1 " + status_text + b" " + reason, headers))

    def _body(self, client: FastClient, pending: Pending, data: bytes, head: bytes = b"") -> None:
        if len(data) > self.left:  # more than the response: the connection is not reusable
            data = data[: self.left]
            self.reusable = False
        self.left -= len(data)
        if (head or data) and client.transport is not None and not client.gone:
            client.transport.write(head + data if data else head)
        if self.left == 0:
            self._complete(client, pending)

    def _complete(self, client: FastClient, pending: Pending) -> None:
        self.ep.pool.busy_fast.discard(self)
        self.client = self.pending = None
        self.left = -1
        client.traffic.counters.record(pending.release, error=self.status >= 500,
                                       latency_ms=(time.perf_counter() - pending.started) * 1000.0)
        if self.reusable and self.transport is not None and not self.transport.is_closing():
            self.reused = True
            self.ep.pool.give_fast(self)
        else:
            self.close()
        client.done(pending, keep=pending.keep_client and not client.gone)

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
        pending.ep.inflight -= 1
        if not self.answered and not client.gone:
            # silent: a stale keep-alive connection, or the endpoint went away before answering;
            # the stream path retries a stale one once and otherwise answers 502 saying why
            client.buffer = self.raw + client.buffer
            client._finish(pending)
            client._to_streams()
            return
        # the client left (not the release's fault), or the upstream failed mid-response: cut the client
        client.traffic.counters.record(pending.release, error=not client.gone,
                                       latency_ms=(time.perf_counter() - pending.started) * 1000.0)
        client._finish(pending)
        if client.transport is not None:
            client.transport.abort()

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


_PLAIN_STATUS = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])[ \r]")
_REWRITTEN = re.compile(rb"\r\n(?:keep-alive[ \t]*:|proxy-|te[ \t]*:|trailer[ \t]*:|upgrade[ \t]*:|[ \t]|[^:\r]*\r\n)")
"""A header to rewrite, or a line `parse_head` would refuse (folded, without a colon), in a lower-cased head
after its status line; every alternative starts with CRLF, which lets the search skip ahead fast.
`Connection: keep-alive` alone is dropped without a full parse."""
_CONNECTION = re.compile(rb"\r\nconnection:[ \t]*([^\r]*)\r\n")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*\r\n")


def plain_response_head(head: bytes) -> tuple[int, int, bytes] | None:
    """(status, Content-Length, head to send) of a response the proxy passes on as it came, else None.

    That is: HTTP/1.1, a final status with a body, exactly one Content-Length and no Transfer-Encoding,
    no hop-by-hop header but `Connection: keep-alive` (dropped), no bare CR or LF, and nothing else
    `parse_head` would refuse. Anything else takes the full parse and rewrite.
    """
    match = _PLAIN_STATUS.match(head)
    if match is None or head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n"):
        return None
    status = int(match.group(1))
    line_end = head.index(b"\r\n")
    lower = head[line_end:-2].lower()
    if (status in (204, 304) or lower.count(b"content-length") != 1 or b"transfer-encoding" in lower
            or b" :" in lower or b"\t:" in lower or _REWRITTEN.search(lower)):
        return None
    length = _CONTENT_LENGTH.search(lower)
    if length is None:
        return None
    connection = _CONNECTION.search(lower)
    if connection is not None:
        if connection.group(1).strip() != b"keep-alive" or lower.count(b"\r\nconnection") != 1:
            return None
        at = line_end + connection.start()
        head = head[:at] + head[at + connection.end() - connection.start() - 2:]
    return status, int(length.group(1)), head


def stream_pair(
    transport: asyncio.Transport, data: bytes, loop: asyncio.AbstractEventLoop | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection (client's or upstream's) switched to streams, with `data` already received fed in."""
    loop = loop or asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if data:
        reader.feed_data(data)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
