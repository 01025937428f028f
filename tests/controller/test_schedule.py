"""Which services a tick reconciles: the due ones only, and every decision the same as a sweep over all.

A delivery in flight is reconciled on every tick, an idle service once per
resync period (and then in full: drift is put right), and any service at
once when an API call concerns it. Decisions must not depend on it: the same
deliveries run with a sweep of every service on every tick (`resync=0`) and
with the schedule log the same events and end in the same phases.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from stagewise.controller import Controller
from stagewise.controller.controller import RESYNC
from stagewise.controller.schedule import Schedule, next_resync
from stagewise.core.delivery import Phase
from stagewise.platforms import PlatformView
from stagewise.testing import FakeClock, FakePlatform, SteadyRouter
from tests.controller.conftest import World, make_spec

TICK = 0.25


class Counting(FakePlatform):
    """A fake platform that counts, per service, how often the controller looked."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, startup=1.0)
        self.looks: dict[str, int] = {}

    async def observe(self, **kwargs: Any) -> PlatformView:
        service = kwargs["service"]
        self.looks[service] = self.looks.get(service, 0) + 1
        return await super().observe(**kwargs)


async def settle(world: World, seconds: float) -> None:
    for _ in range(round(seconds / TICK)):
        await world.controller.tick()
        world.clock.advance(TICK)


@pytest.fixture
async def idle(tmp_path: Path) -> World:
    """`shop` serving v1, nothing in flight, on a platform that counts looks."""
    world = World(tmp_path)
    world.platform = Counting(world.clock)
    world.controller.store.close()
    world.controller = world.new_controller()
    await world.controller.apply(make_spec("v1", {"full": {}}))
    assert await world.run() is Phase.SUCCEEDED
    await settle(world, 2 * RESYNC)  # past the first resync: from here on, the steady rhythm
    return world


async def test_an_idle_service_is_resynced_within_its_period_and_not_on_every_tick(idle: World) -> None:
    platform = idle.platform
    assert isinstance(platform, Counting)
    # an instance dies behind the controller's back (killed by hand): no event tells it
    victim = next(iter(platform.instances["shop"]))
    del platform.instances["shop"][victim]
    looks = platform.looks["shop"]
    await settle(idle, RESYNC + TICK)
    assert platform.count("shop", "v1") == 4, "the resync within the period must start a replacement"
    # a sweep looks 41 times: here once for the resync, then on every tick only while the replacement
    # starts (1 s), until it finds the world settled again
    startup = round(platform.startup / TICK) + 1
    assert platform.looks["shop"] - looks <= 1 + startup, platform.looks["shop"] - looks
    looks = platform.looks["shop"]
    await settle(idle, 4 * RESYNC)
    assert platform.looks["shop"] - looks <= 4 + 1, platform.looks["shop"] - looks  # once a period


async def test_an_api_call_reaches_an_idle_service_on_the_next_tick(idle: World) -> None:
    platform = idle.platform
    assert isinstance(platform, Counting)
    looks = platform.looks["shop"]
    status, _ = await idle.controller.apply(make_spec("v1", {"full": {}}, replicas=6))
    assert status == "configured: release unchanged"
    await idle.controller.tick()  # one tick, whatever the service's resync phase
    assert platform.looks["shop"] == looks + 1
    assert platform.count("shop", "v1") == 6
    # a delivery is started on the next tick too
    await idle.controller.apply(make_spec("v2", {"canary": {"steps": [{"setWeight": 50}]}}))
    await idle.controller.tick()
    assert platform.count("shop", "v2") > 0
    latest = idle.controller.store.latest_delivery("shop")
    assert latest is not None and latest.phase is Phase.PROGRESSING


# --- the same decisions with a sweep and with the schedule --------------------------------------------------

CANARY: dict[str, Any] = {"canary": {"steps": [
    {"setWeight": 20}, {"pause": {"duration": "3s"}},
    {"analysis": {"templates": ["errors", "latency"], "duration": "20s"}},
    {"setWeight": 60}, {"pause": {"duration": "2s"}},
]}}
BLUE_GREEN: dict[str, Any] = {"blueGreen": {
    "prePromotionAnalysis": {"templates": ["errors"], "duration": "10s"},
    "autoPromotion": {"after": "2s"}, "scaleDownDelay": "5s",
}}
SERVICES = {"good": CANARY, "bad": CANARY, "green": BLUE_GREEN, "idle": {"full": {}}, "waves": {
    "phased": {"waves": [1, "50%"], "bake": "2s"}}}


async def history(state: Path, resync: float) -> dict[str, list[tuple[float, str, str]]]:
    """Run one delivery per service (but `idle`) to its end; every service's event log."""
    clock = FakeClock()
    router = SteadyRouter(clock, rate=200)  # its traffic does not depend on which service is asked first
    router.error_rate["v2-bad"] = 0.3
    controller = Controller(state, clock=clock, resync=resync, routers={"builtin": router},
                            platforms={"local": FakePlatform(clock, startup=1.0)})
    # The budget puts looks off by the CPU a tick took: a pause of this process (a collection, a busy machine)
    # would move a look and its verdict by a tick. It has tests of its own (test_scale.py); here only the
    # schedule differs between the two runs.
    controller._budget.seconds = math.inf
    try:
        for name in SERVICES:
            spec = make_spec("v1", {"full": {}}, listen=f"127.0.0.1:{18100 + len(name)}")
            await controller.apply(spec.model_copy(update={"metadata": spec.metadata.model_copy(
                update={"name": name})}))
        await drive(controller, clock, seconds=30)
        for name, strategy in SERVICES.items():
            if name != "idle":
                version = "v2-bad" if name == "bad" else "v2"
                spec = make_spec(version, strategy, listen=f"127.0.0.1:{18100 + len(name)}")
                await controller.apply(spec.model_copy(update={"metadata": spec.metadata.model_copy(
                    update={"name": name})}))
            await drive(controller, clock, seconds=3.3)  # staggered: each at its own phase of the resync
        await drive(controller, clock, seconds=120)
        return {name: [(e.at, e.kind, e.message) for e in controller.store.events(name)] for name in SERVICES}
    finally:
        await controller.close()


async def drive(controller: Controller, clock: FakeClock, *, seconds: float) -> None:
    for _ in range(round(seconds / TICK)):
        await controller.tick()
        clock.advance(TICK)


async def test_decisions_are_the_same_with_a_sweep_and_with_the_schedule(tmp_path: Path) -> None:
    swept = await history(tmp_path / "sweep", resync=0)
    scheduled = await history(tmp_path / "schedule", resync=RESYNC)
    assert [e for e in swept["bad"] if "RolledBack" in e[2]], swept["bad"]
    for name in ("good", "green", "waves"):
        assert [e for e in swept[name] if "Succeeded" in e[2]], swept[name]
    assert scheduled == swept


# --- the schedule itself -------------------------------------------------------------------------------------


def test_resyncs_spread_over_the_period_and_none_waits_longer_than_one() -> None:
    names = [f"svc-{i}" for i in range(1000)]
    now = 1_000_000.0
    due = [next_resync(name, now, RESYNC) for name in names]
    assert all(now < d <= now + RESYNC for d in due)
    per_tick = [sum(1 for d in due if now + t * TICK < d <= now + (t + 1) * TICK) for t in range(40)]
    assert max(per_tick) < 3 * len(names) / 40, per_tick  # about 25 a tick, not 1,000 at once
    assert next_resync("a", now, RESYNC) == next_resync("a", now, RESYNC)  # the same phase on every run


def test_the_schedule_gives_the_due_services_earliest_first_and_each_once() -> None:
    schedule = Schedule()
    schedule.at("b", 5.0)
    schedule.at("a", 3.0)
    schedule.at("c", 9.0)
    schedule.at("b", 2.0)  # rescheduled: the earlier entry is stale
    schedule.soon("c", 10.0)  # later than it is due already: no change
    assert schedule.pop_due(6.0) == ["b", "a"]
    assert schedule.pop_due(6.0) == []
    assert schedule.next_due() == 9.0
    schedule.drop("c")
    assert schedule.pop_due(100.0) == [] and len(schedule) == 0
