"""Releases on hosts beyond the strategies: nginx as the router, pruning to keepReleases, a release that
never gets ready, `undo` without a copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stagewise.examples.load import LoadReport
from tests.fleet.conftest import FLEET_SIZE, FleetStagewise
from tests.fleet.test_strategies import CANARY, FULL, WAVES, deliver, failed_but_bad, users

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.mark.parametrize("on_hosts", ["nginx"], indirect=True)
def test_nginx_routes_to_the_hosts(on_hosts: FleetStagewise) -> None:
    sw = on_hosts
    sw.apply("v1", FULL)
    assert sw.wait()["phase"] == "Succeeded"
    status, report = deliver(sw, "v2", CANARY)
    assert status["phase"] == "Succeeded", status["delivery"]
    assert failed_but_bad(report, None) == 0, (report.status_counts, report.socket_error_kinds)
    assert report.by_version.get("v2", 0) > 0


def test_old_releases_are_pruned_but_never_the_stable_or_the_candidate(on_hosts: FleetStagewise) -> None:
    sw = on_hosts
    sw.platform_options = {"keepReleases": 2}
    releases = Path(sw.fleet.hosts[0].home) / sw.host_root.removeprefix("~/") / "shop" / "releases"
    for version in ("v1", "v2", "v3", "v4"):
        sw.apply(version, FULL)
        assert sw.wait()["phase"] == "Succeeded"
        assert sorted(p.name for p in releases.iterdir()) == {
            "v1": ["v1"], "v2": ["v1", "v2"], "v3": ["v2", "v3"], "v4": ["v3", "v4"]}[version]
    copies = sw.copies()
    sw.apply("v2", CANARY)  # pruned from the hosts: copied again, once to each
    status, _ = deliver_running(sw)
    assert status["phase"] == "Succeeded" and sw.copies() == copies + FLEET_SIZE
    assert sorted(p.name for p in releases.iterdir()) == ["v2", "v4"]


def test_full_rolls_back_when_the_release_never_gets_ready(on_hosts: FleetStagewise) -> None:
    sw = on_hosts
    sw.apply("v1", FULL)
    assert sw.wait()["phase"] == "Succeeded"
    sw.artifacts["v2"].joinpath("app.py").write_text("import sys\nsys.exit(3)\n")
    sw.apply("v2", FULL, deadline="4s")
    status = sw.wait(timeout=60)
    assert status["phase"] == "RolledBack", status["delivery"]
    assert "not ready" in status["delivery"]["abort_reason"]
    copies = sw.copies()
    sw.apply("v1", WAVES)  # apply the stable release again: nothing to deliver, nothing copied
    assert sw.processes() == [1] * FLEET_SIZE
    assert sw.copies() == copies


def test_undo_reuses_the_release_still_on_the_hosts(on_hosts: FleetStagewise) -> None:
    sw = on_hosts
    sw.apply("v1", FULL)
    assert sw.wait()["phase"] == "Succeeded"
    status, _ = deliver(sw, "v2", CANARY)
    assert status["phase"] == "Succeeded"
    copies = sw.copies()
    assert copies == 2 * FLEET_SIZE
    assert sw.client is not None
    sw.client.post("/api/v1/services/shop/undo", {})
    status, report = deliver_running(sw)
    assert status["phase"] == "Succeeded" and status["stable"] == "v1"
    assert failed_but_bad(report, None) == 0
    assert sw.copies() == copies, "undo copied an artifact although v1 was still unpacked on every host"


def deliver_running(sw: FleetStagewise) -> tuple[dict[str, Any], LoadReport]:
    load = users(sw)
    try:
        status = sw.wait(timeout=120)
    finally:
        report = load.stop()
    return status, report
