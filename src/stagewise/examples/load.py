"""A bounded, closed-loop HTTP load generator: the demo's users and the tests' traffic.

Each of `connections` workers keeps one HTTP/1.1 keep-alive connection and sends
its next request when the previous answer is in (closed loop), optionally paced
to a total `rate`. The run always ends: at `max_requests`, at `max_seconds`, or
when `stop` is set, whichever comes first; requests still in flight then are
dropped, not counted.

It counts what a user would see: status codes, which version answered (the
`X-Version` header), socket errors (refused, reset, closed, timed out) and
latency. Like every HTTP client, a request whose *reused* keep-alive connection
turns out to be closed before any byte of the answer is retried once on a new
connection: that is the idle-connection race, not a failure a user sees.

Standard library only (raw asyncio streams, for speed and so the sample service
and this can run anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
UNKNOWN_VERSION = "unknown"
"""The `by_version` key of responses without an X-Version header."""


@dataclass
class LoadReport:
    """What the users of one load run saw."""

    requests: int = 0
    """Attempts: responses plus socket errors."""
    responses: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    by_version: dict[str, int] = field(default_factory=dict)
    """Responses per X-Version value."""
    failed_by_version: dict[str, int] = field(default_factory=dict)
    """Responses with status 5xx, per X-Version value."""
    non_2xx: int = 0
    socket_errors: int = 0
    socket_error_kinds: dict[str, int] = field(default_factory=dict)
    """refused, reset, closed, timeout, protocol, os-error."""
    socket_error_sample: str | None = None
    refusal_sample: str | None = None
    """The first 5xx the server under test answered itself (no X-Version): a proxy saying why."""
    """The first socket error's message, to say what went wrong."""
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending a request to the end of its response, per response."""
    duration: float = 0.0
    stopped_by: str = ""
    """max_requests, max_seconds or stop."""

    @property
    def failed(self) -> int:
        return sum(self.failed_by_version.values())

    @property
    def error_rate(self) -> float:
        """Share of attempts that failed: 5xx or a socket error."""
        return (self.failed + self.socket_errors) / self.requests if self.requests else 0.0

    @property
    def throughput(self) -> float:
        return self.responses / self.duration if self.duration > 0 else 0.0

    def latency_quantile(self, q: float) -> float:
        """The q-quantile of latency in seconds (nearest rank); nan without responses."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def _response(self, status: int, version: str, latency: float) -> None:
        self.requests += 1
        self.responses += 1
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        self.by_version[version] = self.by_version.get(version, 0) + 1
        if status >= 500:
            self.failed_by_version[version] = self.failed_by_version.get(version, 0) + 1
        if not 200 <= status < 300:
            self.non_2xx += 1
        self.latencies.append(latency)

    def _socket_error(self, kind: str, message: str) -> None:
        self.requests += 1
        self.socket_errors += 1
        self.socket_error_kinds[kind] = self.socket_error_kinds.get(kind, 0) + 1
        if self.socket_error_sample is None:
            self.socket_error_sample = message


class _StaleConnection(Exception):
    """A reused connection was closed before any byte of the answer: retry on a new one."""


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ValueError | asyncio.LimitOverrunError):
        return "protocol"
    return "os-error"


class _Connection:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reused = False

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    last_refusal: str | None = None
    """The last answer the server gave itself (a proxy's 5xx without X-Version), for diagnosis."""

    async def exchange(self, request: bytes) -> tuple[int, str]:
        """Send one request, read the whole response; (status, X-Version)."""
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
            self._reused = False
        reader, writer = self._reader, self._writer
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            await self.close()
            nothing = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
            if self._reused and nothing:
                raise _StaleConnection from exc
            raise
        status, headers, keep_alive = _parse_head(head)
        keep_alive = await self._read_body(reader, status, headers) and keep_alive
        if keep_alive:
            self._reused = True
        else:
            await self.close()
        return status, headers.get("x-version", UNKNOWN_VERSION)

    async def _read_body(self, reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> bool:
        """Read (and drop) the response's body; whether the connection can carry another request."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return True
                await reader.readexactly(size + 2)
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
            if status >= 500 and "x-version" not in headers:
                self.last_refusal = f"{status} {body[:300].decode('utf-8', 'replace').strip()}"
            return True
        if status not in (204, 304) and not 100 <= status < 200:
            await reader.read()  # the body runs until the server closes
            return False
        return True


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """(status, lower-case headers, keep-alive) of a response head; ValueError for a malformed status line."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    well_formed = len(status_parts) >= 2 and status_parts[0].startswith("HTTP/1.")
    if not well_formed or not status_parts[1].isdigit():
        raise ValueError(f"malformed status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = "close" not in headers.get("connection", "").lower() and status_parts[0] != "HTTP/1.0"
    return int(status_parts[1]), headers, keep_alive


async def run_load(
    url: str,
    *,
    connections: int,
    max_requests: int,
    max_seconds: float,
    rate: float | None = None,
    headers_for: Callable[[int], dict[str, str]] | None = None,
    stop: asyncio.Event | None = None,
    request_timeout: float = 10.0,
) -> LoadReport:
    """Send GET `url` from `connections` keep-alive connections until a bound is reached.

    `rate` paces the total to that many requests per second; `headers_for(i)` gives
    extra headers for the i-th request (0-based), e.g. a user id for cohorts.
    """
    traffic = _Traffic(url, rate=rate, headers_for=headers_for, request_timeout=request_timeout)
    if connections < 1 or max_requests < 0 or max_seconds <= 0 or (rate is not None and rate <= 0):
        raise ValueError("connections >= 1, max_requests >= 0, max_seconds > 0 and rate > 0 are required")
    traffic.started = time.monotonic()
    report = LoadReport()
    tickets = iter(range(max_requests))
    workers = [asyncio.create_task(traffic.send(tickets, report)) for _ in range(connections)]
    finished = asyncio.create_task(_all_of(workers))
    stopped = asyncio.create_task(stop.wait() if stop is not None else asyncio.sleep(math.inf))
    try:
        done, _ = await asyncio.wait(
            {finished, stopped}, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (*workers, finished, stopped):
            task.cancel()
        outcomes = await asyncio.gather(*workers, finished, stopped, return_exceptions=True)
    report.duration = time.monotonic() - traffic.started
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    report.stopped_by = "max_requests" if finished in done else "stop" if stopped in done else "max_seconds"
    return report


async def _all_of(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        await task


class _Traffic:
    """What every connection of one run sends, and how it paces and counts it."""

    def __init__(self, url: str, *, rate: float | None, headers_for: Callable[[int], dict[str, str]] | None,
                 request_timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.base = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: stagewise-load\r\n"
        self.plain_request = (self.base + "\r\n").encode("latin-1")
        self.rate, self.headers_for, self.request_timeout = rate, headers_for, request_timeout
        self.started = time.monotonic()

    def request(self, i: int) -> bytes:
        if self.headers_for is None:
            return self.plain_request
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers_for(i).items())
        return (self.base + extra + "\r\n").encode("latin-1")

    async def send(self, tickets: Iterator[int], report: LoadReport) -> None:
        """One connection's share: the next request for each ticket it takes, until none is left."""
        conn = _Connection(self.host, self.port)
        try:
            for i in tickets:
                if self.rate is not None:
                    await asyncio.sleep(max(0.0, self.started + i / self.rate - time.monotonic()))
                await self._one(conn, self.request(i), report)
        finally:
            await conn.close()

    async def _one(self, conn: _Connection, request: bytes, report: LoadReport) -> None:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self.request_timeout):
                try:
                    status, version = await conn.exchange(request)
                except _StaleConnection:
                    status, version = await conn.exchange(request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            await conn.close()
            report._socket_error(_error_kind(exc), f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.005)  # a refusing server must not turn us into a busy loop
            return
        report._response(status, version, time.monotonic() - sent)
        if conn.last_refusal is not None and report.refusal_sample is None:
            report.refusal_sample = conn.last_refusal


class LoadInBackground:
    """Runs `run_load` on its own event loop in a thread, for sync tests that act meanwhile.

    with LoadInBackground(url, connections=4, max_seconds=10) as load:
        ...                      # do things while traffic flows
    report = load.report         # stopped on leaving the block
    """

    def __init__(
        self,
        url: str,
        *,
        connections: int = 2,
        max_requests: int = 10**9,
        max_seconds: float = 60.0,
        **options: Any,
    ) -> None:
        self._args: dict[str, Any] = dict(
            url=url, connections=connections, max_requests=max_requests, max_seconds=max_seconds, **options
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._running = threading.Event()
        self._report: LoadReport | None = None
        self._error: BaseException | None = None

    def start(self) -> LoadInBackground:
        if self._thread is not None:
            raise RuntimeError("this load has already been started")
        self._thread = threading.Thread(target=self._run, name="stagewise-load", daemon=True)
        self._thread.start()
        self._running.wait(5.0)
        return self

    def stop(self, timeout: float = 10.0) -> LoadReport:
        """Stop the traffic now and return what it saw."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended at a bound
                self._loop.call_soon_threadsafe(self._stop.set)
        return self.join(timeout)

    def join(self, timeout: float = 10.0) -> LoadReport:
        """Wait until the load ends at one of its bounds and return what it saw."""
        if self._thread is None:
            raise RuntimeError("this load was never started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the load did not end within {timeout}s")
        if self._error is not None:
            raise self._error
        assert self._report is not None
        return self._report

    @property
    def report(self) -> LoadReport:
        return self.join(0.0)

    def __enter__(self) -> LoadInBackground:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 -- handed to the caller of stop()/join(), not lost in the thread
            self._error = exc
        finally:
            self._running.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._running.set()
        self._report = await run_load(**self._args, stop=self._stop)
