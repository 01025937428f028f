"""`stagewise demo --hosts N`: the demo's canary and rollback on N hosts over SSH.

The hosts are network namespaces made for the demo (stagewise.testing.hosts):
each runs Debian's OpenSSH server on its own private address, as its own
user; the release is the bundled sample service, shipped to every host as an
artifact (a directory holding app.py) and run there by the host's python3.
The router runs on this machine and sends the users' requests to the hosts.
Root only (namespaces, users, sshd); everything made is removed at the end,
also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

from rich.console import Console

import stagewise.examples.sample_service as sample_service
from stagewise.cli.demo import BAD, SCENARIOS, SERVICE, Demo, run_demo, spec, stop_service
from stagewise.core.spec import PlatformSpec
from stagewise.platforms.ssh import SshPlatform
from stagewise.routers import get_router
from stagewise.testing.hosts import Fleet, unavailable_reason


class HostsDemo(Demo):
    def __init__(self, console: Console, router: str, count: int) -> None:
        super().__init__(console, router)
        self.count = count
        self.fleet: Fleet | None = None
        self.scenarios = [s for s in SCENARIOS if s[1] == "canary"]
        self.artifact = self.tmp / "artifact"
        self.artifact.mkdir()
        shutil.copy(sample_service.__file__, self.artifact / "app.py")

    def run(self) -> list[Any]:
        self.fleet = Fleet(self.count)
        self.fleet.create()
        self.where = f" spread over {self.count} hosts: " + ", ".join(h.target for h in self.fleet.hosts)
        return super().run()

    def platform(self) -> dict[str, Any]:
        assert self.fleet is not None
        return {"kind": "ssh", "hosts": [h.target for h in self.fleet.hosts], "ssh": self.fleet.ssh_options(),
                "root": "~/.stagewise"}

    def spec_text(self, version: str, strategy: dict[str, Any]) -> str:
        doc = json.loads(spec(self.listen, version, strategy, self.router))
        release = doc["spec"]["release"]
        release["run"]["command"] = ["python3", "app.py", "--host", "{host}", "--port", "{port}",
                                     "--version", version, *BAD.get(version, [])]
        release["artifact"] = str(self.artifact)
        doc["spec"]["platform"] = self.platform()
        return json.dumps(doc, indent=2)

    def stop_data_plane(self) -> None:
        if self.fleet is None:
            return

        platform = SshPlatform(self.state, PlatformSpec.model_validate(self.platform()))
        asyncio.run(stop_service(SERVICE, platform, get_router(self.router, state_dir=self.state)))

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            if self.fleet is not None:
                self.fleet.close()


def run_hosts_demo(*, count: int, as_json: bool, console: Console, router: str) -> int:
    reason = unavailable_reason()
    if reason is not None:
        console.print(f"stagewise demo --hosts: {reason}; run it as root, or run `stagewise demo` without --hosts",
                      style="red", highlight=False)
        return 2
    return run_demo(as_json=as_json, console=console, router=router,
                    make=lambda quiet, kind: HostsDemo(quiet, kind, count))
