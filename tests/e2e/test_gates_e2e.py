"""Gates and notifications on a real server: the sample service on the local platform, the builtin router, and a
real receiver on loopback for hooks and webhooks.

- a confirm-promotion gate answered 503 then 200, a signed webhook verified as a receiver would (the recorded
  call is printed and kept in the test's directory; the README shows one), and every event sent to an event
  hook;
- a delivery that waits in a deny window, is rolled back inside it, and goes through with an override;
- the outbox survives SIGKILL: notifications committed while their sink was down are delivered after the
  restart, each exactly once (its idempotency key seen once).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stagewise.notify.signing import HEADER, verify
from tests.e2e.conftest import SERVICE, Stagewise, free_port, spec_json
from tests.gates.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SECRET = "s3cret"
CANARY: dict[str, Any] = {"canary": {"steps": [{"setWeight": 30}, {"pause": {"duration": "1s"}}]}}


def apply(sw: Stagewise, version: str, strategy: dict[str, Any], *, override: str | None = None,
          **body: Any) -> dict[str, Any]:
    doc = json.loads(spec_json(sw.listen, version, strategy))
    doc["spec"].update(body)
    assert sw.client is not None
    payload: dict[str, Any] = {"spec": json.dumps(doc), "filename": f"{version}.yaml"}
    if override is not None:
        payload["override_freeze"] = override
    result: dict[str, Any] = sw.client.post("/api/v1/apply", payload)
    return result


def cli(sw: Stagewise, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", *args, "--state", str(sw.state)],
                          capture_output=True, text=True, timeout=60)


def test_a_confirm_gate_a_signed_webhook_and_an_event_hook(stagewise: Stagewise, tmp_path: Path) -> None:
    sw = stagewise
    with Receiver() as receiver:
        gates = {
            "hooks": [
                {"name": "change-board", "type": "confirm-promotion", "interval": "1s",
                 "http": {"url": receiver.url("/gate"), "timeout": "5s"}},
                {"name": "audit-trail", "type": "event", "http": {"url": receiver.url("/events")}},
            ],
            "notifications": [{"name": "ops", "webhook": {"url": receiver.url("/notify"), "secret": SECRET},
                               "events": ["waiting", "succeeded", "rolled-back"]}],
        }
        apply(sw, "v1", {"full": {}}, **gates)  # a first release is gated too: the board says yes at once
        assert sw.wait()["phase"] == "Succeeded"
        receiver.answer("/gate", 503, "CHG-42 not approved yet")
        apply(sw, "v2", CANARY, **gates)
        waiting = sw.wait({"Waiting"})
        receiver.wait_for("/gate", 2)
        hold = _hold_saying(sw, "HTTP 503")
        assert hold["name"] == "change-board" and "last answer HTTP 503: CHG-42 not approved yet" in hold["message"]
        assert waiting["delivery"]["weights"] == {"v1": 70, "v2": 30}, "it waits before the promotion"
        shown = cli(sw, "status", SERVICE).stdout
        assert "Waiting" in shown and "CHG-42 not approved yet" in shown
        receiver.answer("/gate", 200, "approved by the change board")
        assert sw.wait()["phase"] == "Succeeded"
        time.sleep(1.5)  # the sender's last notifications
        notes = receiver.calls("/notify")
        events = receiver.calls("/events")
    assert [n.json["event"] for n in notes] == ["waiting", "succeeded", "waiting", "succeeded"]  # v1, then v2
    for note in notes:
        header = note.headers[HEADER.lower()]
        assert verify(SECRET, header, note.raw, now=time.time()), header
        assert note.json["id"] == note.headers["x-stagewise-id"]
    assert len({n.json["id"] for n in notes}) == len(notes)
    hook_log = [e.message for e in _events(sw) if e["kind"] == "hook"]
    assert any("answered HTTP 503 (no)" in m for m in hook_log) and "answered HTTP 200 (yes)" in hook_log[-1]
    stored = [e for e in _events(sw) if e["delivery_id"] is not None]
    assert len(events) == len(stored), "every event of the deliveries went to the event hook"
    record = {"headers": {k: v for k, v in notes[-1].headers.items() if k.startswith(("x-stagewise", "content-type"))},
              "body": notes[-1].raw.decode(), "secret": SECRET}
    (tmp_path / "webhook.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nrecorded webhook call ({tmp_path / 'webhook.json'}):\n" + json.dumps(record, indent=2))


def _hold_saying(sw: Stagewise, words: str, timeout: float = 10) -> dict[str, Any]:
    """The delivery's one hold, once its message says `words` (an answer is recorded a tick after it came)."""
    deadline = time.monotonic() + timeout
    while True:
        [hold] = sw.status()["delivery"]["waiting"]["holds"]
        if words in hold["message"] or time.monotonic() > deadline:
            return dict(hold)
        time.sleep(0.05)


class _Event(dict[str, Any]):
    @property
    def message(self) -> str:
        return str(self["message"])


def _events(sw: Stagewise) -> list[_Event]:
    assert sw.client is not None
    return [_Event(e) for e in sw.client.get(f"/api/v1/services/{SERVICE}/events", limit=1000)]


def test_a_deny_window_holds_a_delivery_a_rollback_goes_through_it_and_an_override_is_recorded(
        stagewise: Stagewise) -> None:
    sw = stagewise
    now = datetime.now(UTC)
    window = {"name": "incident-4711", "deny": {"start": (now - timedelta(minutes=1)).isoformat(),
                                                "end": (now + timedelta(hours=1)).isoformat()}}
    apply(sw, "v1", {"full": {}}, override="the first release", windows=[window])
    assert sw.wait()["phase"] == "Succeeded"
    apply(sw, "v2", CANARY, windows=[window])
    held = sw.wait({"Waiting"})
    [hold] = held["delivery"]["waiting"]["holds"]
    assert hold["kind"] == "window" and hold["message"].startswith("frozen until ")
    assert "incident-4711" in hold["message"] and abs(hold["until"] - (now + timedelta(hours=1)).timestamp()) < 1
    time.sleep(1.0)
    assert sw.status()["phase"] == "Waiting" and sw.router_stats().releases.get("v2") is None
    aborted = cli(sw, "abort", SERVICE)
    assert aborted.returncode == 0, aborted.stderr
    assert sw.wait()["phase"] == "RolledBack", "a rollback is never held by a window"
    spec = sw.root / "v3.yaml"
    doc = json.loads(spec_json(sw.listen, "v2", CANARY))
    doc["spec"]["windows"] = [window]
    spec.write_text(json.dumps(doc))
    refused = cli(sw, "apply", str(spec), "--override-freeze")
    assert refused.returncode == 2 and "--override-freeze needs --reason" in refused.stderr
    forced = cli(sw, "apply", str(spec), "--override-freeze", "--reason", "hotfix for the incident itself")
    assert forced.returncode == 0, forced.stderr
    done = sw.wait()
    assert done["phase"] == "Succeeded" and done["stable"] == "v2"
    assert done["delivery"]["freeze_override"] == "hotfix for the incident itself"
    messages = [e.message for e in _events(sw)]
    assert "freeze windows overridden by admin: hotfix for the incident itself" in messages
    assert any(m.startswith("Waiting: frozen until") for m in messages)


RUNS = 3


def test_the_outbox_survives_sigkill_between_commit_and_send(stagewise: Stagewise, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    """Each run: a delivery's events are committed while the sink is down (so none is sent), the server is
    killed, the sink comes up on its fixed port, the server restarts: every notification arrives, once."""
    sw = stagewise
    port = free_port()
    sink = {"notifications": [{"name": "ops", "webhook": {"url": f"http://127.0.0.1:{port}/notify",
                                                          "secret": SECRET}}]}
    apply(sw, "v1", {"full": {}}, **sink)
    assert sw.wait()["phase"] == "Succeeded"
    received: list[str] = []
    pending_at_kill = []
    for run in range(RUNS):
        version = f"v{run + 2}"
        apply(sw, version, {"full": {}}, **sink)
        assert sw.wait()["phase"] == "Succeeded"
        pending = _outbox(sw, sent=False)
        assert pending, "the sink is down: nothing can have been sent"
        pending_at_kill.append(len(pending))
        sw.kill()
        with Receiver(port) as receiver:
            sw.start()
            deadline = time.monotonic() + 30
            while _outbox(sw, sent=False) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            received += [c.json["id"] for c in receiver.calls("/notify")
                         if verify(SECRET, c.headers[HEADER.lower()], c.raw, now=time.time())]
    keys = _outbox(sw, sent=None)
    counts = Counter(received)
    lost = [k for k in keys if k not in counts]
    duplicates = sum(n - 1 for n in counts.values())
    with capsys.disabled():
        print(f"\nSIGKILL outbox: {RUNS} runs, {len(keys)} notifications ({', '.join(map(str, pending_at_kill))} "
              f"pending at each kill), received {len(received)}, lost {len(lost)}, duplicates per idempotency "
              f"key {duplicates}")
    assert lost == [] and duplicates == 0
    assert set(counts) == set(keys) and _outbox(sw, sent=False) == []


def _outbox(sw: Stagewise, *, sent: bool | None) -> list[str]:
    """The outbox's idempotency keys (read-only, as a person with sqlite3 would)."""
    conn = sqlite3.connect(f"file:{sw.state / 'stagewise.db'}?mode=ro", uri=True)
    try:
        where = "" if sent is None else " WHERE sent_at IS NOT NULL" if sent else " WHERE sent_at IS NULL"
        return [row[0] for row in conn.execute(f"SELECT key FROM outbox{where} ORDER BY id")]
    finally:
        conn.close()
