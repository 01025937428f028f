"""The server is SIGKILLed at every step of a phased delivery over four hosts, and started again each time.

The delivery must end as it ends without the kills, no host may ever run two
instances of the service (the hosts' processes are counted after every
restart and throughout), and the users — a load generator running all along —
must see no failed request: the instances run on the hosts, the router runs
apart, and a restarted controller re-adopts every instance from the records
on the hosts.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from stagewise.examples.load import LoadInBackground
from tests.fleet.conftest import FLEET_SIZE, FleetStagewise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WAVES: dict[str, Any] = {"phased": {"waves": [1, "50%"], "bake": "1s",
                                    "analysis": {"templates": ["errors"], "duration": "2s"}}}
STEPS = 4
"""waves [1, 50%] over 4 hosts: 1 host, 2 hosts (one instance at a time), 1 host; then the promotion."""


def watch(sw: FleetStagewise, until: int, most: list[int]) -> dict[str, Any]:
    """Until the delivery stands at step `until` or ended; keeps the most instances seen on each host."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        most[:] = [max(a, b) for a, b in zip(most, sw.processes(), strict=True)]
        delivery: dict[str, Any] = sw.status()["delivery"]
        if delivery["step"] >= until or delivery["phase"] in ("Succeeded", "RolledBack", "Failed"):
            return delivery
        time.sleep(0.03)
    raise AssertionError(f"the delivery never reached step {until}")


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_a_killed_server_at_every_step_changes_nothing_on_the_hosts(on_hosts: FleetStagewise, version: str) -> None:
    sw = on_hosts
    sw.apply("v1", {"full": {}})
    assert sw.wait()["phase"] == "Succeeded"
    most = [0] * FLEET_SIZE
    load = LoadInBackground(sw.url, connections=4, rate=250, max_seconds=150, max_requests=40_000).start()
    kills = 0
    try:
        sw.apply(version, WAVES)
        assert sw.status()["delivery"]["steps"] == STEPS + 1
        for step in range(1, STEPS + 2):
            delivery = watch(sw, step, most)
            if delivery["phase"] in ("Succeeded", "RolledBack", "Failed"):
                break
            sw.kill()
            kills += 1
            time.sleep(0.3)  # the hosts go on without a controller for a moment
            sw.start()
            most[:] = [max(a, b) for a, b in zip(most, sw.processes(), strict=True)]
        status = sw.wait(timeout=120)
        time.sleep(0.3)
    finally:
        report = load.stop()
    expected = "Succeeded" if version == "v2" else "RolledBack"
    assert status["phase"] == expected, (status["delivery"], sw.log()[-3000:])
    assert kills >= (STEPS + 1 if version == "v2" else 1)
    assert max(most) <= 1, f"a host ran two instances of the service at once: {most}"
    assert sw.processes() == [1] * FLEET_SIZE
    own = report.failed_by_version.get("v3", 0)
    assert report.non_2xx + report.socket_errors - own == 0, (
        report.status_counts, report.socket_error_kinds, report.socket_error_sample)
    print(f"{version}: {kills} kills, {report.requests} requests, {report.non_2xx + report.socket_errors} failed "
          f"({own} answered by the bad release), most instances on a host at once: {max(most)}")
