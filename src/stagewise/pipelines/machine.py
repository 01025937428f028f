"""A release's way through a pipeline's stages, decided: pure, like the delivery state machine.

Given a release, its pipeline's spec, what each stage's service shows now
(its delivery of this release, its stable release) and what verification
measured, `advance` returns the release's next state and what to do: which
stage's service is to be given the release. It never acts; the runner
(pipelines/runner.py) commits the state first and then applies the stage's
spec through the controller — an apply is idempotent (the same release
again is "being delivered"), so a crash between the two does no harm.

Rules:
- a stage is reached when the one before it succeeded (the first at once);
  with an `approval`, it waits for enough people first;
- a reached stage's service gets exactly the release's version; when that
  delivery Succeeded the stage soaks for `requiredSoak`, verified meanwhile;
- a delivery rolled back or failed, a verification that failed, or another
  release becoming the stage's stable meanwhile: the stage failed, the
  release stops there (later stages are "stopped": never reached).

Pure: time and observations are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewise.core.delivery import Phase
from stagewise.core.durations import format_duration
from stagewise.core.gate_state import Approval
from stagewise.core.pipeline import PipelineRelease, PipelineSpec, StageState, Verification


@dataclass(frozen=True)
class StageView:
    """What a stage's service shows now."""

    delivery_phase: Phase | None = None
    """The phase of the stage's delivery of this release (None: none yet, or it is gone)."""
    delivery_message: str = ""
    stable: str | None = None
    """The stage service's stable release now."""


@dataclass(frozen=True)
class Check:
    """One verification check of a soaking stage: failed or passed (None: no data)."""

    template: str
    failed: bool | None
    words: str


@dataclass
class Step:
    """What `advance` decided."""

    release: PipelineRelease
    deliver: list[int] = field(default_factory=list)
    """Stages whose service is to be given the release now (applied through the controller)."""
    events: list[str] = field(default_factory=list)
    """What happened, in words, for the log."""


def new_release(spec: PipelineSpec, version: str, *, now: float, by: str) -> PipelineRelease:
    stages = [StageState(name=s.name, service=s.service_name) for s in spec.spec.stages]
    return PipelineRelease(pipeline=spec.name, version=version, stages=stages, created_at=now, updated_at=now, by=by)


def approvals_needed(spec: PipelineSpec, release: PipelineRelease, index: int) -> int:
    policy = spec.spec.stages[index].approval
    if policy is None:
        return 0
    have = {a.by for a in release.stages[index].approvals}
    return max(0, policy.count - len(have))


def advance(release: PipelineRelease, spec: PipelineSpec, views: dict[str, StageView],
            checks: dict[str, list[Check]], *, now: float, failure_limits: dict[str, int] | None = None) -> Step:
    """The release's next state; `views`, `checks` and `failure_limits` (failed verification checks that fail a
    stage, default 1) by stage name."""
    out = Step(release=release.model_copy(deep=True))
    r = out.release
    if r.terminal:
        return out
    for index, (stage, state) in enumerate(zip(spec.spec.stages, r.stages, strict=True)):
        if state.status == "succeeded":
            continue
        if state.status in ("failed", "stopped"):
            break
        limit = (failure_limits or {}).get(stage.name, 1)
        _stage(out, index, state, views.get(stage.name, StageView()), checks.get(stage.name, []), spec, now, limit)
        break
    _conclude(out, now)
    if out.events or out.deliver:
        r.updated_at = now
    return out


def _stage(out: Step, index: int, state: StageState, view: StageView, checks: list[Check], spec: PipelineSpec,
           now: float, limit: int) -> None:
    r = out.release
    stage = spec.spec.stages[index]
    if state.status in ("pending", "waiting"):
        missing = approvals_needed(spec, r, index)
        if missing:
            policy = stage.approval
            assert policy is not None
            who = ", ".join(policy.approvers) if policy.approvers else "an operator"
            if state.status != "waiting":
                out.events.append(f"{r.version} waits for {missing} approval(s) from {who} before {stage.name}")
            state.status = "waiting"
            state.message = f"waiting for {missing} approval(s) from {who} (stagewise approve {r.pipeline})"
            return
        state.status = "delivering"
        state.started_at = now
        state.message = f"delivering {r.version} to {state.service}"
        out.deliver.append(index)
        out.events.append(f"{r.version} goes to {stage.name} ({state.service})")
        return
    if state.status == "delivering":
        if state.delivery is None and view.stable == r.version and view.delivery_phase is None:
            _soak(out, index, state, spec, now, f"{r.version} was already stable on {state.service}")
        elif state.delivery is None:
            out.deliver.append(index)  # not applied yet (or the apply was refused for now): ask again
        elif view.delivery_phase is Phase.SUCCEEDED:
            _soak(out, index, state, spec, now, f"{r.version} Succeeded on {state.service}")
        elif view.delivery_phase in (Phase.ROLLED_BACK, Phase.FAILED) or view.delivery_phase is None:
            why = view.delivery_message or "its delivery is gone"
            _fail(out, index, state, f"{r.version} {view.delivery_phase.value if view.delivery_phase else 'lost'} "
                                     f"on {state.service}: {why}", now)
        return
    if state.status == "soaking":
        _soaking(out, index, state, view, checks, spec, now, limit)


def _soak(out: Step, index: int, state: StageState, spec: PipelineSpec, now: float, why: str) -> None:
    stage = spec.spec.stages[index]
    state.status = "soaking"
    state.soak_until = now + stage.required_soak
    if stage.verification is not None:
        state.verification = Verification()
    state.message = f"soaking until {format_duration(stage.required_soak)} after {why.split(' on ')[0]}"
    out.events.append(f"{why}; soaking for {format_duration(stage.required_soak)}")


def _soaking(out: Step, index: int, state: StageState, view: StageView, checks: list[Check], spec: PipelineSpec,
             now: float, limit: int) -> None:
    r = out.release
    stage = spec.spec.stages[index]
    if view.stable is not None and view.stable != r.version:
        _fail(out, index, state, f"{view.stable} replaced {r.version} on {state.service} while it soaked", now)
        return
    verification = state.verification
    if verification is not None:
        for check in checks:
            if check.failed is None:
                continue
            verification.checks += 1
            verification.failed += int(check.failed)
            verification.last = f"{check.template}: {check.words}"
        if verification.failed >= limit:
            _fail(out, index, state, f"verification failed on {state.service}: {verification.last}", now)
            return
    if state.soak_until is not None and now >= state.soak_until:
        state.status = "succeeded"
        state.finished_at = now
        state.message = f"{r.version} soaked on {state.service}" + (
            f"; verified by {verification.checks} check(s)" if verification is not None else "")
        out.events.append(f"{r.version} passed {stage.name}")


def _fail(out: Step, index: int, state: StageState, why: str, now: float) -> None:
    r = out.release
    state.status = "failed"
    state.finished_at = now
    state.message = why
    for later in r.stages[index + 1:]:
        later.status = "stopped"
        later.message = f"never reached: {r.version} failed in {state.name}"
    r.phase = "Failed"
    r.finished_at = now
    r.message = f"stopped at {state.name}: {why}"
    out.events.append(f"{r.version} failed in {state.name}: {why}")


def _conclude(out: Step, now: float) -> None:
    r = out.release
    if r.phase == "Progressing" and all(s.status == "succeeded" for s in r.stages):
        r.phase = "Succeeded"
        r.finished_at = now
        r.message = f"{r.version} went through {', '.join(s.name for s in r.stages)}"
        out.events.append(r.message)


def _waiting_stage(r: PipelineRelease, spec: PipelineSpec, who: str) -> tuple[int, StageState]:
    """The stage `r` waits at for people, once `who` may answer it; LookupError / PermissionError otherwise."""
    waiting = [(i, s) for i, s in enumerate(r.stages) if s.status == "waiting"]
    if r.terminal or not waiting:
        raise LookupError(f"release {r.version} of {r.pipeline} waits for no approval")
    index, state = waiting[0]
    policy = spec.spec.stages[index].approval
    if policy is not None and policy.approvers and who not in policy.approvers:
        raise PermissionError(f"{who} is not among the approvers of {state.name} ({', '.join(policy.approvers)})")
    return index, state


def approve(release: PipelineRelease, spec: PipelineSpec, *, who: str, comment: str, now: float) -> tuple[
        PipelineRelease, str]:
    """`who` approves the stage the release waits at; LookupError / PermissionError as the delivery's approve."""
    r = release.model_copy(deep=True)
    _, state = _waiting_stage(r, spec, who)
    if who in {a.by for a in state.approvals}:
        raise LookupError(f"{who} already approved {state.name}")
    state.approvals.append(Approval(at=now, by=who, gate=f"stage/{state.name}", comment=comment))
    r.updated_at = now
    return r, f"{who} approved {r.version} for {state.name}" + (f": {comment}" if comment else "")


def reject(release: PipelineRelease, spec: PipelineSpec, *, who: str, comment: str, now: float) -> PipelineRelease:
    """`who`, who may approve the stage the release waits at, says no: the release stops there."""
    r = release.model_copy(deep=True)
    index, state = _waiting_stage(r, spec, who)
    _fail(Step(release=r), index, state, f"rejected by {who}" + (f": {comment}" if comment else ""), now)
    return r
