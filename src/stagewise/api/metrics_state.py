"""The controller's state as Prometheus gauges, read when Prometheus scrapes.

Gauges set on every change would have to be set in every place that changes
the state, and unset when a service goes away; read at scrape time from the
store (the phase, step and weights of each service's latest delivery, its
analysis runs) and from the controller (its failing services, its pass
interval), they are right by construction and cost nothing between scrapes.

One query per service per scrape, the same reads `stagewise status` makes. A
service whose delivery cannot be read is left out of that scrape (and logged);
the others are still reported. It must never write anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from stagewise.api.views import traffic_weights
from stagewise.controller import Controller
from stagewise.core.delivery import AnalysisRun, Delivery, Phase, progress_since
from stagewise.core.verdict import Outcome
from stagewise.errors import StagewiseError

log = logging.getLogger("stagewise.metrics")

PHASES = tuple(p.value for p in Phase)
RUN_OUTCOMES = tuple(o.value for o in Outcome)


class _Gauges:
    """The gauge families of one scrape, filled service by service."""

    def __init__(self) -> None:
        self.phase = GaugeMetricFamily(
            "stagewise_delivery_phase", "1 for the phase of the service's latest delivery, 0 for the others",
            labels=["service", "strategy", "phase"])
        self.step = GaugeMetricFamily(
            "stagewise_delivery_step", "The step the delivery stands at, from 1 (of the rollback plan while "
            "rolling back); the plan's length once it ended", labels=["service"])
        self.steps = GaugeMetricFamily(
            "stagewise_delivery_steps", "Steps in the plan the delivery follows (the rollback plan while rolling "
            "back)", labels=["service"])
        self.weight = GaugeMetricFamily(
            "stagewise_delivery_candidate_weight_ratio", "The candidate's share of the service's traffic, 0 to 1, "
            "as the current step wants it", labels=["service"])
        self.progress = GaugeMetricFamily(
            "stagewise_delivery_last_progress_timestamp_seconds", "When a delivery in flight last moved (Unix "
            "time); its progress deadline counts from here", labels=["service"])
        self.deadline = GaugeMetricFamily(
            "stagewise_delivery_progress_deadline_seconds", "The progress deadline of a delivery in flight",
            labels=["service"])
        self.e_value = GaugeMetricFamily(
            "stagewise_analysis_e_value", "The evidence against the candidate of a sequential judge, per template "
            "of each analysis of the service's latest delivery (open now, or the last run once it ended); the "
            "candidate fails at stagewise_analysis_e_value_threshold",
            labels=["service", "analysis", "template"])
        self.threshold = GaugeMetricFamily(
            "stagewise_analysis_e_value_threshold", "The e-value at which the judge fails the candidate (1/alpha)",
            labels=["service", "analysis", "template"])
        self.verdict = GaugeMetricFamily(
            "stagewise_analysis_verdict", "1 for the verdict of each template of each analysis of the service's "
            "latest delivery (open now, or the last run once it ended), 0 for the others",
            labels=["service", "analysis", "template", "verdict"])

    def families(self) -> list[Metric]:
        return [self.phase, self.step, self.steps, self.weight, self.progress, self.deadline, self.e_value,
                self.threshold, self.verdict]

    def add(self, controller: Controller, d: Delivery) -> None:
        plan = controller.plan(d)
        steps = len(d.steps(plan))
        for phase in PHASES:
            self.phase.add_metric([d.service, d.strategy, phase], 1.0 if d.phase.value == phase else 0.0)
        self.step.add_metric([d.service], float(steps if d.phase.terminal else min(d.step + 1, steps)))
        self.steps.add_metric([d.service], float(steps))
        self.weight.add_metric([d.service], traffic_weights(d, plan).get(d.candidate.version, 0) / 100.0)
        # In flight: the runs open now. Once ended: the last run of each analysis, those moved past included, so
        # that the e-value that failed a candidate is still there after the rollback.
        ended = d.past_analysis if d.phase.terminal else []
        for run in {run.key: run for run in [*ended, *d.analysis.values()]}.values():
            self._add_run(d.service, run)
        if not d.phase.terminal:
            self.progress.add_metric([d.service], progress_since(d, d.current(plan), controller.clock()))
            self.deadline.add_metric([d.service], d.spec.spec.progress_deadline)

    def _add_run(self, service: str, run: AnalysisRun) -> None:
        judged = run.verdict.evidence.get("metrics")
        per_template: list[dict[str, Any]] = judged if isinstance(judged, list) else []
        for index, template in enumerate(run.templates):
            said = per_template[index] if index < len(per_template) else {}
            outcome = str(said.get("outcome", Outcome.RUNNING.value))
            labels = [service, run.key, template]
            for value in RUN_OUTCOMES:
                self.verdict.add_metric([*labels, value], 1.0 if outcome == value else 0.0)
            evidence = said.get("evidence") or {}
            if isinstance(evidence.get("e_value"), int | float) and isinstance(evidence.get("threshold"), int | float):
                self.e_value.add_metric(labels, float(evidence["e_value"]))
                self.threshold.add_metric(labels, float(evidence["threshold"]))


class StateCollector(Collector):
    """Gauges of the controller's state, read on each scrape."""

    def __init__(self, controller: Callable[[], Controller | None], know: Callable[[str, str], None], *,
                 version: str, python: str) -> None:
        self._controller = controller
        self._know = know
        """Gives a service's counters their zero (api/metrics.py), so that its first event shows as an increase."""
        self._info = {"version": version, "python": python}

    def collect(self) -> Iterable[Metric]:
        info = InfoMetricFamily("stagewise_build", "The stagewise that serves these metrics")
        info.add_metric([], self._info)
        yield info
        controller = self._controller()
        if controller is None:
            return  # before the server's start or after its end: nothing of the state to say
        yield from self._state(controller)
        yield from self._loop(controller)

    def _state(self, controller: Controller) -> Iterator[Metric]:
        gauges = _Gauges()
        services = controller.store.list_services()
        for record in services:
            self._know(record.name, record.spec.spec.strategy.name)
            try:
                latest = controller.store.latest_delivery(record.name)
                if latest is not None:
                    gauges.add(controller, latest)
            except StagewiseError as exc:
                log.warning("metrics: cannot read the delivery of %s: %s", record.name, exc,
                            extra={"service": record.name})
        yield GaugeMetricFamily("stagewise_services", "Services the controller manages", value=len(services))
        yield from gauges.families()

    def _loop(self, controller: Controller) -> Iterator[Metric]:
        failing = controller.failing()
        pending = GaugeMetricFamily(
            "stagewise_reconcile_retries_pending", "Services whose last reconcile failed, waiting for their retry: "
            "after the error's own delay (delay) or with exponential backoff (backoff)", labels=["retry"])
        for retry, permanent in (("delay", False), ("backoff", True)):
            pending.add_metric([retry], float(sum(1 for f in failing.values() if f.permanent is permanent)))
        yield pending
        failures = GaugeMetricFamily("stagewise_reconcile_failures", "Failures in a row of a service whose last "
                                     "reconcile failed", labels=["service"])
        for service, f in sorted(failing.items()):
            failures.add_metric([service], float(f.failures))
        yield failures
        yield GaugeMetricFamily("stagewise_reconcile_interval_seconds", "Seconds between two reconcile passes (the "
                                "server's `tick` setting)", value=controller.tick_seconds)
