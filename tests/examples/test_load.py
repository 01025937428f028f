"""The load generator against the real sample service and a scripted in-test server."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from stagewise.basics.ports import free_port
from stagewise.examples.load import LoadInBackground, LoadReport, run_load

from .test_sample_service import sample_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def run(coro: Coroutine[Any, Any, LoadReport]) -> LoadReport:
    return asyncio.run(coro)


def test_counts_match_what_the_service_served(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with sample_service(log, "--fail-rate", "0.2", "--seed", "1", version="v3") as (port, _):
        report = run(run_load(f"http://127.0.0.1:{port}/", connections=4, max_requests=400, max_seconds=20))
    assert report.stopped_by == "max_requests"
    assert report.requests == report.responses == 400
    assert report.by_version == {"v3": 400}
    assert sum(report.status_counts.values()) == 400
    assert set(report.status_counts) == {200, 500}
    assert report.failed_by_version == {"v3": report.status_counts[500]} and report.failed == report.non_2xx
    assert 40 <= report.failed <= 130
    assert report.socket_errors == 0 and report.socket_error_sample is None
    assert len(report.latencies) == 400 and 0 < report.latency_quantile(0.5) <= report.latency_quantile(0.99)
    served = re.search(r"stopped after (\d+) request", log.read_text())
    assert served and int(served[1]) == 400  # nothing sent twice, nothing lost


def test_stops_at_max_seconds(tmp_path: Path) -> None:
    with sample_service(tmp_path / "log") as (port, _):
        url = f"http://127.0.0.1:{port}/"
        report = run(run_load(url, connections=2, max_requests=10**9, max_seconds=0.5))
    assert report.stopped_by == "max_seconds"
    assert 0.5 <= report.duration < 1.0
    assert report.requests > 10 and report.socket_errors == 0


def test_rate_paces_the_total(tmp_path: Path) -> None:
    with sample_service(tmp_path / "log") as (port, _):
        report = run(
            run_load(f"http://127.0.0.1:{port}/", connections=4, max_requests=10**9, max_seconds=1.0, rate=40)
        )
    assert 35 <= report.requests <= 42


def test_stops_when_the_event_is_set(tmp_path: Path) -> None:
    async def main(port: int) -> LoadReport:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        return await run_load(
            f"http://127.0.0.1:{port}/", connections=2, max_requests=10**9, max_seconds=10, stop=stop
        )

    with sample_service(tmp_path / "log") as (port, _):
        report = run(main(port))
    assert report.stopped_by == "stop" and 0.3 <= report.duration < 0.8


def test_refused_connections_are_socket_errors() -> None:
    report = run(run_load(f"http://127.0.0.1:{free_port()}/", connections=2, max_requests=10, max_seconds=5))
    assert report.requests == report.socket_errors == 10 and report.responses == 0
    assert report.socket_error_kinds == {"refused": 10}
    assert report.socket_error_sample and "ConnectionRefusedError" in report.socket_error_sample
    assert report.error_rate == 1.0


async def scripted_server(handler_calls: list[int]) -> tuple[asyncio.Server, int]:
    """Answers with X-Version = the request's X-User; closes every 3rd connection silently after
    answering (the keep-alive race); `/drop` gets its connection closed before any answer."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode()
                except asyncio.IncompleteReadError:
                    return
                handler_calls.append(1)
                if head.startswith("GET /drop "):
                    return
                user = re.search(r"X-User: (\S+)", head)
                version = user[1] if user else "none"
                answer = f"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Version: {version}\r\n\r\nok"
                writer.write(answer.encode())
                await writer.drain()
                answered += 1
                if answered == 3:
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


def test_headers_for_and_the_idle_close_race_are_handled() -> None:
    async def main() -> tuple[LoadReport, LoadReport, int]:
        calls: list[int] = []
        server, port = await scripted_server(calls)
        async with server:
            ok = await run_load(
                f"http://127.0.0.1:{port}/",
                connections=3,
                max_requests=30,
                max_seconds=5,
                headers_for=lambda i: {"X-User": f"u{i % 3}"},
            )
            dropped = await run_load(
                f"http://127.0.0.1:{port}/drop", connections=1, max_requests=4, max_seconds=5
            )
        return ok, dropped, len(calls)

    ok, dropped, calls = asyncio.run(main())
    # Every 3rd connection closes silently, yet no user sees an error: a stale reused
    # connection is retried once on a new one.
    assert ok.by_version == {"u0": 10, "u1": 10, "u2": 10}
    assert ok.requests == 30 and ok.socket_errors == 0
    assert dropped.socket_error_kinds == {"closed": 4} and dropped.responses == 0
    assert calls >= 34


def test_load_in_background_from_sync_code(tmp_path: Path) -> None:
    with sample_service(tmp_path / "log", version="v2") as (port, _):
        with LoadInBackground(f"http://127.0.0.1:{port}/", connections=2, max_seconds=10) as load:
            time.sleep(0.3)
        report = load.report
        assert report.stopped_by == "stop" and report.by_version["v2"] == report.requests > 0

        bounded = LoadInBackground(f"http://127.0.0.1:{port}/", max_requests=50).start()
        assert bounded.join(5).stopped_by == "max_requests"
        assert bounded.report.requests == 50

    broken = LoadInBackground("https://127.0.0.1:1/").start()
    with pytest.raises(ValueError, match="expected an http:// URL"):
        broken.stop()
