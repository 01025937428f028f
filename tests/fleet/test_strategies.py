"""Every strategy's success and rollback path on four namespace hosts over SSH, through the builtin router
and HAProxy, with users (a bounded load generator) on loopback throughout.

Users must see no failed request but those the bad release answered itself;
an artifact is copied once per host and release, and a rollback copies nothing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from stagewise.examples.load import LoadInBackground, LoadReport
from tests.fleet.conftest import FLEET_SIZE, FleetStagewise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CANARY: dict[str, Any] = {"canary": {"steps": [
    {"setWeight": 25}, {"analysis": {"templates": ["errors", "latency"], "duration": "3s"}},
    {"setWeight": 50}, {"analysis": {"templates": ["errors"], "duration": "2s"}},
]}}
WAVES: dict[str, Any] = {"phased": {"waves": [1, "50%"], "maxFailPercent": 0,
                                    "analysis": {"templates": ["errors"], "duration": "3s"}}}
BLUE_GREEN: dict[str, Any] = {"blueGreen": {
    "prePromotionAnalysis": {"templates": ["errors"], "duration": "3s"},
    "autoPromotion": {"after": "500ms"}, "scaleDownDelay": "1s",
}}
FULL: dict[str, Any] = {"full": {}}

by_router = pytest.mark.parametrize("on_hosts", ["builtin", "haproxy"], indirect=True)


def users(sw: FleetStagewise) -> LoadInBackground:
    return LoadInBackground(sw.url, connections=4, rate=250, max_seconds=120, max_requests=40_000,
                            headers_for=lambda i: {"X-Preview": "1"} if i % 4 == 0 else {}).start()


def deliver(sw: FleetStagewise, version: str, strategy: dict[str, Any]) -> tuple[dict[str, Any], LoadReport]:
    load = users(sw)
    try:
        sw.apply(version, strategy)
        status = sw.wait(timeout=120)
        time.sleep(0.3)
    finally:
        report = load.stop()
    print(f"{sw.router}: {strategy_name(strategy)} → {version}: {status['phase']}; {report.requests} requests, "
          f"{report.non_2xx + report.socket_errors} failed, {report.failed_by_version.get('v3', 0)} of them "
          f"answered by the bad release v3")
    return status, report


def strategy_name(strategy: dict[str, Any]) -> str:
    (name,) = strategy
    return str(name)


def failed_but_bad(report: LoadReport, bad: str | None) -> int:
    """Failed requests other than the responses the bad release gave itself."""
    own = report.failed_by_version.get(bad, 0) if bad else 0
    return report.non_2xx + report.socket_errors - own


@by_router
def test_every_strategy_succeeds_and_rolls_back_on_hosts(on_hosts: FleetStagewise) -> None:
    sw = on_hosts
    sw.apply("v1", FULL)
    assert sw.wait()["phase"] == "Succeeded"
    assert sw.processes() == [1] * FLEET_SIZE, "replicas spread one per host"
    assert sw.copies() == FLEET_SIZE
    stable = "v1"
    for name, strategy in (("canary", CANARY), ("phased", WAVES), ("blue-green", BLUE_GREEN)):
        good = "v2" if stable == "v1" else "v1"
        copies = sw.copies()
        status, report = deliver(sw, "v3", strategy)
        assert status["phase"] == "RolledBack", (name, status["delivery"])
        assert "Failed" in status["delivery"]["abort_reason"], status["delivery"]
        assert report.by_version.get("v3", 0) > 0, f"{name}: the bad release was never tried"
        assert failed_but_bad(report, "v3") == 0, (name, report.status_counts, report.socket_error_kinds)
        assert sw.copies() - copies <= FLEET_SIZE, "the bad release is copied at most once per host"
        copies = sw.copies()
        status, report = deliver(sw, good, strategy)
        assert status["phase"] == "Succeeded", (name, status["delivery"])
        assert failed_but_bad(report, None) == 0, (name, report.status_counts, report.socket_error_kinds)
        assert set(report.by_version) <= {stable, good} and report.by_version.get(good, 0) > 0
        assert sw.processes() == [1] * FLEET_SIZE, f"{name}: one instance per host once done"
        stable = good
    assert sw.copies() == 3 * FLEET_SIZE, "v1, v2 and v3 each copied once to each host"
