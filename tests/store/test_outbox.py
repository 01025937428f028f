"""The outbox, tokens, audit and pipelines, on each backend (a real SQLite file, a real PostgreSQL): notifications
are written with their events in one transaction (both or neither), addressed by each sink's filter, and a v4
database upgrades keeping its rows."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from stagewise.core.delivery import Delivery, Event, Phase
from stagewise.core.pipeline import PipelineRelease
from stagewise.core.spec import ServiceSpec
from stagewise.errors import ConflictError, NotFoundError, StagewiseError, StoreError
from stagewise.store import AuditEntry, Store, TokenRecord
from tests.store.conftest import Backend
from tests.store.samples import make_service

pytestmark = pytest.mark.timeout(30)

SINKS: list[dict[str, Any]] = [
    {"name": "ops", "webhook": {"url": "http://127.0.0.1:9/notify", "secret": "s"}, "events": ["succeeded"]},
    {"name": "chat", "slack": {"url": "http://127.0.0.1:9/slack"}},
]


def spec(**body: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"listen": "127.0.0.1:8080", "release": {"version": "v2", "run": {"command": ["app"]}}, **body}})


def delivery(store: Store, **body: Any) -> Delivery:
    return store.create_delivery(Delivery(service="web", spec=spec(**body)), [])


def test_each_notice_goes_to_the_sinks_that_want_it_under_one_key(store: Store) -> None:
    d = delivery(store, notifications=SINKS,
                 hooks=[{"name": "trail", "type": "event", "http": {"url": "http://127.0.0.1:9/e"}}])
    store.save_delivery(d.model_copy(update={"phase": Phase.SUCCEEDED}), [
        Event(at=1, kind="step", message="step 1/1 done", notice="step"),
        Event(at=2, kind="phase", message="Succeeded: v2 is stable", notice="succeeded"),
        Event(at=3, kind="instance", message="instance web-v1-1 stopped"),
    ])
    events = store.events("web")
    items = store.notifications("web")
    by_event = {e.id: sorted(i.sink for i in items if i.key.startswith(f"{e.id}.")) for e in events}
    assert list(by_event.values()) == [["chat", "hook/trail"], ["chat", "hook/trail", "ops"], ["hook/trail"]]
    ops = next(i for i in items if i.sink == "ops")
    assert ops.key == f"{events[1].id}.ops" and ops.payload["id"] == ops.key
    assert ops.payload["event"] == "succeeded" and ops.payload["phase"] == "Succeeded"
    assert ops.target["secret"] == "s" and ops.kind == "webhook"
    assert [i.key for i in store.due_notifications(10)] == [i.key for i in items]


def test_an_event_and_its_notifications_are_written_together_or_not_at_all(store: Store,
                                                                           backend: Backend) -> None:
    d = delivery(store, notifications=SINKS)
    store.put_service(make_service("web"), [Event(at=0, kind="user", message="applied")])
    [applied] = store.events("web")
    next_event = applied.id + 1
    # a row already holding the key the next event's notification will need: its insert must fail
    backend.sql("INSERT INTO outbox (key, event_id, service, sink, kind, target, payload, created_at, next_at)"
                " VALUES (?, ?, 'web', 'chat', 'slack', '{}', '{}', 0, 0)", (f"{next_event}.chat", applied.id))
    moved = d.model_copy(update={"phase": Phase.PROGRESSING})
    with pytest.raises(StagewiseError):
        store.save_delivery(moved, [Event(at=1, kind="phase", message="Progressing", notice="started")])
    assert store.events("web") == [applied], "the event was not kept without its notification"
    stored = store.get_delivery(d.id)
    assert stored is not None and stored.phase is Phase.PENDING, "nor the delivery's new state"


def test_sent_failed_and_given_up_notifications_and_what_a_sink_health_says(store: Store) -> None:
    d = delivery(store, notifications=SINKS)
    store.save_delivery(d, [Event(at=1, kind="phase", message="Succeeded", notice="succeeded")])
    ops, chat = sorted(store.notifications("web"), key=lambda i: i.sink, reverse=True)
    store.notification_sent(chat.id, at=5)
    store.notification_failed(ops.id, at=5, error="HTTP 500: down", next_at=100, give_up=False)
    assert store.due_notifications(50) == []
    assert store.retry_notifications_now(50) == 1 and [i.key for i in store.due_notifications(50)] == [ops.key]
    health = {h.sink: h for h in store.sink_health("web")}
    assert health["ops"].pending == 1 and health["ops"].attempts == 1 and health["ops"].last_error == "HTTP 500: down"
    assert health["chat"].pending == 0 and health["chat"].last_sent_at == 5
    store.notification_failed(ops.id, at=9, error="HTTP 500: down", next_at=10, give_up=True)
    assert store.due_notifications(1000) == [] and store.sink_health("web")[1].given_up == 1


def test_tokens_and_the_audit_log(store: Store) -> None:
    alice = TokenRecord(name="alice", role="operator", hash="ab" * 32, created_at=1, created_by="admin")
    store.add_token(alice)
    with pytest.raises(ConflictError):
        store.add_token(alice.model_copy(update={"hash": "cd" * 32}))
    assert store.token_by_hash("ab" * 32) == alice and store.token_by_hash("ef" * 32) is None
    store.put_token(alice.model_copy(update={"hash": "cd" * 32, "role": "admin"}))
    assert [(t.name, t.role) for t in store.list_tokens()] == [("alice", "admin")]
    store.record_audit(AuditEntry(at=2, actor="alice", role="admin", method="POST", path="/api/v1/apply", status=200))
    assert [(e.id, e.actor, e.status) for e in store.audit()] == [(1, "alice", 200)]


def test_a_token_name_and_a_token_hash_are_each_one_token_s(store: Store) -> None:
    alice = TokenRecord(name="alice", role="operator", hash="ab" * 32, created_at=1, created_by="admin")
    bob = alice.model_copy(update={"name": "bob", "hash": "cd" * 32})
    store.add_token(alice)
    store.add_token(bob)
    with pytest.raises(ConflictError):  # a name taken is refused as such, whatever the hash
        store.add_token(alice.model_copy(update={"hash": bob.hash}))
    with pytest.raises(StoreError):
        store.add_token(alice.model_copy(update={"name": "carol"}))
    assert [t.name for t in store.list_tokens()] == ["alice", "bob"]
    store.put_token(bob.model_copy(update={"hash": alice.hash, "role": "admin"}))
    tokens = [(t.name, t.role, t.hash) for t in store.list_tokens()]
    assert tokens == [("bob", "admin", alice.hash)], "the hash moved to bob, alice's token went"
    store.delete_token("bob")
    with pytest.raises(NotFoundError):
        store.delete_token("bob")
    assert store.list_tokens() == []


def test_pipeline_releases_newest_first_by_pipeline_and_in_flight(store: Store) -> None:
    def release(pipeline: str, version: str) -> PipelineRelease:
        return store.create_pipeline_release(PipelineRelease(pipeline=pipeline, version=version, stages=[]))

    shop1, blog1, shop2 = release("shop", "v1"), release("blog", "v1"), release("shop", "v2")
    assert (shop1.id, blog1.id, shop2.id) == (1, 2, 3)
    store.save_pipeline_release(shop1.model_copy(update={"phase": "Succeeded"}))
    assert [r.id for r in store.pipeline_releases()] == [3, 2, 1]
    assert [r.id for r in store.pipeline_releases("shop")] == [3, 1]
    assert store.pipeline_releases("shop", active=True) == [shop2]
    assert [r.id for r in store.pipeline_releases(active=True, limit=1)] == [3]
    assert [r.phase for r in store.pipeline_releases("shop")] == ["Progressing", "Succeeded"]
    with pytest.raises(NotFoundError):
        store.save_pipeline_release(shop1.model_copy(update={"id": 99}))


def test_a_v4_database_upgrades_to_the_gates_keeping_its_rows(backend: Backend) -> None:
    backend.migrate(4)
    backend.sql("INSERT INTO events (delivery_id, service, at, kind, message) VALUES (NULL, 'web', 1, 'user', 'x')")
    store = backend.open()
    try:
        assert [e.message for e in store.events("web")] == ["x"]
        assert store.notifications() == [] and store.list_tokens() == [] and store.list_pipelines() == []
    finally:
        store.close()
    assert backend.version() == backend.schema.SCHEMA_VERSION >= 7


def test_servers_starting_together_each_put_the_same_token(backend: Backend) -> None:
    """Several servers on one database put the server's token at once (they read one token file): none fails.

    With PostgreSQL, two inserts of one name and one hash at once met on the hash's unique index, which the upsert
    on the name does not cover: one server failed to start."""
    stores = [backend.open() for _ in range(4)]
    try:
        for round_ in range(20):
            token = TokenRecord(name=f"server-{round_}", role="admin", hash=f"{round_:02d}" * 32, created_at=round_,
                                created_by="server")
            start = threading.Barrier(len(stores))

            def put(store: Store, token: TokenRecord = token, start: threading.Barrier = start) -> None:
                start.wait()
                store.put_token(token)

            with ThreadPoolExecutor(len(stores)) as pool:
                for done in [pool.submit(put, s) for s in stores]:
                    done.result()  # raises what the thread raised
        assert len(stores[0].list_tokens()) == 20
    finally:
        for s in stores:
            s.close()
