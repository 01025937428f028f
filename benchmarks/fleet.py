"""Deliveries to namespace hosts over SSH: how long they take, and how fast a lost host stops taking traffic.

    .venv/bin/python benchmarks/fleet.py [--sizes 4 8 16] [--json]

Root only: the hosts are network namespaces, each with its own OpenSSH server,
user and address (stagewise.testing.hosts), made once for the largest size.

1. Time to deliver: a first release (its artifact copied to every host,
   unpacked, one instance started per host, each ready) to 4, 8 and 16 hosts,
   with `ssh.maxParallel` 1 and 16, side by side in one run; each case on a
   fresh root directory on the hosts, so each copies its artifact again, and a
   fresh server (so each opens its SSH connections again).
2. Time from a host's loss to no traffic on it: 4 hosts serving, users sending
   requests through the builtin router; one host's link is set down. Reported:
   the seconds until the controller reported it unreachable (the same tick
   takes its instance out of the route table), the seconds from the loss to the
   start of the last user request that failed, and how many failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import stagewise.examples.sample_service as sample_service
from stagewise.basics import waiting
from stagewise.basics.ports import free_port
from stagewise.cli.client import Client
from stagewise.testing.hosts import Fleet, unavailable_reason

SERVICE = "bench"


class Server:
    def __init__(self, root: Path) -> None:
        self.state = root / "state"
        self.state.mkdir(parents=True)
        log = open(root / "server.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stagewise", "server", "--state", str(self.state), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = waiting.blocking_until(lambda: Client.answering(self.state), timeout=20)
        if client is None:
            raise RuntimeError(f"the server did not answer within 20 s: {(root / 'server.log').read_text()[-2000:]}")
        self.client = client

    def deliver(self, spec: dict[str, Any], timeout: float = 300) -> tuple[str, float]:
        started = time.monotonic()
        self.client.post("/api/v1/apply", {"spec": json.dumps(spec), "filename": "bench.yaml"})
        while time.monotonic() - started < timeout:
            phase = self.client.get(f"/api/v1/services/{SERVICE}")["phase"]
            if phase in ("Succeeded", "RolledBack", "Failed"):
                return str(phase), time.monotonic() - started
            time.sleep(0.02)
        raise RuntimeError("the delivery did not end in time")

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)


def spec(fleet: Fleet, hosts: int, parallel: int, root: str, listen: str, artifact: Path) -> dict[str, Any]:
    return {"apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": SERVICE}, "spec": {
        "listen": listen, "replicas": hosts,
        "platform": {"kind": "ssh", "hosts": [h.target for h in fleet.hosts[:hosts]], "root": root,
                     "ssh": {**fleet.ssh_options(), "maxParallel": parallel, "connectTimeout": "2s"}},
        "release": {"version": "v1", "artifact": str(artifact),
                    "run": {"command": ["python3", "app.py", "--host", "{host}", "--port", "{port}",
                                        "--version", "v1"]},
                    "readiness": {"http": "/healthz", "timeout": "30s"}},
        "strategy": {"full": {}}, "progressDeadline": "5m"}}


def stop_all(server: Server, fleet: Fleet, hosts: int, root: str, listen: str, artifact: Path) -> None:
    """Delete the service through the server: router drained and stopped, instances stopped."""
    server.client.request("DELETE", f"/api/v1/services/{SERVICE}", params={"force": True})


def time_deliveries(fleet: Fleet, sizes: list[int], work: Path, artifact: Path) -> list[dict[str, Any]]:
    rows = []
    for hosts in sizes:
        for parallel in (1, 16):
            root = work / f"deliver-{hosts}-{parallel}"
            server = Server(root)
            listen = f"127.0.0.1:{free_port()}"
            host_root = f"~/.bench-{hosts}-{parallel}-{time.monotonic_ns()}"
            try:
                phase, seconds = server.deliver(spec(fleet, hosts, parallel, host_root, listen, artifact))
                rows.append({"hosts": hosts, "maxParallel": parallel, "phase": phase, "seconds": round(seconds, 2)})
                print(f"deliver to {hosts:>2} hosts, maxParallel {parallel:>2}: {phase} in {seconds:6.2f} s",
                      flush=True)
            finally:
                stop_all(server, fleet, hosts, host_root, listen, artifact)
                server.stop()
    return rows


def users(url: str, stop: threading.Event, log: list[tuple[float, bool]]) -> None:
    while not stop.is_set():
        started = time.time()
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                ok = response.status == 200
        except OSError:
            ok = False
        log.append((started, ok))
        time.sleep(0.005)


def time_host_loss(fleet: Fleet, work: Path, artifact: Path) -> dict[str, Any]:
    server = Server(work / "loss")
    listen = f"127.0.0.1:{free_port()}"
    host_root = f"~/.bench-loss-{time.monotonic_ns()}"
    doc = spec(fleet, 4, 16, host_root, listen, artifact)
    doc["spec"]["platform"]["maxUnreachable"] = 1
    stop, log = threading.Event(), []  # type: ignore[var-annotated]
    threads = [threading.Thread(target=users, args=(f"http://{listen}/", stop, log)) for _ in range(4)]
    lost = fleet.hosts[1]
    try:
        server.deliver(doc)
        for t in threads:
            t.start()
        time.sleep(2)
        downed = time.time()
        fleet.down(lost)
        def lost_reported() -> float | None:
            for event in server.client.get(f"/api/v1/services/{SERVICE}/events?limit=1000"):
                if f"host {lost.target} unreachable" in event["message"]:
                    return float(event["at"]) - downed
            return None

        reported = waiting.blocking_until(lost_reported, timeout=30)
        time.sleep(5)
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(10)
        fleet.up(lost)
        stop_all(server, fleet, 4, host_root, listen, artifact)
        server.stop()
    failed = [t for t, ok in log if not ok and t >= downed - 3]
    result = {"reported_unreachable_s": round(reported, 2) if reported is not None else None,
              "last_failed_request_started_s": round(max(failed) - downed, 2) if failed else None,
              "failed_requests": len(failed), "requests": len(log)}
    print(f"host lost: reported unreachable (and out of the route table) after {result['reported_unreachable_s']} s; "
          f"{result['failed_requests']} of {result['requests']} user requests failed, the last one started "
          f"{result['last_failed_request_started_s']} s after the loss", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"benchmarks/fleet.py: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="stagewise-bench-fleet-"))
    artifact = work / "artifact"
    artifact.mkdir()
    shutil.copy(sample_service.__file__, artifact / "app.py")
    try:
        with Fleet(max(args.sizes)) as fleet:
            rows = time_deliveries(fleet, args.sizes, work, artifact)
            loss = time_host_loss(fleet, work, artifact)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"deliveries": rows, "host_loss": loss}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
