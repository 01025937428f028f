"""What the SQLite and PostgreSQL stores do alike, written once: services, deliveries, events, measurements, leases.

The two backends keep the same tables (their schemas move in step) and give
the same guarantees, so a read or a write of those tables is one piece of
SQL that both run: a fix or a new column is made here, once, and cannot
drift between them. The statements use qmark placeholders (`?`, SQLite's
own); each backend's `_execute` hands them to its driver in the driver's
style, so the placeholder is the backend's, not the statement's.

What truly differs stays in the backend's module, behind the hooks of
`SqlBackend`: connections and transactions (`_write`, `_read`), the fence
and the news of a write (`_fenced`: PostgreSQL also NOTIFYs), how the ids
of inserted rows come back (`_inserted_id`, `_inserted_ids`: SQLite's
`lastrowid`, PostgreSQL's `RETURNING` in one pipelined round trip), and
whether appending events needs a lock for their ids to commit in the order
they grow (`_events_lock`: PostgreSQL's concurrent writers do, SQLite's one
writer does not). Schema migrations, `change_mark`, error translation, and
the leases that go by the database's clock are each backend's own.

It imports neither sqlite3 nor psycopg, nothing above `stagewise.core`, and
catches no exception: the backend's `_write`/`_read` translate them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from stagewise.core.delivery import Delivery, Event, Phase
from stagewise.core.notifications import idempotency_key, outbox_rows
from stagewise.core.service import ServiceRecord
from stagewise.core.spec import ServiceSpec
from stagewise.errors import NotFoundError
from stagewise.store import DeletedService, FenceFor, Lease, Measurement, StoredEvent, Write
from stagewise.store.rows import EVENT_COLUMNS, LEASE_COLUMNS, delivery_json, lease_row, stored_event

Conn = TypeVar("Conn")
"""The backend's connection (sqlite3's or psycopg's): the shared SQL only hands it back to the backend's hooks."""

Rows = Sequence[Sequence[Any]]

INSERT_EVENT = "INSERT INTO events (delivery_id, service, at, kind, message) VALUES (?, ?, ?, ?, ?)"
INSERT_OUTBOX = ("INSERT INTO outbox (key, event_id, service, sink, kind, target, payload, created_at, next_at)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
TERMINAL = tuple(p.value for p in Phase if p.terminal)


class Cursor(Protocol):
    """What the shared SQL reads of a statement's result, in either driver."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class SqlBackend(Generic[Conn]):
    """The hooks through which the shared SQL reaches one database; each backend's store defines them."""

    _events_lock: ClassVar[int | None] = None
    """The lock (`_write`'s `ordered`) a write that appends events holds, so that their ids commit in the order
    they grow; None where the database lets one writer in at a time, which gives that already."""

    if TYPE_CHECKING:
        def _write(self, *, ordered: int | None = None) -> AbstractContextManager[Conn]: ...
        def _read(self) -> AbstractContextManager[Conn]: ...
        def _fenced(self, conn: Conn, service: str) -> None: ...

        def _execute(self, conn: Conn, sql: str, args: Sequence[Any] = ()) -> Cursor:
            """Run one statement written with `?` placeholders."""

        def _executemany(self, conn: Conn, sql: str, rows: Rows) -> None:
            """Run one statement written with `?` placeholders once per row."""

        def _inserted_id(self, conn: Conn, sql: str, args: Sequence[Any]) -> int:
            """Run `sql`, an INSERT of one row into a table whose `id` a counter gives; that id."""

        def _inserted_ids(self, conn: Conn, sql: str, rows: Rows) -> list[int]:
            """Run `sql`, such an INSERT, once per row; the ids given, in the order of `rows`."""

    def _ordered_if(self, appends: bool) -> int | None:
        return self._events_lock if appends else None

    def _following(self, table: str, columns: str, after_id: int, limit: int, **equal: object) -> list[Any]:
        """`columns` of at most `limit` rows of `table` after the id `after_id`, in id order (for following a log),
        where each column named in `equal` whose value is not None holds that value."""
        # Only the conditions asked for: a generic `(? IS NULL OR service = ?)` would not use the indexes.
        sql = f"SELECT {columns} FROM {table} WHERE id > ?"
        args: list[object] = [after_id]
        for column, value in equal.items():
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        with self._read() as conn:
            return self._execute(conn, sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()

    def _write_events(self, conn: Conn, events: Sequence[Event], delivery_id: int | None, service: str,
                      spec: ServiceSpec | None = None, delivery: Delivery | None = None) -> None:
        """Append `events`, and with `spec` for each the outbox rows its sinks want, in the caller's transaction
        (which holds `_events_lock` when there are events)."""
        if not events:
            return
        rows = [(delivery_id, service, e.at, e.kind, e.message) for e in events]
        if spec is None or not (spec.spec.notifications or spec.spec.hooks):  # no sink: no id wanted
            self._executemany(conn, INSERT_EVENT, rows)
            return
        ids = self._inserted_ids(conn, INSERT_EVENT, rows)
        outbox = [row for event_id, event in zip(ids, events, strict=True)
                  for row in _outbox_rows(event_id, event, service, spec, delivery)]
        if outbox:
            self._executemany(conn, INSERT_OUTBOX, outbox)


def _outbox_rows(event_id: int, event: Event, service: str, spec: ServiceSpec,
                 delivery: Delivery | None) -> list[tuple[Any, ...]]:
    """The outbox rows of one event: one per sink that wants it, under the idempotency key `<event id>.<sink>`."""
    rows = []
    for row in outbox_rows(event, spec, delivery):
        key = idempotency_key(event_id, row.sink)
        rows.append((key, event_id, service, row.sink, row.kind, json.dumps(row.target),
                     json.dumps({"id": key, **row.payload}), event.at, event.at))
    return rows


class SqlTables(SqlBackend[Conn]):
    """The `Store` methods over services, deliveries, events and measurements, for either backend."""

    # --- services ---

    def get_service(self, name: str) -> ServiceRecord | None:
        with self._read() as conn:
            row = self._execute(conn, "SELECT record FROM services WHERE name = ?", (name,)).fetchone()
        return None if row is None else ServiceRecord.model_validate_json(row[0])

    def list_services(self) -> list[ServiceRecord]:
        with self._read() as conn:
            rows = self._execute(conn, "SELECT record FROM services ORDER BY name").fetchall()
        return [ServiceRecord.model_validate_json(r[0]) for r in rows]

    def put_service(self, record: ServiceRecord, events: Sequence[Event] = ()) -> None:
        with self._write(ordered=self._ordered_if(bool(events))) as conn:
            self._upsert_service(conn, record)
            self._write_events(conn, events, None, record.name)
            self._fenced(conn, record.name)

    def delete_service(self, name: str, *, at: float, events: Sequence[Event] = (),
                       delivery: Delivery | None = None) -> None:
        """Forget the service `name`, keeping its record as deleted at `at`; with `delivery` (its
        last, ended) saved and `events` appended, in one transaction. Its deliveries and events stay."""
        with self._write(ordered=self._ordered_if(bool(events))) as conn:
            # One statement takes the row and deletes it: of two deletions at once, the second finds nothing.
            row = self._execute(conn, "DELETE FROM services WHERE name = ? RETURNING record, created_at",
                                (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no service named {name!r}")
            self._execute(conn, "INSERT INTO deleted_services (name, record, created_at, deleted_at)"
                                " VALUES (?, ?, ?, ?)", (name, row[0], row[1], at))
            if delivery is not None:
                self._update_delivery(conn, delivery)
            self._write_events(conn, events, delivery.id if delivery else None, name,
                               delivery.spec if delivery else None, delivery)
            self._fenced(conn, name)

    def deleted_services(self, name: str) -> list[DeletedService]:
        """The services once named `name` and deleted, oldest first."""
        with self._read() as conn:
            rows = self._execute(conn, "SELECT record, deleted_at FROM deleted_services WHERE name = ? ORDER BY id",
                                 (name,)).fetchall()
        return [DeletedService(record=ServiceRecord.model_validate_json(r[0]), deleted_at=r[1]) for r in rows]

    # --- deliveries ---

    def create_delivery(self, delivery: Delivery, events: Sequence[Event],
                        service: ServiceRecord | None = None) -> Delivery:
        """Insert `delivery` under a new id (any id it carries is ignored); returns it with the id."""
        with self._write(ordered=self._ordered_if(bool(events))) as conn:
            delivery_id = self._inserted_id(conn, "INSERT INTO deliveries (service, phase, state, created_at,"
                                                  " updated_at) VALUES (?, ?, '{}', ?, ?)",
                                            (delivery.service, delivery.phase.value, delivery.created_at,
                                             delivery.updated_at))
            stored = delivery.model_copy(update={"id": delivery_id})
            # The id only exists once inserted, and the JSON state must carry it too.
            self._execute(conn, "UPDATE deliveries SET state = ? WHERE id = ?", (delivery_json(stored), stored.id))
            self._write_events(conn, events, stored.id, stored.service, stored.spec, stored)
            if service is not None:
                self._upsert_service(conn, service)
            self._fenced(conn, stored.service)
        return stored

    def save_delivery(self, delivery: Delivery, events: Sequence[Event],
                      service: ServiceRecord | None = None) -> None:
        """Replace the delivery's state, append its events (and their notifications) and update its service,
        atomically."""
        with self._write(ordered=self._ordered_if(bool(events))) as conn:
            self._update_delivery(conn, delivery)
            self._write_events(conn, events, delivery.id, delivery.service, delivery.spec, delivery)
            if service is not None:
                self._upsert_service(conn, service)
            self._fenced(conn, delivery.service)

    def save_all(self, writes: Sequence[Write]) -> None:
        """Each write's delivery, events (with their notifications), service and measurements, all in one
        transaction, each service's part checked against its fence: a tick's changes to every service land
        together, and a refused fence (LeaseLostError) leaves nothing of any."""
        if not writes:
            return
        with self._write(ordered=self._ordered_if(any(w.events for w in writes))) as conn:
            for write in writes:
                delivery = write.delivery
                if delivery is not None:
                    self._update_delivery(conn, delivery)
                    self._write_events(conn, write.events, delivery.id, write.service, delivery.spec, delivery)
                else:
                    self._write_events(conn, write.events, None, write.service)
                if write.record is not None:
                    self._upsert_service(conn, write.record)
                self._insert_measurements(conn, write.measurements)
                self._fenced(conn, write.service)

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        with self._read() as conn:
            row = self._execute(conn, "SELECT state FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return None if row is None else Delivery.model_validate_json(row[0])

    def latest_delivery(self, service: str) -> Delivery | None:
        found = self.deliveries(service, limit=1)
        return found[0] if found else None

    def active_deliveries(self) -> list[Delivery]:
        """Deliveries whose phase is not terminal, oldest first: the controller's work list."""
        marks = ", ".join("?" * len(TERMINAL))
        with self._read() as conn:
            rows = self._execute(conn, f"SELECT state FROM deliveries WHERE phase NOT IN ({marks}) ORDER BY id",
                                 TERMINAL).fetchall()
        return [Delivery.model_validate_json(r[0]) for r in rows]

    def deliveries(self, service: str, limit: int = 50) -> list[Delivery]:
        """A service's deliveries, newest first."""
        with self._read() as conn:
            rows = self._execute(conn, "SELECT state FROM deliveries WHERE service = ? ORDER BY id DESC LIMIT ?",
                                 (service, limit)).fetchall()
        return [Delivery.model_validate_json(r[0]) for r in rows]

    # --- events and measurements ---

    def events(self, service: str | None = None, *, delivery_id: int | None = None, after_id: int = 0,
               limit: int = 200) -> list[StoredEvent]:
        """Events in the order they were stored, after the event id `after_id` (for following a log)."""
        rows = self._following("events", EVENT_COLUMNS, after_id, limit, service=service, delivery_id=delivery_id)
        return [stored_event(r) for r in rows]

    def add_measurements(self, rows: list[Measurement]) -> None:
        with self._write() as conn:
            self._insert_measurements(conn, rows)

    def measurements(self, delivery_id: int) -> list[Measurement]:
        with self._read() as conn:
            rows = self._execute(conn, "SELECT delivery_id, at, run, release, metric, value, extra FROM measurements"
                                       " WHERE delivery_id = ? ORDER BY id", (delivery_id,)).fetchall()
        return [Measurement(delivery_id=r[0], at=r[1], run=r[2], release=r[3], metric=r[4], value=r[5],
                            extra=json.loads(r[6])) for r in rows]

    # --- the statements the writes above share ---

    def _upsert_service(self, conn: Conn, record: ServiceRecord) -> None:
        self._execute(conn, "INSERT INTO services (name, record, created_at, updated_at) VALUES (?, ?, ?, ?)"
                            " ON CONFLICT (name) DO UPDATE SET record = excluded.record,"
                            " updated_at = excluded.updated_at",
                      (record.name, record.model_dump_json(), record.created_at, record.updated_at))

    def _update_delivery(self, conn: Conn, delivery: Delivery) -> None:
        cursor = self._execute(conn, "UPDATE deliveries SET phase = ?, state = ?, updated_at = ? WHERE id = ?",
                               (delivery.phase.value, delivery_json(delivery), delivery.updated_at, delivery.id))
        if cursor.rowcount != 1:
            raise NotFoundError(f"delivery {delivery.id} of {delivery.service} does not exist; "
                                "create_delivery assigns the id")

    def _insert_measurements(self, conn: Conn, rows: Sequence[Measurement]) -> None:
        if rows:
            self._executemany(conn, "INSERT INTO measurements (delivery_id, at, run, release, metric, value, extra)"
                                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [(m.delivery_id, m.at, m.run, m.release, m.metric, m.value, json.dumps(m.extra))
                               for m in rows])


class SqlLeases(SqlBackend[Conn]):
    """The lease methods that read no clock, for either backend; taking and renewing leases, the heartbeat and
    the fence (`_fenced`) go by each database's clock and stay in its leases module."""

    _fence: FenceFor | None = None

    def fence_with(self, fence: FenceFor | None) -> None:
        self._fence = fence

    def lease(self, service: str) -> Lease | None:
        with self._read() as conn:
            r = self._execute(conn, f"SELECT {LEASE_COLUMNS} FROM leases WHERE service = ?", (service,)).fetchone()
        return None if r is None else lease_row(r)

    def release_leases(self, holder: str, services: list[str] | None = None) -> None:
        with self._write() as conn:
            if services is None:
                self._execute(conn, "UPDATE leases SET holder = '', expires_at = 0 WHERE holder = ?", (holder,))
                self._execute(conn, "DELETE FROM controllers WHERE name = ?", (holder,))
            elif services:
                marks = ", ".join("?" * len(services))
                self._execute(conn, "UPDATE leases SET holder = '', expires_at = 0 WHERE holder = ?"
                                    f" AND service IN ({marks})", (holder, *services))
