"""Chart series: the traffic share replayed from a delivery's events over its plan, and analysis series.

Deliveries run for real through the controller on the fakes, so a change to
the events' wording that the replay depends on fails here, not on a page.
"""

from __future__ import annotations

from typing import Any

from stagewise.api.charts import analysis_series, traffic_points, traffic_series
from stagewise.core.delivery import Phase
from tests.controller.conftest import World, make_spec

CANARY: dict[str, Any] = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]}}


def points(world: World) -> list[dict[str, int]]:
    store = world.controller.store
    d = store.latest_delivery("shop")
    assert d is not None
    events = store.events("shop", delivery_id=d.id, limit=10_000)
    return [w for _, w in traffic_points(d, world.controller.plan(d), events)]


async def test_a_promoted_canary_moves_its_share_step_by_step(world: World) -> None:
    await world.controller.apply(make_spec("v2", CANARY))
    assert await world.run(until={Phase.PAUSED}) is Phase.PAUSED
    assert points(world) == [{"v1": 80, "v2": 20}]
    await world.controller.act("shop", "promote")
    assert await world.run() is Phase.SUCCEEDED
    assert points(world) == [{"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v2": 100}]


async def test_an_abort_sends_the_share_back_to_stable_and_a_retry_starts_over(world: World) -> None:
    await world.controller.apply(make_spec("v2", CANARY))
    await world.run(until={Phase.PAUSED})
    await world.controller.act("shop", "abort")
    assert await world.run() is Phase.ROLLED_BACK
    assert points(world) == [{"v1": 80, "v2": 20}, {"v1": 100}]
    await world.controller.act("shop", "retry")
    assert await world.run(until={Phase.PAUSED}) is Phase.PAUSED
    assert points(world) == [{"v1": 80, "v2": 20}, {"v1": 100}, {"v1": 80, "v2": 20}]


async def test_promote_fully_jumps_to_the_promotion(world: World) -> None:
    await world.controller.apply(make_spec("v2", CANARY))
    await world.run(until={Phase.PAUSED})
    await world.controller.act("shop", "promote", full=True)
    assert await world.run() is Phase.SUCCEEDED
    # The promotion's first step scales the candidate up at the plan's last weight (50), then all goes over.
    assert points(world) == [{"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v2": 100}]
    events = [e.message for e in world.controller.store.events("shop")]
    assert "promoted fully: skipping to the promotion" in events


async def test_phased_waves_share_follows_the_instances(world: World) -> None:
    await world.controller.apply(make_spec("v2", {"phased": {"waves": [1, "100%"]}}))
    assert await world.run() is Phase.SUCCEEDED
    shares = points(world)
    assert shares[0] == {"v1": 75, "v2": 25}
    assert shares[-1] == {"v2": 100}


async def test_the_series_holds_the_last_share_until_now(world: World) -> None:
    await world.controller.apply(make_spec("v2", CANARY))
    await world.run(until={Phase.PAUSED})
    d = world.controller.store.latest_delivery("shop")
    assert d is not None
    events = world.controller.store.events("shop", delivery_id=d.id)
    series = traffic_series(d, world.controller.plan(d), events, now=world.clock.now + 30)
    assert series["releases"] == ["v1", "v2"]
    assert series["t"][-1] == round(world.clock.now + 30, 3)
    assert series["series"]["v2"][-2:] == [20, 20]


async def test_analysis_series_give_rates_quantiles_and_evidence_against_the_bound(world: World) -> None:
    world.router.error_rate["v2"] = 0.5
    strategy = {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"templates": ["errors", "latency"],
                                                                      "duration": "5m"}}]}}
    await world.controller.apply(make_spec("v2", strategy))
    assert await world.run() is Phase.ROLLED_BACK
    d = world.controller.store.latest_delivery("shop")
    assert d is not None
    [run] = d.past_analysis  # the rollback moved past the step; its run stays on the record
    series = analysis_series(run, "v1", "v2")
    assert series["releases"] == {"baseline": "v1", "candidate": "v2"}
    n = len(series["t"])
    assert n >= 1
    assert all(len(series[key][arm]) == n for key in ("error_rate", "p50", "p99") for arm in ("baseline", "candidate"))
    assert series["error_rate"]["candidate"][-1] > 20 > series["error_rate"]["baseline"][-1]
    # two sequential metrics share the run's alpha 0.05: each is judged at 0.025, against 1/0.025 = 40
    assert series["bounds"] == {"error-rate": 40.0, "latency": 40.0}
    assert series["e_value"]["error-rate"][-1] >= 40.0, "the last point is where the judge failed it"
    assert run.judge_state == {} and run.since is None, "a past run keeps no working state"
