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

Once the controller writes its ticks here (`save_all`), the WAL is copied
back into the file by a thread of its own (`Checkpointer`), not within the
commit that must return before the controller acts.

The SQL of the reads and writes is PostgreSQL's too, written once in
`sql.py` and `sql_gates.py`; this module gives it the file, its transactions
and the schema's migrations.

It must never import another driver or anything above `stagewise.core`, and it
never lets a `sqlite3` exception escape: callers see the `StagewiseError` tree.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from stagewise.errors import SchemaTooNewError, StoreBusyError, StoreError
from stagewise.store import Write, upgrades
from stagewise.store.sql import Rows, SqlTables
from stagewise.store.sql_gates import SqlGatesTables
from stagewise.store.sqlite_leases import LeaseTables, v8_leases

log = logging.getLogger(__name__)

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


def _v5_outbox(conn: sqlite3.Connection) -> None:
    """The notification outbox: one row per event and sink, written with the event."""
    conn.execute(
        "CREATE TABLE outbox ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,"
        " event_id INTEGER NOT NULL REFERENCES events (id), service TEXT NOT NULL, sink TEXT NOT NULL,"
        " kind TEXT NOT NULL, target TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, sent_at REAL, gave_up_at REAL,"
        " last_error TEXT NOT NULL DEFAULT '')"
    )
    conn.execute("CREATE INDEX outbox_due ON outbox (next_at) WHERE sent_at IS NULL AND gave_up_at IS NULL")
    conn.execute("CREATE INDEX outbox_by_service ON outbox (service, sink, id)")


def _v6_tokens_and_audit(conn: sqlite3.Connection) -> None:
    """API tokens with a name and a role (hashes only), and the audit log of mutating calls."""
    conn.execute(
        "CREATE TABLE tokens ("
        " name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,"
        " created_at REAL NOT NULL, created_by TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE audit ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,"
        " method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, detail TEXT NOT NULL)"
    )


def _v7_pipelines(conn: sqlite3.Connection) -> None:
    """Pipelines (environments in order) and each release's way through them."""
    conn.execute(
        "CREATE TABLE pipelines ("
        " name TEXT PRIMARY KEY, record TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE pipeline_releases ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, version TEXT NOT NULL,"
        " phase TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    conn.execute("CREATE INDEX pipeline_releases_by_pipeline ON pipeline_releases (pipeline, id)")


MIGRATIONS: tuple[Migration, ...] = (_v1_core_tables, _v2_measurements, _v3_deleted_services,
                                  _v4_typed_specs_and_judge_states, _v5_outbox, _v6_tokens_and_audit, _v7_pipelines,
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


# --- the store -----------------------------------------------------------------------------

CHECKPOINT_BACKSTOP = 16_384
"""WAL pages after which a committing connection checkpoints by itself once the checkpointer runs (SQLite's
own default is 1,000): only if the checkpointer falls that far behind, or could not start."""


class Checkpointer:
    """Copies the WAL back into the database file from a thread and a connection of its own.

    SQLite does it within the commit that takes the WAL past 1,000 pages (4 MB): a tick that writes a
    thousand deliveries paid for writing them twice, and for a second fsync, before it could act on
    any. Here the copy runs beside the controller, on the other core, after each of its commits
    (`nudge`); a PASSIVE checkpoint never waits for a writer nor makes one wait, and the database's
    content, and so `change_mark`, does not move.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._due = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"checkpoint {path.name}", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Checkpoint once more, soon."""
        self._due.set()

    def stop(self) -> None:
        """Let the thread end, after the checkpoint under way if any."""
        self._stopping = True
        self._due.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("%s: cannot checkpoint beside the controller (%s): commits do it themselves", self._path,
                        exc)
            return
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next nudge tries again; commits stay safe meanwhile
                    log.warning("%s: checkpoint failed: %s", self._path, exc)
        finally:
            conn.close()


class SqliteStore(SqlTables[sqlite3.Connection], SqlGatesTables[sqlite3.Connection], LeaseTables):
    """The `Store` protocol over one SQLite file, safe to share between threads.

    One connection serves every thread (the server calls from workers), so a lock
    serialises its use; SQLite itself still arbitrates between processes. The reads and
    writes are the shared SQL of `sql.py` and `sql_gates.py`, which reaches the file
    through the hooks below.
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
        self._checkpointer: Checkpointer | None = None
        self._stop_checkpointer: weakref.finalize[[], SqliteStore] | None = None

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
    def _write(self, *, ordered: int | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock, committed on success, rolled back on any error.

        IMMEDIATE takes SQLite's write lock up front: a second writer then waits in
        busy_timeout, instead of failing outright when a read lock cannot be upgraded.
        That one writer at a time also commits appended ids in the order they grow, so
        `ordered` (a lock to hold for that) is never given here.
        """
        with self._lock, _translated(self._path):
            self._conn.execute("BEGIN IMMEDIATE")
            with self._conn:
                yield self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated(self._path):
            yield self._conn

    def _execute(self, conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return conn.execute(sql, args)  # `?` is sqlite3's own placeholder

    def _executemany(self, conn: sqlite3.Connection, sql: str, rows: Rows) -> None:
        conn.executemany(sql, rows)

    def _inserted_id(self, conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> int:
        cursor = conn.execute(sql, args)
        assert cursor.lastrowid is not None  # an INSERT into a rowid table always sets it
        return cursor.lastrowid

    def _inserted_ids(self, conn: sqlite3.Connection, sql: str, rows: Rows) -> list[int]:
        # executemany tells no ids: one statement per row (a call into the library each, no round trip).
        return [self._inserted_id(conn, sql, row) for row in rows]

    def change_mark(self) -> int:
        """SQLite's `data_version`: it moves when another connection commits, not for this one's commits."""
        with self._read() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def save_all(self, writes: Sequence[Write]) -> None:
        """`SqlTables.save_all`, then a checkpoint beside the caller (`Checkpointer`, started by the first call:
        the controller's ticks are what write in bulk)."""
        super().save_all(writes)
        if self._checkpointer is None:
            with self._lock, _translated(self._path):
                self._conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_BACKSTOP}")
            self._checkpointer = Checkpointer(self._path)
            self._stop_checkpointer = weakref.finalize(self, self._checkpointer.stop)
        self._checkpointer.nudge()

    def close(self) -> None:
        """Close the connection; SQLite checkpoints the WAL into the main file on the last close."""
        if self._stop_checkpointer is not None:
            self._stop_checkpointer()
        with self._lock:
            self._conn.close()
