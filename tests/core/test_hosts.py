"""Hosts in the pure layers: the ssh platform's spec, maxUnreachable in the state machine, waves of hosts,
and which instances make way on which host."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from stagewise.controller.reconcile import choose_victims
from stagewise.core import delivery as machine
from stagewise.core.delivery import Delivery, Observation, Phase
from stagewise.core.platform_spec import host_quotas, split_target, too_many_unreachable
from stagewise.core.spec import ServiceSpec
from stagewise.platforms import Instance, InstanceState
from stagewise.strategies import compile_plan

HOSTS = ["deploy@10.0.0.1", "deploy@10.0.0.2:2222", {"target": "web3", "address": "192.168.1.3"}, "web4"]
DOC: dict[str, Any] = {
    "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "svc"},
    "spec": {"listen": "127.0.0.1:8080",
             "platform": {"kind": "ssh", "hosts": HOSTS, "perHost": 2},
             "release": {"version": "v2", "run": {"command": ["app", "--port", "{port}"]}},
             "strategy": {"phased": {"waves": [1, "50%"]}}, "progressDeadline": "1m"},
}


def spec(**platform: Any) -> ServiceSpec:
    doc = copy.deepcopy(DOC)
    doc["spec"]["platform"].update(platform)
    return ServiceSpec.model_validate(doc)


def test_hosts_are_targets_or_mappings_and_per_host_sets_replicas() -> None:
    s = spec()
    assert [h.target for h in s.spec.platform.hosts] == ["deploy@10.0.0.1", "deploy@10.0.0.2:2222", "web3", "web4"]
    assert s.spec.platform.hosts[2].address == "192.168.1.3"
    assert s.spec.replicas == 8
    assert split_target("deploy@[fd00::1]:22") == ("deploy", "fd00::1", 22)


@pytest.mark.parametrize(("change", "words"), [
    ({"hosts": []}, "kind: ssh needs hosts"),
    ({"hosts": ["a", "a"]}, "more than once: a"),
    ({"hosts": ["-oProxyCommand=x"]}, "expected \\[user@\\]address"),  # never an option to ssh
    ({"kind": "local", "perHost": None}, "hosts and perHost are for kind: ssh"),
    ({"maxUnreachable": "150%"}, "percentage"),
    ({"maxUnreachable": -1}, "0 or more"),
])
def test_bad_platforms_are_refused_in_words(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        spec(**change)


def test_replicas_that_contradict_per_host_are_refused() -> None:
    doc = copy.deepcopy(DOC)
    doc["spec"]["replicas"] = 3
    with pytest.raises(ValidationError, match=r"contradicts platform\.perHost"):
        ServiceSpec.model_validate(doc)


@pytest.mark.parametrize(("limit", "lost", "rolls_back"), [
    (0, 1, True), (1, 1, False), (1, 2, True), ("25%", 1, False), ("25%", 2, True), ("49%", 2, True),
])
def test_max_unreachable_counts_hosts(limit: int | str, lost: int, rolls_back: bool) -> None:
    platform = spec(maxUnreachable=limit).spec.platform
    unreachable = {f"host{i}": "no answer" for i in range(lost)}
    assert (too_many_unreachable(platform, unreachable) is not None) is rolls_back


def delivery(**platform: Any) -> Delivery:
    s = spec(**platform)
    return Delivery(service="svc", spec=s, stable=s.spec.release.model_copy(update={"version": "v1"}))


def test_a_lost_host_beyond_the_limit_rolls_the_delivery_back_naming_it() -> None:
    d = delivery(maxUnreachable=0)
    plan = compile_plan(d.spec, d.stable)
    d, _ = machine.advance(d, plan, Observation(now=0))
    lost = {"web3": "web3: no answer for 2.1s (since 12:00:01)"}
    d, _ = machine.advance(d, plan, Observation(now=1, unreachable=lost))
    assert d.phase is Phase.ABORTING
    assert d.abort_reason is not None and "web3: no answer" in d.abort_reason
    assert "maxUnreachable 0" in d.abort_reason


def test_a_lost_host_within_the_limit_goes_on_and_a_first_delivery_waits() -> None:
    d = delivery(maxUnreachable=1)
    plan = compile_plan(d.spec, d.stable)
    d, _ = machine.advance(d, plan, Observation(now=0))
    d, _ = machine.advance(d, plan, Observation(now=1, unreachable={"web3": "gone"}))
    assert d.phase is Phase.PROGRESSING
    first = delivery(maxUnreachable=0).model_copy(update={"stable": None})
    plan = compile_plan(first.spec, None)
    first, _ = machine.advance(first, plan, Observation(now=0))
    first, _ = machine.advance(first, plan, Observation(now=1, unreachable={"web3": "gone", "web4": "gone"}))
    assert first.phase is Phase.PROMOTING, "a first delivery has nothing to roll back to: it waits"
    first, _ = machine.advance(first, plan, Observation(now=100, unreachable={"web3": "gone"}))
    assert first.phase is Phase.FAILED and "web3 unreachable: gone" in first.message


def test_waves_count_hosts_on_the_ssh_platform() -> None:
    s = spec()
    plan = compile_plan(s, s.spec.release.model_copy(update={"version": "v1"}))
    waves = [step for step in plan.steps if step.kind == "wave"]
    # waves [1, 50%] over 4 hosts: 1 host, then 2 hosts, then the last one; 2 instances per host, one at a time
    assert [w.world.instances["v2"] for w in waves] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert waves[1].title == "wave 1/3: v2 on 1/4 host(s), 2/8 instance(s)"
    assert waves[5].title == "wave 2/3: v2 on 3/4 host(s), 6/8 instance(s)"
    assert host_quotas(s.spec.platform, 10) == [3, 3, 2, 2]


def instance(seq: int, host: str, release: str = "v1") -> Instance:
    return Instance(id=f"svc-{release}-{seq}", seq=seq, service="svc", release=release, address=f"{host}:1",
                    host=host, state=InstanceState.READY, started_at=0)


def test_victims_come_from_the_most_loaded_then_the_first_host() -> None:
    order = {"h1": 0, "h2": 1, "h3": 2}
    fleet = [instance(1, "h3"), instance(2, "h2"), instance(3, "h1"), instance(4, "h1"), instance(5, "h2")]
    load = {"h1": 2, "h2": 2, "h3": 1}
    assert [v.id for v in choose_victims(fleet, 4, load=load, host_order=order)] == ["svc-v1-4"]
    assert [v.id for v in choose_victims(fleet, 2, load=load, host_order=order)] == [
        "svc-v1-4", "svc-v1-3", "svc-v1-5"]
    surplus = {"h1": 3, "h2": 1, "h3": 1}
    assert choose_victims(fleet, 4, load=surplus, host_order=order)[0].host == "h1"
