"""Hooks and notifications through the real controller and store: the platform and router are fakes, the
other side of every hook and webhook is a real HTTP receiver on loopback, and command hooks are real programs."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagewise.core.delivery import Phase
from stagewise.errors import ForbiddenError
from stagewise.notify.signing import verify
from tests.controller.conftest import World, make_spec
from tests.controller.conftest import world as world  # the fixture: v1 delivered on the fakes
from tests.gates.receiver import Receiver

CANARY: dict[str, Any] = {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "2s"}},
                                               {"setWeight": 50}]}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


async def drive(world: World, until: set[Phase], *, seconds: float = 120, step: float = 0.25) -> Phase:
    """Tick on the fake clock, letting real time pass for the hook calls and the sender (a few ms a tick)."""
    end = world.clock.now + seconds
    phase = Phase.PENDING
    while world.clock.now < end:
        await world.controller.tick()
        await world.controller.sender.flush()
        await asyncio.sleep(0.004)
        world.clock.advance(step)
        latest = world.controller.store.latest_delivery("shop")
        phase = latest.phase if latest else Phase.PENDING
        if phase in until:
            return phase
    return phase


def events(world: World, kind: str | None = None) -> list[str]:
    return [e.message for e in world.controller.store.events("shop", limit=100_000) if kind in (None, e.kind)]


async def test_a_confirm_gate_answering_503_then_200(world: World, receiver: Receiver) -> None:
    receiver.answer("/gate", 503, "ticket CHG-7 is not approved yet")
    hooks = [{"name": "gate", "type": "confirm-promotion", "interval": "1s",
              "http": {"url": receiver.url("/gate"), "timeout": "5s", "headers": {"Authorization": "Bearer x"}}}]
    await world.controller.apply(make_spec("v2", CANARY, hooks=hooks))
    assert await drive(world, {Phase.WAITING}) is Phase.WAITING
    await drive(world, set(), seconds=8)  # asked every second (on the fake clock), answered in real time
    assert len(receiver.calls("/gate")) >= 2
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None and latest.phase is Phase.WAITING and latest.waiting is not None
    assert "last answer HTTP 503: ticket CHG-7 is not approved yet" in latest.waiting.words()
    receiver.answer("/gate", 200, "approved")
    assert await drive(world, {Phase.SUCCEEDED}) is Phase.SUCCEEDED
    calls = receiver.calls("/gate")
    assert len(calls) >= 3 and [c.status for c in calls][-1] == 200
    first = calls[0]
    assert first.method == "POST" and first.headers["authorization"] == "Bearer x"
    assert first.headers["content-type"] == "application/json"
    body = first.json
    assert {k: body[k] for k in ("hook", "type", "point", "service", "release", "stable", "strategy", "phase")} == {
        "hook": "gate", "type": "confirm-promotion", "point": "confirm-promotion", "service": "shop",
        "release": "v2", "stable": "v1", "strategy": "canary", "phase": "Waiting"}
    assert body["id"] == first.headers["x-stagewise-id"] and body["id"].endswith("/confirm-promotion/gate/1")
    assert [c.json["id"].rsplit("/", 1)[1] for c in calls] == [str(i) for i in range(1, len(calls) + 1)]
    said = events(world, "hook")
    assert said[0].startswith("hook gate (confirm-promotion) answered HTTP 503 (no) in ")
    assert " ms: ticket CHG-7 is not approved yet" in said[0]
    assert said[-1].startswith("hook gate (confirm-promotion) answered HTTP 200 (yes) in ")


async def test_a_rollback_hook_that_answers_yes_aborts(world: World, receiver: Receiver) -> None:
    receiver.answer("/abort", 404, "all good")
    hooks = [{"name": "kill-switch", "type": "rollback", "interval": "1s", "http": {"url": receiver.url("/abort")}}]
    await world.controller.apply(make_spec("v2", {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
                                           hooks=hooks))
    assert await drive(world, {Phase.PAUSED}) is Phase.PAUSED
    await receiver.until("/abort", 1)
    receiver.answer("/abort", 200, "error budget exhausted")
    assert await drive(world, {Phase.ROLLED_BACK}) is Phase.ROLLED_BACK
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None
    assert latest.abort_reason == "rollback hook kill-switch asked for a rollback (HTTP 200: error budget exhausted)"


async def test_a_command_hook_gets_the_body_on_stdin_and_fails_the_delivery(world: World, tmp_path: Path) -> None:
    seen = tmp_path / "seen.jsonl"
    script = tmp_path / "smoke.py"
    script.write_text(
        "import json, sys\n"
        f"body = json.load(sys.stdin)\nopen({str(seen)!r}, 'a').write(json.dumps(body) + '\\n')\n"
        "print('smoke test: 3 of 5 checks failed')\nsys.exit(0 if body['release'] == 'v2' else 3)\n")
    hooks = [{"name": "smoke", "type": "pre-rollout", "command": {"args": [sys.executable, str(script)]}}]
    await world.controller.apply(make_spec("v2", CANARY, hooks=hooks))
    assert await drive(world, {Phase.SUCCEEDED}) is Phase.SUCCEEDED
    await world.controller.apply(make_spec("v3", CANARY, hooks=hooks))
    assert await drive(world, {Phase.ROLLED_BACK}) is Phase.ROLLED_BACK
    latest = world.controller.store.latest_delivery("shop")
    assert latest is not None
    assert latest.abort_reason == ("pre-rollout hook smoke failed 1 time(s), last exit 3: "
                                   "smoke test: 3 of 5 checks failed")
    bodies = [json.loads(line) for line in seen.read_text().splitlines()]
    assert [(b["release"], b["point"], b["step"]) for b in bodies] == [("v2", "pre-rollout", 1),
                                                                       ("v3", "pre-rollout", 1)]
    assert world.router.served["shop"].get("v3", 0) == 0, "the pre-rollout hook ran before v3 took a request"


async def test_a_hook_call_lost_in_a_crash_is_made_again_under_the_same_id(world: World,
                                                                          receiver: Receiver) -> None:
    """At least once: the answer of a call made just before the controller died was never committed."""
    receiver.answer("/gate", 200, "yes")
    hooks = [{"name": "gate", "type": "confirm-rollout", "http": {"url": receiver.url("/gate")}}]
    await world.controller.apply(make_spec("v2", CANARY, hooks=hooks))
    await drive(world, {Phase.WAITING})
    await world.controller.tick()  # the call starts ...
    await receiver.until("/gate", 1)
    await world.restart()  # ... and the controller dies before a tick records its answer
    assert await drive(world, {Phase.SUCCEEDED}) is Phase.SUCCEEDED
    ids = [c.json["id"] for c in receiver.calls("/gate")]
    assert len(ids) == 2 and len(set(ids)) == 1, ids


async def test_approvals_and_refusals_are_in_the_event_log(world: World) -> None:
    steps = {"canary": {"steps": [{"setWeight": 20}, {"approval": {"approvers": ["alice"]}}, {"setWeight": 50}]}}
    await world.controller.apply(make_spec("v2", steps))
    assert await drive(world, {Phase.WAITING}) is Phase.WAITING
    with pytest.raises(ForbiddenError):
        await world.controller.approve("shop", who="mallory")
    await world.controller.approve("shop", who="alice", comment="ship it")
    assert await drive(world, {Phase.SUCCEEDED}) is Phase.SUCCEEDED
    said = events(world, "user")
    assert "approval refused: cannot approve delivery 2 of shop: mallory is not among the approvers (alice)" in said
    assert "approved by alice (approval@1): ship it" in said


async def test_notifications_are_signed_filtered_and_sent_once_each(world: World, receiver: Receiver,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "notes.jsonl"
    sink = tmp_path / "sink.py"
    sink.write_text(f"import sys\nopen({str(out)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')\n")
    notifications = [
        {"name": "ops", "webhook": {"url": receiver.url("/notify"), "secret": "s3cret"},
         "events": ["succeeded", "rolled-back"]},
        {"name": "chat", "slack": {"url": receiver.url("/slack"), "dashboard": "http://dash.example"},
         "events": ["started", "succeeded"]},
        {"name": "log", "command": {"args": [sys.executable, str(sink)]}},
    ]
    started = time.time()
    await world.controller.apply(make_spec("v2", CANARY, notifications=notifications))
    assert await drive(world, {Phase.SUCCEEDED}) is Phase.SUCCEEDED
    await drive(world, set(), seconds=2)
    [note] = receiver.calls("/notify")
    header = note.headers["x-stagewise-signature"]
    assert verify("s3cret", header, note.raw, now=time.time())
    assert not verify("other", header, note.raw, now=time.time())
    assert not verify("s3cret", header, note.raw + b" ", now=time.time())
    assert started - 5 <= int(header.split(",")[0][2:]) <= time.time() + 1
    body = note.json
    assert {k: body[k] for k in ("event", "service", "release", "phase")} == {
        "event": "succeeded", "service": "shop", "release": "v2", "phase": "Succeeded"}
    assert body["id"] == note.headers["x-stagewise-id"] and body["message"].startswith("Succeeded: v2 is stable")
    slack = [c.json for c in receiver.calls("/slack")]
    assert [s["text"] for s in slack] == ["🚀 v2 is being delivered to shop (canary, from v1)",
                                          "✅ v2 is the stable release of shop"]
    assert slack[1]["blocks"][-1]["elements"][0]["url"] == "http://dash.example/services/shop"
    logged = [json.loads(line)["event"] for line in out.read_text().splitlines()]
    assert logged[0] == "started" and logged[-1] == "succeeded" and "step" in logged
    store = world.controller.store
    items = store.notifications("shop", limit=1000)
    assert all(i.sent_at is not None and i.attempts == 1 for i in items)
    assert len({i.key for i in items}) == len(items)


async def test_a_failing_sink_is_retried_reported_and_never_holds_a_delivery(world: World,
                                                                            receiver: Receiver) -> None:
    receiver.answer("/notify", 500, "database is down")
    notifications = [{"name": "ops", "webhook": {"url": receiver.url("/notify")}}]
    await world.controller.apply(make_spec("v2", CANARY, notifications=notifications))
    assert await drive(world, {Phase.SUCCEEDED}, seconds=30) is Phase.SUCCEEDED
    await drive(world, set(), seconds=20)
    [health] = world.controller.store.sink_health("shop")
    assert health.sink == "ops" and health.pending > 0 and health.attempts >= 3
    assert health.last_error == "HTTP 500: database is down"
    receiver.answer("/notify", 200)
    await drive(world, set(), seconds=400)
    [health] = world.controller.store.sink_health("shop")
    assert health.pending == 0 and health.last_sent_at is not None
    keys = [c.json["id"] for c in receiver.calls("/notify") if c.status == 200]
    assert len(keys) == len(set(keys)) == len(world.controller.store.notifications("shop", limit=1000))
