"""The server is killed with SIGKILL at each step of a delivery and started again.

Every run must end in the phase a run without the kill ends in, and the users
— a load generator running throughout — must see no failed request: the data
plane (router, instances) runs outside the server, and the controller
re-reads its committed state and carries on.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from stagewise.basics import waiting
from stagewise.examples.load import LoadInBackground
from tests.e2e.conftest import Stagewise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CANARY: dict[str, Any] = {"canary": {"steps": [
    {"setWeight": 30}, {"pause": {"duration": "1s"}}, {"setWeight": 60},
    {"analysis": {"templates": ["errors"], "duration": "2s"}},
]}}
BLUE_GREEN: dict[str, Any] = {"blueGreen": {
    "prePromotionAnalysis": {"templates": ["errors"], "duration": "2s"},
    "autoPromotion": {"after": "1s"}, "scaleDownDelay": "1s",
}}
PLANS = {"canary": (CANARY, 7), "blue-green": (BLUE_GREEN, 6)}
"""Strategy, and the number of steps its plan has."""

CASES = [(name, step) for name, (_, steps) in PLANS.items() for step in [None, *range(1, steps + 1)]]


@pytest.mark.parametrize(("name", "kill_at"), CASES,
                         ids=[f"{n}-{'nokill' if s is None else f'step{s}'}" for n, s in CASES])
def test_a_killed_server_changes_nothing_users_see(stagewise: Stagewise, name: str, kill_at: int | None) -> None:
    strategy, steps = PLANS[name]
    stagewise.apply("v1", {"full": {}})
    assert stagewise.wait()["phase"] == "Succeeded"
    load = LoadInBackground(stagewise.url, connections=4, rate=200, max_seconds=90, max_requests=30_000,
                            headers_for=lambda i: {"X-Preview": "1"} if i % 4 == 0 else {}).start()
    try:
        stagewise.apply("v2", strategy)
        assert stagewise.status()["delivery"]["steps"] == steps
        if kill_at is not None:
            killed_at = wait_for_step(stagewise, kill_at)
            stagewise.kill()
            time.sleep(0.3)  # the world goes on without a controller for a moment
            stagewise.start()
            assert killed_at >= kill_at
        status = stagewise.wait()
        time.sleep(0.3)
    finally:
        report = load.stop()
    assert status["phase"] == "Succeeded", (status["delivery"], stagewise.log())
    assert report.requests > 100
    assert report.non_2xx == 0 and report.socket_errors == 0, (
        report.status_counts, report.socket_error_kinds, report.socket_error_sample, report.refusal_sample,
        stagewise.status()["events"][-15:])
    assert set(report.by_version) <= {"v1", "v2"} and report.by_version.get("v2", 0) > 0


def wait_for_step(sw: Stagewise, step: int, timeout: float = 60) -> int:
    """Block until the delivery stands at `step` (1-based) or later; returns where it stands."""
    def reached() -> dict[str, Any] | None:
        d: dict[str, Any] = sw.status()["delivery"]
        return d if d["step"] >= step or d["phase"] in ("Succeeded", "RolledBack", "Failed") else None

    at = waiting.blocking_until(reached, timeout=timeout, interval=0.02)
    if at is None:
        raise AssertionError(f"the delivery never reached step {step}")
    return int(at["step"])
