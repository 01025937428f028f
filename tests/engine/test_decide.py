"""The engine's tick, alone: judge, advance, recompile on abort, and the world to make real."""

from __future__ import annotations

import copy
from typing import Any

from stagewise.core.delivery import Delivery, Observation, Phase
from stagewise.core.spec import ServiceSpec
from stagewise.core.stats import ReleaseStats, RouterStats
from stagewise.core.verdict import Outcome
from stagewise.engine import decide
from stagewise.strategies import compile_plan

DOC: dict[str, Any] = {
    "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "svc"},
    "spec": {"listen": "127.0.0.1:8080", "replicas": 4,
             "release": {"version": "v2", "run": {"command": ["app"]}},
             "strategy": {"canary": {"steps": [{"setWeight": 25},
                                               {"analysis": {"templates": ["errors"], "duration": "10m"}}]}},
             "analysis": {"errors": {}}, "progressDeadline": "1m"},
}


def delivery() -> Delivery:
    spec = ServiceSpec.model_validate(copy.deepcopy(DOC))
    stable = spec.spec.release.model_copy(update={"version": "v1"})
    return Delivery(service="svc", spec=spec, stable=stable, created_at=0, progress_at=0)


def stats(candidate_errors: int) -> RouterStats:
    """Counters after 1,000 candidate and 3,000 baseline requests, more of them once errors are added."""
    more = 1000 if candidate_errors else 0
    return RouterStats(releases={"v1": ReleaseStats(requests=3000 + 3 * more, errors=0),
                                 "v2": ReleaseStats(requests=1000 + more, errors=candidate_errors)})


def observe(d: Delivery, now: float, counters: RouterStats) -> Observation:
    plan = compile_plan(d.spec, d.stable, abort_world=d.abort_world)
    world = plan.steps[d.step].world if d.phase is not Phase.ABORTING else plan.rollback[d.step].world
    return Observation(now=now, ready=dict(world.instances), live=dict(world.instances), stats=counters)


def at_analysis() -> tuple[Delivery, float]:
    """A canary standing at its analysis step, the run started on clean counters."""
    d, now = delivery(), 0.0
    plan = compile_plan(d.spec, d.stable)
    while "step-1" not in d.analysis:
        decision = decide(d, plan, observe(d, now, stats(0)))
        d, now = decision.delivery, now + 1
    return d, now


def test_a_failing_candidate_is_judged_aborted_and_given_its_rollback_plan_in_one_tick() -> None:
    d, now = at_analysis()
    plan = compile_plan(d.spec, d.stable)
    assert plan.rollback == ()
    decision = decide(d, plan, observe(d, now, stats(400)))
    assert decision.delivery.phase is Phase.ABORTING
    assert decision.delivery.past_analysis[-1].verdict.outcome is Outcome.FAILED
    assert any("Aborting" in e.message for e in decision.events)
    assert decision.plan.rollback, "the rollback steps come with the decision that starts it"
    assert decision.plan == compile_plan(d.spec, d.stable, abort_world=decision.delivery.abort_world)
    assert decision.world == decision.plan.rollback[0].world
    assert decision.world is not None and decision.world.weights == {"v1": 100}


def test_without_judging_the_verdict_stands_and_nothing_moves() -> None:
    d, now = at_analysis()
    plan = compile_plan(d.spec, d.stable)
    decision = decide(d, plan, observe(d, now, stats(400)), judge=False)
    assert decision.delivery.analysis["step-1"].verdict.outcome is Outcome.RUNNING
    assert decision.delivery.phase is Phase.PROGRESSING and decision.plan is plan
    assert decision.world == plan.steps[1].world


def test_an_ended_delivery_leaves_the_world_to_the_service() -> None:
    d, now = delivery(), 0.0
    plan = compile_plan(d.spec, d.stable)
    for _ in range(200):
        for run in d.analysis.values():  # the analysis passes whenever it is asked
            run.verdict = run.verdict.model_copy(update={"outcome": Outcome.SUCCESSFUL})
        decision = decide(d, plan, observe(d, now, stats(0)), judge=False)
        d, now = decision.delivery, now + 1
        if d.phase.terminal:
            break
    assert d.phase is Phase.SUCCEEDED
    assert decision.world is None
