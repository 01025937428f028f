"""Strategies compile specs into plans whose invariants hold for any valid spec."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.core.plan import Plan, World
from stagewise.core.routes import in_cohort
from stagewise.core.spec import ServiceSpec
from stagewise.strategies import compile_plan
from stagewise.strategies.phased import wave_sizes

BASE: dict[str, Any] = {
    "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "svc"},
    "spec": {"listen": "127.0.0.1:8080", "replicas": 4,
             "release": {"version": "v2", "run": {"command": ["app"]}},
             "analysis": {"errors": {}}},
}


def spec(strategy: dict[str, Any], replicas: int = 4) -> ServiceSpec:
    doc = copy.deepcopy(BASE)
    doc["spec"]["strategy"] = strategy
    doc["spec"]["replicas"] = replicas
    return ServiceSpec.model_validate(doc)


def plan_for(s: ServiceSpec, abort_at: int | None = None) -> Plan:
    stable = s.spec.release.model_copy(update={"version": "v1"})
    plan = compile_plan(s, stable)
    if abort_at is not None:
        plan = compile_plan(s, stable, abort_world=plan.steps[abort_at].world)
    return plan


@pytest.mark.parametrize(("waves", "total", "sizes"), [
    ([1, "25%", "100%"], 4, [1, 1, 2]),
    ([1, "25%", "100%"], 10, [1, 2, 7]),
    (["30%"], 10, [3, 3, 3, 1]),
    ([2], 5, [2, 2, 1]),
    (["1%"], 3, [1, 1, 1]),
    ([10], 3, [3]),
])
def test_waves_follow_ansible_serial(waves: list[int | str], total: int, sizes: list[int]) -> None:
    assert wave_sizes(waves, total) == sizes


canary_steps = st.lists(
    st.one_of(
        st.integers(0, 100).map(lambda w: {"setWeight": w}),
        st.just({"pause": {}}),
        st.integers(1, 600).map(lambda s: {"pause": {"duration": f"{s}s"}}),
        st.just({"analysis": {"templates": ["errors"]}}),
        st.just({"setHeaderRoute": {"match": [{"headerName": "X-Canary", "headerValue": {"exact": "1"}}]}}),
    ),
    min_size=1, max_size=12,
)
strategies = st.one_of(
    canary_steps.map(lambda steps: {"canary": {"steps": steps}}),
    st.lists(st.one_of(st.integers(1, 20), st.integers(1, 100).map(lambda p: f"{p}%")), min_size=1, max_size=5)
    .map(lambda w: {"phased": {"waves": w}}),
    st.lists(st.integers(1, 100), min_size=1, max_size=6, unique=True)
    .map(lambda s: {"phased": {"cohorts": {"key": {"header": "X-User"}, "steps": sorted(s)}}}),
    st.just({"blueGreen": {}}), st.just({"blueGreen": {"autoPromotion": {"after": "1m"}}}),
    st.just({"full": {}}),
)


def traffic_share(world: World, release: str) -> bool:
    return world.receives_traffic(release)


@settings(max_examples=120, deadline=None)
@given(strategy=strategies, replicas=st.integers(1, 30))
def test_every_plan_keeps_its_invariants(strategy: dict[str, Any], replicas: int) -> None:
    s = spec(strategy, replicas)
    plan = plan_for(s)
    assert plan.steps, "a plan has steps"
    assert 0 <= plan.promote_from < len(plan.steps)
    final = plan.steps[-1].world
    assert final.instances.get("v2") == replicas and final.instances.get("v1", 0) == 0
    assert not final.receives_traffic("v1")
    cohort = 0.0
    for step in plan.steps:
        w = step.world
        if w.weights is not None:
            assert sum(w.weights.values()) == 100
            assert all(0 <= x <= 100 for x in w.weights.values())
        assert all(n >= 0 for n in w.instances.values())
        # the stable release never drops below the fleet before promotion, except in waves
        if w.cohort is not None:
            assert w.cohort.percent >= cohort, "a cohort only grows"
            cohort = w.cohort.percent
    # aborting at any step: the rollback ends on the stable release alone, no traffic to the candidate
    for i in range(len(plan.steps) - 1):
        rollback = plan_for(s, abort_at=i).rollback
        assert rollback
        first = rollback[0].world
        waves = "phased" in strategy and "waves" in strategy["phased"]
        if first.instances.get("v1", 0) > 0 and not waves:
            assert not first.receives_traffic("v2"), "the first rollback step takes traffic off the candidate"
        updated = [step.world.instances.get("v2", 0) for step in rollback]
        assert updated == sorted(updated, reverse=True), "the candidate only shrinks during a rollback"
        for step in rollback:
            assert waves or not step.world.receives_traffic("v2")
        last = rollback[-1].world
        assert last.instances == {"v1": replicas, "v2": 0}


@given(key=st.text(min_size=1, max_size=40), a=st.floats(0, 100), b=st.floats(0, 100))
def test_a_user_in_a_cohort_stays_in_it_as_it_grows(key: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    if in_cohort(key, low):
        assert in_cohort(key, high)


def test_cohort_shares_are_close_to_the_percentage() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    for pct in (1, 5, 20, 50):
        share = sum(in_cohort(k, pct) for k in keys) / len(keys)
        assert abs(share - pct / 100) < 0.01


def test_canary_rollback_moves_traffic_first_and_instantly() -> None:
    s = spec({"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}})
    rollback = plan_for(s, abort_at=1).rollback
    assert rollback[0].world.weights == {"v1": 100}
    assert rollback[0].wait_ready is False
    assert rollback[0].world.instances == {"v1": 4, "v2": 1}


def test_blue_green_keeps_the_old_slot_warm_until_the_delay_ends() -> None:
    s = spec({"blueGreen": {"scaleDownDelay": "10m", "autoPromotion": {"after": "0s"}}})
    plan = plan_for(s)
    switch = next(i for i, st_ in enumerate(plan.steps) if st_.kind == "switch")
    assert plan.steps[switch].world.weights == {"v2": 100}
    assert plan.steps[switch].world.instances == {"v1": 4, "v2": 4}
    warm = plan.steps[switch + 1]
    assert warm.pause == 600 and warm.world.instances["v1"] == 4
    rollback = plan_for(s, abort_at=switch + 1).rollback
    assert rollback[0].world.weights == {"v1": 100} and rollback[0].world.instances["v1"] == 4


def test_phased_rollback_restores_newest_first_in_batches_of_max_unavailable() -> None:
    s = spec({"phased": {"waves": [1, 1, 1, 1], "maxUnavailable": 1}})
    rollback = plan_for(s, abort_at=2).rollback
    assert [r.world.instances for r in rollback] == [
        {"v1": 2, "v2": 2}, {"v1": 3, "v2": 1}, {"v1": 4, "v2": 0},
    ]
    assert [r.world.weights for r in rollback] == [None, None, {"v1": 100}]


@settings(max_examples=50, deadline=None)
@given(strategy=strategies)
def test_a_spec_survives_a_json_round_trip(strategy: dict[str, Any]) -> None:
    s = spec(strategy)
    assert ServiceSpec.model_validate_json(s.model_dump_json()) == s
    assert ServiceSpec.model_validate_json(s.model_dump_json(by_alias=True)) == s
