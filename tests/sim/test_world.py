"""The simulator's world-maker keeps the controller's rules (it may not import them)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.controller.reconcile import choose_victims as controller_victims
from stagewise.core.plan import World
from stagewise.platforms import Instance as PlatformInstance
from stagewise.platforms import InstanceState
from stagewise.sim.world import Fleet, Instance, choose_victims, make_world

pytestmark = pytest.mark.timeout(60)


@settings(max_examples=300, deadline=None)
@given(ready=st.lists(st.booleans(), max_size=12), want=st.integers(min_value=0, max_value=12))
def test_victims_are_the_controllers(ready: list[bool], want: int) -> None:
    ours = [Instance(seq=i, release="v1", due=0.0, crashes=False, ready=r) for i, r in enumerate(ready)]
    theirs = [PlatformInstance(id=f"i{i}", seq=i, service="s", release="v1", address="x:1",
                               state=InstanceState.READY if r else InstanceState.STARTING, started_at=0.0)
              for i, r in enumerate(ready)]
    assert [v.seq for v in choose_victims(ours, want)] == [v.seq for v in controller_victims(theirs, want)]


def test_removals_come_first_and_only_ready_instances_take_traffic() -> None:
    fleet = Fleet(random.Random(0), startup={"v1": 5.0, "v2": 5.0}, jitter=0.0, crash_chance={})
    fleet.start("v1", 4, now=-10.0)
    fleet.settle(0.0)
    recreate = World(instances={"v1": 0, "v2": 4}, stable="v2")
    routes = make_world(fleet, recreate, 0.0)
    assert routes.endpoints == {}  # the old release is gone before the new one is ready: downtime
    assert fleet.counts(ready=False) == {"v2": 4}
    fleet.settle(5.0)
    assert make_world(fleet, recreate, 5.0).endpoints == {"v2": 4}
    canary = World(instances={"v2": 4, "v3": 1}, stable="v2", weights={"v2": 90, "v3": 10})
    routes = make_world(fleet, canary, 6.0)
    assert routes.endpoints == {"v2": 4} and not routes.reaches("v3")
    fleet.settle(11.0)
    routes = make_world(fleet, canary, 11.0)
    assert routes.reaches("v3") and routes.split == (("v2", "v3"), (0.9, 0.1))
