"""The controller's metrics, read the way Prometheus reads them, over a controller on the fakes.

Each test drives real deliveries (the controller, the store, the state
machine and the judges are real; the router and the platform are the fakes
of `stagewise.testing`) and parses the exposition with prometheus_client's own
parser, so a name, a label or a value that Prometheus would read differently
fails here. The real Prometheus scrapes a real server in
tests/e2e/test_controller_metrics.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stagewise.api.metrics import CAUSES, ControllerMetrics, rollback_cause
from stagewise.controller import Controller
from stagewise.core.delivery import Phase
from stagewise.errors import RouterError
from tests.controller.conftest import World, make_spec

CANARY: dict[str, Any] = {"canary": {"steps": [
    {"setWeight": 20}, {"analysis": {"templates": ["errors", "latency"], "duration": "30s"}},
    {"setWeight": 50}, {"pause": {"duration": "10s"}},
]}}


class Watched(World):
    """A World whose controllers (also after a restart) report to one set of metrics."""

    def __init__(self, state: Path) -> None:
        self.metrics = ControllerMetrics(lambda: self.controller)
        super().__init__(state)

    def new_controller(self) -> Controller:
        controller = super().new_controller()
        controller.observer = self.metrics.events
        return controller

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        body, content_type = self.metrics.exposition(None)
        assert content_type.startswith("text/plain; version=0.0.4")
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(body.decode()) for s in family.samples}

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, frozenset(labels.items())))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Watched]:
    w = Watched(tmp_path)
    await w.controller.apply(make_spec("v1", {"full": {}}))
    assert await w.run() is Phase.SUCCEEDED
    yield w
    w.controller.store.close()


async def test_a_rollback_by_analysis_is_counted_once_with_its_cause(world: Watched) -> None:
    world.router.error_rate["v3"] = 0.2
    assert await world.deliver("v2", CANARY) is Phase.SUCCEEDED
    assert await world.deliver("v3", CANARY) is Phase.ROLLED_BACK
    await world.run(seconds=2, until=set())  # more ticks of the ended delivery count nothing more
    shop = {"service": "shop"}
    assert world.value("stagewise_deliveries_started_total", **shop, strategy="full") == 1
    assert world.value("stagewise_deliveries_started_total", **shop, strategy="canary") == 2
    assert world.value("stagewise_deliveries_ended_total", **shop, strategy="canary", outcome="Succeeded") == 1
    assert world.value("stagewise_deliveries_ended_total", **shop, strategy="canary", outcome="RolledBack") == 1
    assert world.value("stagewise_deliveries_ended_total", **shop, strategy="canary", outcome="Failed") == 0
    assert {cause: world.value("stagewise_rollbacks_total", **shop, strategy="canary", cause=cause)
            for cause in CAUSES} == {"analysis": 1, "deadline": 0, "instances": 0, "person": 0, "other": 0}
    assert world.value("stagewise_analysis_verdicts_total", **shop, verdict="Successful") == 1
    assert world.value("stagewise_analysis_verdicts_total", **shop, verdict="Failed") == 1
    assert world.value("stagewise_delivery_decision_seconds_count", strategy="canary", decision="rollback") == 1
    assert world.value("stagewise_delivery_decision_seconds_count", strategy="canary", decision="promote") == 1
    assert world.value("stagewise_analysis_decision_seconds_count", verdict="Failed") == 1
    # the state after the rollback: the phase, the plan's end, no traffic on the candidate
    phases = {phase.value: world.value("stagewise_delivery_phase", **shop, strategy="canary", phase=phase.value)
              for phase in Phase}
    assert phases == {phase.value: float(phase is Phase.ROLLED_BACK) for phase in Phase}
    assert world.value("stagewise_delivery_candidate_weight_ratio", **shop) == 0
    assert world.value("stagewise_delivery_step", **shop) == world.value("stagewise_delivery_steps", **shop)
    assert world.value("stagewise_services") == 1
    # the evidence that failed the candidate stays readable after the rollback...
    errors = {**shop, "analysis": "step-1", "template": "errors"}
    assert world.value("stagewise_analysis_verdict", **errors, verdict="Failed") == 1
    failing = world.value("stagewise_analysis_e_value", **errors)
    assert failing is not None and failing >= world.value("stagewise_analysis_e_value_threshold", **errors) == 40
    # ...until the delivery goes on: a retry shows its own runs only
    await world.controller.act("shop", "retry")
    await world.run(seconds=1, until=set())
    assert world.value("stagewise_analysis_verdict", **errors, verdict="Failed") is None


async def test_a_delivery_in_flight_shows_its_step_weight_and_evidence(world: Watched) -> None:
    world.router.error_rate["v3"] = 0.02
    await world.controller.apply(make_spec("v3", CANARY))
    await world.run(until={Phase.PROGRESSING}, seconds=5)
    await world.run(seconds=8, until=set())  # into the analysis of step 2, at 20 %
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None and latest.phase is Phase.PROGRESSING and latest.step == 1, latest
    shop = {"service": "shop"}
    assert world.value("stagewise_delivery_step", **shop) == 2
    assert world.value("stagewise_delivery_steps", **shop) == len(world.controller.plan(latest).steps)
    assert world.value("stagewise_delivery_candidate_weight_ratio", **shop) == pytest.approx(0.2)
    assert world.value("stagewise_delivery_progress_deadline_seconds", **shop) == 120
    assert world.value("stagewise_delivery_last_progress_timestamp_seconds", **shop) == latest.progress_at
    run = {**shop, "analysis": "step-1"}
    # k/alpha: the two sequential templates share alpha
    for template in ("errors", "latency"):
        assert world.value("stagewise_analysis_e_value_threshold", **run, template=template) == 40
        e_value = world.value("stagewise_analysis_e_value", **run, template=template)
        assert e_value is not None and e_value >= 0
        verdicts = {v: world.value("stagewise_analysis_verdict", **run, template=template, verdict=v)
                    for v in ("Running", "Successful", "Failed", "Inconclusive", "NoData")}
        assert sum(v or 0 for v in verdicts.values()) == 1 and verdicts["Running"] == 1, verdicts


async def test_each_cause_of_a_rollback_is_told_apart(world: Watched) -> None:
    pause: dict[str, Any] = {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}
    await world.controller.apply(make_spec("v2", pause))
    await world.run(until={Phase.PAUSED}, seconds=30)
    await world.controller.act("shop", "abort")
    assert await world.run() is Phase.ROLLED_BACK
    world.router.rate = 0  # no traffic: the analysis has no data, and the progress deadline ends it
    assert await world.deliver("v4", CANARY, progressDeadline="60s") is Phase.ROLLED_BACK
    world.router.rate = 200
    world.platform.crashing.add("v5")
    waves = {"phased": {"waves": [1, "50%"], "bake": "2s"}}
    assert await world.deliver("v5", waves) is Phase.ROLLED_BACK
    counted = {(strategy, cause): world.value("stagewise_rollbacks_total", service="shop", strategy=strategy,
                                              cause=cause) for strategy in ("canary", "phased") for cause in CAUSES}
    assert {key: n for key, n in counted.items() if n} == {("canary", "person"): 1, ("canary", "deadline"): 1,
                                                           ("phased", "instances"): 1}


def test_a_reason_nobody_wrote_is_other() -> None:
    assert rollback_cause(None) == "other"
    assert rollback_cause("the data centre flooded") == "other"


async def test_a_retry_after_a_restart_and_reconcile_failures_are_counted(world: Watched) -> None:
    pause: dict[str, Any] = {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}
    await world.controller.apply(make_spec("v2", pause))
    await world.run(until={Phase.PAUSED}, seconds=30)
    await world.controller.act("shop", "abort")
    assert await world.run() is Phase.ROLLED_BACK
    await world.controller.act("shop", "retry")
    await world.run(until={Phase.PAUSED}, seconds=30)
    shop = {"service": "shop", "strategy": "canary"}
    assert world.value("stagewise_deliveries_started_total", **shop) == 2, "the retry is a start of its own"
    world.metrics = ControllerMetrics(lambda: world.controller)  # the server restarts: its counters start at 0
    await world.restart()
    await world.controller.act("shop", "promote")
    assert await world.run() is Phase.SUCCEEDED
    assert world.value("stagewise_deliveries_started_total", **shop) == 0
    assert world.value("stagewise_deliveries_ended_total", **shop, outcome="Succeeded") == 1
    # a retried delivery first seen after a restart: its start is not known, so no decision time is made up
    assert world.value("stagewise_delivery_decision_seconds_count", strategy="canary", decision="promote") is None

    async def refuse(**_: Any) -> None:
        raise RouterError("the admin socket is gone", delay=5)

    world.router.apply = refuse  # type: ignore[method-assign]
    world.router.restart()  # the table must be sent again: each try fails
    await world.run(seconds=1, until=set())
    assert world.value("stagewise_reconcile_errors_total", kind="RouterError") == 1  # then it waits out `delay`
    assert world.value("stagewise_reconcile_retries_pending", retry="delay") == 1
    assert world.value("stagewise_reconcile_retries_pending", retry="backoff") == 0
    assert world.value("stagewise_reconcile_failures", service="shop") == 1


async def test_a_scrape_of_a_server_without_its_controller_is_the_build_only(tmp_path: Path) -> None:
    metrics = ControllerMetrics(lambda: None)
    body, _ = metrics.exposition("application/openmetrics-text; version=1.0.0")
    names = {f.name for f in text_string_to_metric_families(body.decode().replace("# EOF\n", ""))}
    assert "stagewise_build" in names and "stagewise_services" not in names
