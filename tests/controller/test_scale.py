"""What keeps a tick short with many deliveries in flight, and what it must not change.

- A delivery that only waits out a timed pause is reconciled when the pause
  ends (and once a second meanwhile, for its instances' health), not on
  every tick: the pause still ends on the tick a sweep would end it on — or
  on the tick before, if it ended while that tick ran.
- A judge's look is written with the next point of the analysis's history,
  not on every tick: a controller that dies loses at most that second, and
  its successor goes on from the last point to the same end.
- A tick takes the looks that can wait last, while it has time, and puts
  off the rest unobserved — six ticks in a row at most, never a step's
  timer, a rollback or anything else. A look can wait when it is a look of
  an analysis's judges, or at the instances of a step not ready yet.
- The garbage a tick leaves is collected between two ticks, not within one:
  a young collection after each, a middle one after every third, each in
  the gap before the next tick when it fits there.
- `apply` reads the service from memory unless another process wrote since.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stagewise.controller.collector import GC_THRESHOLDS, WAIT_MAX, Collector
from stagewise.controller.controller import PAUSE_LOOK
from stagewise.controller.schedule import (
    DECIDING,
    OVERDUE,
    PUT_OFF_LONGEST,
    PUT_OFF_MAX,
    Budget,
    can_wait,
    next_beat,
    only_waits_ready,
)
from stagewise.controller.work import Work
from stagewise.core.delivery import Delivery, Phase
from stagewise.core.verdict import Outcome
from stagewise.errors import ConflictError
from stagewise.platforms import PlatformView
from stagewise.store import open_store
from stagewise.testing import FakeClock, FakePlatform
from tests.controller.conftest import World, make_spec

TICK = 0.25


class Counting(FakePlatform):
    """A fake platform that notes, per service, when the controller looked."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, startup=1.0)
        self.looked: dict[str, list[float]] = {}

    async def observe(self, **kwargs: Any) -> PlatformView:
        self.looked.setdefault(kwargs["service"], []).append(self.clock())
        return await super().observe(**kwargs)


async def counted(tmp_path: Path) -> tuple[World, Counting]:
    world = World(tmp_path)
    platform = Counting(world.clock)
    world.platform = platform
    world.controller.store.close()
    world.controller = world.new_controller()
    await world.controller.apply(make_spec("v1", {"full": {}}))
    assert await world.run() is Phase.SUCCEEDED
    return world, platform


async def analysing(tmp_path: Path) -> tuple[World, Counting]:
    """`counted`, then a canary of v2 whose analysis of ten minutes runs; the looks so far forgotten."""
    world, platform = await counted(tmp_path)
    await world.controller.apply(make_spec("v2", {"canary": {"steps": [
        {"setWeight": 50}, {"analysis": {"templates": ["errors"], "duration": "10m"}}]}}))
    await world.run(seconds=3, until=set())
    assert running(world.controller._held.delivery("shop"))
    platform.looked["shop"].clear()
    return world, platform


async def judged_per_tick(world: World, ticks: int, *, before: Callable[[], None] | None = None) -> list[bool]:
    """Tick `ticks` times (calling `before` ahead of each); for each, whether the analysis's judges looked."""
    controller, seen = world.controller, []
    for _ in range(ticks):
        if before is not None:
            before()
        was = controller._held.delivery("shop")
        await controller.tick()
        now = controller._held.delivery("shop")
        assert was is not None and now is not None
        seen.append(now.analysis["step-1"].last != was.analysis["step-1"].last)
        world.clock.advance(TICK)
    return seen


async def test_a_delivery_waiting_out_its_pause_is_looked_at_once_a_second_and_moves_on_when_it_is_due(
    tmp_path: Path,
) -> None:
    world, platform = await counted(tmp_path)
    await world.controller.apply(make_spec("v2", {"canary": {"steps": [
        {"setWeight": 25}, {"pause": {"duration": "10s"}}, {"setWeight": 50}]}}))
    await world.run(seconds=2.5, until=set())  # the canary's instances start and are ready: the pause runs
    delivery = world.controller.store.latest_delivery("shop")
    assert delivery is not None and delivery.step == 1 and delivery.ready_at is not None
    platform.looked["shop"].clear()
    due = delivery.ready_at + 10
    while world.clock.now < due + 2 * TICK:
        await world.controller.tick()
        world.clock.advance(TICK)
    looks = platform.looked["shop"]
    during = [t for t in looks if t < due - TICK]
    assert len(during) <= (due - delivery.ready_at) / PAUSE_LOOK + 1, looks  # a sweep looks 40 times
    assert all(b - a <= PAUSE_LOOK for a, b in itertools.pairwise(looks)), looks
    moved = world.controller.store.latest_delivery("shop")
    assert moved is not None and moved.step == 2
    done = [e for e in world.controller.store.events("shop")
            if e.message.startswith("step 2/") and "done: pause" in e.message]
    assert done and due <= done[-1].at < due + TICK, (done, due)  # on the tick it was due


def history(world: World) -> list[dict[str, Any]]:
    """The points of history of the analysis `analysing` started."""
    delivery = world.controller._held.delivery("shop")
    assert delivery is not None
    return delivery.analysis["step-1"].history


def running(delivery: Delivery | None) -> bool:
    return delivery is not None and any(r.verdict.outcome is Outcome.RUNNING for r in delivery.analysis.values())


async def test_looks_are_written_with_each_point_and_a_successor_goes_on_from_the_last_one(tmp_path: Path) -> None:
    world = World(tmp_path)
    await world.controller.apply(make_spec("v1", {"full": {}}))
    assert await world.run() is Phase.SUCCEEDED
    world.router.error_rate["v2"] = 0.3
    await world.controller.apply(make_spec("v2", {"canary": {"steps": [
        {"setWeight": 50}, {"analysis": {"templates": ["errors"], "duration": "10m"}}]}}))
    for _ in range(40):
        await world.controller.tick()
        world.clock.advance(TICK)
        held = world.controller._held.delivery("shop")
        stored = world.controller.store.latest_delivery("shop")
        if running(held) and held is not None and held.analysis["step-1"].history:
            assert stored is not None
            run, kept = held.analysis["step-1"], stored.analysis["step-1"]
            # memory is ahead of the store by the looks since the last point: less than a second of them
            assert len(run.history) == len(kept.history)
            assert kept.last is not None and run.last is not None
            assert run.history[-1]["t"] <= world.clock.now - TICK < run.history[-1]["t"] + 1.0
        if stored is not None and stored.phase.terminal:
            break
    # a crash between two points: the successor starts from the last point written, and ends the same way
    await world.restart()
    assert await world.run() is Phase.ROLLED_BACK


async def test_a_controller_that_stops_writes_the_looks_it_held(tmp_path: Path) -> None:
    world = World(tmp_path)
    await world.controller.apply(make_spec("v1", {"full": {}}))
    assert await world.run() is Phase.SUCCEEDED
    await world.controller.apply(make_spec("v2", {"canary": {"steps": [
        {"setWeight": 50}, {"analysis": {"templates": ["errors"], "duration": "10m"}}]}}))
    while not world.controller._held.unwritten():
        await world.controller.tick()
        world.clock.advance(TICK)
    held = world.controller._held.delivery("shop")
    await world.controller.close()
    world.controller = world.new_controller()
    stored = world.controller.store.latest_delivery("shop")
    assert held is not None and stored == held


def test_a_budget_lets_a_look_wait_six_ticks_in_a_row_at_most() -> None:
    assert (PUT_OFF_MAX, PUT_OFF_LONGEST) == (3, 6)
    budget = Budget(0.2)
    budget.next_tick()
    budget.put_off(["svc-0", "svc-1"])
    budget.next_tick()
    assert budget.may_wait("svc-0") and budget.may_wait("svc-1")  # put off once
    for _ in range(PUT_OFF_LONGEST - 1):
        assert budget.may_wait("svc-0")
        budget.put_off(["svc-0"])
        budget.next_tick()
    assert budget.waited("svc-0") == PUT_OFF_LONGEST
    assert not budget.may_wait("svc-0")  # six times in a row: taken on this tick, whatever its budget
    assert budget.may_wait("svc-1") and budget.waited("svc-1") == 0  # taken meanwhile: it may wait again
    budget.next_tick()
    assert budget.may_wait("svc-0")


def test_a_budget_gives_a_look_put_off_three_times_more_of_the_tick_and_counts_what_committing_will_take() -> None:
    budget = Budget(0.2)
    for _ in range(PUT_OFF_MAX):
        budget.put_off(["late"])
        budget.next_tick()
    # a tick takes looks that can wait while it has spent less than its share of the budget
    assert budget.deciding(0.0) and budget.deciding(DECIDING * 0.2 - 0.001) and not budget.deciding(DECIDING * 0.2)
    assert budget.deciding(DECIDING * 0.2, "fresh") is False
    assert budget.deciding(OVERDUE * 0.2 - 0.001, "late") and not budget.deciding(OVERDUE * 0.2, "late")
    # committing a write costs 2 ms and acting on a service 1 ms: learnt from the ticks, then counted ahead
    for _ in range(40):
        budget.next_tick()
        for writes in (True, False):
            budget.took(writes=writes)
        budget.ended(committing=0.002, acting=0.002)
    assert budget.per_write == pytest.approx(0.002, rel=1e-3) and budget.per_service == pytest.approx(0.001, rel=1e-3)
    budget.next_tick()
    assert budget.deciding(DECIDING * 0.2 - 0.004)
    budget.took(writes=True)  # 3 ms to come
    assert not budget.deciding(DECIDING * 0.2 - 0.0029) and budget.deciding(DECIDING * 0.2 - 0.0031)


def test_the_ticks_keep_to_a_beat_that_a_late_wake_up_does_not_move() -> None:
    due, begun = 0.0, []
    for _ in range(8):
        now = due + 0.003  # each sleep wakes 3 ms late
        begun.append(now)
        due = next_beat(due, now + 0.1, 0.25)  # a tick of 0.1 s
    assert begun == pytest.approx([0.003 + 0.25 * i for i in range(8)])  # 3 ms late each, not 3 ms more each
    assert next_beat(1.0, 1.4, 0.25) == 1.4  # a tick that ran past its period: the next at once


async def test_a_tick_short_of_time_puts_a_look_off_unobserved_six_ticks_at_most_and_never_anything_else(
    tmp_path: Path,
) -> None:
    world, platform = await analysing(tmp_path)
    world.controller._budget.seconds = 0.0  # every tick has spent its budget before it comes to the looks
    points = [p["t"] for p in history(world)[-1:]]
    judged = await judged_per_tick(world, 21)
    assert judged == ([False] * 6 + [True]) * 3  # judged on every seventh tick: put off six times, then taken
    looks = platform.looked["shop"]
    assert [round(b - a, 2) for a, b in itertools.pairwise(looks)] == [7 * TICK] * 2, looks  # observed then only
    points += [p["t"] for p in history(world) if p["t"] > points[0]]
    assert len(points) >= 2 and all(b - a >= 2.0 for a, b in itertools.pairwise(points)), points  # in a hurry
    world.router.error_rate["v2"] = 0.3
    assert await world.run() is Phase.ROLLED_BACK  # the failing look, then every step of the rollback: taken


async def test_a_tick_short_of_time_puts_off_a_look_at_instances_not_ready_six_ticks_at_most_not_a_rollbacks(
    tmp_path: Path,
) -> None:
    world, platform = await counted(tmp_path)
    controller = world.controller
    controller._budget.seconds = 0.0  # every tick has spent its budget before it comes to the looks
    platform.startup = 2.0  # ready between two looks
    await controller.apply(make_spec("v2", {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1h"}}]}}))
    looked = platform.looked["shop"]
    looked.clear()
    while (delivery := controller._held.delivery("shop")) is None or delivery.step == 0:
        await controller.tick()
        world.clock.advance(TICK)
    entered, *looks = looked  # the step entered (it starts the instances of v2), then the looks at them
    assert [round(t - entered, 2) for t in looks] == [7 * TICK, 14 * TICK], looked  # put off six times, then taken
    started = max(i.started_at for i in platform.instances["shop"].values() if i.release == "v2")
    assert 0 <= looks[-1] - (started + platform.startup) <= 6 * TICK  # seen ready six ticks late at most
    done = [e.at for e in controller.store.events("shop") if e.message.startswith("step 1/5 done: setWeight")]
    assert done == [looks[-1]]  # the step went on on that look
    await controller.act("shop", "abort")
    looked.clear()
    phase = await world.run(until={Phase.ROLLED_BACK})
    assert phase is Phase.ROLLED_BACK
    assert all(round(b - a, 2) == TICK for a, b in itertools.pairwise(looked)), looked  # a rollback: every tick


async def test_a_timed_pause_that_ends_while_a_tick_runs_ends_on_that_tick_and_never_before_its_time(
    tmp_path: Path,
) -> None:
    world, _ = await counted(tmp_path)
    controller, clock = world.controller, world.clock
    await controller.apply(make_spec("v2", {"canary": {"steps": [
        {"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 80}, {"pause": {"duration": "1h"}}]}}))
    while (delivery := controller._held.delivery("shop")) is None or delivery.ready_at is None or delivery.step < 1:
        await controller.tick()
        clock.advance(TICK)
    due = delivery.ready_at + 1.0
    observe_all = controller._observe_all

    async def slow_looks(names: list[str], until: float, **kwargs: Any) -> list[Work]:
        works = await observe_all(names, until, **kwargs)
        if "looking" in kwargs:
            clock.advance(0.1)  # the looks that can wait take a tenth of a second of the tick
        return works

    controller._observe_all = slow_looks  # type: ignore[method-assign]
    clock.now = due - 0.2  # decided 0.2 s before the pause ends, and the tick ends 0.1 s before
    await controller.tick()
    assert controller._held.delivery("shop") == delivery
    clock.now = due - 0.05  # decided before the pause ends, and the tick ends after: it ends on this tick
    await controller.tick()
    moved = controller._held.delivery("shop")
    assert moved is not None and moved.step == 2
    done = [e.at for e in controller.store.events("shop") if e.message.startswith("step 2/7 done: pause")]
    assert done == [pytest.approx(due + 0.05)]


async def test_only_a_step_left_alone_waiting_for_its_instances_before_its_deadline_may_put_its_look_off(
    tmp_path: Path,
) -> None:
    world, _ = await counted(tmp_path)
    controller = world.controller
    await controller.apply(make_spec("v2", {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1h"}}]}}))
    await controller.tick()  # the step entered: its instances start
    delivery = controller._held.delivery("shop")
    assert delivery is not None and delivery.step == 0 and delivery.ready_at is None
    plan, soon = controller.plan(delivery), world.clock.now + TICK
    assert only_waits_ready(delivery, plan, soon) and can_wait(delivery, plan, soon)
    deadline = delivery.progress_at + delivery.spec.spec.progress_deadline
    assert only_waits_ready(delivery, plan, deadline) and not only_waits_ready(delivery, plan, deadline + 0.01)
    for changed in ({"paused": True}, {"phase": Phase.ABORTING}, {"ready_at": world.clock.now}):
        assert not only_waits_ready(delivery.model_copy(update=changed), plan, soon), changed


class Node:
    """Garbage only a collection frees: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


def test_the_garbage_of_a_tick_is_collected_between_ticks_young_after_each_middle_after_every_third(
    tmp_path: Path,
) -> None:
    controller = World(tmp_path).controller
    thresholds = gc.get_threshold()
    collected: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected.append(info["generation"])

    try:
        controller.keep_still()
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] >= 100_000  # within a tick: rarely
        gc.callbacks.append(note)
        for _ in range(6):
            garbage = weakref.ref(Node())  # a tick's garbage
            assert garbage() is not None
            controller.collect_between_ticks()
            assert garbage() is None
        assert collected == [0, 0, 1, 0, 0, 1]
    finally:
        if note in gc.callbacks:
            gc.callbacks.remove(note)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        controller.store.close()


def test_a_collection_waits_for_a_gap_before_the_next_tick_long_enough_for_it_four_ticks_in_a_row_at_most() -> None:
    thresholds = gc.get_threshold()
    try:
        gc.collect()
        gc.set_threshold(*GC_THRESHOLDS)
        collector = Collector()
        assert collector.between_ticks() == 0  # no next tick said: at once
        assert collector.between_ticks(until=time.perf_counter() + 1) == 0  # it fits in the gap
        collector.took = dict.fromkeys(range(3), 0.05)  # 50 ms per tick of garbage, in any generation
        garbage = weakref.ref(Node())
        waits = [collector.between_ticks(until=time.perf_counter() + 0.01) for _ in range(WAIT_MAX + 1)]
        assert waits[:WAIT_MAX] == [None] * WAIT_MAX and waits[-1] is not None  # then in whatever gap there is
        assert garbage() is None and collector.waited == 0
        assert collector.took[waits[-1]] < 0.05  # what it took, per tick of garbage
    finally:
        gc.set_threshold(*thresholds)


async def test_a_tick_that_waits_on_a_slow_driver_puts_no_look_off(tmp_path: Path) -> None:
    world, platform = await analysing(tmp_path)
    observe = platform.observe

    async def slow(**kwargs: Any) -> PlatformView:  # a host far away: 0.15 s, past the budget's 60%
        await asyncio.sleep(0.15)
        return await observe(**kwargs)

    platform.observe = slow  # type: ignore[method-assign]
    assert await judged_per_tick(world, 4) == [True] * 4  # waiting is not work: judged on every tick
    assert not world.controller._budget.waiting


async def test_apply_reads_the_service_from_memory_unless_another_process_wrote_since(tmp_path: Path) -> None:
    world = World(tmp_path)
    await world.controller.apply(make_spec("v1", {"full": {}}))
    assert await world.run() is Phase.SUCCEEDED
    controller, reads = world.controller, list[str]()
    store = controller.store
    read = store.get_service
    store.get_service = lambda name: reads.append(name) or read(name)  # type: ignore[method-assign]
    # another process starts a delivery of v3 while this controller is between ticks
    with open_store(state_dir=tmp_path) as other:
        record = other.get_service("shop")
        assert record is not None
        other.create_delivery(Delivery(service="shop", spec=make_spec("v3", {"full": {}}), stable=record.stable,
                                       created_at=world.clock.now, updated_at=world.clock.now), [])
    with pytest.raises(ConflictError, match=r"\(v1 → v3\) is Pending"):
        await controller.apply(make_spec("v2", {"full": {}}))
    assert reads == ["shop"]  # the store moved: read from it
    await controller.tick()  # reads the store again (`_refresh`): memory and store agree once more
    reads.clear()
    with pytest.raises(ConflictError, match=r"\(v1 → v3\) is"):
        await controller.apply(make_spec("v2", {"full": {}}))
    assert reads == []  # nobody else wrote since: from memory, which knows of v3 now
