"""The store's contract, checked on each backend (SQLite and PostgreSQL): round trips, ordering, atomicity,
schema versions, and a writer killed mid-loop.

No fakes: the store is the unit of crash safety, so each guarantee is checked against a real SQLite file and a
real PostgreSQL (tests/pg.py). What only one backend has lives beside: test_sqlite.py (WAL, a file that is not a
database), test_postgresql.py (the migration lock, a lost connection, a restarted server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stagewise.core.delivery import Delivery, Event, Phase
from stagewise.errors import NotFoundError, SchemaTooNewError, StagewiseError, StoreError
from stagewise.store import Measurement, Store
from stagewise.store import postgresql_schema as pg_schema
from stagewise.store import sqlite as sqlite_store
from tests.store.conftest import Backend
from tests.store.samples import ev, make_delivery, make_service

pytestmark = pytest.mark.timeout(60)


def test_both_backends_are_at_the_same_schema_version() -> None:
    """`store copy` and the version check rely on a version meaning the same tables in both."""
    assert pg_schema.SCHEMA_VERSION == sqlite_store.SCHEMA_VERSION
    assert [m.__doc__ for m in pg_schema.MIGRATIONS] == [m.__doc__ for m in sqlite_store.MIGRATIONS]


# --- round trips -------------------------------------------------------------------------


def test_service_round_trip_and_upsert(store: Store) -> None:
    assert store.get_service("web") is None
    record = make_service("web")
    store.put_service(record, [ev("applied", kind="user")])
    store.put_service(make_service("api"))
    assert store.get_service("web") == record
    assert [s.name for s in store.list_services()] == ["api", "web"]

    changed = record.model_copy(update={"previous": record.stable, "updated_at": 200.0})
    store.put_service(changed)
    assert store.get_service("web") == changed
    assert len(store.list_services()) == 2
    [event] = store.events("web")
    assert (event.delivery_id, event.service, event.kind, event.message) == (None, "web", "user", "applied")


def test_delivery_round_trip_sets_the_id_in_the_state(store: Store, backend: Backend) -> None:
    d = make_delivery()
    created = store.create_delivery(d, [ev("created")], make_service())
    assert created.id > 0
    assert created == d.model_copy(update={"id": created.id})
    assert store.get_delivery(created.id) == created
    [(state,)] = backend.sql("SELECT state FROM deliveries WHERE id = ?", (created.id,))
    assert Delivery.model_validate_json(state).id == created.id
    assert store.get_service("web") == make_service()
    assert [e.delivery_id for e in store.events("web")] == [created.id]

    moved = created.model_copy(update={"phase": Phase.PROGRESSING, "step": 2, "updated_at": 150.0})
    store.save_delivery(moved, [ev("step 1 done"), ev("step 2 started")], make_service(at=150.0))
    assert store.get_delivery(created.id) == moved
    assert [e.message for e in store.events(delivery_id=created.id)] == [
        "created", "step 1 done", "step 2 started"]
    record = store.get_service("web")
    assert record is not None and record.updated_at == 150.0


def test_ids_increase_and_orderings(store: Store) -> None:
    web = [store.create_delivery(make_delivery("web", f"v{i}"), []) for i in range(3)]
    api = store.create_delivery(make_delivery("api"), [])
    ids = [d.id for d in web] + [api.id]
    assert ids == sorted(ids) and len(set(ids)) == 4

    assert store.latest_delivery("web") == web[2]
    assert store.latest_delivery("nothing") is None
    assert store.get_delivery(10_000) is None
    assert store.deliveries("web") == web[::-1]
    assert store.deliveries("web", limit=2) == [web[2], web[1]]

    store.save_delivery(web[1].model_copy(update={"phase": Phase.SUCCEEDED}), [])
    store.save_delivery(api.model_copy(update={"phase": Phase.ROLLED_BACK}), [])
    store.save_delivery(web[0].model_copy(update={"phase": Phase.PAUSED}), [])
    assert [d.id for d in store.active_deliveries()] == [web[0].id, web[2].id]
    store.save_delivery(web[2].model_copy(update={"phase": Phase.FAILED}), [])
    assert [d.phase for d in store.active_deliveries()] == [Phase.PAUSED]


def test_active_deliveries_covers_every_phase(store: Store) -> None:
    created = {p: store.create_delivery(make_delivery().model_copy(update={"phase": p}), []) for p in Phase}
    active = {d.phase for d in store.active_deliveries()}
    assert active == {p for p in Phase if not p.terminal}
    assert [d.id for d in store.active_deliveries()] == sorted(
        d.id for p, d in created.items() if not p.terminal)


def test_events_paging_and_filters(store: Store) -> None:
    a = store.create_delivery(make_delivery("web"), [ev("a0"), ev("a1")])
    store.put_service(make_service("api"), [ev("s0", kind="user")])
    b = store.create_delivery(make_delivery("api"), [ev("b0")])
    store.save_delivery(a, [ev("a2"), ev("a3")])
    store.save_delivery(b, [ev("b1")])

    every = store.events()
    assert [e.message for e in every] == ["a0", "a1", "s0", "b0", "a2", "a3", "b1"]
    assert [e.id for e in every] == sorted(e.id for e in every)

    pages: list[str] = []
    after = 0
    while page := store.events("web", after_id=after, limit=2):
        assert len(page) <= 2
        pages += [e.message for e in page]
        after = page[-1].id
    assert pages == ["a0", "a1", "a2", "a3"]

    assert [e.message for e in store.events("api")] == ["s0", "b0", "b1"]
    assert [e.message for e in store.events(delivery_id=b.id)] == ["b0", "b1"]
    assert [e.message for e in store.events("web", delivery_id=b.id)] == []
    assert [e.message for e in store.events(after_id=every[4].id)] == ["a3", "b1"]
    assert store.events(after_id=every[-1].id) == []


def test_measurements_round_trip(store: Store) -> None:
    d = store.create_delivery(make_delivery(), [])
    other = store.create_delivery(make_delivery("api"), [])
    rows = [
        Measurement(delivery_id=d.id, at=1.0 + i, run="step-3", release=r, metric="error-rate",
                    value=0.01 * i, extra={"requests": 100 * i, "buckets": [1, 2]})
        for i in range(3) for r in ("v1", "v2")
    ]
    store.add_measurements(rows)
    store.add_measurements([Measurement(delivery_id=other.id, at=1.0, run="background", release="v2",
                                        metric="latency", value=12.5)])
    assert store.measurements(d.id) == rows
    assert [m.extra for m in store.measurements(other.id)] == [{}]
    assert store.measurements(10_000) == []


def test_measurements_for_an_unknown_delivery_are_refused(store: Store) -> None:
    """Foreign keys hold: a measurement cannot point at a delivery that does not exist."""
    with pytest.raises(StoreError, match=r"(?i)foreign key"):
        store.add_measurements([Measurement(delivery_id=999, at=1.0, run="r", release="v2",
                                            metric="latency", value=1.0)])


def test_reopening_keeps_everything(backend: Backend) -> None:
    s = backend.open()
    try:
        s.put_service(make_service(), [ev("applied")])
        d = s.create_delivery(make_delivery(), [ev("created")])
        d = d.model_copy(update={"phase": Phase.PROGRESSING, "step": 1})
        s.save_delivery(d, [ev("moved")])
        s.add_measurements([Measurement(delivery_id=d.id, at=1.0, run="r", release="v2",
                                        metric="latency", value=3.0)])
        before = (s.list_services(), s.events(), s.active_deliveries(), s.measurements(d.id))
    finally:
        s.close()
    s = backend.open()
    try:
        assert (s.list_services(), s.events(), s.active_deliveries(), s.measurements(d.id)) == before
        assert s.get_delivery(d.id) == d
        assert s.create_delivery(make_delivery(), []).id > d.id
    finally:
        s.close()


def test_usable_from_worker_threads(store: Store) -> None:
    d = store.create_delivery(make_delivery(), [])

    def work(n: int) -> None:
        for i in range(25):
            store.save_delivery(d, [ev(f"t{n}-{i}")])
            store.events(delivery_id=d.id, limit=5)

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(work, n) for n in range(4)]:
            done.result()  # raises what the thread raised
    events = store.events(delivery_id=d.id, limit=1000)
    assert len(events) == 100
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_a_closed_store_refuses_calls(backend: Backend) -> None:
    s = backend.open()
    s.close()
    with pytest.raises(StoreError):
        s.list_services()


# --- atomicity ------------------------------------------------------------------------------


def snapshot(store: Store, delivery_id: int) -> tuple[Any, ...]:
    return (store.get_delivery(delivery_id), store.events(limit=1000), store.list_services())


def test_a_failing_event_insert_rolls_back_the_whole_save(store: Store) -> None:
    d = store.create_delivery(make_delivery(), [ev("created")], make_service())
    before = snapshot(store, d.id)
    # An event the driver cannot bind fails after the delivery row was updated.
    unbindable = Event.model_construct(at=object(), kind="step", message="bad")  # type: ignore[arg-type]
    moved = d.model_copy(update={"phase": Phase.SUCCEEDED, "step": 3})
    with pytest.raises(StoreError):
        store.save_delivery(moved, [ev("fine"), unbindable], make_service(at=500.0))
    assert snapshot(store, d.id) == before
    store.save_delivery(moved, [ev("fine")])  # the store is still usable afterwards
    assert store.get_delivery(d.id) == moved


def test_a_failing_service_upsert_rolls_back_the_whole_save(store: Store, backend: Backend) -> None:
    d = store.create_delivery(make_delivery(), [ev("created")], make_service())
    before = snapshot(store, d.id)
    # The service upsert is the save's last statement; make the database itself refuse it.
    backend.refuse_updates("services")
    moved = d.model_copy(update={"phase": Phase.PROGRESSING, "step": 2})
    with pytest.raises(StoreError, match="refused"):
        store.save_delivery(moved, [ev("a"), ev("b")], make_service(at=500.0))
    assert snapshot(store, d.id) == before
    with pytest.raises(StoreError, match="refused"):
        store.create_delivery(make_delivery(), [ev("c")], make_service(at=600.0))
    assert store.deliveries("web") == [d]


def test_saving_an_unknown_delivery_lands_nothing(store: Store) -> None:
    store.put_service(make_service())
    before = (store.events(), store.list_services())
    ghost = make_delivery().model_copy(update={"id": 42})
    with pytest.raises(NotFoundError, match="delivery 42"):
        store.save_delivery(ghost, [ev("ghost")], make_service(at=999.0))
    assert (store.events(), store.list_services()) == before


# --- deleting a service ----------------------------------------------------------------------


def test_a_deleted_service_is_forgotten_and_its_history_kept(store: Store) -> None:
    record = make_service()
    running = store.create_delivery(make_delivery(), [ev("started")], record)
    store.save_delivery(running.model_copy(update={"phase": Phase.PROGRESSING}), [ev("step 1", 101)])
    ended = running.model_copy(update={"phase": Phase.FAILED, "finished_at": 200.0, "updated_at": 200.0})
    store.delete_service("web", at=200.0, events=[ev("deleted", 200.0, "user")], delivery=ended)

    assert store.get_service("web") is None and store.list_services() == []
    assert store.active_deliveries() == []
    assert store.deliveries("web") == [ended]
    assert [(e.message, e.delivery_id) for e in store.events("web")] == [
        ("started", running.id), ("step 1", running.id), ("deleted", running.id)]
    [gone] = store.deleted_services("web")
    assert (gone.record, gone.deleted_at) == (record, 200.0)

    # the name is free again: a new service of that name, beside the old one's history
    again = make_service(at=300.0)
    second = store.create_delivery(make_delivery(at=300.0), [ev("again", 300.0)], again)
    assert store.get_service("web") == again
    assert [d.id for d in store.deliveries("web")] == [second.id, running.id]
    store.delete_service("web", at=400.0)
    assert [d.deleted_at for d in store.deleted_services("web")] == [200.0, 400.0]
    with pytest.raises(NotFoundError, match="no service named 'web'"):
        store.delete_service("web", at=500.0)


def test_a_failed_delete_changes_nothing(store: Store) -> None:
    store.put_service(make_service())
    ghost = make_delivery().model_copy(update={"id": 999})
    with pytest.raises(NotFoundError):
        store.delete_service("web", at=200.0, events=[ev("deleted")], delivery=ghost)
    assert store.get_service("web") == make_service()
    assert store.deleted_services("web") == [] and store.events() == []


# --- schema versions -------------------------------------------------------------------------


def test_migrates_a_v2_database_to_one_that_keeps_deleted_services(backend: Backend) -> None:
    backend.migrate(2)
    backend.sql("INSERT INTO services (name, record, created_at, updated_at) VALUES ('web', ?, 100, 100)",
                (make_service().model_dump_json(),))
    s = backend.open()
    try:
        assert s.get_service("web") == make_service()
        s.delete_service("web", at=200.0)
        assert [d.record.name for d in s.deleted_services("web")] == ["web"]
    finally:
        s.close()
    assert backend.version() == backend.schema.SCHEMA_VERSION >= 3


def test_migrates_a_v1_database_keeping_its_rows(backend: Backend) -> None:
    old = make_delivery().model_copy(update={"id": 1, "phase": Phase.PROGRESSING})
    backend.migrate(1)
    backend.sql("INSERT INTO deliveries (service, phase, state, created_at, updated_at)"
                " VALUES ('web', 'Progressing', ?, 1, 1)", (old.model_dump_json(),))
    backend.sql("INSERT INTO events (delivery_id, service, at, kind, message) VALUES (1, 'web', 1, 'phase', 'from v1')")
    assert "measurements" not in backend.tables()
    assert backend.version() == 1

    s = backend.open()
    try:
        assert s.get_delivery(1) == old
        assert s.active_deliveries() == [old]
        assert [e.message for e in s.events()] == ["from v1"]
        s.add_measurements([Measurement(delivery_id=1, at=1.0, run="r", release="v2", metric="latency", value=1.0)])
        assert len(s.measurements(1)) == 1
        assert s.create_delivery(make_delivery(), []).id == 2
    finally:
        s.close()
    assert backend.version() == backend.schema.SCHEMA_VERSION >= 2


def test_a_failing_migration_leaves_the_previous_version(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    backend.open().close()

    def next_broken(conn: Any) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        conn.execute("THIS IS NOT SQL")

    monkeypatch.setattr(backend.schema, "MIGRATIONS", (*backend.schema.MIGRATIONS, next_broken))
    with pytest.raises(StoreError, match="syntax error"):
        backend.open()
    assert backend.version() == backend.schema.SCHEMA_VERSION
    assert "half_done" not in backend.tables()


def test_refuses_a_database_from_a_newer_stagewise(backend: Backend) -> None:
    backend.open().close()
    latest = backend.schema.SCHEMA_VERSION
    backend.sql("UPDATE schema_version SET version = ?", (latest + 1,))
    with pytest.raises(SchemaTooNewError) as caught:
        backend.open()
    assert isinstance(caught.value, StagewiseError)
    assert f"written by a newer stagewise (schema {latest + 1} > {latest})" in str(caught.value)
    assert backend.version() == latest + 1


# --- crash safety --------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from stagewise.core.delivery import Event, Phase
    from stagewise.store import open_store
    from tests.store.samples import make_delivery, make_service

    store = open_store(sys.argv[1], state_dir=Path("/nonexistent"))
    for i in range(1000):  # at most 2000 writes: one create and one save each
        d = store.create_delivery(make_delivery(at=i), [Event(at=i, kind="phase", message="created")])
        d = d.model_copy(update={"phase": Phase.PROGRESSING, "step": i + 1, "updated_at": i + 0.5})
        store.save_delivery(d, [Event(at=i, kind="step", message="saved")], make_service(at=i + 0.5))
        print(d.id, i + 1, flush=True)
""")


def run_writer_until_killed(location: str) -> dict[int, int]:
    """Run WRITER on `location`, SIGKILL it after some hundred writes; the delivery ids and steps it reported."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", WRITER, location], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=root)
    committed: dict[int, int] = {}
    deadline = time.monotonic() + 20
    try:
        assert child.stdout is not None
        while len(committed) < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            delivery_id, step = map(int, line.split())
            committed[delivery_id] = step
    finally:
        child.kill()  # SIGKILL: no handler, no atexit, no chance to finish the transaction
        _, stderr = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL, stderr
    assert len(committed) >= 100, f"the writer saved too little before the kill: {stderr}"
    return committed


def test_a_writer_killed_mid_loop_leaves_every_committed_delivery_intact(backend: Backend) -> None:
    backend.open().close()
    committed = run_writer_until_killed(backend.location)
    s = backend.open()
    try:
        for delivery_id, step in committed.items():
            d = s.get_delivery(delivery_id)
            assert d is not None and d.id == delivery_id
            assert (d.step, d.phase) == (step, Phase.PROGRESSING)
            assert [e.message for e in s.events(delivery_id=delivery_id)] == ["created", "saved"]
        # Each create and each save is all-or-nothing, printed or not yet.
        everything = s.deliveries("web", limit=10_000)
        assert len(everything) >= len(committed)
        for d in everything:
            messages = [e.message for e in s.events(delivery_id=d.id)]
            assert messages == (["created"] if d.step == 0 else ["created", "saved"])
        last_saved = max(d.updated_at for d in everything if d.step > 0)
        service = s.get_service("web")
        assert service is not None and service.updated_at == last_saved
    finally:
        s.close()
