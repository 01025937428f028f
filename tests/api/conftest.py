"""Fixtures for the API: a real uvicorn server in a thread over a controller on the fakes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from stagewise.api.access import ReadAccess
from stagewise.api.server import bind, create_app, read_token
from stagewise.basics import waiting
from stagewise.controller import Controller
from stagewise.testing import FakePlatform, FakeRouter
from tests.controller.conftest import make_spec


def spec_text(version: str, strategy: dict[str, object]) -> str:
    return json.dumps(make_spec(version, strategy).model_dump(mode="json", by_alias=True))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    """A client of a live server, sending the server's token on every request."""
    for c in serve(tmp_path):
        c.headers["Authorization"] = f"Bearer {read_token(tmp_path)}"
        yield c


def serve(state: Path, reads: ReadAccess = "open") -> Iterator[httpx.Client]:
    """A live server over a controller on the fakes, in a thread, and a client of it (no token)."""
    platform = FakePlatform(time.time, startup=0.05)
    router = FakeRouter(time.time, rate=500)
    controller = Controller(state, tick=0.02, routers={"builtin": router}, platforms={"local": platform})
    app = create_app(state, controller=controller, reads=reads)
    sock = bind("127.0.0.1:0")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    host, port = sock.getsockname()
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as c:
            waiting.blocking_until(lambda: server.started, timeout=10, interval=0.01)
            yield c
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_phase(client: httpx.Client, phases: set[str], timeout: float = 20, service: str = "shop") -> str:
    seen: list[str] = []

    def reached() -> bool:
        seen.append(client.get(f"/api/v1/services/{service}").json()["phase"])
        return seen[-1] in phases

    if not waiting.blocking_until(reached, timeout=timeout):
        raise AssertionError(f"still {seen[-1]}")
    return seen[-1]
