"""The controller's own metrics, scraped by a real Prometheus and queried through its HTTP API.

A real `stagewise server` runs the sample service behind the builtin router;
Prometheus (Debian's package, on loopback) scrapes the server's `/metrics`
every second. A canary of v3, which fails a fifth of its requests, is rolled
back by its analysis; PromQL over the scraped series then shows the rollback
and its cause, the phase it left the service in, the e-value that failed the
candidate, and the reconcile passes. The queries and their answers are
printed (`-s`), as an operator would see them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagewise.basics import waiting
from stagewise.examples.load import LoadInBackground
from tests.e2e.conftest import SERVICE, Stagewise
from tests.providers.prom import running_prometheus, wait_for_series

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CANARY = {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"templates": ["errors", "latency"],
                                                                 "duration": "60s"}}]}}


def query(prometheus: str, promql: str, *, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The instant vector `promql` returns, once it returns one (Prometheus scrapes every second)."""
    def ask() -> list[dict[str, Any]]:
        body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=2.0).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    return waiting.blocking_until(ask, timeout=timeout, interval=0.2)


def quoted(promql: str, result: list[dict[str, Any]]) -> str:
    lines = [f"{'{'}{', '.join(f'{k}={v!r}' for k, v in sorted(r['metric'].items()))}{'}'} {r['value'][1]}"
             for r in result]
    return f"PromQL: {promql}\n  " + "\n  ".join(lines)


def test_prometheus_sees_a_canary_rolled_back_by_its_analysis(
    stagewise: Stagewise, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stagewise.client is not None
    server = stagewise.client.url.removeprefix("http://")
    with running_prometheus(tmp_path / "prometheus", [server]) as prometheus:
        stagewise.apply("v1", {"full": {}})
        assert stagewise.wait()["phase"] == "Succeeded"
        wait_for_series(prometheus, f'stagewise_delivery_phase{{service="{SERVICE}",phase="Succeeded"}} == 1')
        load = LoadInBackground(stagewise.url, connections=4, rate=300, max_seconds=120, max_requests=40_000).start()
        try:
            stagewise.apply("v3", CANARY)
            status = stagewise.wait(timeout=120)
        finally:
            report = load.stop()
        assert status["phase"] == "RolledBack", json.dumps(status["delivery"], indent=1)[:3000] + stagewise.log()
        assert report.by_version.get("v3", 0) > 0, "the bad release was never tried"

        phase = f'stagewise_delivery_phase{{service="{SERVICE}",phase="RolledBack"}} == 1'
        phases = query(prometheus, phase)  # once this is scraped, so is everything the rollback counted
        rollbacks = f'stagewise_rollbacks_total{{service="{SERVICE}"}} > 0'
        rolled_back = query(prometheus, rollbacks)
        ended = query(prometheus, f'sum by (outcome) (stagewise_deliveries_ended_total{{service="{SERVICE}"}})')
        evidence = f'stagewise_analysis_e_value{{service="{SERVICE}"}} >= stagewise_analysis_e_value_threshold'
        failed_by = query(prometheus, evidence)
        passes = query(prometheus, "histogram_quantile(0.99, sum by (le) "
                                   "(rate(stagewise_reconcile_duration_seconds_bucket[30s])))")
    with capsys.disabled():
        print("\n" + "\n".join([quoted(rollbacks, rolled_back), quoted(phase, phases),
                                quoted(evidence, failed_by),
                                quoted("sum by (outcome) (stagewise_deliveries_ended_total)", ended),
                                quoted("p99 of stagewise_reconcile_duration_seconds", passes)]))
    assert [(r["metric"]["strategy"], r["metric"]["cause"], r["value"][1]) for r in rolled_back] == [
        ("canary", "analysis", "1")]
    assert [r["metric"]["phase"] for r in phases] == ["RolledBack"]
    assert {r["metric"]["outcome"]: r["value"][1] for r in ended} == {"Succeeded": "1", "RolledBack": "1",
                                                                       "Failed": "0"}
    assert [(r["metric"]["analysis"], r["metric"]["template"]) for r in failed_by] == [("step-1", "errors")]
    assert passes and float(passes[0]["value"][1]) < 1.0, passes
