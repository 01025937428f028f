"""Gates between a delivery's steps: confirm hooks, check hooks, rollback hooks, approvals and windows.

The state machine (`core.delivery.advance`) asks this module two questions:

- **may it enter step k now?** (`holds_before`) — before the first step: the
  confirm-rollout hooks; before a step that gives the candidate more of the
  traffic: the confirm-traffic-increase hooks; before the first step of the
  promotion: the confirm-promotion hooks; before starting or adding traffic:
  the deny and allow windows (unless a person overrode the freeze). Whatever
  still holds makes the delivery wait (phase Waiting) and says why.
- **what did the hooks answer?** (`record_answers`) — each answer the
  controller observed is kept in the delivery's state; a check hook
  (pre-rollout, rollout, post-rollout) that failed `failureLimit` times counts
  as a failed analysis check, a rollback hook answering yes asks for an abort.

And the controller asks which calls are due now (`due_calls`): it makes them
outside the tick and feeds their answers back as observations, the way the
metric providers' measurements come back. A call's id is derived from the
committed state (delivery, attempt, point, hook, call number), so a call
whose answer was lost in a crash is made again under the same id: hooks are
called at least once, and a receiver can tell a repeat by its id.

Approvals come from people through `approve` (the verb in `core.delivery`):
approval steps of a canary, and confirm hooks that people may answer — every
confirm-promotion hook, and any confirm hook with an `approval:` policy.

Pure: time comes in as `now`; nothing here calls a hook or reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stagewise.core.durations import format_duration
from stagewise.core.gate_state import Approval, Hold, HookAnswer, HookCall, HookState
from stagewise.core.gates_spec import ApprovalSpec, HookSpec, WindowSpec
from stagewise.core.phase import Event, Phase
from stagewise.core.plan import Plan, World
from stagewise.core.windows import freeze_at

if TYPE_CHECKING:
    from stagewise.core.delivery import Delivery

ANSWER_SHOWN = 160
"""Characters of a hook's answer kept in events and holds."""


def state_key(point: str, hook: str) -> str:
    return f"{point}/{hook}"


def call_key(d: Delivery, point: str, hook: str, number: int) -> str:
    return f"{d.id}.{d.attempt}/{point}/{hook}/{number}"


def hooks_of(d: Delivery, hook_type: str) -> list[HookSpec]:
    return [h for h in d.spec.spec.hooks if h.type == hook_type]


# --- who may answer a confirm gate -------------------------------------------------------------


def person_policy(hook: HookSpec) -> ApprovalSpec | None:
    """Who may answer a confirm hook with `approve`: its own policy; any operator for confirm-promotion."""
    if hook.approval is not None:
        return hook.approval
    return ApprovalSpec() if hook.type == "confirm-promotion" else None


def approvers_of(d: Delivery, gate: str) -> set[str]:
    return {a.by for a in d.approvals if a.gate == gate}


def approved(d: Delivery, gate: str, policy: ApprovalSpec | None) -> bool:
    return policy is not None and len(approvers_of(d, gate)) >= policy.count


def may_approve(policy: ApprovalSpec, who: str) -> bool:
    return not policy.approvers or who in policy.approvers


# --- traffic -----------------------------------------------------------------------------------


def candidate_share(world: World, candidate: str) -> float:
    """The candidate's share of users' requests in `world`, in percent (header and preview routes aside)."""
    count = world.instances.get(candidate, 0)
    if count == 0:
        return 0.0
    if world.weights is not None:
        share = float(world.weights.get(candidate, 0))
    elif world.stable == candidate:
        share = 100.0
    else:
        total = sum(n for n in world.instances.values() if n > 0)
        share = 100.0 * count / total
    if world.cohort is not None and world.cohort.release == candidate:
        share = max(share, world.cohort.percent)
    return share


def steady_world(d: Delivery) -> World:
    """The world before the delivery: the stable release on every replica (nothing for a first release)."""
    if d.stable is None:
        return World(instances={}, stable=d.candidate.version)
    return World(instances={d.stable.version: d.spec.spec.replicas}, stable=d.stable.version)


# --- may the delivery enter a step? ---------------------------------------------------------------


def holds_before(d: Delivery, plan: Plan, target: int, *, now: float,
                 windows: Sequence[WindowSpec] = ()) -> list[Hold]:
    """What keeps the delivery from entering step `target` of its plan now (nothing: it may)."""
    upcoming = plan.steps[target]
    before = steady_world(d) if target == 0 else plan.steps[d.step].world
    candidate = d.candidate.version
    adds_traffic = candidate_share(upcoming.world, candidate) > candidate_share(before, candidate)
    points = ["confirm-rollout"] if target == 0 else []
    if adds_traffic:
        points.append(f"confirm-traffic-increase@{target}")
    if target == plan.promote_from:
        points.append("confirm-promotion")
    holds = [hold for point in points for hook in hooks_of(d, point.split("@")[0])
             if (hold := _hook_hold(d, point, hook)) is not None]
    if (target == 0 or adds_traffic) and d.freeze_override is None:
        freeze = freeze_at([*d.spec.spec.windows, *windows], now)
        if freeze is not None:
            when = "no allow window opens within years" if freeze.until is None else \
                f"until {_clock(freeze.until, now)}"
            holds.append(Hold(kind="window", point="window", name=freeze.reason, until=freeze.until,
                              message=f"frozen {when}: {freeze.reason}"))
    return holds


def _hook_hold(d: Delivery, point: str, hook: HookSpec) -> Hold | None:
    key = state_key(point, hook.name)
    state = d.hooks.get(key)
    policy = person_policy(hook)
    if (state is not None and state.passed) or approved(d, key, policy):
        return None
    callable_ = hook.http is not None or hook.command is not None
    answer = "not asked yet" if state is None or state.last is None else \
        f"last answer {state.last.status}" + (f": {state.last.message}" if state.last.message else "")
    person = ""
    if policy is not None:
        have = len(approvers_of(d, key))
        who = ", ".join(policy.approvers) if policy.approvers else "an operator"
        person = f"{have}/{policy.count} approval(s) from {who}"
    message = f"{hook.type} hook {hook.name}: " + "; or ".join(p for p in (answer if callable_ else "", person) if p)
    return Hold(kind="hook" if callable_ else "approval", point=point, name=hook.name, message=message)


def step_approval_hold(d: Delivery, gate: str, approvers: tuple[str, ...], count: int) -> Hold | None:
    """What an approval step (`gate`: approval@<step>) still waits for; none once enough people approved."""
    policy = ApprovalSpec(approvers=list(approvers), count=count)
    if approved(d, gate, policy):
        return None
    who = ", ".join(approvers) if approvers else "an operator"
    have = len(approvers_of(d, gate))
    return Hold(kind="approval", point=gate, name="approval",
                message=f"approval: {have}/{count} from {who} (stagewise approve {d.service})")


def waits_on_a_call(holds: Sequence[Hold]) -> bool:
    """A wait on a hook's call counts against the progress deadline; a person's or a window's does not."""
    return any(h.kind == "hook" for h in holds)


def _clock(at: float, now: float) -> str:
    return f"{format_duration(max(0.0, round(at - now)))} from now (unix {at:.0f})"


# --- which calls are due now ------------------------------------------------------------------


def due_calls(d: Delivery, plan: Plan, now: float) -> list[HookCall]:
    """The hook calls the controller should make now for the delivery's committed state."""
    if d.phase.terminal or d.phase is Phase.PENDING or not d.spec.spec.hooks:
        return []
    wanted: list[tuple[str, HookSpec]] = []
    aborting = d.phase is Phase.ABORTING
    if not aborting and d.stable is not None:
        wanted += [("rollback", h) for h in hooks_of(d, "rollback")]
    if d.waiting is not None:
        by_name = {h.name: h for h in d.spec.spec.hooks}
        wanted += [(hold.point, by_name[hold.name]) for hold in d.waiting.holds
                   if hold.kind == "hook" and hold.name in by_name]
    started = d.waiting is None or d.waiting.enter != 0
    step = d.current(plan)
    if not aborting and started and step is not None and d.ready_at is not None and not d.paused:
        # A hook step runs its check hooks; every other step the rollout hooks.
        point, hook_type = (step.hook_point, step.hook_point) if step.hook_point else (f"rollout@{d.step}", "rollout")
        wanted += [(point, h) for h in hooks_of(d, hook_type)]
    calls = []
    for point, hook in wanted:
        state = d.hooks.get(state_key(point, hook.name))
        if state is not None and (state.passed or state.failed or state.next_at > now):
            continue
        if hook.http is None and hook.command is None:
            continue
        number = (state.calls if state else 0) + 1
        key = call_key(d, point, hook.name, number)
        calls.append(HookCall(key=key, point=point, hook=hook, body=body(d, plan, key, point, hook)))
    return calls


def body(d: Delivery, plan: Plan, key: str, point: str, hook: HookSpec) -> dict[str, Any]:
    """The JSON a hook receives (the README documents it); `metadata` is the hook's own."""
    steps = d.steps(plan)
    return {
        "id": key, "hook": hook.name, "type": hook.type, "point": point, "service": d.service,
        "release": d.candidate.version, "stable": d.stable.version if d.stable else None,
        "strategy": d.strategy, "step": min(d.step + 1, len(steps)), "steps": len(steps),
        "phase": d.phase.value, "attempt": d.attempt, "delivery": d.id, "metadata": dict(hook.metadata),
    }


# --- what the hooks answered ---------------------------------------------------------------------


class Answered:
    """What the answers of one tick mean for the delivery."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.rollback_asked: str | None = None
        """A rollback hook said yes: why."""
        self.check_failed: str | None = None
        """A check hook failed for good: why."""


def record_answers(d: Delivery, answers: Sequence[HookAnswer]) -> Answered:
    """Keep each answer in `d.hooks` (changed in place); an answer for a call not due any more is dropped."""
    out = Answered()
    by_name = {h.name: h for h in d.spec.spec.hooks}
    for answer in answers:
        hook = by_name.get(answer.hook)
        key = state_key(answer.point, answer.hook)
        state = d.hooks.get(key) or HookState(point=answer.point, hook=answer.hook)
        if hook is None or answer.key != call_key(d, answer.point, answer.hook, state.calls + 1):
            continue
        repeated_no = (hook.type == "rollback" and not answer.ok and state.last is not None
                       and not state.last.ok and state.last.status == answer.status)
        state = state.model_copy(update={"calls": state.calls + 1, "last": answer,
                                         "next_at": answer.at + hook.interval})
        if not repeated_no:
            out.events.append(Event(at=answer.at, kind="hook", message=_answer_words(hook, answer)))
        if hook.type == "rollback":
            if answer.ok:
                out.rollback_asked = f"rollback hook {hook.name} asked for a rollback ({answer.status}" + (
                    f": {answer.message})" if answer.message else ")")
        elif answer.ok:
            state = state.model_copy(update={"passed": True})
        else:
            state = state.model_copy(update={"failures": state.failures + 1})
            if hook.check and state.failures >= hook.failure_limit:
                state = state.model_copy(update={"failed": True})
                out.check_failed = (f"{hook.type} hook {hook.name} failed {state.failures} time(s), last "
                                    f"{answer.status}" + (f": {answer.message}" if answer.message else ""))
        d.hooks[key] = state
    return out


def _answer_words(hook: HookSpec, answer: HookAnswer) -> str:
    said = "yes" if answer.ok else "no"
    text = f"hook {hook.name} ({answer.point}) answered {answer.status} ({said}) in {answer.duration * 1000:.0f} ms"
    return text + (f": {answer.message}" if answer.message else "")


def trim(text: str) -> str:
    """An answer as events show it: one line, at most `ANSWER_SHOWN` characters."""
    line = " ".join(text.split())
    return line if len(line) <= ANSWER_SHOWN else line[: ANSWER_SHOWN - 1] + "…"


# --- approvals -----------------------------------------------------------------------------------


def approvable(d: Delivery, plan: Plan) -> list[tuple[str, ApprovalSpec]]:
    """The gates a person may approve now, with their policies: (gate key, policy)."""
    if d.waiting is None:
        return []
    out: list[tuple[str, ApprovalSpec]] = []
    by_name = {h.name: h for h in d.spec.spec.hooks}
    step = d.current(plan)
    for hold in d.waiting.holds:
        if hold.kind == "window":
            continue
        if hold.point.startswith("approval@") and step is not None and step.approval is not None:
            out.append((hold.point, ApprovalSpec(approvers=list(step.approval.approvers), count=step.approval.count)))
            continue
        hook = by_name.get(hold.name)
        policy = person_policy(hook) if hook is not None else None
        if policy is not None:
            out.append((state_key(hold.point, hold.name), policy))
    return out


def add_approval(d: Delivery, plan: Plan, who: str, comment: str, now: float) -> list[Approval]:
    """Approve, as `who`, every gate waiting that `who` may approve; the approvals added.

    Raises `LookupError` when nothing waits for an approval and `PermissionError` (with the
    approvers in its message) when `who` may approve none of the gates that wait.
    """
    gates = approvable(d, plan)
    if not gates:
        raise LookupError("nothing waits for an approval")
    mine = [(gate, policy) for gate, policy in gates if may_approve(policy, who)]
    if not mine:
        names = sorted({n for _, p in gates for n in p.approvers})
        raise PermissionError(f"{who} is not among the approvers ({', '.join(names)})")
    fresh = [gate for gate, _ in mine if who not in approvers_of(d, gate)]
    if not fresh:
        raise LookupError(f"{who} already approved {', '.join(g for g, _ in mine)}")
    added = [Approval(at=now, by=who, gate=gate, comment=comment) for gate in fresh]
    d.approvals = [*d.approvals, *added]
    return added
