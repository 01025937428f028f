"""A team's own metrics, judged sequentially through a real Prometheus: counters, a histogram and a gauge.

A test service (`tests/providers/exporter.py`) exports per-release counters,
a latency histogram and a queue-length gauge per instance; Debian's Prometheus
scrapes it every second; the controller's own `Measurer` asks the prometheus
provider at each template's interval and `judge_runs` judges — the templates
are the README's example, read from the README. A bad release (10 × the
errors, 1.5 × the latency, 3 × the queue) is caught on each metric; an A/A
release, one of whose instances restarts (its counters begin again) while
Prometheus itself restarts, is not, and its counts stay those of the baseline;
a release without series ends in NoData, never in a pass.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from stagewise.analysis.judges.runs import judge_runs
from stagewise.controller.measure import Measurer
from stagewise.core.delivery import AnalysisRun, Delivery
from stagewise.core.spec import ServiceSpec
from stagewise.core.stats import RouterStats
from stagewise.core.verdict import Outcome
from tests.providers.exporter import Exporter, Release, serving
from tests.providers.prom import free_port, running_prometheus, wait_for_series

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- example: prometheus-metrics -->"
TEMPLATES = ("checkout-errors", "checkout-latency", "queue")
AA_SECONDS = 24.0


def readme_analysis(address: str) -> dict[str, dict[str, Any]]:
    """The README's Prometheus-metrics example, pointed at this test's Prometheus."""
    text = README.read_text(encoding="utf-8")
    assert MARKER in text, "the README lost its Prometheus-metrics example"
    block = text.split(MARKER, 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    analysis: dict[str, dict[str, Any]] = YAML(typ="safe").load(block)["analysis"]
    for template in analysis.values():
        template["address"] = address
    return analysis


def delivery(service: str, candidate: str, analysis: dict[str, Any], runs: dict[str, list[str]],
             duration: float | None) -> Delivery:
    spec = ServiceSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": service},
        "spec": {"listen": "127.0.0.1:1", "release": {"version": candidate, "run": {"command": ["x"]}},
                 "strategy": {"canary": {"steps": [{"analysis": {"templates": list(analysis)}}]}},
                 "analysis": analysis},
    })
    stable = spec.spec.release.model_copy(update={"version": "v1"})
    return Delivery(id=1, service=service, spec=spec, stable=stable, analysis={
        key: AnalysisRun(key=key, templates=names, started_at=0.0, duration=duration) for key, names in runs.items()})


def test_the_readme_example_is_a_valid_analysis() -> None:
    analysis = readme_analysis("http://127.0.0.1:9090")
    d = delivery("shop", "v2", analysis, {"all": list(analysis)}, None)
    assert set(d.spec.spec.analysis) == set(TEMPLATES)
    assert {t.metric for t in d.spec.spec.analysis.values()} == {"error-rate", "latency", "value"}


def open_runs(deliveries: list[Delivery]) -> bool:
    """Some run is still undecided (NoData after the deadline counts as decided: it waits for traffic)."""
    return any(run.verdict.outcome is Outcome.RUNNING for d in deliveries for run in d.analysis.values())


async def judge_until_decided(deliveries: list[Delivery], exporter: Exporter, restart_prometheus: Any,
                              seconds: float) -> list[Delivery]:
    """Tick every 0.1 s for at most `seconds`: measure, judge; restart things midway, as production does."""
    measurer = Measurer()
    loop = asyncio.get_running_loop()
    start = loop.time()
    restarted = False
    try:
        while open_runs(deliveries) and loop.time() - start < seconds:
            now = loop.time() - start
            if now > 6.0 and not restarted:
                restarted = True
                exporter.restart("v3", "b")  # the A/A candidate's instance b restarts: its counters drop to zero
                await asyncio.to_thread(restart_prometheus)
            deliveries = [judge_runs(d, RouterStats(), now, measurer.collect(d, now)) for d in deliveries]
            await asyncio.sleep(0.1)
    finally:
        await measurer.close()
    return deliveries


def test_own_metrics_regressions_are_caught_and_an_a_a_release_is_not(tmp_path: Path) -> None:
    exporter = Exporter({"v1": Release(), "v2": Release(error_rate=0.1, latency_factor=1.5, queue_mean=60.0),
                         "v3": Release(mirror="v1")})
    address = f"127.0.0.1:{free_port()}"
    with serving(exporter) as target:
        prometheus: dict[str, Any] = {}

        def start() -> None:
            prometheus["cm"] = running_prometheus(tmp_path / "prometheus", [target], address=address)
            prometheus["url"] = prometheus["cm"].__enter__()

        def restart() -> None:
            prometheus["cm"].__exit__(None, None, None)
            time.sleep(1.5)  # a scrape or two missed while it is down
            start()

        start()
        try:
            url = prometheus["url"]
            wait_for_series(url, 'shop_requests_total{release="v1"}')
            wait_for_series(url, 'shop_errors_total{release="v1"}')
            analysis = readme_analysis(url)
            bad = delivery("shop-bad", "v2", analysis, {name: [name] for name in TEMPLATES}, None)
            same = delivery("shop-aa", "v3", analysis, {"all": list(TEMPLATES)}, AA_SECONDS)
            missing = delivery("shop-missing", "v9", {"checkout-errors": analysis["checkout-errors"]},
                               {"errors": ["checkout-errors"]}, 8.0)
            bad, same, missing = asyncio.run(judge_until_decided([bad, same, missing], exporter, restart, 90.0))
        finally:
            prometheus["cm"].__exit__(None, None, None)
    assert_caught(bad)
    assert_a_a_passed(same)
    verdict = missing.analysis["errors"].verdict
    assert verdict.outcome is Outcome.NO_DATA, verdict.message
    assert "too little traffic" in verdict.message and "no series for release v9" in verdict.message


def assert_caught(bad: Delivery) -> None:
    words = {"checkout-errors": "candidate error rate", "checkout-latency": "slower than",
             "queue": "higher than the baseline's"}
    for name, run in bad.analysis.items():
        assert run.verdict.outcome is Outcome.FAILED, f"{name}: {run.verdict.message}"
        assert words[name] in run.verdict.message, run.verdict.message
        print(f"{name}: {run.verdict.message}")  # shown with -s: what the team's metrics made the judge say


def assert_a_a_passed(same: Delivery) -> None:
    run = same.analysis["all"]
    assert run.verdict.outcome is Outcome.SUCCESSFUL, run.verdict.message
    metrics = {m["evidence"]["template"]: m["evidence"] for m in run.verdict.evidence["metrics"]}
    assert set(metrics) == set(TEMPLATES)
    assert all(m["alpha"] == pytest.approx(0.05 / 3) for m in metrics.values())  # three metrics share alpha
    errors = metrics["checkout-errors"]
    # The candidate's instance restarted; counted as increase() counts it, nothing was lost or doubled.
    assert errors["requests"]["candidate"] == errors["requests"]["baseline"] > 1000
    assert errors["errors"]["candidate"] == errors["errors"]["baseline"]
    assert metrics["queue"]["pairs"] >= 10
