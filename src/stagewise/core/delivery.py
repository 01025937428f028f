"""Deliveries and the state machine that moves them.

A delivery moves a service from its stable release to a candidate along a
plan. `advance` is a pure function: given the delivery, its plan, what the
world looks like now and the time, it returns the next state of the delivery
and what happened, in words. It never acts: the controller commits the new
state first and only then makes the world match it, which is what makes a
controller crash at any moment harmless.

Phases, after Argo Rollouts: Pending → Progressing ⇄ Paused → Promoting →
Succeeded, or → Aborting → RolledBack, or Failed when even the rollback
could not finish (a person must act; the event log says why).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from stagewise.core.durations import format_duration
from stagewise.core.judge_state import JudgeState, ProviderNote
from stagewise.core.plan import Plan, Step, World
from stagewise.core.platform_spec import too_many_unreachable
from stagewise.core.spec import ReleaseSpec, ServiceSpec
from stagewise.core.stats import RouterStats
from stagewise.core.verdict import Outcome, Verdict
from stagewise.errors import ConflictError


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ABORTING = "Aborting"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: float
    kind: str
    """phase, step, analysis, instance, user, error."""
    message: str


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
    """Last time the delivery moved; the progress deadline counts from here."""
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

    @property
    def candidate(self) -> ReleaseSpec:
        return self.spec.spec.release

    @property
    def strategy(self) -> str:
        return "full" if self.stable is None else self.spec.spec.strategy.name

    def steps(self, plan: Plan) -> tuple[Step, ...]:
        return plan.rollback if self.phase in (Phase.ABORTING, Phase.FAILED, Phase.ROLLED_BACK) else plan.steps

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
    return delivery.model_copy(update={"analysis": runs, "failures_base": dict(delivery.failures_base)})


def desired_world(delivery: Delivery, plan: Plan) -> World | None:
    """The world the controller must make real now; none when nothing is to be done."""
    if delivery.phase is Phase.PENDING:
        return None
    steps = delivery.steps(plan)
    if not steps:
        return None
    return steps[min(delivery.step, len(steps) - 1)].world


# --- verbs a person uses -------------------------------------------------------------


def _require(delivery: Delivery, verb: str, allowed: set[Phase]) -> None:
    if delivery.phase not in allowed:
        raise ConflictError(
            f"cannot {verb} delivery {delivery.id} of {delivery.service}: it is {delivery.phase.value}"
            f" (allowed when {', '.join(sorted(p.value for p in allowed))})"
        )


_ACTIVE = {Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING}


def promote(delivery: Delivery, plan: Plan, *, now: float, full: bool = False) -> tuple[Delivery, list[Event]]:
    """Skip the current step's remaining gates, or with `full` go straight to promotion."""
    _require(delivery, "promote", _ACTIVE)
    d = evolve(delivery)
    d.paused = False
    if full and d.step < plan.promote_from:
        _enter(d, plan.promote_from, now)
        d.phase = Phase.PROMOTING
        return d, [Event(at=now, kind="user", message="promoted fully: skipping to the promotion")]
    d.release_gate = True
    return d, [Event(at=now, kind="user", message=f"promoted past step {d.step + 1}")]


def abort(delivery: Delivery, plan: Plan, *, now: float, reason: str) -> tuple[Delivery, list[Event]]:
    """Roll back to the stable release; the rollback plan starts from the world now."""
    _require(delivery, "abort", _ACTIVE)
    d = evolve(delivery)
    if d.stable is None:
        raise ConflictError(f"cannot abort the first delivery of {d.service}: there is no stable release")
    d.abort_world = desired_world(d, plan) or plan.steps[0].world
    d.abort_reason = reason
    d.phase = Phase.ABORTING
    d.paused = False
    _enter(d, 0, now)
    return d, [Event(at=now, kind="phase", message=f"Aborting: {reason}")]


def pause(delivery: Delivery, *, now: float) -> tuple[Delivery, list[Event]]:
    _require(delivery, "pause", {Phase.PENDING, Phase.PROGRESSING, Phase.PROMOTING, Phase.PAUSED})
    d = evolve(delivery)
    d.paused = True
    d.phase = Phase.PAUSED
    return d, [Event(at=now, kind="user", message="paused")]


def resume(delivery: Delivery, *, now: float) -> tuple[Delivery, list[Event]]:
    _require(delivery, "resume", {Phase.PAUSED, Phase.PROGRESSING, Phase.PROMOTING})
    d = evolve(delivery)
    d.paused = False
    d.progress_at = now
    return d, [Event(at=now, kind="user", message="resumed")]


def retry(delivery: Delivery, *, now: float) -> tuple[Delivery, list[Event]]:
    """Start an aborted delivery again from its first step."""
    _require(delivery, "retry", {Phase.ROLLED_BACK, Phase.FAILED})
    d = evolve(delivery)
    d.phase = Phase.PENDING
    d.abort_world = None
    d.abort_reason = None
    d.analysis = {}
    d.finished_at = None
    d.attempt += 1
    _enter(d, 0, now)
    return d, [Event(at=now, kind="user", message=f"retry: attempt {d.attempt}")]


# --- the machine -----------------------------------------------------------------------


def _enter(d: Delivery, index: int, now: float) -> None:
    d.step = index
    d.step_started_at = now
    d.ready_at = None
    d.release_gate = False
    d.progress_at = now
    left = [run.model_copy(update={"judge_state": {}, "notes": {}, "since": None, "last": None})
            for run in d.analysis.values() if not run.background]
    d.past_analysis = [*d.past_analysis, *left]
    d.analysis = {k: run for k, run in d.analysis.items() if run.background}


def _finish(d: Delivery, phase: Phase, now: float, message: str) -> list[Event]:
    d.phase = phase
    d.finished_at = now
    d.message = message
    return [Event(at=now, kind="phase", message=f"{phase.value}: {message}")]


Moved = tuple[Delivery, list[Event]]
"""A delivery's next state and what happened on the way."""


def advance(delivery: Delivery, plan: Plan, obs: Observation) -> Moved:
    """The next state of `delivery`, and what happened; moves at most one step.

    A started delivery passes its gates in order (`_GATES`): the first that holds it, or ends or aborts it,
    decides the tick; a step whose gates all pass is done, and the next one begins.
    """
    if delivery.phase.terminal:
        return delivery, []
    d = evolve(delivery)
    if d.phase is Phase.PENDING:
        return _begin(d, plan, obs)
    step = d.steps(plan)[d.step]
    events: list[Event] = []
    for gate in _GATES:
        moved = gate(d, plan, step, obs, events)
        if moved is not None:
            return moved
    return _next(d, plan, obs.now, events, "")


def _begin(d: Delivery, plan: Plan, obs: Observation) -> Moved:
    _enter(d, 0, obs.now)
    d.failures_base = dict(obs.failures)
    d.phase = Phase.PROMOTING if plan.steps[0].promoting else Phase.PROGRESSING
    what = f"{d.stable.version} → {d.candidate.version}" if d.stable else d.candidate.version
    return d, [Event(at=obs.now, kind="phase", message=f"Progressing: {plan.strategy} {what}")]


def _progress_deadline(d: Delivery, plan: Plan, step: Step, obs: Observation, events: list[Event]) -> Moved | None:
    """A delivery that made no progress within its deadline is rolled back (a rollback that made none, Failed)."""
    aborting = d.phase is Phase.ABORTING
    deadline = d.spec.spec.progress_deadline
    waiting_on_person = d.paused or (step.manual and d.ready_at is not None and not aborting)
    if waiting_on_person or obs.now - d.progress_at <= deadline:
        return None
    reason = _stuck_reason(d, step, obs)
    if aborting:
        return d, _finish(d, Phase.FAILED, obs.now, f"the rollback made no progress for "
                          f"{format_duration(deadline)}: {reason}; a person must act")
    if d.stable is None:
        return d, _finish(d, Phase.FAILED, obs.now, f"no progress for {format_duration(deadline)}: "
                          f"{reason}; there is no earlier release to roll back to")
    d2, ev = abort(d, plan, now=obs.now, reason=f"progress deadline {format_duration(deadline)} exceeded: {reason}")
    return d2, events + ev


def _failing(d: Delivery, plan: Plan, step: Step, obs: Observation, events: list[Event]) -> Moved | None:
    """Any analysis of the delivery (this step's or the background one) that Failed rolls it back; so do
    more unreachable hosts than the platform allows."""
    if d.phase is Phase.ABORTING:
        return None
    failed = _failed_analysis(d)
    if failed is None and d.stable is not None:  # a first delivery has nothing to roll back to: it waits
        failed = too_many_unreachable(d.spec.spec.platform, obs.unreachable)
    if failed is None:
        return None
    d2, ev = abort(d, plan, now=obs.now, reason=failed)
    return d2, events + ev


def _background_analysis(d: Delivery, plan: Plan, step: Step, obs: Observation, events: list[Event]) -> None:
    """The background analysis starts at its step and runs on (it never holds the delivery by itself)."""
    bg = plan.background
    if bg and d.phase is not Phase.ABORTING and d.step >= bg.starting_step and "background" not in d.analysis:
        d.analysis["background"] = AnalysisRun(
            key="background", templates=list(bg.gate.templates), started_at=obs.now,
            background=True, since=obs.stats, last=obs.stats,
        )
        events.append(Event(at=obs.now, kind="analysis", message="background analysis started: "
                            + ", ".join(bg.gate.templates)))


def _paused(d: Delivery, plan: Plan, step: Step, obs: Observation, events: list[Event]) -> Moved | None:
    """A delivery a person paused stays where it is."""
    if not d.paused:
        return None
    d.phase = Phase.PAUSED
    return d, events


def _readiness(d: Delivery, plan: Plan, step: Step, obs: Observation, events: list[Event]) -> Moved | None:
    """Gate 1: instances ready, and instance failures within the step's budget."""
    aborting = d.phase is Phase.ABORTING
    new_failures = obs.failures.get(d.candidate.version, 0) - d.failures_base.get(d.candidate.version, 0)
    if not aborting and step.max_failures is not None and new_failures > step.max_failures:
        d2, ev = abort(d, plan, now=obs.now, reason=f"{new_failures} instance(s) of {d.candidate.version} "
                       f"failed in this step, more than the {step.max_failures} allowed")
        return d2, events + ev
    if d.ready_at is None:
        if step.wait_ready and (obs.held is not None or not _ready(step.world, obs)):
            return d, events
        d.ready_at = obs.now
        d.progress_at = obs.now
    return None


def _promoted(d: Delivery, plan: Plan, step: Step, obs: Observation, events: list[Event]) -> Moved | None:
    """A step a person promoted is done once ready, whatever its other gates."""
    return _next(d, plan, obs.now, events, "promoted") if d.release_gate else None


def _analysis(d: Delivery, plan: Plan, step: Step, obs: Observation, events: list[Event]) -> Moved | None:
    """Gate 2: the step's analysis, started on the first tick past readiness and waited for until it passes."""
    if step.analysis is None or d.phase is Phase.ABORTING:
        return None
    now = obs.now
    key = f"step-{d.step}"
    run = d.analysis.get(key)
    if run is None:
        d.analysis[key] = AnalysisRun(
            key=key, templates=list(step.analysis.templates), started_at=now,
            duration=step.analysis.duration, since=obs.stats, last=obs.stats,
        )
        events.append(Event(at=now, kind="analysis", message=f"analysis started: "
                            f"{', '.join(step.analysis.templates)}"))
        return d, events
    outcome = run.verdict.outcome
    if outcome is Outcome.RUNNING:
        d.progress_at = now  # a running analysis is progress; only a stuck one (NoData) is not
        return d, events
    if outcome is Outcome.NO_DATA:
        return d, events  # the judge applies the policy; waiting ends at the deadline
    if outcome is not Outcome.SUCCESSFUL:
        d2, ev = abort(d, plan, now=now, reason=f"analysis {outcome.value}: {run.verdict.message}")
        return d2, events + ev
    if not run.history or run.history[-1].get("final") is not True:
        run.history.append({"t": now, "final": True})
        events.append(Event(at=now, kind="analysis", message=f"analysis Successful: {run.verdict.message}"))
    return None


def _pause_step(d: Delivery, plan: Plan, step: Step, obs: Observation, events: list[Event]) -> Moved | None:
    """Gate 3: a pause step, timed or until a person promotes."""
    if step.manual and d.phase is not Phase.ABORTING:
        if d.phase is not Phase.PAUSED:
            d.phase = Phase.PAUSED
            events.append(Event(at=obs.now, kind="phase", message=f"Paused at step {d.step + 1}: "
                                f"{step.title}; waiting for promote"))
        return d, events
    if step.pause and d.ready_at is not None and obs.now - d.ready_at < step.pause:
        d.progress_at = obs.now  # a timed pause is planned waiting, not a stuck delivery
        return d, events
    return None


_GATES: tuple[Callable[[Delivery, Plan, Step, Observation, list[Event]], Moved | None], ...] = (
    _progress_deadline, _failing, _background_analysis, _paused, _readiness, _promoted, _analysis,
    _pause_step,
)
"""In order; each may hold the delivery where it is, move it (abort, finish, pause) or let it pass (None)."""


def _next(d: Delivery, plan: Plan, now: float, events: list[Event], why: str) -> tuple[Delivery, list[Event]]:
    aborting = d.phase is Phase.ABORTING
    steps = d.steps(plan)
    done = steps[d.step]
    events.append(Event(at=now, kind="step", message=f"step {d.step + 1}/{len(steps)} done: {done.title}"
                        + (f" ({why})" if why else "")))
    if d.step + 1 >= len(steps):
        if aborting:
            return d, events + _finish(d, Phase.ROLLED_BACK, now, d.abort_reason or "aborted")
        return d, events + _finish(d, Phase.SUCCEEDED, now, f"{d.candidate.version} is stable")
    _enter(d, d.step + 1, now)
    if not aborting:
        upcoming = steps[d.step]
        d.phase = Phase.PROMOTING if upcoming.promoting else Phase.PROGRESSING
    return d, events


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
