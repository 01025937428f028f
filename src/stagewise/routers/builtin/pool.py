"""Keep-alive connections to one upstream endpoint, reused across requests.

Reuse saves a TCP handshake per request. Its price: an upstream may close an
idle connection at any moment, so a reused connection can fail before it
answers; the proxy retries exactly that case once on a fresh connection.
Idle connections are taken newest first (the least likely to have been closed
by the upstream's idle timeout) and swept after `IDLE_TIMEOUT`.

An endpoint that leaves the route table is retired: its idle connections close
at once, and a busy one closes instead of returning to the pool when its
request ends — in-flight requests are never cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

from stagewise.routers.builtin.wire import MAX_HEAD

IDLE_TIMEOUT = 30.0
"""Seconds an unused upstream connection is kept."""
MAX_IDLE = 64
"""Idle connections kept per endpoint; more are closed when returned."""


class Upstream:
    """One connection to an upstream endpoint."""

    __slots__ = ("idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False
        """Whether it served a request before this one (so a silent failure may be a stale close)."""
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection without flushing: its state mid-message is unusable."""
        self.writer.transport.abort()


def stream_pair(
    transport: asyncio.Transport, data: bytes, loop: asyncio.AbstractEventLoop | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection (a client's or an upstream's) switched from a fast-path protocol to streams,
    with `data` already received fed in."""
    loop = loop or asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if data:
        reader.feed_data(data)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class FastConnection(Protocol):
    """A fast-path upstream connection (`fast_upstream.FastUpstream`), as the pool sees it."""

    idle_since: float
    deadline: float

    def close(self) -> None: ...

    def abort(self) -> None: ...


class EndpointPool:
    """Idle keep-alive connections to one endpoint address: stream ones, and the fast path's."""

    __slots__ = ("_fast", "_idle", "busy_fast", "host", "port", "retired")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.retired = False
        self._idle: list[Upstream] = []
        self._fast: list[FastConnection] = []
        self.busy_fast: set[FastConnection] = set()
        """Fast-path connections in an exchange now (the sweep cuts those past their deadline)."""

    def take_fast(self) -> Any:
        """The newest idle fast-path connection, or None (a closed one has left the list by itself)."""
        return self._fast.pop() if self._fast else None

    def give_fast(self, conn: FastConnection) -> None:
        if self.retired or len(self._fast) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._fast.append(conn)

    def discard_fast(self, conn: FastConnection) -> None:
        """A fast-path connection closed: forget it."""
        self.busy_fast.discard(conn)
        with contextlib.suppress(ValueError):
            self._fast.remove(conn)

    async def connect(self, timeout: float) -> Upstream:
        """A fresh connection; raises OSError or TimeoutError when the endpoint does not accept."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        return Upstream(reader, writer)

    def take_idle(self) -> Upstream | None:
        """The newest idle connection that still looks open, or None."""
        while self._idle:
            conn = self._idle.pop()
            if conn.reader.at_eof() or conn.writer.is_closing() or conn.reader.exception() is not None:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def give_back(self, conn: Upstream) -> None:
        """Return a connection whose last exchange ended cleanly."""
        if self.retired or len(self._idle) >= MAX_IDLE or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than IDLE_TIMEOUT, cut fast exchanges past their deadline."""
        stale = [c for c in self._fast if now - c.idle_since > IDLE_TIMEOUT]
        for fast in stale:
            self._fast.remove(fast)
            fast.close()
        for late in [c for c in self.busy_fast if now > c.deadline]:
            late.abort()
        if self._idle and now - self._idle[0].idle_since > IDLE_TIMEOUT:
            keep = [c for c in self._idle if now - c.idle_since <= IDLE_TIMEOUT]
            for conn in self._idle:
                if now - conn.idle_since > IDLE_TIMEOUT:
                    conn.close()
            self._idle = keep

    def retire(self) -> None:
        """The endpoint left the table: close idle connections, keep no more."""
        self.retired = True
        self.close_idle()

    def close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        fast, self._fast = self._fast, []
        for f in fast:
            f.close()

    @property
    def idle_count(self) -> int:
        return len(self._idle)
