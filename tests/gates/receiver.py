"""A real HTTP receiver on loopback for hooks and webhooks: records every call, answers as told.

    with Receiver() as r:
        r.answer("/gate", 503)          # this path answers 503 until told otherwise
        ... r.url("/gate") ...
        r.calls("/gate")                 # every call: path, headers, raw body, parsed JSON, time

It is the other side a team would run (a change-management gate, a chat
bridge): a `ThreadingHTTPServer` in a thread, nothing faked. Calls to a
path with no answer set get 200.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stagewise.basics import waiting


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float
    status: int
    """What the receiver answered."""

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._answers: dict[str, tuple[int, str]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with receiver._lock:
                    status, text = receiver._answers.get(path, (200, "ok"))
                    receiver._calls.append(Call(self.command, path, {k.lower(): v for k, v in self.headers.items()},
                                                raw, time.time(), status))
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, status: int, text: str = "") -> None:
        with self._lock:
            self._answers[path] = (status, text or f"answer {status}")

    def calls(self, path: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if path is None or c.path == path]

    def _at_least(self, path: str, count: int) -> list[Call]:
        """The calls to `path` once there are `count` of them; none before."""
        calls = self.calls(path)
        return calls if len(calls) >= count else []

    def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Block until `path` had `count` calls (from a test whose caller runs in another thread or process)."""
        calls = waiting.blocking_until(lambda: self._at_least(path, count), timeout=timeout, interval=0.02)
        if calls:
            return calls
        raise AssertionError(f"{path}: {len(self.calls(path))} call(s) after {timeout}s, expected {count}")

    async def until(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Like `wait_for`, letting the caller's event loop run meanwhile (its calls are tasks in it)."""
        calls = await waiting.until(lambda: self._at_least(path, count), timeout=timeout, interval=0.01)
        if calls:
            return calls
        raise AssertionError(f"{path}: {len(self.calls(path))} call(s) after {timeout}s, expected {count}")
