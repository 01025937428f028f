from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stagewise.controller import Controller
from stagewise.core.delivery import Phase
from stagewise.core.spec import ServiceSpec
from stagewise.testing import FakeClock, FakePlatform, FakeRouter

BASE: dict[str, Any] = {
    "apiVersion": "stagewise.dev/v1alpha1",
    "kind": "Service",
    "metadata": {"name": "shop"},
    "spec": {
        "listen": "127.0.0.1:18080",
        "replicas": 4,
        "release": {"version": "v1", "run": {"command": ["app", "--port", "{port}"]}},
        "analysis": {
            "errors": {"metric": "error-rate"},
            "latency": {"metric": "latency"},
        },
        "progressDeadline": "2m",
    },
}


def make_spec(version: str, strategy: dict[str, Any], **body: Any) -> ServiceSpec:
    doc = copy.deepcopy(BASE)
    doc["spec"]["release"]["version"] = version
    doc["spec"]["strategy"] = strategy
    doc["spec"].update(body)
    return ServiceSpec.model_validate(doc)


class World:
    """A controller over the fakes, driven tick by tick on the fake clock."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.clock = FakeClock()
        self.platform = FakePlatform(self.clock, startup=1.0)
        self.router = FakeRouter(self.clock, rate=200, header_share=0.25)
        self.controller = self.new_controller()

    def new_controller(self) -> Controller:
        return Controller(self.state, clock=self.clock, routers={"builtin": self.router},
                          platforms={"local": self.platform})

    async def restart(self) -> None:
        """A controller crash: a new one on the same state and the same running world."""
        self.controller.store.close()
        self.controller = self.new_controller()

    async def run(self, *, until: set[Phase] | None = None, seconds: float = 600, step: float = 0.25) -> Phase:
        until = until or {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED}
        end = self.clock.now + seconds
        phase = Phase.PENDING
        while self.clock.now < end:
            await self.controller.tick()
            self.clock.advance(step)
            latest = self.controller.store.latest_delivery("shop")
            phase = latest.phase if latest else Phase.PENDING
            if phase in until:
                await self.controller.tick()
                return phase
        return phase

    async def deliver(self, version: str, strategy: dict[str, Any], **body: Any) -> Phase:
        await self.controller.apply(make_spec(version, strategy, **body))
        return await self.run()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.controller.apply(make_spec("v1", {"full": {}}))
    assert await w.run() is Phase.SUCCEEDED
    yield w
    w.controller.store.close()
