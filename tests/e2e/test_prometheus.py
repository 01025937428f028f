"""A canary judged by a real Prometheus scraping the router's /metrics, rolled back on a bad release.

The whole chain is real: `stagewise server` starts the router with
`metricsListen`, Prometheus (Debian's package, on loopback) scrapes it every
second, and the analysis asks Prometheus — not the router — for the
candidate's error ratio over `{{window}}`. v3 fails a fifth of its requests.

Two routers: the builtin one, which exports `stagewise_router_*` counters, and a
managed HAProxy, whose own Prometheus exporter (`frontend metrics`) is scraped:
there the ratio comes from `haproxy_server_http_responses_total` of the
release's servers (named `<release>:<endpoint id>`) in backend `all`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from stagewise.basics.ports import free_port
from stagewise.examples.load import LoadInBackground, LoadReport
from tests.e2e.conftest import BAD_FLAGS, SERVICE, Stagewise
from tests.providers.prom import running_prometheus, wait_for_series

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ERROR_RATIO = (
    'sum(rate(stagewise_router_errors_total{service="{{service}}",release="{{release}}"}[{{window}}]))'
    ' / sum(rate(stagewise_router_requests_total{service="{{service}}",release="{{release}}"}[{{window}}]))'
)
HAPROXY_ERROR_RATIO = (
    'sum(rate(haproxy_server_http_responses_total{proxy="all",server=~"{{release}}:.+",code="5xx"}[{{window}}]))'
    ' / sum(rate(haproxy_server_http_responses_total{proxy="all",server=~"{{release}}:.+"}[{{window}}]))'
)


def spec(sw: Stagewise, version: str, strategy: dict[str, Any], metrics: str, prometheus: str, *,
         router: str = "builtin", query: str = ERROR_RATIO) -> str:
    command = [sys.executable, "-m", "stagewise.examples.sample_service", "--port", "{port}",
               "--version", version, *BAD_FLAGS.get(version, [])]
    return json.dumps({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": SERVICE},
        "spec": {
            "listen": sw.listen, "replicas": 2,
            "router": {"kind": router, "metricsListen": metrics},
            "release": {"version": version, "run": {"command": command},
                        "readiness": {"http": "/healthz", "timeout": "10s"}},
            "strategy": strategy,
            "analysis": {"errors": {
                "provider": "prometheus", "address": prometheus, "query": query,
                "judge": "threshold", "thresholdRange": {"max": 0.05}, "interval": "4s", "failureLimit": 2,
            }},
            "progressDeadline": "60s",
        },
    })


def test_a_canary_judged_by_prometheus_is_rolled_back(stagewise: Stagewise, tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    with running_prometheus(tmp_path / "prometheus", [metrics]) as prometheus:
        assert stagewise.client is not None
        stagewise.client.post("/api/v1/apply", {"spec": spec(stagewise, "v1", {"full": {}}, metrics, prometheus),
                                                "filename": "v1.yaml"})
        assert stagewise.wait()["phase"] == "Succeeded"
        load = LoadInBackground(stagewise.url, connections=4, rate=200, max_seconds=120, max_requests=30_000).start()
        try:
            wait_for_series(prometheus, f'stagewise_router_requests_total{{service="{SERVICE}",release="v1"}}')
            canary = {"canary": {"steps": [{"setWeight": 50},
                                           {"analysis": {"templates": ["errors"], "duration": "40s"}}]}}
            stagewise.client.post("/api/v1/apply", {"spec": spec(stagewise, "v3", canary, metrics, prometheus),
                                                    "filename": "v3.yaml"})
            status = stagewise.wait(timeout=120)
        finally:
            report = load.stop()
    assert_rolled_back_by_the_query(stagewise, status, report)


@pytest.mark.parametrize("stagewise", ["haproxy"], indirect=True)
def test_a_canary_judged_by_haproxys_own_exporter_is_rolled_back(stagewise: Stagewise, tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"

    def haproxy_spec(version: str, strategy: dict[str, Any]) -> str:
        return spec(stagewise, version, strategy, metrics, prometheus, router="haproxy", query=HAPROXY_ERROR_RATIO)

    with running_prometheus(tmp_path / "prometheus", [metrics]) as prometheus:
        assert stagewise.client is not None
        stagewise.client.post("/api/v1/apply", {"spec": haproxy_spec("v1", {"full": {}}), "filename": "v1.yaml"})
        assert stagewise.wait()["phase"] == "Succeeded"
        load = LoadInBackground(stagewise.url, connections=4, rate=200, max_seconds=120, max_requests=30_000).start()
        try:
            wait_for_series(prometheus, 'haproxy_server_http_responses_total{proxy="all",server=~"v1:.+",code="2xx"}'
                                        " > 0")
            canary = {"canary": {"steps": [{"setWeight": 50},
                                           {"analysis": {"templates": ["errors"], "duration": "40s"}}]}}
            stagewise.client.post("/api/v1/apply", {"spec": haproxy_spec("v3", canary), "filename": "v3.yaml"})
            status = stagewise.wait(timeout=120)
        finally:
            report = load.stop()
    assert_rolled_back_by_the_query(stagewise, status, report)


def assert_rolled_back_by_the_query(stagewise: Stagewise, status: dict[str, Any], report: LoadReport) -> None:
    delivery = status["delivery"]
    print("abort reason:", delivery.get("abort_reason"))  # shown with -s: what Prometheus made the judge say
    assert status["phase"] == "RolledBack", json.dumps(delivery, indent=1)[:3000] + stagewise.log()
    assert "the candidate's query value out of range" in delivery["abort_reason"]
    assert status["stable"] == "v1"
    assert report.by_version.get("v3", 0) > 0, "the bad release was never tried"
