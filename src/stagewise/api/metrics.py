"""The controller's own metrics: `GET /metrics`, in Prometheus' text format, by the official client.

Two kinds, each where it is cheapest to get right:

- what *happened* — deliveries started and ended, rollbacks by cause, analysis
  verdicts, seconds to each decision, reconcile passes and failures — is
  counted as the controller commits it: `EventMetrics` is the controller's
  observer (controller/observer.py), and each counter is incremented in one
  place, `delivery_changed`, from the committed state before and after;
- what *is* — the phase, step and candidate weight of each service's
  delivery, each analysis's e-values and verdicts, the failing services — is
  read from the store and the controller when Prometheus scrapes
  (api/metrics_state.py), so it can never drift from what `status` shows.

Names follow Prometheus' conventions: the `stagewise_` prefix, `_total` on
counters, base units (`_seconds`, `_ratio`), and labels of bounded
cardinality — a service's name, a strategy, a phase, a verdict, a cause, an
analysis and a template of the service's spec; never a delivery id or a
release version, which grow without bound.

What it must never do: change the controller's state, or fail the reconcile
loop it observes.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from typing import Any, get_args

import prometheus_client
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

from stagewise import __version__
from stagewise.api.access import ReadAccess, reader
from stagewise.api.metrics_state import StateCollector
from stagewise.controller import Controller
from stagewise.core.delivery import AnalysisRun, Delivery, Event, Phase
from stagewise.core.strategy_spec import StrategyName
from stagewise.core.verdict import Outcome
from stagewise.errors import StagewiseError

STRATEGIES: tuple[str, ...] = get_args(StrategyName)
OUTCOMES = (Phase.SUCCEEDED.value, Phase.ROLLED_BACK.value, Phase.FAILED.value)
"""How a delivery ends."""
VERDICTS = (Outcome.SUCCESSFUL.value, Outcome.FAILED.value, Outcome.INCONCLUSIVE.value)
"""How an analysis run is decided (Running and NoData are not decisions)."""
CAUSES = ("analysis", "deadline", "instances", "person", "other")
"""Why a delivery was rolled back: a failed or inconclusive analysis, the progress deadline, instances of the
candidate that failed, a person's abort, anything else."""
DECISION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
"""Seconds to a decision: from a few seconds (a blatant failure) to the hours of a long canary."""
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds of one reconcile pass: milliseconds when all is well, seconds when a driver is slow."""


def rollback_cause(reason: str | None) -> str:
    """One of `CAUSES` for an abort's reason, in the words the state machine and the controller give it."""
    text = reason or ""
    if text.startswith(("analysis ", "background analysis ")):
        return "analysis"
    if text.startswith("progress deadline"):
        return "deadline"
    if " failed in this step" in text:
        return "instances"
    if text.startswith("aborted by a person"):
        return "person"
    return "other"


def _decided(run: AnalysisRun | None) -> bool:
    return run is not None and run.verdict.outcome.value in VERDICTS


class EventMetrics:
    """Counters and histograms of what the controller commits; the controller's observer."""

    def __init__(self) -> None:
        self.started = Counter("stagewise_deliveries_started", "Deliveries started: a release applied, an undo, "
                               "a retry", ["service", "strategy"], registry=None)
        self.ended = Counter("stagewise_deliveries_ended", "Deliveries ended, by outcome: Succeeded, RolledBack, "
                             "Failed (even the rollback could not finish)", ["service", "strategy", "outcome"],
                             registry=None)
        self.rollbacks = Counter("stagewise_rollbacks", "Deliveries rolled back (rollbacks begun), by cause: "
                                 + ", ".join(CAUSES), ["service", "strategy", "cause"], registry=None)
        self.verdicts = Counter("stagewise_analysis_verdicts", "Analysis runs decided, by verdict",
                                ["service", "verdict"], registry=None)
        self.delivery_decision = Histogram(
            "stagewise_delivery_decision_seconds", "Seconds from a delivery's start (or retry) to its decision: "
            "promote (Succeeded) or rollback (the rollback begun)", ["strategy", "decision"],
            buckets=DECISION_BUCKETS, registry=None)
        self.analysis_decision = Histogram(
            "stagewise_analysis_decision_seconds", "Seconds from an analysis run's start to its verdict",
            ["verdict"], buckets=DECISION_BUCKETS, registry=None)
        self.passes = Histogram("stagewise_reconcile_duration_seconds", "Seconds of one reconcile pass over "
                                "every service", buckets=PASS_BUCKETS, registry=None)
        self.errors = Counter("stagewise_reconcile_errors", "Failed reconciles of a service, by the kind of error "
                              "(its class; InternalError for a bug)", ["kind"], registry=None)
        self._attempt_started: dict[int, float] = {}
        """When each delivery in flight started its current attempt (its creation, or its retry)."""
        self._known: set[tuple[str, str]] = set()
        """(service, strategy) pairs whose counters have their zero."""

    def register(self, registry: CollectorRegistry) -> None:
        for metric in (self.started, self.ended, self.rollbacks, self.verdicts, self.delivery_decision,
                       self.analysis_decision, self.passes, self.errors):
            registry.register(metric)

    def know(self, service: str, strategy: str) -> None:
        """Give a service's counters their zero, so that the first event of each shows as an increase."""
        if (service, strategy) in self._known:
            return
        self._known.add((service, strategy))
        self.started.labels(service, strategy)
        for outcome in OUTCOMES:
            self.ended.labels(service, strategy, outcome)
        for cause in CAUSES:
            self.rollbacks.labels(service, strategy, cause)
        for verdict in VERDICTS:
            self.verdicts.labels(service, verdict)

    # --- the controller's observer ---------------------------------------------------------

    def delivery_changed(self, *, before: Delivery | None, after: Delivery, events: Sequence[Event],
                         now: float) -> None:
        service, strategy = after.service, after.strategy
        self.know(service, strategy)
        was = before.phase if before is not None else None
        if before is None or (was is not None and was.terminal and not after.phase.terminal):
            self.started.labels(service, strategy).inc()
            self._attempt_started[after.id] = after.created_at if before is None else now
        if after.phase is Phase.ABORTING and was is not Phase.ABORTING:
            self.rollbacks.labels(service, strategy, rollback_cause(after.abort_reason)).inc()
            self._decision(after, "rollback", now)
        if after.phase is Phase.SUCCEEDED and was is not Phase.SUCCEEDED:
            self._decision(after, "promote", now)
        if after.phase.terminal and (was is None or not was.terminal):
            self.ended.labels(service, after.strategy, after.phase.value).inc()
            self._attempt_started.pop(after.id, None)
        self._count_verdicts(before, after, now)

    def _decision(self, d: Delivery, decision: str, now: float) -> None:
        started = self._attempt_started.get(d.id, d.created_at if d.attempt == 1 else None)
        if started is not None:  # a retried delivery seen first after a restart: its start is not known
            self.delivery_decision.labels(d.strategy, decision).observe(max(0.0, now - started))

    def _count_verdicts(self, before: Delivery | None, after: Delivery, now: float) -> None:
        """Count the runs decided by this change: open ones, and those the delivery just moved past."""
        earlier = before.analysis if before is not None else {}
        moved_past = after.past_analysis[len(before.past_analysis) if before is not None else 0:]
        for run in [*after.analysis.values(), *moved_past]:
            if _decided(run) and not _decided(earlier.get(run.key)):
                verdict = run.verdict.outcome.value
                self.verdicts.labels(after.service, verdict).inc()
                self.analysis_decision.labels(verdict).observe(max(0.0, now - run.started_at))

    def service_events(self, *, service: str, events: Sequence[Event]) -> None:
        return None

    def pass_finished(self, *, seconds: float) -> None:
        self.passes.observe(seconds)

    def reconcile_failed(self, *, service: str, error: StagewiseError, internal: bool) -> None:
        self.errors.labels("InternalError" if internal else type(error).__name__).inc()


class ControllerMetrics:
    """The registry of one server: its event counters, the state read on scrape, the process's own."""

    def __init__(self, controller: Callable[[], Controller | None]) -> None:
        # `_created` series would double every counter in the text format, to say when the server started
        # (process_start_time_seconds says it once).
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # the client types it not
        self.registry = CollectorRegistry(auto_describe=False)
        self.events = EventMetrics()
        # The state first: reading it gives each service's counters their zero before they are collected.
        self.registry.register(StateCollector(controller, self.events.know, version=__version__,
                                              python=platform.python_version()))
        self.events.register(self.registry)
        prometheus_client.ProcessCollector(registry=self.registry)
        prometheus_client.PlatformCollector(registry=self.registry)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format the scraper asked for (OpenMetrics, or the text format), and its type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


METRICS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The controller's metrics in Prometheus' text format (OpenMetrics when asked for)",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/openmetrics-text": {"schema": {"type": "string"}},
        },
    },
}


def install_metrics(app: FastAPI, metrics: ControllerMetrics, reads: ReadAccess = "open") -> None:
    """`GET /metrics` on `app`, documented as text in the OpenAPI document; a read like every other.

    With `reads` "token", Prometheus scrapes with a viewer token (`authorization: {credentials_file: ...}`).
    """

    @app.get("/metrics", operation_id="metrics", summary="The controller's own metrics, for Prometheus",
             description="Deliveries started and ended, rollbacks by cause, analysis verdicts and e-values, the "
                         "phase, step and candidate weight of each service's delivery, seconds to each decision, "
                         "reconcile passes and failures (`stagewise_*`), and the process's own (`process_*`).",
             response_class=Response, responses=METRICS_DOC, dependencies=[reader(reads)])
    async def scrape(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
