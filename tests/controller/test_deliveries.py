"""Every strategy's success and rollback path, through the real controller and store, on fakes."""

from __future__ import annotations

from typing import Any

import pytest

from stagewise.core.delivery import Phase
from stagewise.errors import ConflictError
from tests.controller.conftest import World, make_spec

CANARY: dict[str, Any] = {"canary": {"steps": [
    {"setWeight": 20}, {"analysis": {"templates": ["errors", "latency"], "duration": "30s"}},
    {"setWeight": 50}, {"pause": {"duration": "10s"}},
]}}
BLUE_GREEN: dict[str, Any] = {"blueGreen": {
    "prePromotionAnalysis": {"templates": ["errors", "latency"], "duration": "30s"},
    "autoPromotion": {"after": "5s"}, "scaleDownDelay": "20s",
}}
WAVES: dict[str, Any] = {"phased": {"waves": [1, "50%"], "bake": "2s", "analysis": {"templates": ["errors"],
                                                                                    "duration": "20s"}}}
COHORTS: dict[str, Any] = {"phased": {"cohorts": {"key": {"header": "X-User"}, "steps": [10, 50]},
                                      "analysis": {"templates": ["errors"], "duration": "20s"}}}


def stable_of(world: World) -> str | None:
    record = world.controller.store.get_service("shop")
    assert record is not None
    return record.stable.version if record.stable else None


@pytest.mark.parametrize("strategy", [CANARY, BLUE_GREEN, WAVES, COHORTS, {"full": {}}],
                         ids=["canary", "blue-green", "waves", "cohorts", "full"])
async def test_a_good_release_is_promoted(world: World, strategy: dict[str, Any]) -> None:
    assert await world.deliver("v2", strategy) is Phase.SUCCEEDED
    assert stable_of(world) == "v2"
    await world.run(seconds=2)
    assert world.platform.count("shop", "v2", ready=True) == 4
    assert world.platform.count("shop", "v1") == 0
    table = world.router.tables["shop"]
    assert table.receiving() == {"v2"}


@pytest.mark.parametrize("strategy", [BLUE_GREEN, {"full": {}}], ids=["blue-green", "full"])
async def test_every_step_ends_only_once_the_router_serves_its_ready_instances(
    world: World, strategy: dict[str, Any]
) -> None:
    """Whoever sees a step end (the API, a script waiting for Succeeded) finds its instances reachable."""
    store = world.controller.store
    seen: list[tuple[str, int, int]] = []
    save, save_all = store.save_delivery, store.save_all

    def note(delivery: Any) -> None:
        table = world.router.tables["shop"]
        candidate = delivery.candidate.version
        seen.append((delivery.phase.value, sum(1 for e in table.endpoints if e.release == candidate),
                     world.platform.count("shop", candidate, ready=True)))

    def watching(delivery: Any, *args: Any, **kwargs: Any) -> None:
        note(delivery)
        save(delivery, *args, **kwargs)

    def watching_all(writes: Any) -> None:  # a tick's writes, committed together
        for write in writes:
            if write.delivery is not None:
                note(write.delivery)
        save_all(writes)

    store.save_delivery = watching  # type: ignore[method-assign]
    store.save_all = watching_all  # type: ignore[method-assign]
    assert await world.deliver("v2", strategy) is Phase.SUCCEEDED
    # the candidate only grows on the way to success: every instance ready is already served
    assert [s for s in seen if s[1] != s[2]] == [], seen
    assert seen[-1] == ("Succeeded", 4, 4)


@pytest.mark.parametrize("strategy", [CANARY, BLUE_GREEN, WAVES, COHORTS],
                         ids=["canary", "blue-green", "waves", "cohorts"])
async def test_a_release_that_fails_requests_is_rolled_back(world: World, strategy: dict[str, Any]) -> None:
    world.router.error_rate["v3"] = 0.2
    assert await world.deliver("v3", strategy) is Phase.ROLLED_BACK
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None and latest.abort_reason and "Failed" in latest.abort_reason
    assert stable_of(world) == "v1"
    served = world.router.served["shop"].get("v3", 0)
    await world.run(seconds=5)
    assert world.router.served["shop"].get("v3", 0) == served, "the bad release got requests after rollback"
    assert world.platform.count("shop", "v3") == 0
    assert world.platform.count("shop", "v1", ready=True) == 4


async def test_a_tail_latency_regression_is_rolled_back(world: World) -> None:
    world.router.slow_every["v4"] = 20
    assert await world.deliver("v4", BLUE_GREEN) is Phase.ROLLED_BACK
    assert world.router.served["shop"].get("v4", 0) > 0


async def test_full_rolls_back_when_instances_never_get_ready(world: World) -> None:
    world.platform.crashing.add("v9")
    phase = await world.deliver("v9", {"full": {}}, progressDeadline="30s")
    assert phase is Phase.ROLLED_BACK
    assert world.platform.count("shop", "v1", ready=True) == 4


async def test_waves_stop_when_more_instances_fail_than_allowed(world: World) -> None:
    world.platform.crashing.add("v5")
    assert await world.deliver("v5", WAVES) is Phase.ROLLED_BACK
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None and "failed in this step" in (latest.abort_reason or "")


async def test_a_manual_pause_waits_for_promote(world: World) -> None:
    strategy = {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}
    await world.controller.apply(make_spec("v2", strategy))
    assert await world.run(until={Phase.PAUSED}, seconds=30) is Phase.PAUSED
    assert await world.run(seconds=30) is Phase.PAUSED, "a manual pause must not end by itself"
    await world.controller.act("shop", "promote")
    assert await world.run() is Phase.SUCCEEDED


async def test_promote_full_skips_the_remaining_steps(world: World) -> None:
    await world.controller.apply(make_spec("v2", CANARY))
    await world.run(until={Phase.PROGRESSING}, seconds=5)
    await world.controller.act("shop", "promote", full=True)
    started = world.clock.now
    assert await world.run() is Phase.SUCCEEDED
    assert world.clock.now - started < 15


async def test_abort_then_retry_then_undo(world: World) -> None:
    strategy = {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}
    await world.controller.apply(make_spec("v2", strategy))
    await world.run(until={Phase.PAUSED}, seconds=30)
    await world.controller.act("shop", "abort")
    assert await world.run() is Phase.ROLLED_BACK
    await world.controller.act("shop", "retry")
    assert await world.run(until={Phase.PAUSED}, seconds=30) is Phase.PAUSED
    await world.controller.act("shop", "promote")
    assert await world.run() is Phase.SUCCEEDED
    assert stable_of(world) == "v2"
    undo = await world.controller.undo("shop")
    assert undo.candidate.version == "v1" and undo.undo
    strategy_pause = await world.run(until={Phase.PAUSED}, seconds=30)
    assert strategy_pause is Phase.PAUSED
    await world.controller.act("shop", "promote")
    assert await world.run() is Phase.SUCCEEDED
    assert stable_of(world) == "v1"


async def test_user_pause_and_resume(world: World) -> None:
    await world.controller.apply(make_spec("v2", CANARY))
    await world.run(until={Phase.PROGRESSING}, seconds=5)
    await world.controller.act("shop", "pause")
    assert await world.run(seconds=200) is Phase.PAUSED, "a paused delivery must stay paused"
    await world.controller.act("shop", "resume")
    assert await world.run() is Phase.SUCCEEDED


async def test_verbs_that_do_not_fit_the_phase_are_refused(world: World) -> None:
    with pytest.raises(ConflictError):
        await world.controller.act("shop", "promote")
    await world.controller.apply(make_spec("v2", CANARY))
    with pytest.raises(ConflictError, match="promote or abort it first"):
        await world.controller.apply(make_spec("v3", CANARY))


async def test_no_traffic_ends_by_the_progress_deadline_naming_the_missing_data(world: World) -> None:
    world.router.rate = 0
    phase = await world.deliver("v2", CANARY, progressDeadline="60s")
    assert phase is Phase.ROLLED_BACK
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None and "no data" in (latest.abort_reason or "").lower()


@pytest.mark.parametrize("kill_at", range(0, 40, 3))
async def test_a_controller_restart_at_any_tick_changes_nothing(world: World, kill_at: int) -> None:
    world.router.error_rate["v3"] = 0.2
    await world.controller.apply(make_spec("v3", CANARY))
    for _ in range(kill_at):
        await world.controller.tick()
        world.clock.advance(0.25)
    await world.restart()
    assert await world.run() is Phase.ROLLED_BACK


async def test_a_router_restart_gets_the_table_back(world: World) -> None:
    await world.controller.apply(make_spec("v2", CANARY))
    await world.run(until={Phase.PROGRESSING}, seconds=5)
    await world.run(seconds=3, until=set())
    world.router.restart()
    await world.controller.tick()
    assert "shop" in world.router.tables
    assert await world.run() is Phase.SUCCEEDED


async def test_long_pauses_and_analyses_are_not_cut_short_by_the_progress_deadline(world: World) -> None:
    strategy = {"canary": {"steps": [
        {"setWeight": 10}, {"pause": {"duration": "3m"}},
        {"analysis": {"templates": ["errors"], "duration": "3m"}},
    ]}}
    assert await world.deliver("v2", strategy, progressDeadline="1m") is Phase.SUCCEEDED


async def test_analysis_measurements_are_stored(world: World) -> None:
    assert await world.deliver("v2", CANARY) is Phase.SUCCEEDED
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None
    rows = world.controller.store.measurements(latest.id)
    assert {r.release for r in rows} == {"v1", "v2"}
    assert {"requests", "errors"} <= {r.metric for r in rows}
    assert max(r.value for r in rows if r.metric == "requests" and r.release == "v2") > 100
