"""Deliveries and the state machine that moves them.

A delivery moves a service from its stable release to a candidate along a
plan. `advance` is a pure function: given the delivery, its plan, what the
world looks like now and the time, it returns the next state of the delivery
and what happened, in words. It never acts: the controller commits the new
state first and only then makes the world match it, which is what makes a
controller crash at any moment harmless.

Phases, after Argo Rollouts: Pending → Progressing ⇄ Paused → Promoting →
Succeeded, or → Aborting → RolledBack, or Failed when even the rollback
could not finish (a person must act; the event log says why). Between
steps, and before the first, a delivery may be Waiting: on a confirm hook,
an approval, or a freeze window (`core.gates`); aborting is never held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from stagewise.core import gates
from stagewise.core.durations import format_duration
from stagewise.core.gate_state import Approval, HookAnswer, HookState, Waiting
from stagewise.core.gates_spec import NoticeEvent, WindowSpec
from stagewise.core.judge_state import JudgeState, ProviderNote
from stagewise.core.phase import ACTIVE
from stagewise.core.phase import Event as Event  # re-exported: the machine's words
from stagewise.core.phase import Phase as Phase
from stagewise.core.plan import Plan, Step, World
from stagewise.core.platform_spec import too_many_unreachable
from stagewise.core.spec import ReleaseSpec, ServiceSpec
from stagewise.core.stats import RouterStats
from stagewise.core.verdict import Outcome, Verdict
from stagewise.errors import ConflictError, ForbiddenError


class AnalysisRun(BaseModel):
    """One analysis against the concurrent baseline; judged by the controller, read here."""

    key: str
    templates: list[str]
    started_at: float
    duration: float | None = None
    background: bool = False
    since: RouterStats | None = None
    """The router's counters when the run started."""
    last: RouterStats | None = None
    """The counters the judges last saw (judges take increments)."""
    judge_state: dict[str, JudgeState] = {}
    """Each template's judge's state, by template name (core/judge_state.py)."""
    notes: dict[str, ProviderNote] = {}
    """What each template measured by a provider other than the router's counters last said, by template name."""
    verdict: Verdict = Verdict(outcome=Outcome.RUNNING)
    history: list[dict[str, Any]] = []
    """Measurements over time, for charts: t, requests and errors per release."""


class Observation(BaseModel):
    """What the controller saw of the world just before this tick."""

    now: float
    ready: dict[str, int] = {}
    """Ready instances per release."""
    live: dict[str, int] = {}
    """Live instances (starting or ready) per release."""
    failures: dict[str, int] = {}
    """Instances that died or missed readiness, per release, ever."""
    stats: RouterStats | None = None
    unreachable: dict[str, str] = {}
    """Hosts the platform cannot reach now, each with why and since when (ssh); their instances are in
    none of the counts above. More than `platform.maxUnreachable` of them roll the delivery back."""
    held: str | None = None
    """Why the router could not be brought to serve the committed world (a driver's error): its
    instances do not count as ready then, and a delivery stuck on it is aborted in these words."""
    hook_answers: list[HookAnswer] = []
    """Hook calls that ended since the last tick (the controller makes them: core.gates.due_calls)."""
    windows: list[WindowSpec] = []
    """Windows shared by every service (the server's windows file), besides the spec's own."""


_ROLLING_BACK = frozenset({Phase.ABORTING, Phase.FAILED, Phase.ROLLED_BACK})
"""Phases whose steps are the plan's rollback."""


class Delivery(BaseModel):
    id: int = 0
    service: str
    spec: ServiceSpec
    """The spec being delivered; its release is the candidate."""
    stable: ReleaseSpec | None = None
    """The release serving users before; none for a service's first delivery."""
    phase: Phase = Phase.PENDING
    step: int = 0
    """Cursor into the plan's steps, or into its rollback steps while aborting."""
    step_started_at: float = 0.0
    ready_at: float | None = None
    """When the current step's world was first seen ready."""
    progress_at: float = 0.0
    """Last time the delivery moved; the progress deadline counts from here, or from the end of the current
    step's timed pause while it runs (`progress_since`)."""
    paused: bool = False
    """Paused by a person."""
    release_gate: bool = False
    """A person promoted: the current step's remaining gates are skipped."""
    abort_world: World | None = None
    abort_reason: str | None = None
    failures_base: dict[str, int] = {}
    analysis: dict[str, AnalysisRun] = {}
    attempt: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    message: str = ""
    undo: bool = False
    """This delivery restores the previous stable release."""
    past_analysis: list[AnalysisRun] = []
    """Step analysis runs the delivery moved past, for the record (verdict, evidence, chart history).

    Never judged again; kept without the judges' working state to stay small."""
    waiting: Waiting | None = None
    """What holds the delivery now (phase Waiting): confirm hooks, approvals, a window."""
    hooks: dict[str, HookState] = {}
    """Each hook at each point where it was called: its calls and last answer (core.gates)."""
    approvals: list[Approval] = []
    """Who approved which gate, and when."""
    freeze_override: str | None = None
    """A person overrode the freeze windows for this delivery, for this reason."""

    @property
    def candidate(self) -> ReleaseSpec:
        return self.spec.spec.release

    @property
    def strategy(self) -> str:
        return "full" if self.stable is None else self.spec.spec.strategy.name

    def steps(self, plan: Plan) -> tuple[Step, ...]:
        return plan.rollback if self.phase in _ROLLING_BACK else plan.steps

    def current(self, plan: Plan) -> Step | None:
        steps = self.steps(plan)
        return steps[self.step] if 0 <= self.step < len(steps) else None


def evolve(delivery: Delivery) -> Delivery:
    """A copy safe to change: the parts this module and the judges change are copied, frozen parts shared.

    A deep copy would also copy the spec on every tick, which is most of the cost of a tick.
    """
    runs = {
        key: run.model_copy(update={"judge_state": dict(run.judge_state), "notes": dict(run.notes),
                                    "history": list(run.history)})
        for key, run in delivery.analysis.items()
    }
    return delivery.model_copy(update={"analysis": runs, "failures_base": dict(delivery.failures_base),
                                       "hooks": dict(delivery.hooks)})


def progress_since(delivery: Delivery, step: Step | None, now: float) -> float:
    """When the delivery's progress deadline counts from at `now`: its last move, or the moment its step's timed
    pause ran to (`now` while it runs) — a timed pause is planned waiting, not a stuck delivery.

    Counted here rather than written as `progress_at` on every tick of the pause: a delivery that only waits
    out its pause then has nothing to write.
    """
    if step is not None and step.pause and delivery.ready_at is not None:
        return max(delivery.progress_at, min(now, delivery.ready_at + step.pause))
    return delivery.progress_at


def started(delivery: Delivery) -> bool:
    """Whether the delivery entered its first step (it may wait before it: a confirm-rollout hook, a window)."""
    if delivery.phase is Phase.PENDING:
        return False
    return delivery.waiting is None or delivery.waiting.enter != 0 or delivery.phase is Phase.ABORTING


def desired_world(delivery: Delivery, plan: Plan) -> World | None:
    """The world the controller must make real now; none when nothing is to be done (the steady world applies)."""
    if not started(delivery):
        return None
    steps = delivery.steps(plan)
    if not steps:
        return None
    return steps[min(delivery.step, len(steps) - 1)].world


# --- verbs a person uses -------------------------------------------------------------


def _require(delivery: Delivery, verb: str, allowed: set[Phase] | frozenset[Phase]) -> None:
    if delivery.phase not in allowed:
        raise ConflictError(
            f"cannot {verb} delivery {delivery.id} of {delivery.service}: it is {delivery.phase.value}"
            f" (allowed when {', '.join(sorted(p.value for p in allowed))})"
        )


_ACTIVE = ACTIVE


def promote(delivery: Delivery, plan: Plan, *, now: float, full: bool = False,
            windows: Sequence[WindowSpec] = ()) -> tuple[Delivery, list[Event]]:
    """Skip the current step's remaining gates, or with `full` go straight to promotion.

    Neither skips a gate between steps: a full promotion that a confirm-promotion hook, an approval
    or a window holds waits for it (phase Waiting), as the step it skips to would have.
    """
    _require(delivery, "promote", _ACTIVE)
    d = evolve(delivery)
    d.paused = False
    if full and started(d) and d.step < plan.promote_from:
        holds = gates.holds_before(d, plan, plan.promote_from, now=now, windows=windows)
        if holds:
            d.waiting = Waiting(enter=plan.promote_from, since=now, holds=holds)
            d.phase = Phase.WAITING
            return d, [Event(at=now, kind="user", message="promoted fully: waiting for "
                             + d.waiting.words(), notice="waiting")]
        _enter(d, plan.promote_from, now)
        d.phase = Phase.PROMOTING
        return d, [Event(at=now, kind="user", message="promoted fully: skipping to the promotion")]
    d.release_gate = True
    return d, [Event(at=now, kind="user", message=f"promoted past step {d.step + 1}")]


def abort(delivery: Delivery, plan: Plan, *, now: float, reason: str,
          notice: NoticeEvent | None = None) -> tuple[Delivery, list[Event]]:
    """Roll back to the stable release; the rollback plan starts from the world now. Never held by a gate."""
    _require(delivery, "abort", _ACTIVE)
    d = evolve(delivery)
    if d.stable is None:
        raise ConflictError(f"cannot abort the first delivery of {d.service}: there is no stable release")
    # Before its first step nothing of the candidate runs: the rollback starts from the steady world.
    d.abort_world = desired_world(d, plan) or gates.steady_world(d)
    d.abort_reason = reason
    d.phase = Phase.ABORTING
    d.paused = False
    d.waiting = None
    _enter(d, 0, now)
    return d, [Event(at=now, kind="phase", message=f"Aborting: {reason}", notice=notice)]


def pause(delivery: Delivery, *, now: float) -> tuple[Delivery, list[Event]]:
    _require(delivery, "pause", _ACTIVE)
    d = evolve(delivery)
    d.paused = True
    d.phase = Phase.PAUSED
    return d, [Event(at=now, kind="user", message="paused", notice="paused")]


def resume(delivery: Delivery, *, now: float) -> tuple[Delivery, list[Event]]:
    _require(delivery, "resume", {Phase.PAUSED, Phase.PROGRESSING, Phase.PROMOTING, Phase.WAITING})
    d = evolve(delivery)
    d.paused = False
    d.progress_at = now
    if d.waiting is not None:
        d.phase = Phase.WAITING
    return d, [Event(at=now, kind="user", message="resumed")]


def retry(delivery: Delivery, *, now: float) -> tuple[Delivery, list[Event]]:
    """Start an aborted delivery again from its first step (its gates asked again)."""
    _require(delivery, "retry", {Phase.ROLLED_BACK, Phase.FAILED})
    d = evolve(delivery)
    d.phase = Phase.PENDING
    d.abort_world = None
    d.abort_reason = None
    d.analysis = {}
    d.finished_at = None
    d.attempt += 1
    d.waiting = None
    d.hooks = {}
    d.approvals = []
    _enter(d, 0, now)
    return d, [Event(at=now, kind="user", message=f"retry: attempt {d.attempt}")]


def approve(delivery: Delivery, plan: Plan, *, now: float, who: str, comment: str = "",
            windows: Sequence[WindowSpec] = ()) -> tuple[Delivery, list[Event]]:
    """`who` approves the gates that wait for them (an approval step, a confirm hook a person may answer).

    ConflictError when nothing waits for an approval (or `who` already approved it); ForbiddenError
    when `who` is not among the approvers of any gate that waits.
    """
    _require(delivery, "approve", {Phase.WAITING, Phase.PAUSED})
    d = evolve(delivery)
    try:
        added = gates.add_approval(d, plan, who, comment, now)
    except PermissionError as exc:
        raise ForbiddenError(f"cannot approve delivery {d.id} of {d.service}: {exc}") from exc
    except LookupError as exc:
        raise ConflictError(f"cannot approve delivery {d.id} of {d.service}: {exc}") from exc
    said = f": {comment}" if comment else ""
    events = [Event(at=now, kind="user", message=f"approved by {who} ({a.gate}){said}") for a in added]
    if d.waiting is not None and not d.paused:
        d, more = _wait_or_go(d, plan, now, [], windows)
        events += more
    return d, events


def reject(delivery: Delivery, plan: Plan, *, now: float, who: str, comment: str = "") -> tuple[Delivery, list[Event]]:
    """`who`, an approver of a gate that waits, says no: the delivery rolls back (Failed if it is the first)."""
    _require(delivery, "reject", {Phase.WAITING, Phase.PAUSED})
    gates_now = gates.approvable(delivery, plan)
    if not gates_now:
        raise ConflictError(f"cannot reject delivery {delivery.id} of {delivery.service}: nothing waits for an "
                            "approval")
    if not any(gates.may_approve(policy, who) for _, policy in gates_now):
        names = sorted({n for _, p in gates_now for n in p.approvers})
        raise ForbiddenError(f"cannot reject delivery {delivery.id} of {delivery.service}: {who} is not among the "
                             f"approvers ({', '.join(names)})")
    reason = f"rejected by {who}" + (f": {comment}" if comment else "")
    if delivery.stable is None:
        d = evolve(delivery)
        d.waiting = None
        return d, _finish(d, Phase.FAILED, now, reason)
    return abort(delivery, plan, now=now, reason=reason)


# --- the machine -----------------------------------------------------------------------


def _enter(d: Delivery, index: int, now: float) -> None:
    d.step = index
    d.step_started_at = now
    d.ready_at = None
    d.release_gate = False
    d.progress_at = now
    left = [run.model_copy(update={"judge_state": {}, "notes": {}, "since": None, "last": None})
            for run in d.analysis.values() if not run.background]
    if left:  # else the same list: its JSON is kept while it is (store/rows.py)
        d.past_analysis = [*d.past_analysis, *left]
        d.analysis = {k: run for k, run in d.analysis.items() if run.background}


_NOTICE = {Phase.SUCCEEDED: "succeeded", Phase.ROLLED_BACK: "rolled-back", Phase.FAILED: "failed"}


def _finish(d: Delivery, phase: Phase, now: float, message: str) -> list[Event]:
    d.phase = phase
    d.finished_at = now
    d.message = message
    d.waiting = None
    return [Event(at=now, kind="phase", message=f"{phase.value}: {message}", notice=_NOTICE.get(phase))]


Moved = tuple[Delivery, list[Event]]
"""A delivery's next state and what happened on the way."""


@dataclass(frozen=True)
class _Tick:
    """What one tick of a started delivery sees: its plan, its current step, the world, the hooks' answers;
    `events` gathers what happened so far (the gates append to it)."""

    plan: Plan
    step: Step
    obs: Observation
    answered: gates.Answered
    events: list[Event]


def advance(delivery: Delivery, plan: Plan, obs: Observation, *, fresh: bool = False) -> Moved:
    """The next state of `delivery`, and what happened; moves at most one step.

    A started delivery passes its gates in order (`_GATES`): the first that holds it, or moves it (ends, aborts,
    enters a step), decides the tick; a step whose gates all pass is done, and the next one is entered (or waited
    for, when something holds it). `fresh`: `delivery` is a copy made for this tick (`evolve`) that nobody else
    holds, changed in place instead of copied again.
    """
    if delivery.phase.terminal:
        return delivery, []
    d = delivery if fresh else evolve(delivery)
    answered = gates.record_answers(d, obs.hook_answers)
    events: list[Event] = list(answered.events)
    if d.phase is Phase.PENDING:
        d.failures_base = dict(obs.failures)
        return _go(d, plan, 0, obs.now, events, obs.windows)
    tick = _Tick(plan=plan, step=d.steps(plan)[d.step], obs=obs, answered=answered, events=events)
    for gate in _GATES:
        moved = gate(d, tick)
        if moved is not None:
            return moved
    return _next(d, plan, obs.now, events, "", obs.windows)


def _progress_deadline(d: Delivery, t: _Tick) -> Moved | None:
    """A delivery that made no progress within its deadline is rolled back; Failed when it is a rollback
    (a person must act) or a first delivery (nothing to roll back to). A person's or a window's wait is
    planned waiting, not a stuck delivery; a hook's call that never answers is."""
    now = t.obs.now
    if d.waiting is not None and not gates.waits_on_a_call(d.waiting.holds):
        d.progress_at = now
    aborting = d.phase is Phase.ABORTING
    deadline = d.spec.spec.progress_deadline
    waiting_on_person = d.paused or (t.step.manual and d.ready_at is not None and not aborting)
    if waiting_on_person or now - progress_since(d, t.step, now) <= deadline:
        return None
    reason = _stuck_reason(d, t.step, t.obs)
    if aborting:
        return d, t.events + _finish(d, Phase.FAILED, now, f"the rollback made no progress for "
                                     f"{format_duration(deadline)}: {reason}; a person must act")
    if d.stable is None:
        return d, t.events + _finish(d, Phase.FAILED, now, f"no progress for {format_duration(deadline)}: "
                                     f"{reason}; there is no earlier release to roll back to")
    d2, ev = abort(d, t.plan, now=now, reason=f"progress deadline {format_duration(deadline)} exceeded: {reason}")
    return d2, t.events + ev


def _failing(d: Delivery, t: _Tick) -> Moved | None:
    """A failed analysis (this step's or the background one) or check hook, a rollback hook that asks for it,
    or more unreachable hosts than the platform allows, roll the delivery back (a first one fails instead)."""
    if d.phase is Phase.ABORTING:
        return None
    failed = t.answered.check_failed or _failed_analysis(d)
    asked = t.answered.rollback_asked
    if (failed or asked) and d.stable is None:
        return d, t.events + _finish(d, Phase.FAILED, t.obs.now, f"{failed or asked}; there is no earlier "
                                     "release to roll back to")
    if failed is None and asked is None and d.stable is not None:  # a first delivery waits for its hosts
        asked = too_many_unreachable(d.spec.spec.platform, t.obs.unreachable)
    if failed is not None:
        d2, ev = abort(d, t.plan, now=t.obs.now, reason=failed, notice="analysis-failed")
        return d2, t.events + ev
    if asked is not None:
        d2, ev = abort(d, t.plan, now=t.obs.now, reason=asked)
        return d2, t.events + ev
    return None


def _before_first_step(d: Delivery, t: _Tick) -> Moved | None:
    """A delivery held before its first step (a confirm-rollout hook, a window) enters it once nothing holds
    it; a person's pause keeps it where it is."""
    if started(d):
        return None
    if d.paused:
        return d, t.events
    return _wait_or_go(d, t.plan, t.obs.now, t.events, t.obs.windows)


def _background_analysis(d: Delivery, t: _Tick) -> None:
    """The background analysis starts at its step and runs on (it never holds the delivery by itself)."""
    bg = t.plan.background
    if bg and d.phase is not Phase.ABORTING and d.step >= bg.starting_step and "background" not in d.analysis:
        d.analysis["background"] = AnalysisRun(
            key="background", templates=list(bg.gate.templates), started_at=t.obs.now,
            background=True, since=t.obs.stats, last=t.obs.stats,
        )
        t.events.append(Event(at=t.obs.now, kind="analysis", message="background analysis started: "
                              + ", ".join(bg.gate.templates)))


def _paused(d: Delivery, t: _Tick) -> Moved | None:
    """A delivery a person paused stays where it is."""
    if not d.paused:
        return None
    d.phase = Phase.PAUSED
    return d, t.events


def _between_steps(d: Delivery, t: _Tick) -> Moved | None:
    """A delivery waiting to enter its next step (a hook, an approval, a window holds it) enters it once
    nothing holds it any more."""
    if d.waiting is None or d.waiting.enter is None:
        return None
    return _wait_or_go(d, t.plan, t.obs.now, t.events, t.obs.windows)


def _readiness(d: Delivery, t: _Tick) -> Moved | None:
    """Gate 1: instances ready, and instance failures within the step's budget."""
    step, obs = t.step, t.obs
    new_failures = obs.failures.get(d.candidate.version, 0) - d.failures_base.get(d.candidate.version, 0)
    if d.phase is not Phase.ABORTING and step.max_failures is not None and new_failures > step.max_failures:
        d2, ev = abort(d, t.plan, now=obs.now, reason=f"{new_failures} instance(s) of {d.candidate.version} "
                       f"failed in this step, more than the {step.max_failures} allowed")
        return d2, t.events + ev
    if d.ready_at is None:
        if step.wait_ready and (obs.held is not None or not _ready(step.world, obs)):
            return d, t.events
        d.ready_at = obs.now
        d.progress_at = obs.now
    return None


def _approval(d: Delivery, t: _Tick) -> Moved | None:
    """An approval step waits for its approvers: a person's decision, which `promote` does not skip."""
    step = t.step
    if step.approval is None or d.phase is Phase.ABORTING:
        return None
    hold = gates.step_approval_hold(d, f"approval@{d.step}", step.approval.approvers, step.approval.count)
    if hold is not None:
        return _hold(d, Waiting(enter=None, since=t.obs.now, holds=[hold]), t.obs.now, t.events)
    if d.waiting is not None:
        d.waiting = None
        d.phase = Phase.PROMOTING if step.promoting else Phase.PROGRESSING
    return None


def _promoted(d: Delivery, t: _Tick) -> Moved | None:
    """A forward step a person promoted is done once ready (and approved), whatever its other gates."""
    if not d.release_gate or d.phase is Phase.ABORTING:
        return None
    return _next(d, t.plan, t.obs.now, t.events, "promoted", t.obs.windows)


def _checks(d: Delivery, t: _Tick) -> Moved | None:
    """A forward step waits for its check hooks to pass (a failed one rolls back: `_failing`)."""
    if d.phase is Phase.ABORTING or not _checks_pending(d, t.step):
        return None
    d.progress_at = t.obs.now  # check hooks conclude by themselves (a call times out): progress
    return d, t.events


def _analysis(d: Delivery, t: _Tick) -> Moved | None:
    """Gate 2: the step's analysis, started on the first tick past readiness and waited for until it passes."""
    step, now = t.step, t.obs.now
    if step.analysis is None or d.phase is Phase.ABORTING:
        return None
    key = f"step-{d.step}"
    run = d.analysis.get(key)
    if run is None:
        d.analysis[key] = AnalysisRun(
            key=key, templates=list(step.analysis.templates), started_at=now,
            duration=step.analysis.duration, since=t.obs.stats, last=t.obs.stats,
        )
        t.events.append(Event(at=now, kind="analysis", message=f"analysis started: "
                              f"{', '.join(step.analysis.templates)}"))
        return d, t.events
    outcome = run.verdict.outcome
    if outcome is Outcome.RUNNING:
        d.progress_at = now  # a running analysis is progress; only a stuck one (NoData) is not
        return d, t.events
    if outcome is Outcome.NO_DATA:
        return d, t.events  # the judge applies the policy; waiting ends at the deadline
    if outcome is not Outcome.SUCCESSFUL:
        d2, ev = abort(d, t.plan, now=now, reason=f"analysis {outcome.value}: {run.verdict.message}",
                       notice="analysis-failed")
        return d2, t.events + ev
    if not run.history or run.history[-1].get("final") is not True:
        run.history.append({"t": now, "final": True})
        t.events.append(Event(at=now, kind="analysis", message=f"analysis Successful: {run.verdict.message}"))
    return None


def _manual_pause(d: Delivery, t: _Tick) -> Moved | None:
    """Gate 3: a pause step without a duration waits until a person promotes."""
    if not t.step.manual or d.phase is Phase.ABORTING:
        return None
    if d.phase is not Phase.PAUSED:
        d.phase = Phase.PAUSED
        t.events.append(Event(at=t.obs.now, kind="phase", message=f"Paused at step {d.step + 1}: "
                              f"{t.step.title}; waiting for promote", notice="paused"))
    return d, t.events


def _timed_pause(d: Delivery, t: _Tick) -> Moved | None:
    """A step's pause duration, counted from readiness (a rollback step's too)."""
    if t.step.pause and d.ready_at is not None and t.obs.now - d.ready_at < t.step.pause:
        return d, t.events  # planned waiting: the deadline does not count it (`progress_since`)
    return None


_GATES: tuple[Callable[[Delivery, _Tick], Moved | None], ...] = (
    _progress_deadline, _failing, _before_first_step, _background_analysis, _paused, _between_steps,
    _readiness, _approval, _promoted, _checks, _analysis, _manual_pause, _timed_pause,
)
"""In order; each may hold the delivery where it is, move it (abort, finish, wait, enter a step) or let it
pass (None). The forward gates (approval to the manual pause) let a rollback pass."""


def _checks_pending(d: Delivery, step: Step) -> bool:
    """Whether the step's check hooks (its hook point's, or the rollout hooks) have not all passed yet."""
    point, hook_type = (step.hook_point, step.hook_point) if step.hook_point else (f"rollout@{d.step}", "rollout")
    return any(not (state := d.hooks.get(gates.state_key(point, h.name))) or not state.passed
               for h in gates.hooks_of(d, hook_type) if h.http is not None or h.command is not None)

def _go(d: Delivery, plan: Plan, target: int, now: float, events: list[Event],
        windows: Sequence[WindowSpec]) -> tuple[Delivery, list[Event]]:
    """Enter step `target`, or wait for what holds it (forward steps only; a rollback is never held)."""
    if d.phase is not Phase.ABORTING:
        holds = gates.holds_before(d, plan, target, now=now, windows=windows)
        if holds:
            return _hold(d, Waiting(enter=target, since=now, holds=holds), now, events)
    first = target == 0 and d.phase is not Phase.ABORTING
    d.waiting = None
    _enter(d, target, now)
    if d.phase is not Phase.ABORTING:
        d.phase = Phase.PROMOTING if plan.steps[target].promoting else Phase.PROGRESSING
    if first:
        what = f"{d.stable.version} → {d.candidate.version}" if d.stable else d.candidate.version
        events.append(Event(at=now, kind="phase", message=f"Progressing: {plan.strategy} {what}", notice="started"))
    return d, events


def _hold(d: Delivery, waiting: Waiting, now: float, events: list[Event]) -> tuple[Delivery, list[Event]]:
    """Wait (phase Waiting) for `waiting`; says so when what holds it is news."""
    before = d.waiting
    news = before is None or [(h.point, h.name, h.kind) for h in before.holds] != \
        [(h.point, h.name, h.kind) for h in waiting.holds]
    if before is not None:
        waiting = waiting.model_copy(update={"since": before.since})
    if before is None or (gates.waits_on_a_call(waiting.holds) and not gates.waits_on_a_call(before.holds)):
        d.progress_at = now  # the deadline counts from when a hook's call began to hold it
    d.waiting = waiting
    d.phase = Phase.WAITING
    if news:
        events.append(Event(at=now, kind="phase", message=f"Waiting: {waiting.words()}", notice="waiting"))
    return d, events


def _wait_or_go(d: Delivery, plan: Plan, now: float, events: list[Event],
                windows: Sequence[WindowSpec]) -> tuple[Delivery, list[Event]]:
    assert d.waiting is not None
    if d.waiting.enter is None:
        return d, events  # an approval step: its gate is checked where the step's gates are
    return _go(d, plan, d.waiting.enter, now, events, windows)


def _next(d: Delivery, plan: Plan, now: float, events: list[Event], why: str,
          windows: Sequence[WindowSpec]) -> tuple[Delivery, list[Event]]:
    aborting = d.phase is Phase.ABORTING
    steps = d.steps(plan)
    done = steps[d.step]
    events.append(Event(at=now, kind="step", message=f"step {d.step + 1}/{len(steps)} done: {done.title}"
                        + (f" ({why})" if why else ""), notice=None if aborting else "step"))
    if d.step + 1 >= len(steps):
        if aborting:
            return d, events + _finish(d, Phase.ROLLED_BACK, now, d.abort_reason or "aborted")
        return d, events + _finish(d, Phase.SUCCEEDED, now, f"{d.candidate.version} is stable")
    if aborting:
        _enter(d, d.step + 1, now)
        return d, events
    return _go(d, plan, d.step + 1, now, events, windows)


def _failed_analysis(d: Delivery) -> str | None:
    for run in d.analysis.values():
        if run.verdict.outcome is Outcome.FAILED:
            what = "background analysis" if run.background else "analysis"
            return f"{what} Failed: {run.verdict.message}"
    return None


def _ready(world: World, obs: Observation) -> bool:
    return all(
        obs.ready.get(release, 0) >= count and obs.live.get(release, 0) <= count
        for release, count in world.instances.items()
    )


def _stuck_reason(d: Delivery, step: Step, obs: Observation) -> str:
    lost = "; ".join(f"{host} unreachable: {why}" for host, why in sorted(obs.unreachable.items()))
    reason = _stuck_on(d, step, obs)
    return f"{reason} ({lost})" if lost else reason


def _stuck_on(d: Delivery, step: Step, obs: Observation) -> str:
    if d.ready_at is None and step.wait_ready and obs.held is not None:
        return obs.held
    if d.ready_at is None and step.wait_ready:
        missing = {r: f"{obs.ready.get(r, 0)}/{n} ready" for r, n in step.world.instances.items()
                   if obs.ready.get(r, 0) < n}
        return "instances not ready: " + ", ".join(f"{r} {m}" for r, m in missing.items())
    for run in d.analysis.values():
        if run.verdict.outcome is Outcome.NO_DATA:
            return f"analysis has no data: {run.verdict.message}"
    return f"stuck at step {d.step + 1}: {step.title}"
