"""`stagewise delete`: the service's router and instances stop, requests in flight finish, its history stays.

With each router (builtin, HAProxy, nginx), a service whose instances take two
seconds per request gets four requests, which the instances write down as they
arrive; once all four are in flight, `stagewise delete` runs. All four must be
answered (the router drains before anything stops), and afterwards nothing may
listen on the service's address or the instances' ports, and no process of its
data plane may be left — as `ss -ltnp` and /proc tell, not as stagewise says.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from stagewise.basics import waiting
from tests.e2e.conftest import SERVICE, Stagewise, spec_json
from tests.e2e.dataplane import descendants, gone, listening_on, router_pid, ss_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

IN_FLIGHT = 4
# An instance: answers /healthz at once; any other path is written to argv[2] on arrival and answered after argv[3] s.
SLOW_SERVICE = textwrap.dedent(
    """
    import http.server, sys, time

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path != "/healthz":
                with open(sys.argv[2], "a") as arrivals:
                    arrivals.write(self.path + "\\n")
                time.sleep(float(sys.argv[3]))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("X-Version", "v1")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def stagewise_cli(sw: Stagewise, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", *args, "--state", str(sw.state)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("stagewise", ["builtin", "haproxy", "nginx"], indirect=True)
def test_delete_drains_then_stops_every_process_and_port_of_the_service(stagewise: Stagewise,
                                                                       tmp_path: Path) -> None:
    arrivals = tmp_path / "arrivals"
    arrivals.touch()
    command = [sys.executable, "-c", SLOW_SERVICE, "{port}", str(arrivals), "2"]
    assert stagewise.client is not None
    stagewise.client.post("/api/v1/apply", {"spec": spec_json(stagewise.listen, "v1", {"full": {}}, command=command,
                                                              router=stagewise.router), "filename": "v1.yaml"})
    assert stagewise.wait()["phase"] == "Succeeded"
    host, port = stagewise.listen.rsplit(":", 1)
    records = [json.loads(p.read_text()) for p in (stagewise.state / "instances" / SERVICE).glob(f"{SERVICE}-*.json")]
    instance_ports = [r["port"] for r in records]
    listeners = set().union(*(x.pids for x in listening_on(int(port), host)))
    processes = descendants(router_pid(stagewise.state, stagewise.router, SERVICE)) | listeners
    assert listeners and len(records) == 2

    answers: list[int | str] = []

    def call(i: int) -> None:
        try:
            answers.append(httpx.get(f"{stagewise.url}slow/{i}", timeout=30, trust_env=False).status_code)
        except httpx.HTTPError as exc:
            answers.append(repr(exc))

    callers = [threading.Thread(target=call, args=(i,)) for i in range(IN_FLIGHT)]
    for t in callers:
        t.start()
    assert waiting.blocking_until(lambda: len(arrivals.read_text().splitlines()) >= IN_FLIGHT, timeout=20,
                                  interval=0.02), f"only {arrivals.read_text().splitlines()} reached the instances"

    deleted = stagewise_cli(stagewise, "delete", SERVICE)
    for t in callers:
        t.join(30)
    assert deleted.returncode == 0, deleted.stderr
    print(f"\n$ stagewise delete {SERVICE}  # router {stagewise.router}\n{deleted.stdout}")
    assert answers == [200] * IN_FLIGHT, "requests in flight must finish before the router stops"

    held = listening_on(int(port), host) + [x for p in instance_ports for x in listening_on(p)]
    report = ss_lines(int(port), *instance_ports)
    print(f"ss -ltnp for {stagewise.listen} and the instances' ports {instance_ports}: {report or '(nothing)'}")
    assert held == [], report
    named = listeners | {r["pid"] for r in records}
    assert all(f"pid {p}" in deleted.stdout or f", {p}" in deleted.stdout for p in named), (named, deleted.stdout)
    processes |= {r["pid"] for r in records}
    assert [p for p in processes if not gone(p)] == [], processes

    # the service is gone, its history is not
    assert stagewise_cli(stagewise, "status", SERVICE).returncode == 2
    history = stagewise_cli(stagewise, "history", SERVICE, "--json")
    assert history.returncode == 0, history.stderr
    assert [d["phase"] for d in json.loads(history.stdout)] == ["Succeeded"]
    events = stagewise.client.get(f"/api/v1/services/{SERVICE}/events")
    assert "deleted; stopped" in events[-1]["message"]
    assert stagewise_cli(stagewise, "delete", SERVICE).returncode == 2

    assert stagewise.proc is not None
    stagewise.proc.send_signal(signal.SIGTERM)
    stagewise.proc.wait(20)
    assert "no router or instance of any service runs" in stagewise.log()


def test_keep_running_forgets_the_service_and_a_new_apply_takes_its_data_plane_up(stagewise: Stagewise) -> None:
    stagewise.apply("v1", {"full": {}})
    assert stagewise.wait()["phase"] == "Succeeded"
    host, port = stagewise.listen.rsplit(":", 1)
    [router] = listening_on(int(port), host)
    instances = sorted(json.loads(p.read_text())["pid"]
                       for p in (stagewise.state / "instances" / SERVICE).glob(f"{SERVICE}-*.json"))

    kept = stagewise_cli(stagewise, "delete", SERVICE, "--keep-running")
    assert kept.returncode == 0, kept.stderr
    assert "forgotten; still running, managed by no one" in kept.stdout
    assert httpx.get(stagewise.url, timeout=5, trust_env=False).headers["X-Version"] == "v1"
    assert stagewise_cli(stagewise, "status", SERVICE).returncode == 2

    stagewise.apply("v1", {"full": {}})  # the same name again: a new service, on the processes still running
    assert stagewise.wait()["phase"] == "Succeeded"
    assert listening_on(int(port), host) == [router]
    assert sorted(json.loads(p.read_text())["pid"]
                  for p in (stagewise.state / "instances" / SERVICE).glob(f"{SERVICE}-*.json")) == instances
    history = stagewise_cli(stagewise, "history", SERVICE, "--json")
    assert [d["id"] for d in json.loads(history.stdout)] == [2, 1]
