"""The builtin router's data plane: one reverse-proxy process per service.

    python -m stagewise.routers.builtin.proxy --admin-socket PATH [--metrics-listen HOST:PORT]
                                              [--log-file PATH [--log-max-bytes N]]

It runs apart from the controller, so a controller restart or crash never
drops a request: the controller (through `BuiltinRouter`) only talks to its
admin API, HTTP over a Unix socket readable by the owner alone:

    PUT /table    a whole RouteTable as JSON; 204, 400 if invalid, 409 if a listener cannot bind
    GET /table    the table being served
    GET /stats    RouterStats JSON: per-release counters since `boot`, in-flight per endpoint
    GET /metrics  the same counters in Prometheus text format (also on --metrics-listen)
    GET /healthz  liveness, with pid, boot id and service

A table is compiled once and swapped in by one reference assignment; requests
already running finish on the table they started with. Listeners are bound,
rebound and closed as the table says; a new listener is bound before the table
is swapped, so a table that cannot be served is refused whole.

SIGTERM or SIGINT stops accepting, lets in-flight requests finish (at most
DRAIN_TIMEOUT seconds) and exits 0. A lock file beside the socket makes sure
one process serves it; a second one exits 1.

This module must import nothing of stagewise above `core` (the controller
imports it, not the other way round), and nothing here runs per request except
in `fast` and `fast_upstream` (plain requests, by protocol callbacks) and `streams`
(the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stagewise.basics import files
from stagewise.basics.ports import split_host_port
from stagewise.core.routes import RouteTable
from stagewise.errors import BadMessageError, ListenerError
from stagewise.routers.builtin.counters import Counters
from stagewise.routers.builtin.fast import FastClient, finish_on_streams
from stagewise.routers.builtin.fast_upstream import Pending
from stagewise.routers.builtin.output import LOG_MAX_BYTES, log_to
from stagewise.routers.builtin.plan import Endpoint, RoutePlan
from stagewise.routers.builtin.pool import stream_pair
from stagewise.routers.builtin.streams import CLIENT_IDLE_TIMEOUT, Traffic
from stagewise.routers.builtin.wire import (
    CHUNKED,
    MAX_HEAD,
    BodyReader,
    build_head,
    parse_head,
    plain_response,
    request_framing,
)

log = logging.getLogger("stagewise.router")

DRAIN_TIMEOUT = 10.0
"""Seconds in-flight requests get to finish after SIGTERM."""
SWEEP_INTERVAL = 5.0
MAX_TABLE_BYTES = 16 * 1024 * 1024

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Proxy:
    """Listeners, the current route plan, counters and the admin API of one process."""

    def __init__(self, admin_socket: Path, metrics_listen: str | None) -> None:
        self.admin_socket = admin_socket
        self.metrics_listen = metrics_listen
        self.boot = secrets.token_hex(8)
        self.counters = Counters(self.boot)
        self.traffic = Traffic(self.counters)
        self.table: RouteTable | None = None
        self.main: tuple[str, asyncio.Server] | None = None
        self.preview: tuple[str, asyncio.Server] | None = None
        self.retired: set[Endpoint] = set()
        """Endpoints gone from the table that still have requests in flight (for stats)."""
        self._apply_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._handed_over: set[asyncio.Task[None]] = set()
        """Tasks of connections the fast path handed to the stream path, until they run."""
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        """Every open connection (traffic, admin, metrics) and the task serving it."""

    # -- route tables ------------------------------------------------------------

    async def apply(self, table: RouteTable) -> None:
        """Serve `table`; ValueError if it is unusable, ListenerError if a listener cannot bind."""
        split_host_port(table.listen)
        if table.preview_listen:
            split_host_port(table.preview_listen)
        for e in table.endpoints:
            split_host_port(e.address)
        async with self._apply_lock:
            opened: list[asyncio.Server] = []
            try:
                main = await self._listener(table.listen, self.main, False, opened)
                preview = None
                if table.preview_listen:
                    preview = await self._listener(table.preview_listen, self.preview, True, opened)
            except OSError as exc:
                for server in opened:
                    server.close()
                raise ListenerError(f"cannot listen on {exc.filename}: {exc.strerror or exc}") from exc
            old = self.traffic.plan
            known = old.endpoints if old is not None else {}
            plan = RoutePlan(table, known)
            self.traffic.plan = plan  # the swap: requests from now on see the new table whole
            self.table = table
            for before, after in ((self.main, main), (self.preview, preview)):
                if before is not None and (after is None or before[1] is not after[1]):
                    before[1].close()  # stops accepting; its open connections carry on
            self.main, self.preview = main, preview
            for key, ep in known.items():
                if key not in plan.endpoints:
                    ep.pool.retire()
                    self.retired.add(ep)
        log.info(
            "serving table of %s: listen %s, %d endpoints, weights %s, cohort %s, %d header routes, preview %s",
            table.service,
            table.listen,
            len(table.endpoints),
            table.weights,
            table.cohort,
            len(table.header_routes),
            table.preview_listen,
        )

    async def _listener(
        self,
        address: str,
        current: tuple[str, asyncio.Server] | None,
        preview: bool,
        opened: list[asyncio.Server],
    ) -> tuple[str, asyncio.Server]:
        if current is not None and current[0] == address:
            return current
        host, port = split_host_port(address)
        loop = asyncio.get_running_loop()

        def to_streams(transport: asyncio.Transport, data: bytes, upstream_data: bytes | None,
                       pending: Pending | None) -> None:
            """A connection the fast path cannot serve goes on with the stream path (see `fast`)."""
            reader, writer = stream_pair(transport, data)
            if pending is None or pending.upstream is None:
                serving = self.traffic.serve(reader, writer, preview=preview)
            else:
                upstream = pending.upstream.as_stream(loop, upstream_data or b"")
                serving = finish_on_streams(self.traffic, reader, writer, upstream, pending, preview=preview)
            task = loop.create_task(self._connection(writer, serving))
            self._handed_over.add(task)
            task.add_done_callback(self._handed_over.discard)

        try:
            server = await loop.create_server(
                lambda: FastClient(self.traffic, preview, to_streams), host or None, port, reuse_address=True,
                backlog=1024,
            )
        except OSError as exc:
            exc.filename = address
            raise
        opened.append(server)
        return address, server

    def endpoints(self) -> list[Endpoint]:
        """Endpoints of the table, and retired ones while requests to them run."""
        self.retired = {ep for ep in self.retired if ep.inflight > 0}
        plan = self.traffic.plan
        current = list(plan.everyone) if plan is not None else []
        return current + sorted(self.retired, key=lambda ep: ep.id)

    # -- admin API ---------------------------------------------------------------

    async def admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, public: bool) -> None:
        """Serve admin requests on one connection (keep-alive). `public`: only /metrics and /healthz."""
        try:
            while True:
                try:
                    data = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                    return
                try:
                    head = parse_head(data, request=True)
                    body = await _read_body(reader, *request_framing(head.index))
                    method, target, _ = head.start
                    path = target.split(b"?", 1)[0].decode("latin-1")
                    status, content_type, payload = await self._answer(method, path, body, public)
                    close = False
                except BadMessageError as exc:
                    status, content_type, payload, close = exc.status, b"text/plain", str(exc), True
                if status == 204:
                    writer.write(build_head(b"HTTP/1.1 204 No Content", []))
                else:
                    writer.write(plain_response(status, payload, close=close, content_type=content_type))
                await writer.drain()
                if close:
                    return
        except OSError:
            return
        finally:
            writer.close()

    async def _answer(self, method: bytes, path: str, body: bytes, public: bool) -> tuple[int, bytes, str]:
        routes = {"/healthz", "/metrics"} if public else {"/healthz", "/metrics", "/stats", "/table"}
        if path not in routes:
            return 404, b"text/plain", f"no such path: {path}"
        if method == b"PUT" and path == "/table":
            if self._stopping.is_set():
                return 503, b"text/plain", "the router is stopping"
            try:
                table = RouteTable.model_validate_json(body)
                await self.apply(table)
            except (ValidationError, ValueError) as exc:
                return 400, b"text/plain", f"invalid route table: {exc}"
            except ListenerError as exc:
                return 409, b"text/plain", str(exc)
            return 204, b"", ""
        if method != b"GET":
            return 405, b"text/plain", f"{method.decode('latin-1')} is not allowed on {path}"
        plan = self.traffic.plan
        service = plan.service if plan is not None else ""
        if path == "/healthz":
            health = {"status": "ok", "pid": os.getpid(), "boot": self.boot, "service": service}
            return 200, b"application/json", json.dumps(health)
        if path == "/metrics":
            text = self.counters.metrics(service, self.endpoints())
            return 200, b"text/plain; version=0.0.4", text
        if path == "/stats":
            return 200, b"application/json", self.counters.stats(self.endpoints()).model_dump_json()
        if self.table is None:
            return 404, b"text/plain", "no route table applied yet"
        return 200, b"application/json", self.table.model_dump_json()

    # -- process life ------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the process exit code."""
        lock = files.hold_lock(Path(f"{self.admin_socket}.lock"))
        if lock is None:
            log.error("another router already serves %s", self.admin_socket)
            return 1
        try:
            return await self._run()
        finally:
            os.close(lock)

    async def _run(self) -> int:
        with contextlib.suppress(FileNotFoundError):
            self.admin_socket.unlink()  # stale: whoever made it no longer holds the lock
        old_umask = os.umask(0o177)
        try:
            admin = await asyncio.start_unix_server(
                lambda r, w: self._connection(w, self.admin(r, w, public=False)),
                path=str(self.admin_socket),
                limit=MAX_HEAD,
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.admin_socket, 0o600)
        servers = [admin]
        if self.metrics_listen:
            host, port = split_host_port(self.metrics_listen)
            try:
                metrics = await asyncio.start_server(
                    lambda r, w: self._connection(w, self.admin(r, w, public=True)),
                    host or None,
                    port,
                    reuse_address=True,
                )
            except OSError as exc:
                log.error("cannot serve metrics on %s: %s", self.metrics_listen, exc.strerror or exc)
                admin.close()
                self.admin_socket.unlink()
                return 2
            servers.append(metrics)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        sweeper = asyncio.create_task(self._sweep())
        log.info("router pid %d boot %s listening on %s", os.getpid(), self.boot, self.admin_socket)
        await self._stopping.wait()
        log.info("stopping: %d requests in flight", self.traffic.busy)
        for listener in (self.main, self.preview):
            if listener is not None:
                listener[1].close()
        self.traffic.drain()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.traffic.quiet.wait()
        except TimeoutError:
            log.warning("cutting %d requests still running after %.0f s", self.traffic.busy, DRAIN_TIMEOUT)
        for server in servers:
            server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        if self._connections:
            await asyncio.wait(self._connections.values(), timeout=1.0)
        for ep in self.endpoints():
            ep.pool.close_idle()
        sweeper.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.admin_socket.unlink()
        log.info("stopped")
        return 0

    async def _connection(self, writer: asyncio.StreamWriter, handler: Coroutine[Any, Any, None]) -> None:
        """Run the handler of one connection, known to shutdown so it can end it cleanly."""
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        try:
            await handler
        except asyncio.CancelledError:
            # the loop is closing; ending quietly here matters: asyncio 3.11 logs a handler task
            # that ends cancelled as an error ("Exception in callback ... connection_made")
            pass
        finally:
            del self._connections[writer]

    async def _sweep(self) -> None:
        """Close idle upstream and client connections that outstayed their welcome."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for ep in self.endpoints():
                ep.pool.sweep(now)
            self.traffic.close_idle_clients(older_than=CLIENT_IDLE_TIMEOUT)


async def _read_body(reader: asyncio.StreamReader, kind: int, length: int) -> bytes:
    """A whole admin request body (route tables are small; traffic bodies never come here)."""
    if length > MAX_TABLE_BYTES:
        raise BadMessageError(413, "body too large")
    body = BodyReader(reader, kind, length)
    parts: list[bytes] = []
    size = 0
    while piece := await body.read():
        size += len(piece)
        if kind == CHUNKED and size > MAX_TABLE_BYTES:
            raise BadMessageError(413, "body too large")
        parts.append(piece)
    return b"".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run a router process; the exit code (0 after a clean stop)."""
    parser = argparse.ArgumentParser(prog="stagewise router", description="The stagewise builtin router.")
    parser.add_argument("--admin-socket", required=True, type=Path, help="Unix socket of the admin API")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="also serve /metrics over TCP here")
    parser.add_argument("--log-file", type=Path, help="log here (and make it stdout and stderr), rotated by size")
    parser.add_argument("--log-max-bytes", type=int, default=LOG_MAX_BYTES, metavar="N",
                        help=f"rotate the log file past N bytes, keeping one older file (default {LOG_MAX_BYTES})")
    args = parser.parse_args(argv)
    if args.metrics_listen:
        try:
            split_host_port(args.metrics_listen)
        except ValueError as exc:
            parser.error(str(exc))
    log_to(args.log_file, args.log_max_bytes)
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(Proxy(args.admin_socket, args.metrics_listen).run())


if __name__ == "__main__":
    sys.exit(main())
