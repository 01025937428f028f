"""The sample service as a real process on loopback: what its flags promise, it does."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from stagewise.basics import waiting
from stagewise.basics.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]




def wait_listening(port: int, timeout: float = 10.0) -> None:
    def listens() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    assert waiting.blocking_until(listens, timeout=timeout, interval=0.02), f"nothing listens on port {port}"


@contextmanager
def sample_service(
    log: Path, *flags: str, version: str = "v1", wait: bool = True
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Run the sample service; yields (port, process); SIGTERMs it at the end."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "stagewise.examples.sample_service",
        "--port",
        str(port),
        "--version",
        version,
        *flags,
    ]
    with log.open("ab") as out, subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT) as process:
        try:
            if wait:
                wait_listening(port)
            yield port, process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_answers_with_its_version_on_every_path(tmp_path: Path) -> None:
    with (
        sample_service(tmp_path / "log", version="v7") as (port, _),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client,
    ):
        for path in ("/", "/orders/42?x=1"):
            response = client.get(path)
            assert response.status_code == 200
            assert response.headers["X-Version"] == "v7"
            assert response.json() == {"version": "v7"}
        health = client.get("/healthz")
        assert (health.status_code, health.headers["X-Version"]) == (200, "v7")
        head = client.head("/")
        assert head.status_code == 200 and head.content == b""


def test_fail_rate_is_roughly_right_and_seeded(tmp_path: Path) -> None:
    def statuses(seed: str, count: int) -> list[int]:
        with (
            sample_service(tmp_path / f"log{seed}", "--fail-rate", "0.1", "--seed", seed) as (port, _),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client,
        ):
            out = []
            for i in range(count):
                if i % 50 == 0:
                    assert client.get("/healthz").status_code == 200  # never failed on purpose
                response = client.get("/")
                assert response.headers["X-Version"] == "v1"
                out.append(response.status_code)
            return out

    first = statuses("7", 1000)
    assert set(first) == {200, 500}
    assert 60 <= first.count(500) <= 140
    assert statuses("7", 200) == first[:200]  # the same seed gives the same sequence


def test_slow_every_is_exact_and_ignores_healthz(tmp_path: Path) -> None:
    with (
        sample_service(tmp_path / "log", "--slow-every", "4", "--slow-ms", "400") as (port, _),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client,
    ):
        slow = []
        for i in range(12):
            client.get("/healthz")
            started = time.monotonic()
            client.get("/")
            if time.monotonic() - started >= 0.4:  # a fast answer takes about a millisecond
                slow.append(i)
        assert slow == [3, 7, 11]


def test_startup_delay_holds_the_port_closed(tmp_path: Path) -> None:
    started = time.monotonic()
    with sample_service(tmp_path / "log", "--startup-delay", "0.8", wait=False) as (port, _):
        wait_listening(port)
        assert time.monotonic() - started >= 0.8


def test_keep_alive_request_bodies_and_connection_close(tmp_path: Path) -> None:
    with (
        sample_service(tmp_path / "log") as (port, _),
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        sock.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        status, headers, body = read_response(sock)
        assert status == 200 and "connection" not in headers and json.loads(body) == {"version": "v1"}

        sock.sendall(
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: t\r\n\r\n"
        )
        assert read_response(sock)[0] == 200

        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert sock.recv(1) == b""  # the server closed the connection


def test_sigterm_finishes_in_flight_closes_idle_and_exits_zero(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with (
        sample_service(log, "--slow-every", "2", "--slow-ms", "700") as (port, process),
        socket.create_connection(("127.0.0.1", port), timeout=5) as idle,
        socket.create_connection(("127.0.0.1", port), timeout=5) as busy,
    ):
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # response 1: fast
        assert read_response(idle)[0] == 200
        busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # response 2: slow, in flight
        time.sleep(0.2)
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)

        assert idle.recv(1) == b""  # the idle keep-alive connection is closed, not kept
        status, headers, body = read_response(busy)
        assert status == 200 and headers["connection"] == "close"
        assert json.loads(body) == {"version": "v1"}
        assert process.wait(3) == 0
        assert time.monotonic() - stopped < 2
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert "stopped after 2 request(s)" in log.read_text()
