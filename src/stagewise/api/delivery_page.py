"""What the dashboard's delivery page shows: the plan, the verdicts in words, the charts' data, the actions.

Kept apart from the routes so it can be tested without a browser or a server:
it takes the controller and returns plain dictionaries for the templates. It
never changes anything — every button on the page posts to the documented
HTTP API, and this module only says which of those calls the state machine
would accept now (so a button the server would refuse is shown disabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stagewise.api.charts import analysis_series, traffic_series
from stagewise.api.views import delivery_view, sinks_view
from stagewise.controller import Controller
from stagewise.core import gates
from stagewise.core.delivery import AnalysisRun, Delivery, Phase
from stagewise.core.service import ServiceRecord
from stagewise.core.verdict import OPEN
from stagewise.errors import NotFoundError, ServiceDeletedError

EVENTS_SHOWN = 60
"""Newest events in the log; the CLI's `status` and the events API give the rest."""
DELIVERIES_SHOWN = 12

_ACTIVE = {Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED, Phase.WAITING, Phase.PROMOTING}


@dataclass(frozen=True)
class Action:
    """One button: which API route it calls, whether the server would accept it now, and why not."""

    name: str
    label: str
    path: str
    allowed: bool
    why_not: str = ""
    confirm: str = ""
    """Asked before a destructive call; empty for the others."""
    method: str = "post"
    """The route's HTTP method."""
    then: str = ""
    """Where the page goes once the call succeeded; empty: it stays and refreshes."""
    role: str = "operator"
    """The least role a token needs for the route (the page hides the button from smaller ones)."""


def delivery_page(controller: Controller, name: str, delivery_id: int | None = None) -> dict[str, Any]:
    """Everything the delivery page of service `name` shows, for its latest delivery or `delivery_id`."""
    store = controller.store
    record = store.get_service(name)
    if record is None:
        deleted = store.deleted_services(name)
        if deleted:
            at = datetime.fromtimestamp(deleted[-1].deleted_at).strftime("%Y-%m-%d %H:%M:%S")
            raise ServiceDeletedError(f"{name} was deleted at {at}; its deliveries and events stay readable: "
                                 f"/api/v1/services/{name}/history, /api/v1/services/{name}/events")
        raise NotFoundError(f"no service named {name!r}")
    recent = store.deliveries(name, limit=DELIVERIES_SHOWN)
    latest = recent[0] if recent else None
    delivery = latest
    if delivery_id is not None:
        delivery = next((d for d in recent if d.id == delivery_id), None) or store.get_delivery(delivery_id)
        if delivery is None or delivery.service != name:
            raise NotFoundError(f"{name} has no delivery {delivery_id}")
    events = store.events(name, limit=1_000_000)
    view = delivery_view(controller, delivery) if delivery else None
    charts: dict[str, Any] = {"traffic": None, "runs": {}}
    runs: list[dict[str, Any]] = []
    if delivery is not None:
        plan = controller.plan(delivery)
        own = [e for e in events if e.delivery_id == delivery.id]
        charts["traffic"] = traffic_series(delivery, plan, own, now=controller.clock())
        baseline = delivery.stable.version if delivery.stable else "baseline"
        ended = delivery.phase.terminal or delivery.phase is Phase.ABORTING
        # Runs the delivery moved past first, in order, then the ones still open; a retry can
        # repeat a step's key, so the page names each run by its place in this list.
        every = [(f"past-{i}", run, True) for i, run in enumerate(delivery.past_analysis)]
        every += [(run.key, run, ended) for run in delivery.analysis.values()]
        for uid, run, closed in every:
            runs.append(run_card(run, uid=uid, ended=closed))
            charts["runs"][uid] = analysis_series(run, baseline, delivery.candidate.version)
    return {
        "service": {**service_summary(record), **holder_of(controller, record.name)},
        "delivery": view,
        "latest": delivery is latest,
        "runs": runs,
        "charts": charts,
        "actions": [a.__dict__ for a in actions(controller, record, latest)],
        "sinks": sinks_view(controller, name),
        "events": [e.model_dump() for e in reversed(events[-EVENTS_SHOWN:])],
        "deliveries": [{"id": d.id, "from": d.stable.version if d.stable else None, "to": d.candidate.version,
                        "strategy": d.strategy, "phase": d.phase.value, "created_at": d.created_at,
                        "finished_at": d.finished_at, "message": d.message, "undo": d.undo}
                       for d in recent],
    }


def holder_of(controller: Controller, service: str) -> dict[str, Any]:
    """The server holding the service's lease and its epoch, with several servers on one store; nothing else."""
    lease = controller.leases.lease(service) if controller.leases is not None else None
    held = lease is not None and lease.holder
    return {"holder": lease.holder if held and lease else None, "epoch": lease.epoch if held and lease else None}


def service_summary(record: ServiceRecord) -> dict[str, Any]:
    spec = record.spec.spec
    return {"name": record.name, "listen": spec.listen, "replicas": spec.replicas, "strategy": spec.strategy.name,
            "router": spec.router.kind, "platform": spec.platform.kind,
            "stable": record.stable.version if record.stable else None,
            "previous": record.previous.version if record.previous else None}


def run_card(run: AnalysisRun, *, uid: str = "", ended: bool = False) -> dict[str, Any]:
    """One analysis run: its verdict, and per metric the judge's sentence and key figures.

    A run still undecided when its delivery ended (promoted or rolled back past it) is shown as
    "Stopped", not "Running": nothing judges it any more, and its last sentence is what it had seen.
    """
    metrics = []
    for m in run.verdict.evidence.get("metrics", []):
        evidence = m.get("evidence") or {}
        metrics.append({"metric": evidence.get("metric", "metric"), "judge": evidence.get("judge", ""),
                        "outcome": m.get("outcome", ""), "message": m.get("message", ""),
                        "figures": figures(evidence)})
    title = "background analysis" if run.background else f"analysis at step {_step_number(run.key)}"
    outcome = run.verdict.outcome.value
    if ended and run.verdict.outcome in OPEN:
        outcome = "Stopped"
        metrics = [{**m, "outcome": "Stopped"} if m["outcome"] in ("Running", "NoData") else m for m in metrics]
    return {"key": uid or run.key, "title": title, "templates": run.templates, "outcome": outcome,
            "message": run.verdict.message, "metrics": metrics, "started_at": run.started_at,
            "duration": run.duration}


def _step_number(key: str) -> str:
    index = key.removeprefix("step-")
    return str(int(index) + 1) if index.isdigit() else key


def figures(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """The evidence a person checks a verdict against, as (label, value) pairs."""
    out: list[tuple[str, str]] = []
    requests = evidence.get("requests")
    if isinstance(requests, dict):
        out.append(("requests", f"{requests.get('candidate', 0):,} candidate · "
                                f"{requests.get('baseline', 0):,} baseline"))
    rates = evidence.get("error_rate")
    if isinstance(rates, dict):
        out.append(("error rate", f"{rates.get('candidate', 0):.2%} candidate · "
                                  f"{rates.get('baseline', 0):.2%} baseline"))
    latency = evidence.get("latency_ms")
    if isinstance(latency, dict):
        cand, base = latency.get("candidate") or {}, latency.get("baseline") or {}
        out.append(("p99 latency", f"{_ms(cand.get('p99'))} candidate · {_ms(base.get('p99'))} baseline"))
    if "e_value" in evidence and "threshold" in evidence:
        out.append(("e-value", f"{_num(evidence['e_value'])} (fails at {_num(evidence['threshold'])})"))
    if "p_value" in evidence:
        out.append(("anytime-valid p", _p(evidence["p_value"])))
    return out


def _ms(value: Any) -> str:
    return f"{value:.3g} ms" if isinstance(value, int | float) else "–"


def _num(value: Any) -> str:
    v = float(value)
    return f"{v:.2e}" if v >= 1e6 else f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _p(value: Any) -> str:
    p = float(value)
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def actions(controller: Controller, record: ServiceRecord, latest: Delivery | None) -> list[Action]:
    """The ten buttons, each allowed exactly when the state machine (or `delete`) would accept its call."""
    base = f"/api/v1/services/{record.name}"
    phase = latest.phase if latest else None
    active = phase in _ACTIVE
    held = bool(latest and latest.paused)
    stable = record.stable.version if record.stable else "the stable release"
    to = latest.candidate.version if latest else ""
    previous = record.previous.version if record.previous else ""
    can_full = latest is not None and active and latest.step < controller.plan(latest).promote_from
    can_abort = active and latest is not None and latest.stable is not None
    can_retry = phase in (Phase.ROLLED_BACK, Phase.FAILED)
    can_undo = not active and bool(previous)
    can_approve = latest is not None and bool(gates.approvable(latest, controller.plan(latest)))
    waits = "nothing waits for an approval"
    in_flight = phase is not None and not phase.terminal  # aborting, too: delete waits for the rollback
    idle = "no delivery in flight"
    return [
        Action("approve", "Approve", f"{base}/approve", can_approve, "" if can_approve else waits),
        Action("reject", "Reject", f"{base}/approve?reject=true", can_approve, "" if can_approve else waits,
               confirm=f"Reject {to}? The delivery rolls back to {stable}."),
        Action("promote", "Promote", f"{base}/promote", active, "" if active else idle),
        Action("promote-full", "Promote fully", f"{base}/promote?full=true", can_full,
               "" if can_full else "already promoting" if active else idle,
               confirm=f"Skip every remaining step and gate, and make {to} the stable release now?"),
        Action("pause", "Pause", f"{base}/pause", active and not held,
               "" if active and not held else "already paused" if active else idle),
        Action("resume", "Resume", f"{base}/resume", active and held,
               "" if active and held else "not paused by a person" if active else idle),
        Action("abort", "Abort", f"{base}/abort", can_abort, "" if can_abort else idle,
               confirm=f"Abort the delivery of {to} and send every user back to {stable}?", role="admin"),
        Action("retry", "Retry", f"{base}/retry", can_retry, "" if can_retry else "only after a rollback",
               role="admin"),
        Action("undo", "Undo", f"{base}/undo", can_undo,
               "" if can_undo else "a delivery is in flight" if active else "no previous release",
               confirm=f"Deliver the previous release {previous} again, replacing {stable}?", role="admin"),
        Action("delete", "Delete", base, not in_flight,
               "a delivery is in flight: abort it first (or: stagewise delete --force)" if in_flight else "",
               confirm=f"Delete {record.name}? Its router stops taking requests and finishes the ones in flight, "
                       f"then its instances stop, and {record.name} is forgotten. Its deliveries and events stay "
                       "readable.",
               method="delete", then="/", role="admin"),
    ]


def deleted_actions(name: str) -> list[dict[str, Any]]:
    """The buttons of a page whose service was deleted meanwhile: all of them off."""
    return [{"name": a, "allowed": False, "why_not": f"{name} was deleted"}
            for a in ("approve", "reject", "promote", "promote-full", "pause", "resume", "abort", "retry", "undo",
                      "delete")]
