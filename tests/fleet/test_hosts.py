"""Hosts that fail: one lost mid-wave (its link set down), one whose SSH key nobody knows, and the
pre-flight checks that refuse a delivery before its first instance starts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from stagewise.basics import waiting
from stagewise.errors import ServerRefusedError
from stagewise.examples.load import LoadInBackground
from stagewise.testing.hosts import Fleet
from tests.fleet.conftest import FLEET_SIZE, FleetStagewise, all_events, wait_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WAVES: dict[str, Any] = {"phased": {"waves": [1], "bake": "3s"}}
DETECTION_LIMIT = 10.0
"""Seconds from a host's loss to the event naming it unreachable."""


def at_step(sw: FleetStagewise, step: int, timeout: float = 60) -> None:
    if waiting.blocking_until(lambda: sw.status()["delivery"]["step"] >= step, timeout=timeout):
        return
    raise AssertionError(f"never reached step {step}: {sw.status()['delivery']}")


def lose_a_host_mid_wave(sw: FleetStagewise, max_unreachable: int) -> tuple[dict[str, Any], float, str]:
    """Deliver v2 in waves of one host, take host 3 off the network during wave 2; (status, detection s, host)."""
    sw.platform_options = {"maxUnreachable": max_unreachable}
    sw.apply("v1", {"full": {}})
    assert sw.wait()["phase"] == "Succeeded"
    sw.apply("v2", WAVES)
    at_step(sw, 2)
    lost = sw.fleet.hosts[2]
    downed = time.time()
    sw.fleet.down(lost)
    event = wait_event(sw, f"host {lost.target} unreachable", timeout=30)
    detected = event["at"] - downed
    print(f"host {lost.target} reported unreachable {detected:.1f}s after its link went down")
    after_detection = LoadInBackground(sw.url, connections=4, max_requests=300, max_seconds=20).start().join(30)
    assert after_detection.responses == 300 and after_detection.non_2xx == 0 and after_detection.socket_errors == 0, (
        "the router still sent requests to the lost host's instance", after_detection.socket_error_kinds)
    return sw.wait(timeout=90), detected, lost.target


def test_a_host_lost_mid_wave_rolls_back_with_max_unreachable_0(on_hosts: FleetStagewise) -> None:
    status, detected, lost = lose_a_host_mid_wave(on_hosts, 0)
    assert detected <= DETECTION_LIMIT, f"the loss was reported after {detected:.1f}s"
    assert status["phase"] == "RolledBack", status["delivery"]
    reason = status["delivery"]["abort_reason"]
    assert lost in reason and "unreachable" in reason and "maxUnreachable 0" in reason
    assert not any("failed in this step" in e["message"] for e in all_events(on_hosts)), \
        "an unreachable host was counted as failed instances"
    running = on_hosts.processes()
    assert sum(running) == FLEET_SIZE + 1, running  # the lost host's instance still runs, unreachable
    on_hosts.fleet.up(on_hosts.fleet.hosts[2])
    wait_event(on_hosts, f"host {lost} is reachable again", timeout=30)
    assert waiting.blocking_until(lambda: sum(on_hosts.processes()) == FLEET_SIZE, timeout=30, interval=0.1), \
        "the surplus instance was not stopped once its host came back"


def test_a_host_lost_mid_wave_is_gone_on_without_with_max_unreachable_1(on_hosts: FleetStagewise) -> None:
    status, detected, _ = lose_a_host_mid_wave(on_hosts, 1)
    assert detected <= DETECTION_LIMIT
    assert status["phase"] == "Succeeded", status["delivery"]
    assert status["stable"] == "v2"
    up = [n for i, n in enumerate(on_hosts.processes()) if i != 2]
    assert sum(up) == FLEET_SIZE, f"the lost host's instance was not replaced on the others: {up}"


def test_an_unknown_host_key_is_refused_by_name(on_hosts: FleetStagewise, tmp_path: Path) -> None:
    fleet: Fleet = on_hosts.fleet
    strange = fleet.hosts[1]
    known = tmp_path / "known_hosts"
    known.write_text("".join(line + "\n" for line in fleet.known_hosts.read_text().splitlines()
                             if not line.startswith(strange.address + " ")))
    platform = on_hosts.platform(ssh={**fleet.ssh_options(), "knownHosts": str(known), "connectTimeout": "2s"})
    assert on_hosts.client is not None
    with pytest.raises(ServerRefusedError) as refused:
        on_hosts.client.post("/api/v1/apply", {"spec": on_hosts.spec("v1", {"full": {}}, platform=platform),
                                               "filename": "v1.yaml"})
    message = str(refused.value)
    assert strange.target in message and "host key" in message and "ssh-keyscan" in message, message
    assert "pre-flight" in message
    assert on_hosts.processes() == [0] * FLEET_SIZE, "an instance started although the delivery was refused"


def test_a_missing_program_is_refused_before_any_instance_starts(on_hosts: FleetStagewise) -> None:
    spec = json.loads(on_hosts.spec("v1", {"full": {}}))
    spec["spec"]["release"]["run"]["command"][0] = "no-such-program-here"
    assert on_hosts.client is not None
    with pytest.raises(ServerRefusedError) as refused:
        on_hosts.client.post("/api/v1/apply", {"spec": json.dumps(spec), "filename": "v1.yaml"})
    message = str(refused.value)
    assert all(h.target in message for h in on_hosts.fleet.hosts) and "program" in message, message
    assert on_hosts.processes() == [0] * FLEET_SIZE
