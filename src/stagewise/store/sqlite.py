"""The SQLite store: one file under the state directory, the default backend.

The controller commits a delivery's next state here before it touches the
world, so this module is where crash safety is won or lost. Three choices
follow from that:

- every write is one `BEGIN IMMEDIATE` transaction, so a delivery, its events
  and its service land together or not at all;
- the journal is a WAL with `synchronous=FULL`, so a commit that returned
  survives a process kill *and* a power cut;
- the schema carries a version and moves only forward, one transaction per
  migration, and a file written by a newer stagewise is refused rather than
  misread.

It must never import another driver or anything above `stagewise.core`, and it
never lets a `sqlite3` exception escape: callers see the `StagewiseError` tree.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from stagewise.core.delivery import Delivery, Event, Phase
from stagewise.core.service import ServiceRecord
from stagewise.errors import NotFoundError, SchemaTooNewError, StoreBusyError, StoreError
from stagewise.store import (  # the interface; it imports us lazily
    DeletedService,
    Measurement,
    StoredEvent,
    Write,
    upgrades,
)
from stagewise.store.rows import delivery_json
from stagewise.store.sqlite_gates import GatesTables, v5_outbox, v6_tokens_and_audit, v7_pipelines, write_events
from stagewise.store.sqlite_leases import LeaseTables, v8_leases

# --- schema and its forward migrations ---------------------------------------------------

Migration = Callable[[sqlite3.Connection], None]


def _v1_core_tables(conn: sqlite3.Connection) -> None:
    """Services, deliveries and their event log: what the controller needs to resume."""
    conn.execute(
        "CREATE TABLE services ("
        " name TEXT PRIMARY KEY, record TEXT NOT NULL,"
        " created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE deliveries ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, phase TEXT NOT NULL,"
        " state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    conn.execute("CREATE INDEX deliveries_by_service ON deliveries (service, id)")
    conn.execute("CREATE INDEX deliveries_by_phase ON deliveries (phase)")
    conn.execute(
        "CREATE TABLE events ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " delivery_id INTEGER REFERENCES deliveries (id),"
        " service TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL)"
    )


def _v2_measurements(conn: sqlite3.Connection) -> None:
    """Analysis measurements, for charts and post-mortems; and indexes for following the log."""
    conn.execute(
        "CREATE TABLE measurements ("
        " id INTEGER PRIMARY KEY, delivery_id INTEGER NOT NULL REFERENCES deliveries (id),"
        " at REAL NOT NULL, run TEXT NOT NULL, release TEXT NOT NULL, metric TEXT NOT NULL,"
        " value REAL NOT NULL, extra TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX measurements_by_delivery ON measurements (delivery_id, id)")
    conn.execute("CREATE INDEX events_by_service ON events (service, id)")
    conn.execute("CREATE INDEX events_by_delivery ON events (delivery_id, id)")


def _v3_deleted_services(conn: sqlite3.Connection) -> None:
    """Services forgotten by `delete`, kept with when: their deliveries and events stay readable by name."""
    conn.execute(
        "CREATE TABLE deleted_services ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, record TEXT NOT NULL,"
        " created_at REAL NOT NULL, deleted_at REAL NOT NULL)"
    )
    conn.execute("CREATE INDEX deleted_services_by_name ON deleted_services (name, id)")


def _v4_typed_specs_and_judge_states(conn: sqlite3.Connection) -> None:
    """Analysis templates with only their provider's fields, judge states typed (store/upgrades.py)."""
    for table, column, key in (("services", "record", "name"), ("deliveries", "state", "id")):
        for row_key, text in conn.execute(f"SELECT {key}, {column} FROM {table}").fetchall():
            data = json.loads(text)
            changed = upgrades.templates_by_provider(data.get("spec"))
            if table == "deliveries":
                changed = upgrades.typed_judge_states(data) or changed
            if changed:
                conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (json.dumps(data), row_key))


MIGRATIONS: tuple[Migration, ...] = (_v1_core_tables, _v2_measurements, _v3_deleted_services,
                                  _v4_typed_specs_and_judge_states, v5_outbox, v6_tokens_and_audit, v7_pipelines,
                                  v8_leases)
"""`MIGRATIONS[n]` takes a database from schema version n to n + 1. Append only: never edit one
that has shipped, since databases in the field already ran it."""

SCHEMA_VERSION = len(MIGRATIONS)


def _stored_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, *, upto: int | None = None, where: str = "database") -> int:
    """Bring `conn`'s schema forward to `upto` (default: the latest), one transaction per step.

    Returns the version reached. The version is re-read inside each step's write transaction,
    so two processes opening the same fresh file never run a migration twice. `upto` exists
    for tests that need an old database; nothing ever migrates backwards.
    """
    latest = len(MIGRATIONS)
    target = latest if upto is None else upto
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
    )
    while True:
        conn.execute("BEGIN IMMEDIATE")
        with conn:
            current = _stored_version(conn)
            if current > latest:
                raise SchemaTooNewError(
                    f"{where}: state directory written by a newer stagewise "
                    f"(schema {current} > {latest}); upgrade stagewise to open it"
                )
            if current >= target:
                return current
            MIGRATIONS[current](conn)
            conn.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (current + 1,),
            )


# --- errors at the boundary ------------------------------------------------------------

_TEMPORARY = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR")


@contextmanager
def _translated(where: Path) -> Iterator[None]:
    """Turn sqlite3's exceptions into the StagewiseError tree, split by whether a retry can help."""
    try:
        yield
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith(_TEMPORARY):
            raise StoreBusyError(f"{where}: {exc}", delay=1.0) from exc
        raise StoreError(f"{where}: {exc}") from exc


_TERMINAL = tuple(p.value for p in Phase if p.terminal)


# --- the store -----------------------------------------------------------------------------


class SqliteStore(GatesTables, LeaseTables):
    """The `Store` protocol over one SQLite file, safe to share between threads.

    One connection serves every thread (the server calls from workers), so a lock
    serialises its use; SQLite itself still arbitrates between processes.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{path.parent}: cannot create the state directory: {exc.strerror}") from exc
        with _translated(path):
            # isolation_level=None: we issue BEGIN ourselves, so DDL in migrations is
            # transactional too and nothing starts a transaction behind our back.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            with _translated(path):
                self._configure(conn)
                migrate(conn, where=str(path))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        # Wait for another process's write instead of failing at once.
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self._path}: SQLite refused WAL mode here (got {mode!r}); "
                             "put the state directory on a local filesystem")
        # FULL, not NORMAL: in WAL mode NORMAL never corrupts, but a commit that returned can
        # vanish on power loss. The controller acts on the world right after committing
        # (traffic shifted, instances stopped), so a lost commit would leave the world ahead
        # of the store and drop the events that say why. FULL costs one fsync (under 1 ms here).
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock, committed on success, rolled back on any error.

        IMMEDIATE takes SQLite's write lock up front: a second writer then waits in
        busy_timeout, instead of failing outright when a read lock cannot be upgraded.
        """
        with self._lock, _translated(self._path):
            self._conn.execute("BEGIN IMMEDIATE")
            with self._conn:
                yield self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated(self._path):
            yield self._conn

    # --- services ---

    def get_service(self, name: str) -> ServiceRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT record FROM services WHERE name = ?", (name,)).fetchone()
        return None if row is None else ServiceRecord.model_validate_json(row[0])

    def list_services(self) -> list[ServiceRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT record FROM services ORDER BY name").fetchall()
        return [ServiceRecord.model_validate_json(r[0]) for r in rows]

    def put_service(self, record: ServiceRecord, events: Sequence[Event] = ()) -> None:
        with self._write() as conn:
            _upsert_service(conn, record)
            _append_events(conn, events, None, record.name)
            self._fenced(conn, record.name)

    def delete_service(self, name: str, *, at: float, events: Sequence[Event] = (),
                       delivery: Delivery | None = None) -> None:
        """Forget the service `name`, keeping its record as deleted at `at`; with `delivery` (its
        last, ended) saved and `events` appended, in one transaction. Its deliveries and events stay."""
        with self._write() as conn:
            row = conn.execute("SELECT record, created_at FROM services WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no service named {name!r}")
            conn.execute("INSERT INTO deleted_services (name, record, created_at, deleted_at) VALUES (?, ?, ?, ?)",
                         (name, row[0], row[1], at))
            conn.execute("DELETE FROM services WHERE name = ?", (name,))
            if delivery is not None:
                _update_delivery(conn, delivery)
            write_events(conn, events, delivery.id if delivery else None, name,
                         delivery.spec if delivery else None, delivery)
            self._fenced(conn, name)

    def deleted_services(self, name: str) -> list[DeletedService]:
        """The services once named `name` and deleted, oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT record, deleted_at FROM deleted_services WHERE name = ? ORDER BY id",
                                (name,)).fetchall()
        return [DeletedService(record=ServiceRecord.model_validate_json(r[0]), deleted_at=r[1]) for r in rows]

    # --- deliveries ---

    def create_delivery(self, delivery: Delivery, events: Sequence[Event],
                        service: ServiceRecord | None = None) -> Delivery:
        """Insert `delivery` under a new id (any id it carries is ignored); returns it with the id."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO deliveries (service, phase, state, created_at, updated_at)"
                " VALUES (?, ?, '{}', ?, ?)",
                (delivery.service, delivery.phase.value, delivery.created_at, delivery.updated_at),
            )
            assert cursor.lastrowid is not None  # an INSERT into a rowid table always sets it
            stored = delivery.model_copy(update={"id": cursor.lastrowid})
            # The id only exists once inserted, and the JSON state must carry it too.
            conn.execute("UPDATE deliveries SET state = ? WHERE id = ?",
                         (delivery_json(stored), stored.id))
            write_events(conn, events, stored.id, stored.service, stored.spec, stored)
            if service is not None:
                _upsert_service(conn, service)
            self._fenced(conn, stored.service)
        return stored

    def save_delivery(self, delivery: Delivery, events: Sequence[Event],
                      service: ServiceRecord | None = None) -> None:
        """Replace the delivery's state, append its events (and their notifications) and update its service,
        atomically."""
        with self._write() as conn:
            _update_delivery(conn, delivery)
            write_events(conn, events, delivery.id, delivery.service, delivery.spec, delivery)
            if service is not None:
                _upsert_service(conn, service)
            self._fenced(conn, delivery.service)

    def save_all(self, writes: Sequence[Write]) -> None:
        """Each write's delivery, events (with their notifications), service and measurements, all in one
        transaction: a tick's changes to every service land together, with one sync to disk."""
        if not writes:
            return
        with self._write() as conn:
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
        """SQLite's `data_version`: it moves when another connection commits, not for this one's commits."""
        with self._read() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        with self._read() as conn:
            row = conn.execute("SELECT state FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return None if row is None else Delivery.model_validate_json(row[0])

    def latest_delivery(self, service: str) -> Delivery | None:
        found = self.deliveries(service, limit=1)
        return found[0] if found else None

    def active_deliveries(self) -> list[Delivery]:
        """Deliveries whose phase is not terminal, oldest first: the controller's work list."""
        marks = ", ".join("?" * len(_TERMINAL))
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT state FROM deliveries WHERE phase NOT IN ({marks}) ORDER BY id", _TERMINAL
            ).fetchall()
        return [Delivery.model_validate_json(r[0]) for r in rows]

    def deliveries(self, service: str, limit: int = 50) -> list[Delivery]:
        """A service's deliveries, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT state FROM deliveries WHERE service = ? ORDER BY id DESC LIMIT ?", (service, limit)
            ).fetchall()
        return [Delivery.model_validate_json(r[0]) for r in rows]

    # --- events and measurements ---

    def events(self, service: str | None = None, *, delivery_id: int | None = None, after_id: int = 0,
               limit: int = 200) -> list[StoredEvent]:
        """Events in the order they were stored, after the event id `after_id` (for following a log)."""
        sql = "SELECT id, delivery_id, service, at, kind, message FROM events WHERE id > ?"
        args: list[object] = [after_id]
        if service is not None:
            sql += " AND service = ?"
            args.append(service)
        if delivery_id is not None:
            sql += " AND delivery_id = ?"
            args.append(delivery_id)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [StoredEvent(id=r[0], delivery_id=r[1], service=r[2], at=r[3], kind=r[4], message=r[5])
                for r in rows]

    def add_measurements(self, rows: list[Measurement]) -> None:
        with self._write() as conn:
            _insert_measurements(conn, rows)

    def measurements(self, delivery_id: int) -> list[Measurement]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT delivery_id, at, run, release, metric, value, extra FROM measurements"
                " WHERE delivery_id = ? ORDER BY id",
                (delivery_id,),
            ).fetchall()
        return [Measurement(delivery_id=r[0], at=r[1], run=r[2], release=r[3], metric=r[4], value=r[5],
                            extra=json.loads(r[6])) for r in rows]

    def close(self) -> None:
        """Close the connection; SQLite checkpoints the WAL into the main file on the last close."""
        with self._lock:
            self._conn.close()


def _upsert_service(conn: sqlite3.Connection, record: ServiceRecord) -> None:
    conn.execute(
        "INSERT INTO services (name, record, created_at, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
        (record.name, record.model_dump_json(), record.created_at, record.updated_at),
    )


def _update_delivery(conn: sqlite3.Connection, delivery: Delivery) -> None:
    cursor = conn.execute(
        "UPDATE deliveries SET phase = ?, state = ?, updated_at = ? WHERE id = ?",
        (delivery.phase.value, delivery_json(delivery), delivery.updated_at, delivery.id),
    )
    if cursor.rowcount != 1:
        raise NotFoundError(f"delivery {delivery.id} of {delivery.service} does not exist; "
                            "create_delivery assigns the id")


def _insert_measurements(conn: sqlite3.Connection, rows: Sequence[Measurement]) -> None:
    if rows:
        conn.executemany(
            "INSERT INTO measurements (delivery_id, at, run, release, metric, value, extra)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(m.delivery_id, m.at, m.run, m.release, m.metric, m.value, json.dumps(m.extra)) for m in rows],
        )


def _append_events(conn: sqlite3.Connection, events: Sequence[Event], delivery_id: int | None,
                   service: str) -> None:
    conn.executemany(
        "INSERT INTO events (delivery_id, service, at, kind, message) VALUES (?, ?, ?, ?, ?)",
        [(delivery_id, service, e.at, e.kind, e.message) for e in events],
    )
