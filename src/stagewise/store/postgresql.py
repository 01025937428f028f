"""The PostgreSQL store: one database that several servers can share, beside SQLite's single file.

The same `Store` protocol and the same guarantees as `sqlite.py`, since the
controller commits a delivery's next state here before it touches the world:

- every write is one transaction, so a delivery, its events, their outbox
  rows and its service land together or not at all; a connection lost
  mid-transaction commits nothing, and is reported as a temporary error;
- events (with their outbox rows) and audit entries are appended under a
  transaction-level advisory lock, so their ids are committed in the order
  they grow and a reader following by `after_id` never passes one that
  commits later (SQLite gets this from its single writer);
- the schema carries a version and moves only forward (`postgresql_schema.py`,
  in step with SQLite's), migrated once however many servers start together,
  and a database written by a newer stagewise is refused.

Connections come from a psycopg pool (the server calls from worker threads),
in autocommit mode, so a read is one round trip and a write is BEGIN ... COMMIT.
After a lost connection the pool's idle connections are checked, so a
restarted PostgreSQL costs one failed call, not one per pooled connection.

It must never import another driver or anything above `stagewise.core`, never
let a psycopg exception escape (callers see the `StagewiseError` tree), and
never show the connection string's password (store/locations.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg import Connection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolClosed

from stagewise.core.delivery import Delivery, Event, Phase
from stagewise.core.service import ServiceRecord
from stagewise.errors import NotFoundError, StoreBusyError, StoreError, StoreUnreachableError
from stagewise.store import DeletedService, Measurement, StoredEvent, Write
from stagewise.store.locations import StoreLocation
from stagewise.store.postgresql_gates import PgGatesTables, write_events
from stagewise.store.postgresql_leases import PgLeaseTables
from stagewise.store.postgresql_schema import migrate
from stagewise.store.rows import EVENT_COLUMNS, delivery_json, stored_event

EVENTS_LOCK = 0x7374_6167_6577_0002
"""Held while events (and their outbox rows) are appended, so their ids are committed in the order they grow."""

CONNECT_TIMEOUT = 5
"""Seconds to wait for PostgreSQL to answer a new connection (libpq's connect_timeout)."""
POOL_TIMEOUT = 5.0
"""Seconds a call waits for a free or new connection before it fails as temporary, like SQLite's busy_timeout."""
POOL_SIZE = (1, 8)
"""Connections kept open at least, and at most: the controller's loop plus the API's worker threads."""

# SQLSTATE classes a retry can help: 08 connection exception, 57 operator intervention (shutdown, cancel),
# 40 transaction rollback (serialization failure, deadlock), 53 insufficient resources, 58 system error (I/O).
_UNREACHABLE_CLASSES = ("08", "57")
_BUSY_CLASSES = ("40", "53", "58")
_BUSY_STATES = ("55P03",)  # lock_not_available

_TERMINAL = [p.value for p in Phase if p.terminal]


class PostgresStore(PgGatesTables, PgLeaseTables):
    """The `Store` protocol over one PostgreSQL database, safe to share between threads and processes."""

    def __init__(self, location: StoreLocation) -> None:
        self._location = location
        self._where = location.masked
        with self._translated():
            given = conninfo_to_dict(location.target)
            # Defaults the connection string may override: a timeout, so that a server that does not answer
            # is an error, not a hang; a name, so that the database's own views tell stagewise's sessions.
            defaults = {"connect_timeout": CONNECT_TIMEOUT, "application_name": "stagewise"}
            options: dict[str, Any] = {"autocommit": True, **{k: v for k, v in defaults.items() if k not in given}}
            self._options = options
            self._listener_lock = threading.Lock()
            self._mark_lock = threading.Lock()
            self._marks = 0
            # A connection of its own first: its failure says why (no such database, role, password), where a
            # pool that cannot fill itself only says it timed out.
            with self._connect() as conn:
                migrate(conn, where=self._where)
        self._pool: ConnectionPool[Connection[Any]] = ConnectionPool(
            location.target, min_size=POOL_SIZE[0], max_size=POOL_SIZE[1], timeout=POOL_TIMEOUT, kwargs=options,
            name="stagewise-store", open=True)

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _connect(self) -> Connection[Any]:
        """A connection outside the pool, in autocommit mode (the migrations', the LISTEN side's)."""
        return psycopg.connect(self._location.target, **self._options)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn psycopg's exceptions into the StagewiseError tree, split by whether a retry can help."""
        try:
            yield
        except PoolClosed as exc:
            raise StoreError(f"{self._where}: the store is closed") from exc
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: psycopg.Error) -> StoreError | StoreBusyError | StoreUnreachableError:
        message = f"{self._where}: {self._location.scrub(str(exc).strip())}"
        state = exc.sqlstate or ""
        if state.startswith(_UNREACHABLE_CLASSES) or (isinstance(exc, psycopg.OperationalError) and not state):
            # The pool's other idle connections most likely died with this one (a restart): drop them now.
            pool: ConnectionPool[Connection[Any]] | None = getattr(self, "_pool", None)
            if pool is not None and not pool.closed:
                pool.check()
            return StoreUnreachableError(message, delay=1.0)
        if state.startswith(_BUSY_CLASSES) or state in _BUSY_STATES:
            return StoreBusyError(message, delay=1.0)
        return StoreError(message)

    @contextmanager
    def _write(self, *, ordered: int | None = None) -> Iterator[Connection[Any]]:
        """One transaction, committed on success, rolled back on any error; `ordered`: an advisory lock to hold
        (EVENTS_LOCK when it appends events), so rows appended under it commit in the order of their ids."""
        with self._translated(), self._pool.connection() as conn, conn.transaction():
            if ordered is not None:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (ordered,))
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection[Any]]:
        with self._translated(), self._pool.connection() as conn:
            yield conn

    # --- services ---

    def get_service(self, name: str) -> ServiceRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT record FROM services WHERE name = %s", (name,)).fetchone()
        return None if row is None else ServiceRecord.model_validate_json(row[0])

    def list_services(self) -> list[ServiceRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT record FROM services ORDER BY name").fetchall()
        return [ServiceRecord.model_validate_json(r[0]) for r in rows]

    def put_service(self, record: ServiceRecord, events: Sequence[Event] = ()) -> None:
        with self._write(ordered=EVENTS_LOCK if events else None) as conn:
            _upsert_service(conn, record)
            write_events(conn, events, None, record.name)
            self._fenced(conn, record.name)

    def delete_service(self, name: str, *, at: float, events: Sequence[Event] = (),
                       delivery: Delivery | None = None) -> None:
        """Forget the service `name`, keeping its record as deleted at `at`; with `delivery` (its
        last, ended) saved and `events` appended, in one transaction. Its deliveries and events stay."""
        with self._write(ordered=EVENTS_LOCK if events else None) as conn:
            row = conn.execute("DELETE FROM services WHERE name = %s RETURNING record, created_at", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no service named {name!r}")
            conn.execute("INSERT INTO deleted_services (name, record, created_at, deleted_at) VALUES (%s, %s, %s, %s)",
                         (name, row[0], row[1], at))
            if delivery is not None:
                _update_delivery(conn, delivery)
            write_events(conn, events, delivery.id if delivery else None, name,
                         delivery.spec if delivery else None, delivery)
            self._fenced(conn, name)

    def deleted_services(self, name: str) -> list[DeletedService]:
        """The services once named `name` and deleted, oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT record, deleted_at FROM deleted_services WHERE name = %s ORDER BY id",
                                (name,)).fetchall()
        return [DeletedService(record=ServiceRecord.model_validate_json(r[0]), deleted_at=r[1]) for r in rows]

    # --- deliveries ---

    def create_delivery(self, delivery: Delivery, events: Sequence[Event],
                        service: ServiceRecord | None = None) -> Delivery:
        """Insert `delivery` under a new id (any id it carries is ignored); returns it with the id."""
        with self._write(ordered=EVENTS_LOCK if events else None) as conn:
            row = conn.execute(
                "INSERT INTO deliveries (service, phase, state, created_at, updated_at)"
                " VALUES (%s, %s, '{}', %s, %s) RETURNING id",
                (delivery.service, delivery.phase.value, delivery.created_at, delivery.updated_at)).fetchone()
            assert row is not None  # INSERT ... RETURNING gives its row
            stored = delivery.model_copy(update={"id": int(row[0])})
            # The id only exists once inserted, and the JSON state must carry it too.
            conn.execute("UPDATE deliveries SET state = %s WHERE id = %s", (delivery_json(stored), stored.id))
            write_events(conn, events, stored.id, stored.service, stored.spec, stored)
            if service is not None:
                _upsert_service(conn, service)
            self._fenced(conn, stored.service)
        return stored

    def save_delivery(self, delivery: Delivery, events: Sequence[Event],
                      service: ServiceRecord | None = None) -> None:
        """Replace the delivery's state, append its events (and their notifications) and update its service,
        atomically."""
        with self._write(ordered=EVENTS_LOCK if events else None) as conn:
            _update_delivery(conn, delivery)
            write_events(conn, events, delivery.id, delivery.service, delivery.spec, delivery)
            if service is not None:
                _upsert_service(conn, service)
            self._fenced(conn, delivery.service)

    def save_all(self, writes: Sequence[Write]) -> None:
        """Each write's delivery, events, service and measurements in one transaction, each service's part
        checked against its fence: a refused one (LeaseLostError) leaves nothing of any."""
        if not writes:
            return
        with self._write(ordered=EVENTS_LOCK if any(w.events for w in writes) else None) as conn:
            for write in writes:
                delivery = write.delivery
                if delivery is not None:
                    _update_delivery(conn, delivery)
                    write_events(conn, write.events, delivery.id, write.service, delivery.spec, delivery)
                else:
                    write_events(conn, write.events, None, write.service)
                if write.record is not None:
                    _upsert_service(conn, write.record)
                _insert_measurements(conn, write.measurements)
                self._fenced(conn, write.service)

    def change_mark(self) -> int:
        """A new number on every call: this store cannot tell cheaply whether another server wrote (its
        NOTIFY says so to whoever listens, not to a question), so the controller reads it again every tick."""
        with self._mark_lock:
            self._marks += 1
            return self._marks

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        with self._read() as conn:
            row = conn.execute("SELECT state FROM deliveries WHERE id = %s", (delivery_id,)).fetchone()
        return None if row is None else Delivery.model_validate_json(row[0])

    def latest_delivery(self, service: str) -> Delivery | None:
        found = self.deliveries(service, limit=1)
        return found[0] if found else None

    def active_deliveries(self) -> list[Delivery]:
        """Deliveries whose phase is not terminal, oldest first: the controller's work list."""
        with self._read() as conn:
            rows = conn.execute("SELECT state FROM deliveries WHERE phase <> ALL (%s) ORDER BY id",
                                (_TERMINAL,)).fetchall()
        return [Delivery.model_validate_json(r[0]) for r in rows]

    def deliveries(self, service: str, limit: int = 50) -> list[Delivery]:
        """A service's deliveries, newest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT state FROM deliveries WHERE service = %s ORDER BY id DESC LIMIT %s",
                                (service, limit)).fetchall()
        return [Delivery.model_validate_json(r[0]) for r in rows]

    # --- events and measurements ---

    def events(self, service: str | None = None, *, delivery_id: int | None = None, after_id: int = 0,
               limit: int = 200) -> list[StoredEvent]:
        """Events in the order they were stored, after the event id `after_id` (for following a log)."""
        # Only the conditions asked for: a generic plan of `(%s IS NULL OR ...)` would not use the indexes.
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE id > %(after)s"
        if service is not None:
            sql += " AND service = %(service)s"
        if delivery_id is not None:
            sql += " AND delivery_id = %(delivery)s"
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY id LIMIT %(limit)s", {
                "after": after_id, "service": service, "delivery": delivery_id, "limit": limit}).fetchall()
        return [stored_event(r) for r in rows]

    def add_measurements(self, rows: list[Measurement]) -> None:
        with self._write() as conn:
            _insert_measurements(conn, rows)

    def measurements(self, delivery_id: int) -> list[Measurement]:
        with self._read() as conn:
            rows = conn.execute("SELECT delivery_id, at, run, release, metric, value, extra FROM measurements"
                                " WHERE delivery_id = %s ORDER BY id", (delivery_id,)).fetchall()
        return [Measurement(delivery_id=r[0], at=r[1], run=r[2], release=r[3], metric=r[4], value=r[5],
                            extra=json.loads(r[6])) for r in rows]

    def close(self) -> None:
        """Close every pooled connection (and the LISTEN one); calls after this fail with StoreError."""
        self._close_listener()
        self._pool.close()


def _upsert_service(conn: Connection[Any], record: ServiceRecord) -> None:
    conn.execute(
        "INSERT INTO services (name, record, created_at, updated_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
        (record.name, record.model_dump_json(), record.created_at, record.updated_at))


def _update_delivery(conn: Connection[Any], delivery: Delivery) -> None:
    cursor = conn.execute("UPDATE deliveries SET phase = %s, state = %s, updated_at = %s WHERE id = %s",
                          (delivery.phase.value, delivery_json(delivery), delivery.updated_at, delivery.id))
    if cursor.rowcount != 1:
        raise NotFoundError(f"delivery {delivery.id} of {delivery.service} does not exist; "
                            "create_delivery assigns the id")


def _insert_measurements(conn: Connection[Any], rows: Sequence[Measurement]) -> None:
    if rows:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO measurements (delivery_id, at, run, release, metric, value, extra)"
                            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            [(m.delivery_id, m.at, m.run, m.release, m.metric, m.value, json.dumps(m.extra))
                             for m in rows])
