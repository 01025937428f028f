"""What the API and the CLI show of a service: plain JSON, computed from the store."""

from __future__ import annotations

from typing import Any

from stagewise.controller import Controller
from stagewise.core.delivery import Delivery, Phase, desired_world
from stagewise.core.plan import Plan
from stagewise.core.routes import split_weights
from stagewise.core.service import ServiceRecord


def traffic_weights(d: Delivery, plan: Plan) -> dict[str, int]:
    """Each release's share of the traffic in percent, as the delivery's current step wants it."""
    if d.phase is Phase.SUCCEEDED:
        return {d.candidate.version: 100}
    if d.phase is Phase.ROLLED_BACK and d.stable is not None:
        return {d.stable.version: 100}
    world = desired_world(d, plan)
    if world is None:
        return {}
    if world.weights is not None:
        return {r: w for r, w in world.weights.items() if world.instances.get(r, 0) > 0}
    return split_weights({r: n for r, n in world.instances.items() if n > 0})


def delivery_view(controller: Controller, d: Delivery) -> dict[str, Any]:
    plan = controller.plan(d)
    steps = d.steps(plan)
    weights = traffic_weights(d, plan)
    rolling_back = d.phase in (Phase.ABORTING, Phase.ROLLED_BACK, Phase.FAILED)
    current = d.step if not d.phase.terminal else len(steps)
    return {
        "id": d.id,
        "service": d.service,
        "phase": d.phase.value,
        "strategy": d.strategy,
        "from": d.stable.version if d.stable else None,
        "to": d.candidate.version,
        "undo": d.undo,
        "attempt": d.attempt,
        "step": min(current + 1, len(steps)),
        "steps": len(steps),
        "step_title": steps[min(d.step, len(steps) - 1)].title if steps else "",
        "rolling_back": rolling_back,
        "plan": [
            {"index": i + 1, "kind": s.kind.value, "title": s.title,
             "state": "done" if i < current else "current" if i == current else "pending"}
            for i, s in enumerate(steps)
        ],
        "forward_plan": [{"index": i + 1, "kind": s.kind.value, "title": s.title} for i, s in enumerate(plan.steps)],
        "weights": weights,
        "paused": d.paused,
        "message": d.message,
        "abort_reason": d.abort_reason,
        "analysis": [
            {"run": r.key, "templates": r.templates, "background": r.background,
             "outcome": r.verdict.outcome.value, "message": r.verdict.message,
             "evidence": r.verdict.evidence, "history": r.history}
            for r in d.analysis.values()
        ],
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "finished_at": d.finished_at,
        "waiting": d.waiting.model_dump(exclude={"enter"}) if d.waiting is not None else None,
        "approvals": [a.model_dump() for a in d.approvals],
        "freeze_override": d.freeze_override,
    }


FAILING_AFTER = 3
"""Tries after which a sink with a notification still pending is reported as failing."""


def sinks_view(controller: Controller, service: str) -> list[dict[str, Any]]:
    return [{**h.model_dump(), "failing": h.given_up > 0 or (h.pending > 0 and h.attempts >= FAILING_AFTER)}
            for h in controller.store.sink_health(service)]


def service_view(controller: Controller, record: ServiceRecord, *, events: int = 20) -> dict[str, Any]:
    latest = controller.store.latest_delivery(record.name)
    lease = controller.leases.lease(record.name) if controller.leases is not None else None
    return {
        "service": record.name,
        "holder": lease.holder or None if lease is not None else None,
        "epoch": lease.epoch if lease is not None else None,
        "listen": record.spec.spec.listen,
        "router": record.spec.spec.router.kind,
        "platform": record.spec.spec.platform.kind,
        "replicas": record.spec.spec.replicas,
        "strategy": record.spec.spec.strategy.name,
        "stable": record.stable.version if record.stable else None,
        "previous": record.previous.version if record.previous else None,
        "phase": latest.phase.value if latest else None,
        "delivery": delivery_view(controller, latest) if latest else None,
        # `[-0:]` would be every event: the list of services asks for none.
        "events": [e.model_dump() for e in controller.store.events(record.name, limit=100_000)][-events:]
        if events > 0 else [],
        "sinks": sinks_view(controller, record.name) if events > 0 else [],
    }
