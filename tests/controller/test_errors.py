"""A failing reconcile: reported once, retried on a schedule (backoff, or the error's own delay), recovered from."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from stagewise.controller.controller import PAUSE_LOOK
from stagewise.controller.retries import FIRST_BACKOFF, MAX_BACKOFF
from stagewise.core.delivery import Phase
from stagewise.core.routes import RouteTable
from stagewise.core.spec import ReleaseSpec
from stagewise.errors import PermanentError, RouterError, StagewiseError
from stagewise.platforms import PlatformView
from tests.controller.conftest import World, make_spec

STEPS: dict[str, Any] = {"canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "5s"}}]}}
REFUSAL = "nginx refused the configuration: unknown directive"


class Failing:
    """Makes the fake router's `apply` fail with `error` while it is set; notes when each reconcile began."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.error: Exception | None = None
        self.refused: Callable[[RouteTable], bool] = lambda table: True
        """Which tables fail."""
        self.reconciles: list[float] = []
        apply, observe = world.router.apply, world.platform.observe

        async def failing_apply(*, table: RouteTable) -> None:
            if self.error is not None and self.refused(table):
                raise self.error
            await apply(table=table)

        async def noting_observe(*, service: str, releases: dict[str, ReleaseSpec]) -> PlatformView:
            self.reconciles.append(world.clock.now)
            return await observe(service=service, releases=releases)

        world.router.apply = failing_apply  # type: ignore[method-assign]
        world.platform.observe = noting_observe  # type: ignore[method-assign]

    def gaps(self) -> list[float]:
        return [round(b - a, 2) for a, b in zip(self.reconciles, self.reconciles[1:], strict=False)]

    def error_events(self) -> list[str]:
        return [e.message for e in self.world.controller.store.events("shop") if e.kind == "error"]


async def start_failing(world: World, error: Exception) -> Failing:
    """A canary that has just begun, and a router that fails from the next table on."""
    failing = Failing(world)
    await world.controller.apply(make_spec("v2", STEPS, progressDeadline="10m"))
    failing.error = error
    await world.run(seconds=0.25, until=set())
    failing.reconciles.clear()
    return failing


async def test_a_permanent_failure_is_reported_once_retried_with_capped_backoff_and_recovered_from(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stagewise.controller")
    failing = await start_failing(world, PermanentError(REFUSAL))
    await world.run(seconds=200, until=set())
    gaps = failing.gaps()
    assert gaps[:7] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0], gaps  # the first retry came 1 s after the failure
    assert FIRST_BACKOFF == 1.0 and MAX_BACKOFF == 60.0
    assert failing.error_events() == [REFUSAL], "reported once, not on every retry"
    assert [r.message for r in caplog.records].count(
        f"shop: {REFUSAL} (tried again with backoff, at most every 60s)") == 1
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None and latest.phase is Phase.PROGRESSING and latest.step == 0

    failing.error = None  # the configuration is fixed: the next retry goes through, and ticks go on as before
    assert await world.run(seconds=120) is Phase.SUCCEEDED
    gaps = failing.gaps()  # after the last backoff: on every tick, or once a second while the pause only runs
    normal = gaps[max(i for i, gap in enumerate(gaps) if gap > PAUSE_LOOK) + 1:]
    assert len(normal) >= 8 and max(normal) <= PAUSE_LOOK, gaps
    assert any("reconciled again after" in r.message for r in caplog.records)
    assert world.router.tables["shop"].receiving() == {"v2"}


async def test_a_temporary_error_is_not_retried_before_its_delay(world: World) -> None:
    failing = await start_failing(world, RouterError("HAProxy is restarting", delay=5))
    await world.run(seconds=30, until=set())
    assert failing.gaps() == [5.0] * (len(failing.reconciles) - 1) and len(failing.reconciles) >= 5
    assert failing.error_events() == ["HAProxy is restarting"]
    failing.error = None
    assert await world.run(seconds=60) is Phase.SUCCEEDED


async def test_a_new_message_is_news_and_a_bug_backs_off_too(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    failing = await start_failing(world, RouterError("HAProxy is restarting", delay=1))
    await world.run(seconds=3, until=set())
    failing.error = KeyError("weights")
    await world.run(seconds=10, until=set())
    assert failing.error_events() == ["HAProxy is restarting", "internal error: KeyError: 'weights'"]
    assert [r.exc_info is not None for r in caplog.records if "KeyError" in r.message] == [True]
    assert failing.gaps()[-3:] == [1.0, 2.0, 4.0]


async def test_a_person_acting_on_a_failing_service_is_heard_at_the_next_tick(world: World) -> None:
    failing = await start_failing(world, PermanentError(REFUSAL))
    await world.run(seconds=40, until=set())  # well into the backoff: the next retry is tens of seconds away
    failing.error = None
    await world.controller.act("shop", "abort")
    before = len(failing.reconciles)
    await world.controller.tick()
    assert len(failing.reconciles) == before + 1
    assert await world.run(seconds=30) is Phase.ROLLED_BACK


async def test_a_delivery_held_by_a_permanent_failure_is_rolled_back_at_its_progress_deadline(world: World) -> None:
    """Backing off holds the delivery, never its deadline: a refused canary table ends in a rollback."""
    failing = Failing(world)
    failing.error = PermanentError(REFUSAL)
    failing.refused = lambda table: bool(table.weights and table.weights.get("v2"))
    await world.controller.apply(make_spec("v2", STEPS, progressDeadline="2m"))
    started = world.clock.now
    assert await world.run(seconds=300) is Phase.ROLLED_BACK
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None and "progress deadline 2m exceeded" in (latest.abort_reason or "")
    assert world.clock.now - started <= 120 + MAX_BACKOFF + 5
    aborting = next(e.at for e in world.controller.store.events("shop") if e.message.startswith("Aborting"))
    assert latest.finished_at is not None and latest.finished_at - aborting < 5, "the rollback waits for no backoff"
    assert failing.error_events() == [REFUSAL]
    assert world.platform.count("shop", "v1", ready=True) == 4 and world.platform.count("shop", "v2") == 0


def test_permanent_errors_are_permanent_whatever_else_they_are() -> None:
    """A refusal that is both a router error and a permanent one (a refused configuration) backs off."""
    from stagewise.controller.retries import wait_after

    class Refused(RouterError, PermanentError):
        pass

    assert wait_after(Refused("refused", delay=0.5), 3) == 4.0
    assert wait_after(RouterError("down", delay=0.5), 3) == 0.5
    assert wait_after(StagewiseError("bug"), 40) == MAX_BACKOFF
