"""Real upstream servers and a raw HTTP client for the router tests.

Upstreams are stdlib HTTP servers in threads of the test process, on
127.0.0.1 with ports the kernel picks; each answers with its release name in
`X-Version` and reports what it received, so a test can see what the proxy
forwarded. The raw client parses responses itself: a test of a proxy's framing
must not trust the proxy's own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_asyncio

from stagewise.basics import waiting
from stagewise.routers.builtin import BuiltinRouter
from tests.serving import InThread


class Upstream(InThread, ThreadingHTTPServer):
    """An upstream instance of one release that counts its connections."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, release: str) -> None:
        self.release = release
        self.lock = threading.Lock()
        self.connections = 0
        self.open = 0
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _Handler)
        self.serve_in_thread()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """The proxy closing or resetting a connection is expected here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 256 * 1024  # one send per response, as real servers do (the handler flushes at the end)
    server: Upstream

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.lock:
            self.server.connections += 1
            self.server.open += 1

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.open -= 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_HEAD = do_GET

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _serve(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        path, _, query = self.path.partition("?")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        body = self._body()
        if "ms" in params:
            time.sleep(int(params["ms"]) / 1000)
        if path == "/echo":
            payload = body
        elif path == "/big":
            payload = b"x" * int(params["n"])
        else:
            payload = self.server.release.encode()
        self.send_response(int(params.get("status", "200")))
        self.send_header("X-Version", self.server.release)
        self.send_header("X-Seen-Forwarded-For", self.headers.get("X-Forwarded-For", ""))
        self.send_header("X-Seen-Headers", ",".join(sorted(k.lower() for k in self.headers)))
        self.send_header("X-Seen-Body-Sha", hashlib.sha256(body).hexdigest())
        if "close" in params:
            self.send_header("Connection", "close")
            self.close_connection = True
        if path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(params.get("n", "3"))):
                piece = f"piece {i};".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class RawUpstream(InThread, socketserver.ThreadingTCPServer):
    """An upstream written on sockets, for behaviour http.server will not show.

    mode "second": answers the first request on a connection, then closes it when
    a second request arrives (the race of an idle timeout hitting just as a request
    is sent). mode "idle": closes a connection idle for 50 ms. mode "upgrade":
    answers 101 Switching Protocols, then echoes bytes.
    """

    daemon_threads = True
    allow_reuse_address = True

    release = "v1"

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RawHandler)
        self.serve_in_thread()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _RawHandler(socketserver.StreamRequestHandler):
    server: RawUpstream

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
        served = 0
        while True:
            try:
                lines = [self.rfile.readline()]
                while lines[-1] not in (b"\r\n", b""):
                    lines.append(self.rfile.readline())
            except TimeoutError:
                return
            if lines[-1] == b"" or (self.server.mode == "second" and served):
                return
            length = 0
            for line in lines:
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = self.rfile.read(length)
            if self.server.mode == "upgrade":
                self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
                while data := self.connection.recv(65536):
                    self.connection.sendall(data.upper())
                return
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Version: stale\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            served += 1
            if self.server.mode == "idle":
                self.connection.settimeout(0.05)


@pytest.fixture
def upstreams() -> Iterator[dict[str, Upstream]]:
    """Upstream instances by name: a1, a2 of release v1 and b1, b2 of release v2."""
    servers = {"a1": Upstream("v1"), "a2": Upstream("v1"), "b1": Upstream("v2"), "b2": Upstream("v2")}
    yield servers
    for server in servers.values():
        server.stop()


def short_dir() -> Path:
    """A state directory with a short path: Unix socket paths must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="sw-", dir="/tmp"))


async def stop_all(router: BuiltinRouter, state_dir: Path) -> None:
    """Stop every proxy under `state_dir`; fail if one logged an error (a bug no response showed)."""
    folder = state_dir / "routers"
    services = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    for service in services:
        with contextlib.suppress(Exception):
            await router.stop(service=service)
    await router.close()
    for service in services:
        log = (folder / service / "router.log").read_text()
        if "Traceback" in log or " ERROR " in log:
            pytest.fail(f"the proxy of {service} logged an error:\n{log}")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="module")
async def own_router(state_dir: Path) -> AsyncIterator[BuiltinRouter]:
    """A BuiltinRouter with a proxy of its own, stopped after the test."""
    r = BuiltinRouter(state_dir)
    yield r
    await stop_all(r, state_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared() -> AsyncIterator[tuple[BuiltinRouter, Path]]:
    """One proxy for the tests of a module that only apply tables and send traffic.

    Each test applies a whole table of its own (that a table replaces the last one
    whole is the contract under test) and reads counters relative to a snapshot,
    so sharing the process costs no isolation and saves a process start per test.
    """
    path = short_dir()
    r = BuiltinRouter(path)
    yield r, path
    await stop_all(r, path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def router(shared: tuple[BuiltinRouter, Path]) -> BuiltinRouter:
    return shared[0]


@pytest.fixture
def router_dir(shared: tuple[BuiltinRouter, Path]) -> Path:
    return shared[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    chunked: bool


async def read_response(reader: asyncio.StreamReader, *, head_request: bool = False) -> Response:
    """One response, parsed independently of the proxy's own code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    if head_request or status in (204, 304):
        body = b""
    elif chunked:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            parts.append(await reader.readexactly(size))
            assert await reader.readexactly(2) == b"\r\n"
        body = b"".join(parts)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return Response(status, headers, body, chunked)


@contextlib.asynccontextmanager
async def raw_connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_until(predicate: Any, timeout: float = 3.0) -> bool:
    return bool(await waiting.until(predicate, timeout=timeout, interval=0.02))


class RawClient:
    """A minimal keep-alive HTTP/1.1 client: far cheaper than httpx, so bulk tests stay quick."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str = "/", headers: dict[str, str] | None = None) -> Response:
        if self._conn is None:
            self._conn = await asyncio.open_connection("127.0.0.1", self.port)
            self.connections += 1
        reader, writer = self._conn
        lines = [f"GET {path} HTTP/1.1", "Host: test"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        response = await read_response(reader)
        if response.headers.get("connection", "").lower() == "close":
            await self.close()
        return response

    async def version(self, path: str = "/", headers: dict[str, str] | None = None) -> str:
        """The release that answered."""
        response = await self.get(path, headers)
        assert response.status == 200, response
        return response.headers["x-version"]

    async def close(self) -> None:
        if self._conn is not None:
            writer = self._conn[1]
            self._conn = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    c = RawClient(port)
    try:
        yield c
    finally:
        await c.close()


@contextlib.contextmanager
def stale_pid_file(pid_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A pid file whose number another process has by now (a daemon killed, or a reboot, and the pid reused):
    a `sleep` of this test's own, which must still run when the test is done with the router."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    other = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        pid_file.write_text(f"{other.pid}\n")
        yield other
        assert other.poll() is None, "the process the stale pid file named was signalled"
    finally:
        other.kill()
        other.wait()
