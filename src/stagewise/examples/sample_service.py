"""A small HTTP/1.1 service to deliver: the demo's and the tests' stand-in for a real one.

    python -m stagewise.examples.sample_service --port 8001 --version v2 --fail-rate 0.1

It does exactly what its flags say and nothing else, so that a test or a demo
can tell the router's and the platform's behaviour from the service's: every
response names the version (`X-Version` header and a JSON body), a seeded share
of responses fail with 500, every Nth response is slow, and `/healthz` answers
200 once the port listens (after `--startup-delay`). On SIGTERM it behaves like
a well-mannered production service: stops accepting, finishes requests in
flight, closes idle keep-alive connections, exits 0.

Standard library only (plus uvloop when installed): it must start in a blink
and must never import the rest of stagewise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


@dataclass(frozen=True)
class Behaviour:
    """What the service does; every field is one command-line flag."""

    version: str
    fail_rate: float = 0.0
    """Share of responses (not counting /healthz) that are 500, drawn from a seeded RNG."""
    slow_every: int = 0
    """Every Nth response (not counting /healthz) waits `slow_ms` first; 0: never."""
    slow_ms: float = 100.0
    seed: int = 0


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class _Request:
    method: str
    path: str
    http10: bool
    headers: dict[str, str]


class SampleService:
    """Connection handling and the response schedule; `serve` runs it until `stop` is set."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.served = 0
        self._rng = random.Random(behaviour.seed)
        self._idle: dict[asyncio.StreamWriter, bool] = {}
        """Open connections, and whether each waits for its next request (safe to close)."""
        self._closing = False
        self._drained = asyncio.Event()
        self._body_ok = json.dumps({"version": behaviour.version}).encode()
        self._body_fail = json.dumps({"version": behaviour.version, "error": "injected failure"}).encode()
        self._body_health = json.dumps({"status": "ok", "version": behaviour.version}).encode()

    async def serve(
        self,
        host: str,
        port: int,
        stop: asyncio.Event,
        *,
        startup_delay: float = 0.0,
        drain_timeout: float = 1.5,
    ) -> None:
        if startup_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), startup_delay)
            if stop.is_set():
                return
        server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD, backlog=1024)
        print(f"sample-service {self.behaviour.version} listening on http://{host}:{port}", flush=True)
        await stop.wait()

        server.close()  # no new connections from here on
        self._closing = True
        for writer, idle in list(self._idle.items()):
            if idle:
                writer.close()
        print(f"sample-service draining {len(self._idle)} connection(s)", flush=True)
        if self._idle:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_timeout)
        for writer in list(self._idle):
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 0.5)
        print(f"sample-service stopped after {self.served} request(s)", flush=True)

    def _outcome(self) -> tuple[int, float]:
        """Status and delay of the next counted response, in a fixed order given the seed."""
        self.served += 1
        b = self.behaviour
        status = 500 if b.fail_rate > 0 and self._rng.random() < b.fail_rate else 200
        slow = b.slow_every > 0 and self.served % b.slow_every == 0
        return status, (b.slow_ms / 1000.0 if slow else 0.0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._idle[writer] = True
        try:
            while not self._closing:
                self._idle[writer] = True
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(self._response(431, b"", keep_alive=False))
                    return
                self._idle[writer] = False
                try:
                    request = _parse_head(head)
                    if request.headers.get("expect", "").lower() == "100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await _read_body(reader, request.headers)
                except _BadRequest as exc:
                    writer.write(self._response(exc.status, b"", keep_alive=False))
                    return
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                keep_alive = _wants_keep_alive(request)
                if request.path == "/healthz":
                    status, body = 200, self._body_health
                else:
                    status, delay = self._outcome()
                    body = self._body_ok if status == 200 else self._body_fail
                    if delay:
                        await asyncio.sleep(delay)
                keep_alive = keep_alive and not self._closing
                writer.write(
                    self._response(
                        status,
                        b"" if request.method == "HEAD" else body,
                        keep_alive=keep_alive,
                        length=len(body),
                    )
                )
                await writer.drain()
                if not keep_alive:
                    return
        except ConnectionError:
            return
        finally:
            del self._idle[writer]
            if self._closing and not self._idle:
                self._drained.set()
            writer.close()

    def _response(self, status: int, body: bytes, *, keep_alive: bool, length: int | None = None) -> bytes:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            f"X-Version: {self.behaviour.version}\r\n"
            + ("" if keep_alive else "Connection: close\r\n")
            + "\r\n"
        )
        return head.encode("latin-1") + body


def _parse_head(head: bytes) -> _Request:
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "malformed header")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return _Request(
        method=parts[0], path=parts[1].split("?", 1)[0], http10=parts[2] == "HTTP/1.0", headers=headers
    )


def _wants_keep_alive(request: _Request) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
    return "keep-alive" in tokens if request.http10 else "close" not in tokens


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """Read and discard the request body, so the next request on the connection parses."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "malformed chunk size") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return
            total += size
            if total > MAX_BODY:
                raise _BadRequest(413, "body too large")
            await reader.readexactly(size + 2)
    length = headers.get("content-length")
    if length is None:
        return
    if not length.isdigit():
        raise _BadRequest(400, "malformed Content-Length")
    if int(length) > MAX_BODY:
        raise _BadRequest(413, "body too large")
    if int(length):
        await reader.readexactly(int(length))


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    behaviour = Behaviour(
        version=args.version,
        fail_rate=args.fail_rate,
        slow_every=args.slow_every,
        slow_ms=args.slow_ms,
        seed=args.seed,
    )
    await SampleService(behaviour).serve(
        args.host, args.port, stop, startup_delay=args.startup_delay, drain_timeout=args.drain_timeout
    )


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stagewise.examples.sample_service",
        description="A sample HTTP service that answers with its version.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--version", required=True, help="reported in X-Version and the JSON body")
    parser.add_argument("--fail-rate", type=_rate, default=0.0, help="share of responses that are 500")
    parser.add_argument("--slow-every", type=int, default=0, help="delay every Nth response (0: never)")
    parser.add_argument("--slow-ms", type=float, default=100.0, help="the delay of a slow response")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds before listening")
    parser.add_argument("--seed", type=int, default=0, help="seed of the failure sequence")
    parser.add_argument(
        "--drain-timeout", type=float, default=1.5, help="seconds in-flight requests get after SIGTERM"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(_main(args))
    except OSError as exc:  # the port is taken, the host is not ours, ...
        print(f"sample-service: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
