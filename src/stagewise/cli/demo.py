"""`stagewise demo`: five deliveries of a sample service, on this machine, in about a minute.

Everything is real: a stagewise server in its own process, a router (the
builtin one, or HAProxy or nginx with `--router`), the bundled sample service's instances as local processes, and a
bounded load generator on loopback. It cleans up every process it started,
also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from stagewise.basics import waiting
from stagewise.basics.ports import free_port
from stagewise.cli.client import Client
from stagewise.examples.load import LoadInBackground
from stagewise.platforms import Platform
from stagewise.platforms.local import LocalPlatform
from stagewise.routers import Router, get_router

SERVICE = "demo"
REPLICAS = 4
RATE = 200.0
"""Requests per second the demo's users send."""
BAD = {"v3": ["--fail-rate", "0.1"], "v4": ["--slow-every", "20", "--slow-ms", "100"]}
"""v3 fails about 10% of requests; v4 delays every 20th response by 100 ms."""
SERVER_START_TIMEOUT = 20.0

CANARY = {"canary": {"steps": [
    {"setWeight": 25}, {"analysis": {"templates": ["errors", "latency"], "duration": "6s"}},
    {"setWeight": 50}, {"analysis": {"templates": ["errors", "latency"], "duration": "4s"}},
]}}
BLUE_GREEN = {"blueGreen": {
    "preview": {"header": {"X-Preview": "1"}},
    "prePromotionAnalysis": {"templates": ["errors", "latency"], "duration": "10s"},
    "autoPromotion": {"after": "1s"},
    "scaleDownDelay": "3s",
}}
PHASED = {"phased": {"waves": [1, "50%"], "bake": "1s", "maxUnavailable": 1,
                     "analysis": {"templates": ["errors"], "duration": "2s"}}}
FULL: dict[str, Any] = {"full": {}}

SCENARIOS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("canary v1→v2", "canary", "v1", "v2", CANARY),
    ("canary v2→v3", "canary", "v2", "v3", CANARY),
    ("blue-green v2→v4", "blue-green", "v2", "v4", BLUE_GREEN),
    ("phased v2→v1", "phased", "v2", "v1", PHASED),
    ("full v1→v2", "full", "v1", "v2", FULL),
]


@dataclass
class Result:
    name: str
    strategy: str
    from_: str
    to: str
    outcome: str
    duration_s: float
    requests: int
    failed_requests: int
    requests_to_bad_release: int

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["from"] = out.pop("from_")
        return out


def spec(listen: str, version: str, strategy: dict[str, Any], router: str = "builtin") -> str:
    command = [sys.executable, "-m", "stagewise.examples.sample_service", "--port", "{port}",
               "--version", version, *BAD.get(version, [])]
    doc = {
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": SERVICE},
        "spec": {
            "listen": listen, "replicas": REPLICAS, "router": {"kind": router},
            "release": {"version": version, "run": {"command": command},
                        "readiness": {"http": "/healthz", "timeout": "15s"}},
            "strategy": strategy,
            "analysis": {
                "errors": {"provider": "router", "metric": "error-rate", "judge": "sequential", "alpha": 0.05},
                "latency": {"provider": "router", "metric": "latency", "judge": "sequential", "alpha": 0.05},
            },
            "progressDeadline": "60s",
        },
    }
    return json.dumps(doc, indent=2)  # JSON is YAML


class Demo:
    def __init__(self, console: Console, router: str = "builtin") -> None:
        self.console = console
        self.router = router
        self.tmp = Path(tempfile.mkdtemp(prefix="stagewise-demo-"))
        self.state = self.tmp / "state"
        self.server: subprocess.Popen[bytes] | None = None
        self.listen = f"127.0.0.1:{free_port()}"
        self.scenarios = SCENARIOS
        self.where = ""

    def stop_data_plane(self) -> None:
        asyncio.run(_stop_everything(self.state, self.router))

    def spec_text(self, version: str, strategy: dict[str, Any]) -> str:
        return spec(self.listen, version, strategy, self.router)

    def start_server(self) -> Client:
        self.state.mkdir(parents=True)
        log = open(self.tmp / "server.log", "wb")  # noqa: SIM115 - the child keeps it
        self.server = subprocess.Popen(
            [sys.executable, "-m", "stagewise", "server", "--state", str(self.state), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        client = waiting.blocking_until(self._answering_client, timeout=SERVER_START_TIMEOUT, interval=0.1)
        if client is None:
            raise RuntimeError(f"the server did not come up within {SERVER_START_TIMEOUT:.0f} s")
        return client

    def _answering_client(self) -> Client | None:
        """A client of the demo's server once it answers; None before. RuntimeError if the server exited."""
        assert self.server is not None
        if self.server.poll() is not None:
            raise RuntimeError(f"the server exited: {(self.tmp / 'server.log').read_text()[-2000:]}")
        return Client.answering(self.state)

    def deliver(self, client: Client, version: str, strategy: dict[str, Any], timeout: float = 120) -> str:
        client.post("/api/v1/apply", {"spec": self.spec_text(version, strategy), "filename": f"{version}.yaml"})
        last = ""

        def finished() -> str | None:
            nonlocal last
            d = client.get(f"/api/v1/services/{SERVICE}")["delivery"]
            line = f"  {d['phase']:<11} step {d['step']}/{d['steps']} {d['step_title']}"
            if line != last:
                self.console.print(line, highlight=False, style="dim")
                last = line
            if d["phase"] not in ("Succeeded", "RolledBack", "Failed"):
                return None
            if d.get("abort_reason"):
                self.console.print(f"  reason: {d['abort_reason']}", highlight=False, style="yellow")
            return str(d["phase"])

        phase = waiting.blocking_until(finished, timeout=timeout, interval=0.2)
        if phase is None:
            raise RuntimeError(f"delivery of {version} did not finish within {timeout:.0f} s")
        return phase

    def run(self) -> list[Result]:
        client = self.start_server()
        try:
            self.console.print(f"[bold]stagewise demo[/] — state in {self.state}, service on http://{self.listen}"
                               f" through the {self.router} router")
            self.console.print(f"first release v1 on {REPLICAS} instances{self.where}")
            self.deliver(client, "v1", CANARY)
            results = []
            for name, strategy, old, new, strat in self.scenarios:
                self.console.print(f"[bold]{name}[/] ({strategy})")
                load = LoadInBackground(
                    f"http://{self.listen}/", connections=8, rate=RATE, max_seconds=150, max_requests=100_000,
                    headers_for=lambda i: {"X-Preview": "1"} if i % 4 == 0 else {},
                ).start()
                started = time.monotonic()
                try:
                    outcome = self.deliver(client, new, strat)
                    time.sleep(0.5)  # requests in flight at the end still count
                finally:
                    report = load.stop()
                bad = report.by_version.get(new, 0) if new in BAD else 0
                results.append(Result(
                    name=name, strategy=strategy, from_=old, to=new, outcome=outcome,
                    duration_s=round(time.monotonic() - started, 1), requests=report.requests,
                    failed_requests=report.non_2xx + report.socket_errors,
                    requests_to_bad_release=bad,
                ))
            return results
        finally:
            client.close()

    def cleanup(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if self.state.exists():
            self.stop_data_plane()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _stop_everything(state: Path, kind: str = "builtin") -> None:
    await stop_service(SERVICE, LocalPlatform(state_dir=state), get_router(kind, state_dir=state))


async def stop_service(service: str, platform: Platform, router: Router, grace: float = 3) -> None:
    """Stop every instance of `service` and its router, then close both drivers (the demo's and tests' cleanup)."""
    try:
        view = await platform.observe(service=service, releases={})
        await platform.stop(service=service, ids=[i.id for i in view.instances], grace=grace)
        await router.stop(service=service)
    finally:
        await platform.close()
        await router.close()


def table(results: list[Result]) -> Table:
    t = Table(title="stagewise demo")
    for col in ("scenario", "strategy", "outcome", "duration", "requests", "failed", "to bad release"):
        t.add_column(col, justify="right" if col in ("duration", "requests", "failed", "to bad release") else "left")
    for r in results:
        style = {"Succeeded": "green", "RolledBack": "yellow"}.get(r.outcome, "red")
        t.add_row(r.name, r.strategy, f"[{style}]{r.outcome}[/]", f"{r.duration_s:.1f}s", f"{r.requests:,}",
                  f"{r.failed_requests:,}", f"{r.requests_to_bad_release:,}" if r.to in BAD else "-")
    return t


EXPECTED = {"canary v1→v2": "Succeeded", "canary v2→v3": "RolledBack", "blue-green v2→v4": "RolledBack",
            "phased v2→v1": "Succeeded", "full v1→v2": "Succeeded"}


def run_demo(*, as_json: bool, console: Console, router: str = "builtin",
             make: Callable[[Console, str], Demo] = Demo) -> int:
    quiet = Console(file=open(os.devnull, "w")) if as_json else console  # noqa: SIM115
    demo = make(quiet, router)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        results = demo.run()
    except KeyboardInterrupt:
        console.print("interrupted; cleaning up", style="yellow")
        return 130
    finally:
        demo.cleanup()
        signal.signal(signal.SIGTERM, previous)
        if quiet is not console:
            quiet.file.close()
    if as_json:
        print(json.dumps({"scenarios": [r.as_json() for r in results]}, indent=2))
    else:
        console.print(table(results))
    ok = all(EXPECTED[r.name] == r.outcome for r in results)
    return 0 if ok else 1


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
