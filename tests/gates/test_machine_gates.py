"""The state machine's gates, alone: confirm, check and rollback hooks, approvals and windows, on a made-up clock.

Hook answers come in as the controller would feed them (core.gates.due_calls says which calls are due; the
test answers them), so these tests run the same decisions as a real delivery, in microseconds.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stagewise.core import delivery as machine
from stagewise.core import gates
from stagewise.core.delivery import Delivery, Event, Observation, Phase
from stagewise.core.gate_state import HookAnswer
from stagewise.core.gates_spec import WindowSpec
from stagewise.core.plan import Plan, StepKind
from stagewise.core.spec import ServiceSpec
from stagewise.errors import ConflictError, ForbiddenError
from stagewise.strategies import compile_plan

DOC: dict[str, Any] = {
    "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "svc"},
    "spec": {"listen": "127.0.0.1:8080", "replicas": 2,
             "release": {"version": "v2", "run": {"command": ["app"]}},
             "strategy": {"canary": {"steps": [{"setWeight": 20}, {"setWeight": 60}]}},
             "progressDeadline": "1m"},
}


def hook(name: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "http": {"url": f"http://127.0.0.1:9/{name}"}, "interval": "5s", **extra}


def delivery(**body: Any) -> Delivery:
    doc = copy.deepcopy(DOC)
    doc["spec"].update(body)
    spec = ServiceSpec.model_validate(doc)
    stable = spec.spec.release.model_copy(update={"version": "v1"})
    return Delivery(id=7, service="svc", spec=spec, stable=stable, created_at=0, progress_at=0)


def plan_of(d: Delivery) -> Plan:
    return compile_plan(d.spec, d.stable, abort_world=d.abort_world)


class Run:
    """A delivery ticked by hand; `answer` decides what each due hook call answers."""

    def __init__(self, d: Delivery, *, windows: list[WindowSpec] | None = None) -> None:
        self.d = d
        self.now = 0.0
        self.events: list[Event] = []
        self.calls: list[str] = []
        self.answers: dict[str, tuple[bool, str]] = {}
        self.windows = windows or []

    def tick(self, *, seconds: float = 1.0) -> Delivery:
        plan = plan_of(self.d)
        answers = []
        for call in gates.due_calls(self.d, plan, self.now):
            self.calls.append(call.key)
            ok, status = self.answers.get(call.hook.name, (False, "HTTP 503"))
            answers.append(HookAnswer(key=call.key, point=call.point, hook=call.hook.name, ok=ok, status=status,
                                      message="said so", duration=0.01, at=self.now))
        world = machine.desired_world(self.d, plan)
        counts = dict(world.instances) if world else {}
        obs = Observation(now=self.now, ready=counts, live=counts, hook_answers=answers, windows=self.windows)
        self.d, events = machine.advance(self.d, plan, obs)
        self.events += events
        self.now += seconds
        return self.d

    def until(self, phases: set[Phase], limit: int = 300) -> Delivery:
        for _ in range(limit):
            if self.d.phase in phases:
                return self.d
            self.tick()
        raise AssertionError(f"still {self.d.phase} at step {self.d.step}: {self.d.waiting}")

    def notices(self) -> list[str]:
        return [e.notice for e in self.events if e.notice]


def test_a_confirm_rollout_hook_holds_the_start_until_it_says_yes() -> None:
    r = Run(delivery(hooks=[hook("gate", "confirm-rollout")]))
    r.tick()
    assert r.d.phase is Phase.WAITING and r.d.waiting is not None and r.d.waiting.enter == 0
    assert machine.desired_world(r.d, plan_of(r.d)) is None, "nothing of the candidate starts while it waits"
    for _ in range(12):
        r.tick()
    assert r.d.phase is Phase.WAITING
    assert "last answer HTTP 503" in r.d.waiting.words()
    assert len(r.calls) == 3, "asked every interval (5s), not every tick"
    assert r.calls[0] == "7.1/confirm-rollout/gate/1" and r.calls[-1] == "7.1/confirm-rollout/gate/3"
    r.answers["gate"] = (True, "HTTP 200")
    r.until({Phase.PROGRESSING})
    assert r.d.step == 0 and r.d.waiting is None
    assert r.notices()[:2] == ["waiting", "started"]
    hook_events = [e.message for e in r.events if e.kind == "hook"]
    assert hook_events[0].startswith("hook gate (confirm-rollout) answered HTTP 503 (no) in 10 ms")
    assert hook_events[-1].startswith("hook gate (confirm-rollout) answered HTTP 200 (yes)")


def test_a_confirm_hook_that_never_says_yes_is_stopped_by_the_progress_deadline() -> None:
    r = Run(delivery(hooks=[hook("gate", "confirm-traffic-increase")]))
    r.until({Phase.WAITING})
    assert r.d.waiting is not None and r.d.waiting.holds[0].point == "confirm-traffic-increase@0"
    r.until({Phase.ABORTING})
    assert "progress deadline 1m exceeded" in (r.d.abort_reason or "")
    assert r.until({Phase.ROLLED_BACK}).phase is Phase.ROLLED_BACK


def test_confirm_traffic_increase_is_asked_before_each_increase_only() -> None:
    d = delivery(strategy={"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "2s"}},
                                                {"setWeight": 60}]}},
                 hooks=[hook("more", "confirm-traffic-increase")])
    r = Run(d)
    r.answers["more"] = (True, "HTTP 200")
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED
    points = sorted({key.split("/")[1] for key in r.calls})
    # step 1 (20%), step 3 (60%) and the promotion's switch to 100%; never the pause or the scale-down
    plan = plan_of(d)
    increases = [f"confirm-traffic-increase@{i}" for i, s in enumerate(plan.steps) if s.kind in
                 (StepKind.SET_WEIGHT, StepKind.PROMOTE)]
    assert points == sorted(increases)


def test_confirm_promotion_answered_by_a_person() -> None:
    r = Run(delivery(hooks=[{"name": "release-manager", "type": "confirm-promotion",
                             "approval": {"approvers": ["alice", "bob"], "count": 2}}]))
    r.until({Phase.WAITING})
    assert "0/2 approval(s) from alice, bob" in r.d.waiting.words()
    plan = plan_of(r.d)
    with pytest.raises(ForbiddenError, match="carol is not among the approvers"):
        machine.approve(r.d, plan, now=r.now, who="carol")
    r.d, events = machine.approve(r.d, plan, now=r.now, who="alice", comment="looks good")
    assert events[0].message == "approved by alice (confirm-promotion/release-manager): looks good"
    with pytest.raises(ConflictError, match="alice already approved"):
        machine.approve(r.d, plan, now=r.now, who="alice")
    r.tick()
    assert r.d.phase is Phase.WAITING and "1/2" in r.d.waiting.words()
    r.d, _ = machine.approve(r.d, plan, now=r.now, who="bob")
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED


def test_an_http_confirm_promotion_may_also_be_answered_by_any_operator() -> None:
    r = Run(delivery(hooks=[hook("gate", "confirm-promotion")]))
    r.until({Phase.WAITING})
    r.d, _ = machine.approve(r.d, plan_of(r.d), now=r.now, who="oncall")
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED


def test_a_confirm_rollout_hook_without_a_policy_is_no_persons_to_answer() -> None:
    r = Run(delivery(hooks=[hook("gate", "confirm-rollout")]))
    r.until({Phase.WAITING})
    with pytest.raises(ConflictError, match="nothing waits for an approval"):
        machine.approve(r.d, plan_of(r.d), now=r.now, who="alice")


def test_an_approval_step_waits_for_its_approvers_and_promote_does_not_skip_it() -> None:
    d = delivery(strategy={"canary": {"steps": [{"setWeight": 20},
                                                {"approval": {"approvers": ["alice"], "count": 1}},
                                                {"setWeight": 60}]}})
    r = Run(d)
    r.until({Phase.WAITING})
    assert r.d.step == 1 and r.d.waiting is not None and r.d.waiting.enter is None
    assert machine.desired_world(r.d, plan_of(r.d)).weights == {"v1": 80, "v2": 20}
    r.d, _ = machine.promote(r.d, plan_of(r.d), now=r.now)
    for _ in range(200):
        r.tick()  # a person's wait: never the progress deadline
    assert r.d.phase is Phase.WAITING and r.d.step == 1
    r.d, _ = machine.approve(r.d, plan_of(r.d), now=r.now, who="alice")
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED


def test_a_rejection_rolls_back() -> None:
    d = delivery(strategy={"canary": {"steps": [{"setWeight": 20}, {"approval": {}}]}})
    r = Run(d)
    r.until({Phase.WAITING})
    r.d, _ = machine.reject(r.d, plan_of(r.d), now=r.now, who="alice", comment="not today")
    assert r.d.phase is Phase.ABORTING and r.d.abort_reason == "rejected by alice: not today"
    assert r.until({Phase.ROLLED_BACK}).phase is Phase.ROLLED_BACK


def test_a_failing_check_hook_fails_the_delivery_like_a_failed_analysis() -> None:
    r = Run(delivery(hooks=[hook("smoke", "pre-rollout", failureLimit=2)]))
    plan = plan_of(r.d)
    assert plan.steps[0].kind is StepKind.HOOK and plan.steps[0].world.weights == {"v1": 100, "v2": 0}
    r.until({Phase.ABORTING})
    assert r.d.abort_reason == "pre-rollout hook smoke failed 2 time(s), last HTTP 503: said so"
    assert "analysis-failed" in r.notices()
    assert r.until({Phase.ROLLED_BACK}).phase is Phase.ROLLED_BACK


def test_check_hooks_pass_at_their_points() -> None:
    r = Run(delivery(hooks=[hook("smoke", "pre-rollout"), hook("each", "rollout"), hook("after", "post-rollout")]))
    r.answers.update({"smoke": (True, "HTTP 200"), "each": (True, "HTTP 204"), "after": (True, "exit 0")})
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED
    plan = plan_of(r.d)
    points = [key.split("/")[1] for key in r.calls]
    hook_steps = {i: s.hook_point for i, s in enumerate(plan.steps) if s.hook_point}
    assert hook_steps == {0: "pre-rollout", len(plan.steps) - 2: "post-rollout"}
    assert plan.steps[-1].kind is StepKind.SCALE_DOWN, "post-rollout runs while the stable release is still warm"
    assert points == [hook_steps.get(i) or f"rollout@{i}" for i in range(len(plan.steps))]


def test_a_rollback_hook_that_says_yes_aborts() -> None:
    r = Run(delivery(strategy={"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
                     hooks=[hook("kill-switch", "rollback")]))
    r.until({Phase.PAUSED})
    for _ in range(20):
        r.tick()
    no = [e for e in r.events if e.kind == "hook"]
    assert len(no) == 1, "an unchanged no is recorded once"
    r.answers["kill-switch"] = (True, "HTTP 200")
    r.until({Phase.ABORTING})
    assert r.d.abort_reason == "rollback hook kill-switch asked for a rollback (HTTP 200: said so)"
    r.until({Phase.ROLLED_BACK})
    assert gates.due_calls(r.d, plan_of(r.d), r.now) == []


def test_an_answer_for_a_call_no_longer_due_is_dropped() -> None:
    r = Run(delivery(hooks=[hook("gate", "confirm-rollout")]))
    r.tick()
    stale = HookAnswer(key="7.1/confirm-rollout/gate/9", point="confirm-rollout", hook="gate", ok=True,
                       status="HTTP 200", duration=0.1, at=0)
    d, events = machine.advance(r.d, plan_of(r.d), Observation(now=1, hook_answers=[stale]))
    assert d.phase is Phase.WAITING and events == []


FREEZE = {"name": "all-day", "deny": {"cron": "0 0 * * *", "duration": "23h", "timeZone": "UTC"}}


def test_a_window_holds_the_start_and_says_until_when() -> None:
    r = Run(delivery(windows=[FREEZE]))
    r.now = 3600.0  # 01:00 UTC on 1 January 1970: inside
    r.tick()
    assert r.d.phase is Phase.WAITING
    hold = r.d.waiting.holds[0]
    assert hold.kind == "window" and hold.until == 23 * 3600
    assert "frozen until 22h from now" in hold.message and "all-day" in hold.message
    for _ in range(130):
        r.tick(seconds=600)  # a window's wait never trips the progress deadline
    assert r.d.phase is Phase.WAITING and r.now < 23 * 3600
    assert r.until({Phase.SUCCEEDED}, limit=2000).phase is Phase.SUCCEEDED
    assert r.now >= 23 * 3600


def test_a_window_holds_traffic_increases_but_never_an_abort() -> None:
    r = Run(delivery(strategy={"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "10s"}},
                                                    {"setWeight": 60}]}}),
            windows=[WindowSpec.model_validate({"deny": {"start": "1970-01-01T00:00:05+00:00",
                                                         "end": "1970-01-02"}})])
    r.until({Phase.WAITING})
    assert r.d.step == 1 and r.d.waiting.enter == 2, "the pause ran; the increase to 60% waits"
    assert machine.desired_world(r.d, plan_of(r.d)).weights == {"v1": 80, "v2": 20}
    r.d, _ = machine.abort(r.d, plan_of(r.d), now=r.now, reason="by hand")
    assert r.until({Phase.ROLLED_BACK}).phase is Phase.ROLLED_BACK


def test_an_override_lets_a_delivery_through_a_freeze() -> None:
    d = delivery(windows=[FREEZE]).model_copy(update={"freeze_override": "hotfix for the outage"})
    r = Run(d)
    r.now = 3600.0
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED


def test_promote_full_is_held_by_a_confirm_promotion_gate() -> None:
    r = Run(delivery(strategy={"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
                     hooks=[hook("gate", "confirm-promotion")]))
    r.until({Phase.PAUSED})
    plan = plan_of(r.d)
    r.d, events = machine.promote(r.d, plan, now=r.now, full=True)
    assert r.d.phase is Phase.WAITING and r.d.waiting.enter == plan.promote_from
    assert "waiting for confirm-promotion hook gate" in events[0].message
    r.answers["gate"] = (True, "HTTP 200")
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED


def test_pause_and_resume_while_waiting() -> None:
    r = Run(delivery(hooks=[hook("gate", "confirm-rollout")]))
    r.until({Phase.WAITING})
    r.d, _ = machine.pause(r.d, now=r.now)
    r.tick()
    assert r.d.phase is Phase.PAUSED
    r.d, _ = machine.resume(r.d, now=r.now)
    assert r.d.phase is Phase.WAITING
    r.answers["gate"] = (True, "HTTP 200")
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED


def test_retry_asks_every_gate_again() -> None:
    r = Run(delivery(hooks=[hook("smoke", "pre-rollout")]))
    r.until({Phase.ROLLED_BACK})
    r.d, _ = machine.retry(r.d, now=r.now)
    assert r.d.hooks == {} and r.d.attempt == 2
    r.answers["smoke"] = (True, "HTTP 200")
    assert r.until({Phase.SUCCEEDED}).phase is Phase.SUCCEEDED
    assert r.calls[-1] == "7.2/pre-rollout/smoke/1"
