"""A real HAProxy killed with SIGKILL in the middle of a canary: the controller puts the routes back.

The managed HAProxy runs detached from the server. When it dies, the
router's `stats` report no data plane (an empty boot), the controller forgets
the table it applied, and its next tick applies the table again — which starts
HAProxy on the configuration stagewise keeps, with the canary's weights. The
canary holds at a manual pause while HAProxy is down, so the weights it must
get back cannot move under the test on a slow machine; once they are back it
is promoted and finishes as if nothing happened. The test reports how long the
weights took to come back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from stagewise.basics import waiting
from stagewise.errors import RouterError
from stagewise.examples.load import LoadInBackground
from stagewise.routers.common import process
from stagewise.routers.haproxy.api import RuntimeApi
from tests.e2e.conftest import Stagewise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CANARY: dict[str, Any] = {"canary": {"steps": [
    {"setWeight": 50}, {"pause": {}}, {"setWeight": 80}, {"pause": {"duration": "1s"}},
]}}


@pytest.mark.parametrize("stagewise", ["haproxy"], indirect=True)
def test_haproxy_killed_mid_canary_gets_its_routes_back(stagewise: Stagewise) -> None:
    stagewise.apply("v1", {"full": {}})
    assert stagewise.wait()["phase"] == "Succeeded"
    folder = stagewise.state / "haproxy" / "shop"
    load = LoadInBackground(stagewise.url, connections=4, rate=200, max_seconds=60, max_requests=20_000).start()
    try:
        stagewise.apply("v2", CANARY)
        # at the pause the 50% step's table is fully applied (not caught between its two batches of commands)
        stagewise.wait({"Paused"}, timeout=30)
        before = served_weights(folder)
        assert before and before.get("v2") and before.get("v1"), before
        master = process.read_pid(folder / "haproxy.pid")
        assert master is not None
        os.kill(master, signal.SIGKILL)
        killed = time.monotonic()
        restored = wait_for_weights(folder, before, timeout=10, after=master)
        seconds = restored - killed
        assert stagewise.status()["phase"] == "Paused"
        assert stagewise.client is not None
        stagewise.client.post("/api/v1/services/shop/promote")
        status = stagewise.wait()
    finally:
        report = load.stop()
    print(f"\nHAProxy SIGKILLed mid-canary: weights restored after {seconds:.2f} s; delivery {status['phase']}; "
          f"users saw {report.non_2xx} non-2xx and {report.socket_errors} socket errors of {report.requests}")
    assert status["phase"] == "Succeeded", status["delivery"]
    assert seconds < 5.0
    assert report.by_version.get("v2", 0) > 0


def wait_for_weights(folder: Any, weights: dict[str, int], timeout: float, after: int | None = None) -> float:
    """Until HAProxy (a new master, if `after` is given) serves backend `all` with these release weights."""
    def served() -> bool:
        master = process.read_pid(folder / "haproxy.pid")
        return master is not None and master != after and served_weights(folder) == weights

    if waiting.blocking_until(served, timeout=timeout, interval=0.02):
        return time.monotonic()
    raise AssertionError(f"HAProxy did not serve weights {weights} within {timeout} s: {served_weights(folder)}")


def served_weights(folder: Any) -> dict[str, int] | None:
    """Release → weight of (the last listed of) its serving servers in backend `all`, or None if HAProxy is down."""
    async def ask() -> dict[str, int] | None:
        try:
            servers = await RuntimeApi(folder / "admin.sock", timeout=1.0).servers()
        except RouterError:
            return None
        out: dict[str, int] = {}
        for s in servers:
            if s.backend == "all" and s.status not in ("DRAIN", "MAINT"):
                out[s.name.split(":")[0]] = s.weight
        return out
    return asyncio.run(ask())
