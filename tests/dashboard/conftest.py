"""Fixtures for the dashboard: a real uvicorn server in a thread over a controller on the fakes."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from stagewise.api.server import bind, create_app, read_token
from stagewise.basics import waiting
from stagewise.controller import Controller
from stagewise.core.delivery import Event, Phase
from stagewise.core.spec import ServiceSpec
from stagewise.testing import FakeClock, FakePlatform, FakeRouter
from tests.controller.conftest import BASE
from tests.controller.conftest import world as world  # the controller tests' fixture, reused here

CANARY_PAUSE: dict[str, Any] = {"canary": {
    "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}],
    "analysis": {"templates": ["errors", "latency"], "startingStep": 0},
}}
TERMINAL = {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED}


def make_spec(name: str, version: str, strategy: dict[str, Any], *, replicas: int = 2) -> ServiceSpec:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = name
    doc["spec"]["release"]["version"] = version
    doc["spec"]["strategy"] = strategy
    doc["spec"]["replicas"] = replicas
    return ServiceSpec.model_validate(doc)


class Fleet:
    """Many services driven tick by tick on a fake clock, to fill a state directory quickly."""

    def __init__(self, state: Path) -> None:
        self.clock = FakeClock()
        self.router = FakeRouter(self.clock, rate=200)
        self.controller = Controller(state, clock=self.clock, routers={"builtin": self.router},
                                     platforms={"local": FakePlatform(self.clock, startup=0.5)})

    async def run(self, names: list[str], until: set[Phase], seconds: float = 60, step: float = 0.5) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            await self.controller.tick()
            self.clock.advance(step)
            phases = {self.phase(n) for n in names}
            if phases <= until:
                return
        raise AssertionError(f"phases {phases} after {seconds}s, wanted {until}")

    def phase(self, name: str) -> Phase | None:
        latest = self.controller.store.latest_delivery(name)
        return latest.phase if latest else None


async def _populate(state: Path, n: int) -> dict[str, list[str]]:
    """`n` services on v1; a quarter paused mid-canary, a tenth rolled back, a tenth moved on to v2.

    Four services go through the controller for real; the others are copies of them under other
    names (records, deliveries and events), which takes seconds instead of a minute of ticks.
    """
    names = [f"svc-{i:03d}" for i in range(n)]
    groups = {"paused": names[: n // 4], "rolled": names[n // 4: n // 4 + n // 10],
              "moved": names[n // 2: n // 2 + n // 10]}
    groups["idle"] = [x for x in names if not any(x in g for g in groups.values())]
    fleet = Fleet(state)
    try:
        models = {group: members[0] for group, members in groups.items()}
        for name in models.values():
            await fleet.controller.apply(make_spec(name, "v1", {"full": {}}))
        await fleet.run(list(models.values()), {Phase.SUCCEEDED})
        moving = [models["paused"], models["rolled"], models["moved"]]
        for name in moving:
            await fleet.controller.apply(make_spec(name, "v2", CANARY_PAUSE))
        await fleet.run(moving, {Phase.PAUSED})
        await fleet.controller.act(models["rolled"], "abort")
        await fleet.controller.act(models["moved"], "promote", full=True)
        await fleet.run([models["rolled"], models["moved"]], TERMINAL)
        for group, members in groups.items():
            for name in members[1:]:
                _copy_service(fleet.controller, models[group], name)
        return {**groups, "all": names}
    finally:
        await fleet.controller.close()


def _copy_service(controller: Controller, source: str, name: str) -> None:
    store = controller.store
    record = store.get_service(source)
    assert record is not None
    copy_record = record.model_copy(update={"name": name, "spec": _renamed(record.spec, name)})
    store.put_service(copy_record)
    for d in reversed(store.deliveries(source)):
        events = [Event(at=e.at, kind=e.kind, message=e.message) for e in store.events(source, delivery_id=d.id)]
        store.create_delivery(d.model_copy(update={"service": name, "spec": _renamed(d.spec, name)}), events,
                              copy_record)


def _renamed(spec: ServiceSpec, name: str) -> ServiceSpec:
    return spec.model_copy(update={"metadata": spec.metadata.model_copy(update={"name": name})})


def populate(state: Path, n: int) -> dict[str, list[str]]:
    return asyncio.run(_populate(state, n))


class Server:
    """`create_app` served by uvicorn on a free loopback port, in a thread; its URL and token."""

    def __init__(self, state: Path, controller: Controller, *, run_loop: bool = True) -> None:
        self.state = state
        self.app = create_app(state, controller=controller, run_loop=run_loop)
        self.sock = bind("127.0.0.1:0")
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.app.state.stopping = lambda: self.server.should_exit
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        host, port = self.sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.token = read_token(state) or ""

    def start(self) -> Server:
        self.thread.start()
        assert waiting.blocking_until(lambda: self.server.started, timeout=10, interval=0.01), \
            "the server did not start"
        return self

    def stop(self) -> None:
        """Stop as on SIGTERM; open event streams must end by themselves, or this times out."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "the server did not stop within 10 s"

    def client(self, *, authorised: bool = False) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if authorised else {}
        return httpx.Client(base_url=self.url, timeout=10, headers=headers)


def live_controller(state: Path) -> Controller:
    """A controller on real time over fast fakes: deliveries move in fractions of a second."""
    return Controller(state, tick=0.02, routers={"builtin": FakeRouter(time.time, rate=500)},
                      platforms={"local": FakePlatform(time.time, startup=0.05)})


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, live_controller(tmp_path)).start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    value = waiting.blocking_until(predicate, timeout=timeout, interval=0.02)
    if not value:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value
