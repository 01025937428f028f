"""The delivery state machine, alone: pure, on made-up observations and a made-up clock."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.core import delivery as machine
from stagewise.core.delivery import Delivery, Observation, Phase
from stagewise.core.plan import Plan
from stagewise.core.spec import ServiceSpec
from stagewise.core.verdict import Outcome, Verdict
from stagewise.errors import ConflictError
from stagewise.strategies import compile_plan

DOC: dict[str, Any] = {
    "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "svc"},
    "spec": {"listen": "127.0.0.1:8080", "replicas": 2,
             "release": {"version": "v2", "run": {"command": ["app"]}},
             "analysis": {"errors": {}}, "progressDeadline": "1m"},
}
CANARY = {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"templates": ["errors"], "duration": "10s"}},
                               {"pause": {}}, {"setWeight": 60}, {"pause": {"duration": "5s"}}]}}


def delivery(strategy: dict[str, Any]) -> Delivery:
    doc = copy.deepcopy(DOC)
    doc["spec"]["strategy"] = strategy
    spec = ServiceSpec.model_validate(doc)
    stable = spec.spec.release.model_copy(update={"version": "v1"})
    return Delivery(service="svc", spec=spec, stable=stable, created_at=0, progress_at=0)


def plan_of(d: Delivery) -> Plan:
    return compile_plan(d.spec, d.stable, abort_world=d.abort_world)


def all_ready(d: Delivery, now: float) -> Observation:
    """The world exactly as the current step wants it."""
    world = machine.desired_world(d, plan_of(d))
    counts = dict(world.instances) if world else {}
    return Observation(now=now, ready=counts, live=counts)


def run(d: Delivery, *, until: set[Phase], now: float = 0.0, step: float = 1.0,
        verdict: Outcome | None = None, limit: int = 500) -> tuple[Delivery, float]:
    for _ in range(limit):
        if d.phase in until:
            return d, now
        if verdict is not None:
            for r in d.analysis.values():
                r.verdict = Verdict(outcome=verdict, message=f"made up {verdict.value}")
        d, _ = machine.advance(d, plan_of(d), all_ready(d, now))
        now += step
    raise AssertionError(f"stuck in {d.phase} at step {d.step}")


def test_a_canary_walks_its_steps_and_waits_at_a_manual_pause() -> None:
    d, now = run(delivery(CANARY), until={Phase.PAUSED}, verdict=Outcome.SUCCESSFUL)
    assert d.step == 2
    same = d
    for _ in range(100):
        same, _ = machine.advance(same, plan_of(same), all_ready(same, now))
        now += 1
    assert same.phase is Phase.PAUSED and same.step == 2, "a manual pause never ends by itself"
    promoted, events = machine.promote(same, plan_of(same), now=now)
    assert any("promoted" in e.message for e in events)
    done, _ = run(promoted, until={Phase.SUCCEEDED}, now=now)
    assert done.finished_at is not None and "v2 is stable" in done.message


def test_a_failed_analysis_aborts_and_the_rollback_ends_rolled_back() -> None:
    d, _ = run(delivery(CANARY), until={Phase.ROLLED_BACK}, verdict=Outcome.FAILED)
    assert d.abort_reason is not None and "made up Failed" in d.abort_reason
    assert d.abort_world is not None and d.abort_world.weights == {"v1": 80, "v2": 20}


def in_a_long_pause(strategy: dict[str, Any]) -> tuple[Delivery, float]:
    """A delivery at its second step, a pause of five minutes, which began at the time returned."""
    d, now = delivery(strategy), 0.0
    while d.ready_at is None or d.step != 1:
        now += 1
        d, _ = machine.advance(d, plan_of(d), all_ready(d, now))
    return d, now


def test_a_timed_pause_changes_nothing_while_it_runs_and_longer_than_the_deadline_aborts_nothing() -> None:
    long_pause = {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "5m"}}, {"setWeight": 60}]}}
    d, now = in_a_long_pause(long_pause)
    began = d
    for tick in range(1, 299):  # a tick a second: the pause outlasts the one-minute deadline
        later, events = machine.advance(d, plan_of(d), all_ready(d, now + tick))
        assert later == began and events == [], f"the delivery changed {tick}s into its pause"
        d = later
    d, _ = machine.advance(d, plan_of(d), all_ready(d, now + 300))
    assert d.step == 2 and d.phase is Phase.PROGRESSING and d.progress_at == now + 300


def test_the_deadline_counts_from_the_end_of_a_timed_pause() -> None:
    long_pause = {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "5m"}}, {"setWeight": 60}]}}
    d, now = in_a_long_pause(long_pause)
    step = plan_of(d).steps[1]
    assert machine.progress_since(d, step, now + 100) == now + 100
    assert machine.progress_since(d, step, now + 1000) == now + 300
    # the controller was away past the pause's end and a deadline more: the delivery is stuck
    late, _ = machine.advance(d, plan_of(d), all_ready(d, now + 300 + 61))
    assert late.phase is Phase.ABORTING and "progress deadline" in (late.abort_reason or "")


def test_instances_that_never_get_ready_abort_at_the_deadline_with_the_reason() -> None:
    d = delivery(CANARY)
    now = 0.0
    for _ in range(70):
        d, _ = machine.advance(d, plan_of(d), Observation(now=now, ready={"v1": 2}, live={"v1": 2, "v2": 1}))
        now += 1
    assert d.phase is Phase.ABORTING
    assert "v2 0/1 ready" in (d.abort_reason or "")


def test_a_step_the_router_does_not_serve_never_ends_on_readiness_and_aborts_at_the_deadline() -> None:
    d = delivery(CANARY)
    now = 0.0
    for _ in range(70):
        obs = all_ready(d, now).model_copy(update={"held": "the router does not serve the step: refused"})
        d, _ = machine.advance(d, plan_of(d), obs)
        assert (d.step == 0 and d.ready_at is None) or d.phase is Phase.ABORTING
        now += 1
    assert d.phase is Phase.ABORTING
    assert "exceeded: the router does not serve the step: refused" in (d.abort_reason or "")


def test_no_data_waits_until_the_deadline_and_says_what_is_missing() -> None:
    d, _ = run(delivery(CANARY), until={Phase.ABORTING}, verdict=Outcome.NO_DATA, limit=200)
    assert "no data" in (d.abort_reason or "")


def test_a_rollback_that_cannot_finish_fails_for_a_person() -> None:
    d, now = run(delivery(CANARY), until={Phase.PAUSED}, verdict=Outcome.SUCCESSFUL)
    d, _ = machine.abort(d, plan_of(d), now=now, reason="by hand")
    for _ in range(100):
        d, _ = machine.advance(d, plan_of(d), Observation(now=now, ready={}, live={}))
        now += 1
    assert d.phase is Phase.FAILED and "a person must act" in d.message


def test_the_first_delivery_cannot_be_aborted_and_fails_at_the_deadline() -> None:
    d = delivery({"full": {}}).model_copy(update={"stable": None})
    with pytest.raises(ConflictError, match="no stable release"):
        machine.abort(d, plan_of(d), now=0, reason="x")
    now = 0.0
    for _ in range(100):
        d, _ = machine.advance(d, plan_of(d), Observation(now=now))
        now += 1
    assert d.phase is Phase.FAILED


VERBS = ["promote", "promote-full", "abort", "pause", "resume", "retry", "tick", "tick", "tick", "tick"]


@settings(max_examples=100, deadline=None)
@given(script=st.lists(st.tuples(st.sampled_from(VERBS), st.sampled_from(list(Outcome)), st.booleans()),
                       max_size=60),
       strategy=st.sampled_from([CANARY, {"blueGreen": {"prePromotionAnalysis": {"templates": ["errors"]}}},
                                 {"phased": {"waves": [1, "50%"], "analysis": {"templates": ["errors"]}}},
                                 {"full": {}}]))
def test_any_sequence_of_verbs_and_verdicts_keeps_the_machine_sane(
    script: list[tuple[str, Outcome, bool]], strategy: dict[str, Any]
) -> None:
    d = delivery(strategy)
    now = 0.0
    for verb, outcome, ready in script:
        before = d
        try:
            if verb == "tick":
                for r in d.analysis.values():
                    r.verdict = Verdict(outcome=outcome)
                obs = all_ready(d, now) if ready else Observation(now=now)
                d, _ = machine.advance(d, plan_of(d), obs)
            elif verb.startswith("promote"):
                d, _ = machine.promote(d, plan_of(d), now=now, full=verb == "promote-full")
            elif verb == "abort":
                d, _ = machine.abort(d, plan_of(d), now=now, reason="test")
            else:
                d, _ = getattr(machine, verb)(d, now=now)
        except ConflictError:
            assert d is before
        now += 2.0
        steps = d.steps(plan_of(d))
        assert 0 <= d.step < len(steps)
        if before.phase.terminal and verb == "tick":
            assert d.phase is before.phase, "a finished delivery stays finished"
        if d.phase in (Phase.ABORTING, Phase.ROLLED_BACK):
            assert d.abort_world is not None and d.abort_reason
        if d.phase is Phase.SUCCEEDED:
            assert d.finished_at is not None


def test_aborting_a_delivery_that_never_started_starts_nothing_of_its_candidate() -> None:
    """Aborted while Pending (or waiting before its first step), the rollback starts from the steady world:
    it used to start from the first step's world, and so started the candidate's instances to roll them back."""
    d = delivery(CANARY)
    assert d.phase is Phase.PENDING
    d, _ = machine.abort(d, plan_of(d), now=0, reason="changed my mind")
    plan = plan_of(d)
    assert plan.rollback and all(step.world.instances.get("v2", 0) == 0 for step in plan.rollback)
    assert d.abort_world is not None and d.abort_world.instances == {"v1": 2}
