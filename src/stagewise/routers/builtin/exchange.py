"""One exchange with an upstream: send a request, get the response head — retrying stale connections.

A pooled keep-alive connection may have been closed by the upstream while it
sat idle; the proxy only learns so when it writes a request and reads nothing
back. Such a silent failure on a *reused* connection is retried once on a
fresh connection, so an upstream's idle timeout never costs a user a request.
To make that possible for requests with a body, `BodyPump` keeps what it sent
(up to `REPLAY_LIMIT`) and can send it again; larger bodies are not retried.

The request body is pumped by a task of its own while the response head is
awaited, so an upstream that answers before reading the whole body (413, or a
streaming echo) cannot deadlock the exchange.
"""

from __future__ import annotations

import asyncio

from stagewise.errors import BadMessageError, ClientGoneError, UpstreamBrokenError, UpstreamSilentError
from stagewise.routers.builtin.plan import Endpoint
from stagewise.routers.builtin.pool import Upstream
from stagewise.routers.builtin.wire import (
    BodyReader,
    Head,
    frame_chunk,
    last_chunk,
    parse_head,
)

CONNECT_TIMEOUT = 5.0
RESPONSE_TIMEOUT = 300.0
"""Longest wait for a response head; a stuck upstream must not hold a connection forever."""
REPLAY_LIMIT = 256 * 1024
"""Request bodies up to this size can be sent again when a reused connection was stale."""
STREAM_ERRORS = (BadMessageError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError)
"""What reading a message from a peer can raise when the peer misbehaves or goes away."""


class BodyPump:
    """Copies a request body upstream, keeping a copy small enough to send again."""

    __slots__ = ("body", "chunked", "client_error", "finished", "kept", "kept_size")

    def __init__(self, body: BodyReader, *, chunked: bool) -> None:
        self.body = body
        self.chunked = chunked
        self.kept: list[bytes] | None = []
        self.kept_size = 0
        self.client_error: BaseException | None = None
        self.finished = False

    async def run(self, upstream: Upstream, *, replay: bool) -> None:
        writer = upstream.writer
        try:
            if replay and self.kept:
                for piece in self.kept:
                    self._write(writer, piece)
                await writer.drain()
            while True:
                try:
                    piece = await self.body.read()
                except STREAM_ERRORS as exc:
                    self.client_error = exc
                    upstream.abort()
                    return
                if not piece:
                    break
                if self.kept is not None:
                    self.kept_size += len(piece)
                    if self.kept_size <= REPLAY_LIMIT:
                        self.kept.append(piece)
                    else:
                        self.kept = None
                self._write(writer, piece)
                await writer.drain()
            if self.chunked:
                writer.write(last_chunk(self.body.trailers))
            await writer.drain()
            self.finished = True
        except OSError:
            pass  # the upstream stopped reading; its response (or silence) tells the rest

    def _write(self, writer: asyncio.StreamWriter, piece: bytes) -> None:
        if self.chunked:
            writer.writelines(frame_chunk(piece))
        else:
            writer.write(piece)


async def connect(group: tuple[Endpoint, ...], start: int) -> tuple[Endpoint, Upstream | None, str]:
    """A connection to the first endpoint of `group`, from `start` on, that takes one."""
    why = ""
    n = len(group)
    for k in range(n):
        ep = group[(start + k) % n]
        conn = ep.pool.take_idle()
        if conn is not None:
            return ep, conn, ""
        try:
            return ep, await ep.pool.connect(CONNECT_TIMEOUT), ""
        except (OSError, TimeoutError) as exc:
            why = f"no instance accepted a connection (last: {ep.id} at {ep.address}: {exc.strerror or exc})"
    return group[start % n], None, why


async def exchange(
    ep: Endpoint, upstream: Upstream, head: bytes, pump: BodyPump | None
) -> tuple[Upstream, Head, asyncio.Task[None] | None]:
    """Send the request and read the response head, retrying once when a reused connection was stale."""
    retried = False
    while True:
        upstream.writer.write(head)
        task = asyncio.create_task(pump.run(upstream, replay=retried)) if pump is not None else None
        try:
            return upstream, await response_head(upstream.reader), task
        except (UpstreamSilentError, UpstreamBrokenError) as exc:
            failure: Exception = exc
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        upstream.abort()
        if pump is not None and pump.client_error is not None:
            raise ClientGoneError() from pump.client_error
        stale = isinstance(failure, UpstreamSilentError) and upstream.reused
        if retried or not stale or (pump is not None and pump.kept is None):
            raise UpstreamBrokenError(str(failure)) from failure
        retried = True
        try:
            upstream = await ep.pool.connect(CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise UpstreamBrokenError(f"could not reconnect: {exc}") from exc


async def response_head(reader: asyncio.StreamReader) -> Head:
    """The final response head, skipping interim 1xx responses (except 101)."""
    answered = False
    try:
        async with asyncio.timeout(RESPONSE_TIMEOUT):
            while True:
                try:
                    data = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if answered or exc.partial:
                        raise UpstreamBrokenError("closed the connection mid-response") from exc
                    raise UpstreamSilentError("closed the connection") from exc
                except asyncio.LimitOverrunError as exc:
                    raise UpstreamBrokenError("response head too large") from exc
                except OSError as exc:
                    if answered:
                        raise UpstreamBrokenError(str(exc)) from exc
                    raise UpstreamSilentError(exc.strerror or type(exc).__name__) from exc
                answered = True
                try:
                    head = parse_head(data, request=False)
                except BadMessageError as exc:
                    raise UpstreamBrokenError(str(exc)) from exc
                status = int(head.start[1])
                if status >= 200 or status == 101:
                    return head
    except TimeoutError as exc:
        raise UpstreamBrokenError(f"no response within {RESPONSE_TIMEOUT:.0f} s") from exc
