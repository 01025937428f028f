"""Several servers on one PostgreSQL store: a holder killed mid-delivery, and a holder paused past its lease.

Three (or two) real `stagewise server` processes share one state directory
(the local platform's instances and the builtin router live there) and one
database, with leases of 3 s (renew deadline 2 s, retry 0.5 s). Killing the
holder of a delivery in flight must change nothing users see: another server
takes the service over within two lease durations, the delivery ends in the
phase it ends in without the kill, no request fails, and the event log shows
each step done exactly once. A holder stopped (SIGSTOP) inside a write and
resumed after another took over must have that write refused, and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from stagewise.examples.load import LoadInBackground
from tests.e2e.conftest import LEASE, SERVICE, TICK, Stagewise, spec_json
from tests.e2e.test_crash import PLANS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TERMINAL = {"Succeeded", "RolledBack", "Failed"}


class Group:
    """Servers sharing one state directory and one PostgreSQL store, each reached at its own address."""

    def __init__(self, root: Path, store: str) -> None:
        self.sw = Stagewise(root)  # the state directory, the service's address, cleanup of the data plane
        self.store = store
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}
        self.token = ""

    def start(self, *names: str) -> None:
        """Start the servers `names` together, and wait until each answers."""
        for name in names:
            with open(self.sw.root / f"server-{name}.log", "wb") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "stagewise", "server", "--state", str(self.sw.state), "--listen",
                     "127.0.0.1:0", "--store", self.store, "--name", name, "--lease", ",".join(map(str, LEASE)),
                     "--tick", str(TICK), "--log-level", "info"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for name in names:
            self._wait_answering(name)

    def _wait_answering(self, name: str) -> None:
        proc = self.procs[name]
        deadline = time.monotonic() + 30
        address = self.sw.state / "servers" / f"{proc.pid}.json"
        while time.monotonic() < deadline:
            assert proc.poll() is None, self.log(name)
            if address.exists():
                url = json.loads(address.read_text())["url"]
                try:
                    httpx.get(url + "/api/v1/health", timeout=2).raise_for_status()
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                self.urls[name] = url
                self.token = (self.sw.state / "token").read_text().strip()
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} did not start:\n{self.log(name)}")

    def call(self, name: str, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, self.urls[name] + path, json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {self.token}"})
        response.raise_for_status()
        return response.json()

    def status(self, via: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(via, "GET", f"/api/v1/services/{SERVICE}")
        return result

    def apply(self, via: str, version: str, strategy: dict[str, Any]) -> None:
        self.call(via, "POST", "/api/v1/apply", {"spec": spec_json(self.sw.listen, version, strategy),
                                                  "filename": f"{version}.yaml"})

    def wait(self, via: str, test: Any, what: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(via)
            if test(status):
                return status
            time.sleep(0.05)
        raise AssertionError(f"{what} not within {timeout}s: {json.dumps(status)[:2000]}\n{self.logs()}")

    def signal(self, name: str, sig: signal.Signals) -> None:
        os.kill(self.procs[name].pid, sig)
        if sig is signal.SIGKILL:
            self.procs[name].wait(10)
            del self.urls[name]

    def log(self, name: str) -> str:
        path = self.sw.root / f"server-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)[-2500:]}" for n in self.procs)

    def cleanup(self) -> None:
        running = [proc for proc in self.procs.values() if proc.poll() is None]
        for proc in running:  # all told at once: each gives up its leases and stops while the others do
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
        for proc in running:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.sw.cleanup()


@pytest.fixture
def group(pg_url: str) -> Iterator[Group]:
    root = Path(tempfile.mkdtemp(prefix="sw-e2e-", dir="/tmp"))
    g = Group(root, pg_url)
    try:
        yield g
    finally:
        g.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def steps_done(pg_url: str, delivery: int) -> list[str]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT message FROM events WHERE delivery_id = %s AND kind = 'step' ORDER BY id",
                            (delivery,)).fetchall()
    return [r[0] for r in rows]


CASES = [(name, step) for name, (_, steps) in PLANS.items() for step in range(1, steps + 1)]


@pytest.mark.parametrize(("name", "kill_at"), CASES, ids=[f"{n}-step{s}" for n, s in CASES])
def test_killing_the_holder_changes_nothing_users_see(group: Group, pg_url: str, name: str, kill_at: int) -> None:
    strategy, steps = PLANS[name]
    group.start("c1", "c2", "c3")
    group.apply("c1", "v1", {"full": {}})
    group.wait("c2", lambda s: s["phase"] == "Succeeded", "v1 installed")
    load = LoadInBackground(group.sw.url, connections=4, rate=200, max_seconds=120, max_requests=40_000,
                            headers_for=lambda i: {"X-Preview": "1"} if i % 4 == 0 else {}).start()
    try:
        group.apply("c3", "v2", strategy)
        at = group.wait("c1", lambda s: s["phase"] in TERMINAL or (s["delivery"] or {}).get("step", 0) >= kill_at,
                        f"step {kill_at}")
        holder, epoch = at["holder"], at["epoch"]
        assert holder in group.procs and epoch >= 1
        killed = time.monotonic()
        group.signal(holder, signal.SIGKILL)
        survivor = next(n for n in group.urls if n != holder)
        taken = group.wait(survivor, lambda s: s["holder"] not in (None, holder), "the takeover", timeout=30)
        takeover = time.monotonic() - killed
        final = group.wait(survivor, lambda s: s["phase"] in TERMINAL, "the delivery's end")
        time.sleep(0.3)
    finally:
        report = load.stop()
    record = {"strategy": name, "kill_at": kill_at, "takeover_s": round(takeover, 2), "phase": final["phase"],
              "requests": report.requests, "failed": report.non_2xx + report.socket_errors,
              "epochs": [epoch, taken["epoch"]]}
    if os.environ.get("STAGEWISE_TAKEOVER_LOG"):
        with open(os.environ["STAGEWISE_TAKEOVER_LOG"], "a") as out:
            out.write(json.dumps(record) + "\n")
    assert takeover <= 2 * LEASE[0], record
    assert final["phase"] == "Succeeded", (final["delivery"], group.logs())
    assert taken["epoch"] > epoch
    assert report.requests > 100
    assert report.non_2xx == 0 and report.socket_errors == 0, (record, report.status_counts,
                                                               report.socket_error_sample, report.refusal_sample)
    done = steps_done(pg_url, final["delivery"]["id"])
    assert len(done) == steps and len(set(done)) == steps, done


def test_a_holder_stopped_in_a_write_and_resumed_after_a_takeover_has_the_write_refused(
        group: Group, pg_url: str) -> None:
    group.start("c1", "c2")
    group.apply("c1", "v1", {"full": {}})
    group.wait("c1", lambda s: s["phase"] == "Succeeded", "v1 installed")
    group.apply("c1", "v2", {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}})
    paused = group.wait("c1", lambda s: s["phase"] == "Paused", "the pause")
    holder = paused["holder"]
    other = next(n for n in group.urls if n != holder)
    answers: list[int] = []
    with psycopg.connect(pg_url) as blocker:
        # The holder's promote blocks in its write transaction, on this lock; it is stopped there.
        blocker.execute("LOCK TABLE deliveries IN EXCLUSIVE MODE")
        promote = threading.Thread(target=lambda: answers.append(httpx.post(
            group.urls[holder] + f"/api/v1/services/{SERVICE}/promote", timeout=60,
            headers={"Authorization": f"Bearer {group.token}"}).status_code))
        promote.start()
        deadline = time.monotonic() + 20
        while not blocker.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the promote never reached the store"
            time.sleep(0.02)
        group.signal(holder, signal.SIGSTOP)
    taken = group.wait(other, lambda s: s["holder"] == other, "the takeover", timeout=30)
    group.signal(holder, signal.SIGCONT)
    promote.join(30)
    assert answers == [503], answers
    after = group.status(other)
    assert after["phase"] == "Paused", "the stale promote left no trace"
    log = group.log(holder)
    refused = [line for line in log.splitlines() if "write refused" in line and "lost the lease" in line]
    assert refused, log[-3000:]
    assert f"{other} holds it at epoch {taken['epoch']}" in refused[0]
    print("\nthe resumed holder logged:", refused[0])
    page = httpx.get(group.urls[other] + f"/services/{SERVICE}", timeout=30).text
    assert f"held by <code>{other}</code> (epoch {taken['epoch']})" in page
    group.call(other, "POST", f"/api/v1/services/{SERVICE}/promote")
    assert group.wait(other, lambda s: s["phase"] in TERMINAL, "the end")["phase"] == "Succeeded"
