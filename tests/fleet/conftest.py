"""Fixtures of the fleet tests: deliveries to namespace hosts over SSH: a fleet per test module, a server driving it.

The hosts (stagewise.testing.hosts) are network namespaces with their own
sshd, user and address; the service's router runs on this machine and sends
requests to the hosts' addresses. Each test gets its own root directory on
the hosts, so tests sharing a module's fleet never see each other's releases.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stagewise.examples.sample_service as sample_service
from stagewise.basics import waiting
from stagewise.cli.demo import stop_service
from stagewise.core.spec import PlatformSpec
from stagewise.platforms.ssh import SshPlatform
from stagewise.routers import get_router
from stagewise.testing.hosts import Fleet, TestHost, unavailable_reason
from tests.e2e.conftest import SERVICE, Stagewise
from tests.routers.programs import need_router

FLEET_SIZE = 4
BAD = {"v3": ["--fail-rate", "0.08"], "v4": ["--slow-every", "10", "--slow-ms", "100"]}
"""v3 fails 8% of its requests; v4 is slow on every tenth."""


def need_hosts() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the fleet tests, but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    need_hosts()
    with Fleet(FLEET_SIZE) as hosts:
        yield hosts


def make_artifacts(root: Path) -> dict[str, Path]:
    """One directory per version: the sample service as app.py, and a VERSION file."""
    out = {}
    for version in ("v1", "v2", "v3", "v4"):
        directory = root / "artifacts" / version
        directory.mkdir(parents=True)
        shutil.copy(sample_service.__file__, directory / "app.py")
        (directory / "VERSION").write_text(version + "\n")
        out[version] = directory
    return out


class FleetStagewise(Stagewise):
    """A server whose service runs on the fleet's hosts."""

    def __init__(self, root: Path, router: str, fleet: Fleet) -> None:
        super().__init__(root, router)
        self.fleet = fleet
        self.artifacts = make_artifacts(root)
        self.host_root = f"~/.sw-{secrets.token_hex(4)}"
        self.platform_options: dict[str, Any] = {}

    @staticmethod
    def _tick(options: tuple[str, ...]) -> list[str]:
        """The server's own tick (0.25 s), not the shorter one of the other end-to-end servers: the crash test
        kills the server at every step, the last included, and finds a step standing only for that long."""
        return []

    def platform(self, **options: Any) -> dict[str, Any]:
        return {
            "kind": "ssh", "hosts": [h.target for h in self.fleet.hosts], "root": self.host_root,
            "ssh": {**self.fleet.ssh_options(), "connectTimeout": "2s"}, **self.platform_options, **options,
        }

    def spec(self, version: str, strategy: dict[str, Any], *, deadline: str = "30s", platform: dict[str, Any]
             | None = None, replicas: int | None = None) -> str:
        command = ["python3", "app.py", "--host", "{host}", "--port", "{port}", "--version", version,
                   *BAD.get(version, [])]
        body: dict[str, Any] = {
            "listen": self.listen, "router": {"kind": self.router}, "platform": platform or self.platform(),
            "release": {"version": version, "artifact": str(self.artifacts[version]), "run": {"command": command},
                        "readiness": {"http": "/healthz", "timeout": "10s"}},
            "strategy": strategy,
            "analysis": {"errors": {"metric": "error-rate"}, "latency": {"metric": "latency"}},
            "progressDeadline": deadline,
        }
        if replicas is not None:
            body["replicas"] = replicas
        elif "perHost" not in body["platform"]:
            body["replicas"] = FLEET_SIZE
        return json.dumps({"apiVersion": "stagewise.dev/v1alpha1", "kind": "Service",
                           "metadata": {"name": SERVICE}, "spec": body})

    def apply(self, version: str, strategy: dict[str, Any], **options: Any) -> dict[str, Any]:
        assert self.client is not None
        result: dict[str, Any] = self.client.post(
            "/api/v1/apply", {"spec": self.spec(version, strategy, **options), "filename": f"{version}.yaml"})
        return result

    def processes(self) -> list[int]:
        """Instances of this test's service running on each host, counted by the host's processes."""
        return [len(self.fleet.processes(h, "python3 app.py ")) for h in self.fleet.hosts]

    def copies(self) -> int:
        path = self.state / "ssh" / "services" / f"{SERVICE}.json"
        return int(json.loads(path.read_text()).get("copies", 0)) if path.exists() else 0

    def cleanup(self) -> None:
        self.stop()

        for host in self.fleet.hosts:
            self.fleet.up(host)
        platform = SshPlatform(self.state, PlatformSpec.model_validate(self.platform()))
        asyncio.run(stop_service(SERVICE, platform, get_router(self.router, state_dir=self.state), grace=2))


@pytest.fixture
def on_hosts(request: pytest.FixtureRequest, fleet: Fleet) -> Iterator[FleetStagewise]:
    """A running server whose service runs on the module's fleet; builtin router unless parametrised."""
    router = getattr(request, "param", "builtin")
    need_router(router)
    with FleetStagewise.running("sw-fleet-", router, fleet) as sw:
        yield sw


def wait_event(sw: Stagewise, needle: str, timeout: float = 20) -> dict[str, Any]:
    """The first event whose message holds `needle`, waiting for it."""
    found = waiting.blocking_until(lambda: next((e for e in all_events(sw) if needle in e["message"]), None),
                                   timeout=timeout)
    if found is not None:
        return dict(found)
    raise AssertionError(f"no event with {needle!r} within {timeout}s: "
                         + json.dumps(all_events(sw)[-15:], indent=1))


def all_events(sw: Stagewise) -> list[dict[str, Any]]:
    assert sw.client is not None
    events: list[dict[str, Any]] = sw.client.get(f"/api/v1/services/{SERVICE}/events?limit=1000")
    return events


def host_of(fleet: Fleet, index: int) -> TestHost:
    return fleet.hosts[index]
