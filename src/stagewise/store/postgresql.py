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

The SQL of those reads and writes is SQLite's too, written once in `sql.py`
and `sql_gates.py`; this module gives it connections, transactions, the
advisory locks and psycopg's placeholders. Connections come from a psycopg pool (the server calls from worker threads),
in autocommit mode, so a read is one round trip and a write is BEGIN ... COMMIT.
After a lost connection the pool's idle connections are checked, so a
restarted PostgreSQL costs one failed call, not one per pooled connection.

It must never import another driver or anything above `stagewise.core`, never
let a psycopg exception escape (callers see the `StagewiseError` tree), and
never show the connection string's password (store/locations.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg import Connection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolClosed

from stagewise.errors import StoreBusyError, StoreError, StoreUnreachableError
from stagewise.store.locations import StoreLocation
from stagewise.store.postgresql_leases import PgLeaseTables
from stagewise.store.postgresql_schema import migrate
from stagewise.store.sql import Rows, SqlTables
from stagewise.store.sql_gates import SqlGatesTables

EVENTS_LOCK = 0x7374_6167_6577_0002
"""Held while events (and their outbox rows) are appended, so their ids are committed in the order they grow."""
AUDIT_LOCK = 0x7374_6167_6577_0003
"""Held while an audit row is appended, so audit ids are committed in the order they grow."""
TOKENS_LOCK = 0x7374_6167_6577_0004
"""Held while a token is put: servers starting together put the same token at once, and the upsert on its name
does not cover the unique index on its hash (the second insert of one hash failed instead of updating)."""

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


def format_style(sql: str) -> str:
    """`sql`, written with `?` placeholders (store/sql.py), in psycopg's style: `%s`, and a literal `%` doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(SqlTables[Connection[Any]], SqlGatesTables[Connection[Any]], PgLeaseTables):
    """The `Store` protocol over one PostgreSQL database, safe to share between threads and processes.

    The reads and writes are the shared SQL of `sql.py` and `sql_gates.py`, which reaches the database through
    the hooks below."""

    _events_lock = EVENTS_LOCK
    _audit_lock = AUDIT_LOCK
    _tokens_lock = TOKENS_LOCK

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
        (EVENTS_LOCK when it appends events, so rows appended under it commit in the order of their ids; TOKENS_LOCK
        when it puts a token, so that writers of one token go one after another)."""
        with self._translated(), self._pool.connection() as conn, conn.transaction():
            if ordered is not None:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (ordered,))
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection[Any]]:
        with self._translated(), self._pool.connection() as conn:
            yield conn

    def _execute(self, conn: Connection[Any], sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return conn.execute(format_style(sql), args)

    def _executemany(self, conn: Connection[Any], sql: str, rows: Rows) -> None:
        with conn.cursor() as cur:
            cur.executemany(format_style(sql), rows)  # pipelined: one round trip however many rows

    def _inserted_id(self, conn: Connection[Any], sql: str, args: Sequence[Any]) -> int:
        row = conn.execute(format_style(sql) + " RETURNING id", args).fetchone()
        assert row is not None  # INSERT ... RETURNING gives its row
        return int(row[0])

    def _inserted_ids(self, conn: Connection[Any], sql: str, rows: Rows) -> list[int]:
        """One pipelined `executemany` (one round trip however many rows); its results' ids come back in order."""
        if not rows:
            return []
        ids = []
        with conn.cursor() as cur:
            cur.executemany(format_style(sql) + " RETURNING id", rows, returning=True)
            while True:
                row = cur.fetchone()
                assert row is not None  # INSERT ... RETURNING gives one row per row inserted
                ids.append(int(row[0]))
                if not cur.nextset():
                    break
        return ids

    def change_mark(self) -> int:
        """A new number on every call: this store cannot tell cheaply whether another server wrote (its
        NOTIFY says so to whoever listens, not to a question), so the controller reads it again every tick."""
        with self._mark_lock:
            self._marks += 1
            return self._marks

    def close(self) -> None:
        """Close every pooled connection (and the LISTEN one); calls after this fail with StoreError."""
        self._close_listener()
        self._pool.close()
