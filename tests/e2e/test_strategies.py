"""Every strategy's success and rollback path with real processes and real HTTP traffic.

A `stagewise server` process drives the builtin router and local instances of
the sample service while a bounded load generator plays the users.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from typing import Any

import pytest

from stagewise.basics import waiting
from stagewise.examples.load import LoadInBackground, LoadReport
from tests.e2e.conftest import Stagewise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CANARY: dict[str, Any] = {"canary": {"steps": [
    {"setWeight": 50}, {"analysis": {"templates": ["errors", "latency"], "duration": "3s"}},
    {"setHeaderRoute": {"match": [{"headerName": "X-Canary", "headerValue": {"exact": "1"}}]}},
    {"pause": {"duration": "1s"}},
]}, }
BLUE_GREEN: dict[str, Any] = {"blueGreen": {
    "prePromotionAnalysis": {"templates": ["errors", "latency"], "duration": "3s"},
    "autoPromotion": {"after": "500ms"}, "scaleDownDelay": "1s",
}}
WAVES: dict[str, Any] = {"phased": {"waves": [1, "100%"], "bake": "500ms",
                                    "analysis": {"templates": ["errors"], "duration": "3s"}}}
COHORTS: dict[str, Any] = {"phased": {"cohorts": {"key": {"header": "X-User"}, "steps": [30, 100]},
                                      "analysis": {"templates": ["errors"], "duration": "3s"}}}
FULL: dict[str, Any] = {"full": {}}
STRATEGIES = {"canary": CANARY, "blue-green": BLUE_GREEN, "waves": WAVES, "cohorts": COHORTS, "full": FULL}
ROUTERS = ["builtin", "haproxy", "nginx"]
"""Every strategy runs through each router (the `stagewise` fixture starts the service on that kind)."""
by_router = pytest.mark.parametrize("stagewise", ROUTERS, indirect=True)


def headers(i: int) -> dict[str, str]:
    """A quarter of requests on the preview route; every request from one of 500 users."""
    h = {"X-User": f"user-{i % 500}"}
    if i % 4 == 0:
        h["X-Preview"] = "1"
    return h


def users(sw: Stagewise) -> LoadInBackground:
    return LoadInBackground(sw.url, connections=4, rate=300, max_seconds=120, max_requests=40_000,
                            headers_for=headers).start()


def first_release(sw: Stagewise) -> None:
    sw.apply("v1", FULL)
    assert sw.wait()["phase"] == "Succeeded"
    wait_serving(sw, "v1")


def wait_serving(sw: Stagewise, version: str, timeout: float = 10.0, steady: float = 0.3) -> None:
    """Until the router has answered with `version` for `steady` seconds: a delivery succeeds once its
    instances are ready, and the controller applies the route table right after — nginx takes a
    reload to follow, during which its old worker still accepts connections for 100 ms."""
    deadline = time.monotonic() + timeout
    since: float | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(sw.url, timeout=2) as response:
                ok = response.headers.get("X-Version") == version
        except OSError:
            ok = False
        now = time.monotonic()
        since = (since or now) if ok else None
        if since is not None and now - since >= steady:
            return
        time.sleep(0.01)
    raise AssertionError(f"the router did not serve {version} steadily within {timeout} s")


@by_router
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_good_release_is_delivered(stagewise: Stagewise, name: str) -> None:
    first_release(stagewise)
    load = users(stagewise)
    try:
        stagewise.apply("v2", STRATEGIES[name])
        status = stagewise.wait()
        time.sleep(0.5)
    finally:
        report = load.stop()
    assert status["phase"] == "Succeeded", (status["delivery"]["abort_reason"], status["events"][-12:])
    assert status["stable"] == "v2"
    assert report.by_version.get("v2", 0) > 0
    if name != "full":  # full recreates: users see the gap between the two releases
        assert_no_failures(report)
    before = stagewise.router_stats().release("v1").requests
    after = burst(stagewise, 200)
    assert after.by_version == {"v2": 200}
    assert stagewise.router_stats().release("v1").requests == before


@by_router
@pytest.mark.parametrize("name", ["canary", "blue-green", "waves", "cohorts"])
def test_a_release_that_fails_requests_is_rolled_back(stagewise: Stagewise, name: str) -> None:
    first_release(stagewise)
    load = users(stagewise)
    try:
        stagewise.apply("v3", STRATEGIES[name])
        status = stagewise.wait()
    finally:
        report = load.stop()
    assert status["phase"] == "RolledBack", status["delivery"]
    assert "Failed" in status["delivery"]["abort_reason"]
    assert status["stable"] == "v1"
    assert report.by_version.get("v3", 0) > 0, "the bad release was never tried"
    assert_no_more_requests_to(stagewise, "v3")


@by_router
def test_a_tail_latency_regression_is_rolled_back(stagewise: Stagewise) -> None:
    first_release(stagewise)
    load = users(stagewise)
    try:
        stagewise.apply("v4", CANARY)
        status = stagewise.wait()
    finally:
        load.stop()
    assert status["phase"] == "RolledBack", status["delivery"]
    assert "slower" in status["delivery"]["abort_reason"]
    assert_no_more_requests_to(stagewise, "v4")


def test_full_rolls_back_when_the_release_never_gets_ready(stagewise: Stagewise) -> None:
    first_release(stagewise)
    broken = [sys.executable, "-c", "import sys; sys.exit(3)", "{port}"]
    stagewise.apply("v5", FULL, command=broken, deadline="4s")
    status = stagewise.wait()
    assert status["phase"] == "RolledBack"
    assert "not ready" in status["delivery"]["abort_reason"]
    assert burst(stagewise, 100).by_version == {"v1": 100}


def burst(sw: Stagewise, n: int) -> LoadReport:
    """`n` requests from many users, some on the preview and header routes; waits for all."""
    return LoadInBackground(sw.url, connections=4, max_requests=n, max_seconds=20, headers_for=headers).start().join(30)


def assert_no_failures(report: LoadReport) -> None:
    assert report.non_2xx == 0 and report.socket_errors == 0, (
        report.status_counts, report.socket_error_kinds, report.socket_error_sample)


def assert_no_more_requests_to(sw: Stagewise, bad: str) -> None:
    served = sw.router_stats().release(bad).requests
    after = burst(sw, 400)
    assert after.by_version.get(bad, 0) == 0 and after.responses == 400
    assert sw.router_stats().release(bad).requests == served, "the router sent requests to the bad release"


def test_an_instance_that_dies_is_reported_and_replaced(stagewise: Stagewise) -> None:
    import json
    import os
    import signal

    first_release(stagewise)
    records = sorted((stagewise.state / "instances" / "shop").glob("shop-*.json"))
    victim = json.loads(records[0].read_text())
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = waiting.Deadline(20)

    def reported() -> bool:
        return any(victim["id"] in e["message"] for e in stagewise.status()["events"])

    def replaced() -> bool:
        live = [json.loads(p.read_text()) for p in (stagewise.state / "instances" / "shop").glob("shop-*.json")]
        return len(live) == 2 and all(r.get("ready_at") for r in live) and victim["id"] not in {r["id"] for r in live}

    assert waiting.blocking_until(reported, timeout=deadline.remaining, interval=0.1), "the death was never reported"
    assert waiting.blocking_until(replaced, timeout=deadline.remaining, interval=0.1), "the instance was not replaced"
    assert burst(stagewise, 100).by_version == {"v1": 100}
