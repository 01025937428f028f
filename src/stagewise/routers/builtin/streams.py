"""The stream path of the builtin router: every request the fast path does not serve, on asyncio streams.

Everything here runs once per request, so it stays lean: no logging, no
pydantic, one read of the current `RoutePlan` per request (a table swap
between two requests of one keep-alive connection is seen by the second).

Bodies stream both ways, re-framed where the two sides differ (an HTTP/1.1
client gets a close-delimited response chunked, an HTTP/1.0 client gets a
chunked one close-delimited). The exchange with the upstream, with its retry
of stale keep-alive connections, is `exchange`'s; heads are rewritten by
`rewrite`, the same functions the fast path uses.

`Traffic` also keeps what both paths share: the current plan, the counters,
the open client connections and the count of requests being served (which
tells a draining proxy when it may stop).

The proxy's own answers (502 and friends) are plain text saying why, and a
request that could not be forwarded counts as an error of its release.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from stagewise.errors import BadMessageError, ClientGoneError, UpstreamBrokenError
from stagewise.routers.builtin.counters import Counters
from stagewise.routers.builtin.exchange import STREAM_ERRORS, BodyPump, connect, exchange
from stagewise.routers.builtin.plan import Endpoint, RoutePlan
from stagewise.routers.builtin.pool import Upstream
from stagewise.routers.builtin.rewrite import request_headers, response_head
from stagewise.routers.builtin.wire import (
    CHUNKED,
    LENGTH,
    BodyReader,
    Head,
    build_head,
    end_to_end,
    frame_chunk,
    last_chunk,
    parse_head,
    plain_response,
    request_framing,
    response_framing,
    tokens,
)

CLIENT_IDLE_TIMEOUT = 60.0
"""Idle keep-alive client connections are closed after this many seconds (see Proxy._sweep)."""



class Client(Protocol):
    """An open client connection, as `Traffic` keeps track of it (a `ClientConn`, or a `fast.FastClient`)."""

    busy: bool
    idle_since: float

    def close(self) -> None: ...


class ClientConn:
    """A client connection served on streams."""

    __slots__ = ("busy", "idle_since", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.busy = False
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.writer.close()


class Traffic:
    """Serves client connections on the listeners through the current route plan."""

    def __init__(self, counters: Counters) -> None:
        self.plan: RoutePlan | None = None
        """Swapped whole by the admin API; read once per request."""
        self.counters = counters
        self.draining = False
        self.clients: set[Client] = set()
        self.busy = 0
        """Requests being handled now, on every listener."""
        self.quiet = asyncio.Event()
        """Set once draining and no request runs any more."""

    def drain(self) -> None:
        """Take no new requests; close idle client connections; `quiet` tells when the rest end."""
        self.draining = True
        self.close_idle_clients()
        if self.busy == 0:
            self.quiet.set()

    def close_idle_clients(self, older_than: float = 0.0) -> None:
        now = time.monotonic()
        for conn in list(self.clients):
            if not conn.busy and now - conn.idle_since >= older_than:
                conn.close()

    def begin(self) -> None:
        """A request starts being served (on either path)."""
        self.busy += 1

    def end(self) -> None:
        """A request has been served (on either path)."""
        self.busy -= 1
        if self.draining and self.busy == 0:
            self.quiet.set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, preview: bool) -> None:
        conn = ClientConn(writer)
        self.clients.add(conn)
        peer = writer.get_extra_info("peername")
        client_ip = str(peer[0]).encode() if isinstance(peer, tuple) else b"unknown"
        try:
            while not self.draining:
                conn.idle_since = time.monotonic()
                try:
                    data = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    writer.write(plain_response(431, "stagewise: request head too large", close=True))
                    break
                except (asyncio.IncompleteReadError, OSError):
                    break
                conn.busy = True
                self.begin()
                try:
                    keep = await self._request(reader, writer, data, client_ip, preview)
                finally:
                    conn.busy = False
                    self.end()
                if not keep:
                    break
        finally:
            self.clients.discard(conn)
            writer.close()

    async def _request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        data: bytes,
        client_ip: bytes,
        preview: bool,
    ) -> bool:
        started = time.perf_counter()
        plan = self.plan
        try:
            head = parse_head(data, request=True)
            kind, length = request_framing(head.index)
        except BadMessageError as exc:
            writer.write(plain_response(exc.status, f"stagewise: {exc}", close=True))
            return False
        if plan is None:  # listeners only open after a table, but be explicit
            writer.write(plain_response(503, "stagewise: no route table yet", close=True))
            return False
        method, target, version = head.start
        index = head.index
        connection = tokens(index.get(b"connection"))
        http10 = version == b"HTTP/1.0"
        keep_client = (b"keep-alive" in connection) if http10 else (b"close" not in connection)
        release, group, start = plan.choose_preview() if preview else plan.choose(index)
        body = BodyReader(reader, kind, length)
        if not group:
            where = f"release {release} of service {plan.service}" if preview else f"service {plan.service}"
            return await self.refuse(writer, release, started, f"no ready instance of {where}", keep_client, body)
        ep, upstream, why = await connect(group, start)
        if upstream is None:
            return await self.refuse(writer, release, started, why, keep_client, body)

        headers = request_headers(head, connection, client_ip)
        if kind == LENGTH:
            headers.append((b"Content-Length", b"%d" % length))
        elif kind == CHUNKED:
            headers.append((b"Transfer-Encoding", b"chunked"))
        upgrade = index.get(b"upgrade") if b"upgrade" in connection and not http10 else None
        if upgrade is not None:
            headers += ((b"Connection", b"Upgrade"), (b"Upgrade", upgrade))
        upstream_head = build_head(method + b" " + target + b" HTTP/1.1", headers)
        pump = None if body.done else BodyPump(body, chunked=kind == CHUNKED)
        if pump is not None and index.get(b"expect", b"").lower() == b"100-continue" and not http10:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        ep.inflight += 1
        try:
            try:
                upstream, response, task = await exchange(ep, upstream, upstream_head, pump)
            except ClientGoneError as exc:
                cause = exc.__cause__
                if isinstance(cause, BadMessageError):
                    writer.write(plain_response(cause.status, f"stagewise: {cause}", close=True))
                self.counters.record(ep.release, error=False, latency_ms=_ms(started))
                return False
            except UpstreamBrokenError as exc:
                why = f"instance {ep.id} of service {plan.service} failed before answering: {exc}"
                return await self.refuse(writer, ep.release, started, why, keep_client, body)
            return await self.relay(
                reader, writer, ep, upstream, response, task, pump, method, http10, keep_client, started
            )
        finally:
            ep.inflight -= 1

    async def relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ep: Endpoint,
        upstream: Upstream,
        response: Head,
        task: asyncio.Task[None] | None,
        pump: BodyPump | None,
        method: bytes,
        http10: bool,
        keep_client: bool,
        started: float,
    ) -> bool:
        """Send the response on to the client; whether the client connection stays open.

        The fast path finishes here the exchanges it began but cannot end itself (`fast.finish_on_streams`).
        """
        status = int(response.start[1])
        if status == 101:
            return await self._tunnel(reader, writer, ep, upstream, response, started)
        r_kind, r_length = response_framing(method, status, response.index)
        keep_client = keep_client and not self.draining and (pump is None or pump.body.done)
        head, reusable, keep_client, chunk_down = response_head(response, r_kind, r_length, keep_client=keep_client,
                                                                http10=http10)
        # A body of known length follows its head at once: send both in one write (one packet for
        # small responses). Other heads go out now — a stream's first event may be long in coming.
        pending = [head] if r_kind == LENGTH else []
        if not pending:
            writer.write(head)

        body = BodyReader(upstream.reader, r_kind, r_length)
        try:
            broken_off = await self._forward_body(writer, ep, upstream, body, pending, chunk_down, status, started)
            if broken_off is not None:
                return broken_off
            if task is not None and not task.done() and pump is not None and pump.body.done:
                await asyncio.wait({task}, timeout=1.0)  # only the last flush upstream is left
        finally:
            if task is not None and not task.done():
                # the upstream answered without reading the whole body: stop sending it
                task.cancel()
                await asyncio.wait({task})
        if pump is not None and not (pump.finished and pump.body.done):
            reusable = keep_client = False
        if reusable:
            ep.pool.give_back(upstream)
        else:
            upstream.close()
        self.counters.record(ep.release, error=status >= 500, latency_ms=_ms(started))
        return keep_client and not self.draining

    async def _forward_body(self, writer: asyncio.StreamWriter, ep: Endpoint, upstream: Upstream, body: BodyReader,
                            pending: list[bytes], chunk_down: bool, status: int, started: float) -> bool | None:
        """Copy the response body to the client (after the head in `pending`, if not sent yet).

        None once all of it is sent; else the exchange broke off, counted, and the client connection
        does not stay open (False).
        """
        try:
            while True:
                try:
                    piece = await body.read()
                except STREAM_ERRORS as exc:
                    upstream.abort()
                    if pending:  # nothing sent yet: the client can still be told
                        why = f"instance {ep.id} failed mid-response: {exc!r}"
                        return await self.refuse(writer, ep.release, started, why, False, body)
                    # the client has part of a response: cut it so it cannot pass for whole
                    writer.transport.abort()
                    self.counters.record(ep.release, error=True, latency_ms=_ms(started))
                    return False
                if not piece:
                    break
                if chunk_down:
                    writer.writelines(frame_chunk(piece))
                elif pending:
                    writer.writelines([pending.pop(), piece])
                else:
                    writer.write(piece)
                await writer.drain()
            if chunk_down:
                writer.write(last_chunk(body.trailers))
            await writer.drain()
        except OSError:  # the client went away
            upstream.abort()
            self.counters.record(ep.release, error=status >= 500, latency_ms=_ms(started))
            return False
        return None

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ep: Endpoint,
        upstream: Upstream,
        response: Head,
        started: float,
    ) -> bool:
        """After 101 Switching Protocols the proxy only copies bytes both ways until one side ends."""
        headers = end_to_end(response.headers, tokens(response.index.get(b"connection")))
        headers += ((b"Connection", b"Upgrade"), (b"Upgrade", response.index.get(b"upgrade", b"")))
        writer.write(build_head(b"HTTP/1.1 101 " + response.start[2], headers))
        self.counters.record(ep.release, error=False, latency_ms=_ms(started))
        copies = {
            asyncio.create_task(_copy(reader, upstream.writer)),
            asyncio.create_task(_copy(upstream.reader, writer)),
        }
        try:
            await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for copy in copies:
                copy.cancel()
            await asyncio.wait(copies)
            upstream.close()
        return False

    async def refuse(
        self,
        writer: asyncio.StreamWriter,
        release: str,
        started: float,
        why: str,
        keep_client: bool,
        body: BodyReader,
    ) -> bool:
        """Answer 502 ourselves, counted as an error of `release`; whether the client connection stays open."""
        keep = keep_client and body.done and not self.draining
        writer.write(plain_response(502, f"stagewise: {why}", close=not keep))
        try:
            await writer.drain()
        except OSError:
            keep = False
        self.counters.record(release, error=True, latency_ms=_ms(started))
        return keep


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
