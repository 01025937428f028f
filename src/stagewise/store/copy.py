"""Moving an installation's state from one store to another: `stagewise store copy --from A --to B`.

From SQLite to PostgreSQL (a team outgrowing one server), back again, or
between two databases of one kind: every table, row for row, ids kept, so
event ids a dashboard followed and the keys already sent to notification
sinks mean the same afterwards. Both stores are first brought to this
stagewise's schema version (as a server starting on them would), then the
target is filled in one transaction: it commits only when each table holds
as many rows as the source's snapshot, and the target's id counters are set
past the largest id copied. A target that holds anything is refused unless
`force` (then it is emptied first, in the same transaction).

It copies tables, not models: nothing is parsed or rewritten on the way. It
never writes to the source, and never shows a password (store/locations.py).
Run it with the servers of both stores stopped: a delivery saved while it
copies would be missing from the target.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg

from stagewise.errors import StoreError, StoreNotEmptyError
from stagewise.store.locations import StoreLocation
from stagewise.store.postgresql import PostgresStore
from stagewise.store.sqlite import SqliteStore

TABLES: tuple[tuple[str, str], ...] = (
    ("services", "name, record, created_at, updated_at"),
    ("deleted_services", "id, name, record, created_at, deleted_at"),
    ("deliveries", "id, service, phase, state, created_at, updated_at"),
    ("events", "id, delivery_id, service, at, kind, message"),
    ("measurements", "id, delivery_id, at, run, release, metric, value, extra"),
    ("outbox", "id, key, event_id, service, sink, kind, target, payload, created_at, attempts, next_at, sent_at,"
               " gave_up_at, last_error"),
    ("tokens", "name, role, hash, created_at, created_by"),
    ("audit", "id, at, actor, role, method, path, status, detail"),
    ("pipelines", "name, record, created_at, updated_at"),
    ("pipeline_releases", "id, pipeline, version, phase, state, created_at, updated_at"),
    ("leases", "service, holder, epoch, expires_at"),
    ("controllers", "name, expires_at"),
)
"""Every table of the schema with its columns, in an order that inserts a row after those it refers to."""
WITH_IDS = tuple(table for table, columns in TABLES if columns.startswith("id,"))
"""Tables whose `id` a counter gives: the target's counter is set past the largest id copied."""
BATCH = 1000


class Side(Protocol):
    """One store's tables, read (source) or written (target) in one transaction."""

    def version(self) -> int: ...
    def count(self, table: str) -> int: ...
    def rows(self, table: str, columns: str) -> Iterator[tuple[Any, ...]]: ...
    def insert(self, table: str, columns: str, rows: Iterable[tuple[Any, ...]]) -> None: ...
    def clear(self) -> None: ...
    def reset_ids(self) -> None: ...


class SqliteSide:
    def __init__(self, conn: sqlite3.Connection, *, write: bool) -> None:
        self.conn = conn
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")  # a snapshot to read, or the write lock

    def version(self) -> int:
        return int(self.conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def rows(self, table: str, columns: str) -> Iterator[tuple[Any, ...]]:
        return iter(self.conn.execute(f"SELECT {columns} FROM {table} ORDER BY 1"))

    def insert(self, table: str, columns: str, rows: Iterable[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns.split(",")))
        self.conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    def clear(self) -> None:
        for table, _ in reversed(TABLES):
            self.conn.execute(f"DELETE FROM {table}")
        self.conn.execute("DELETE FROM sqlite_sequence")

    def reset_ids(self) -> None:
        """Nothing to do: AUTOINCREMENT keeps its counter past any id inserted explicitly."""


class PostgresSide:
    def __init__(self, conn: psycopg.Connection[Any], *, write: bool) -> None:
        self.conn = conn
        if not write:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one snapshot throughout

    def version(self) -> int:
        row = self.conn.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None  # the store was opened, so migrated, just before
        return int(row[0])

    def count(self, table: str) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])

    def rows(self, table: str, columns: str) -> Iterator[tuple[Any, ...]]:
        with self.conn.cursor(name=f"copy_{table}") as cursor:  # server-side: a big table is never held whole
            cursor.itersize = BATCH
            cursor.execute(f"SELECT {columns} FROM {table} ORDER BY 1")
            yield from cursor

    def insert(self, table: str, columns: str, rows: Iterable[tuple[Any, ...]]) -> None:
        with self.conn.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def clear(self) -> None:
        self.conn.execute(f"TRUNCATE {', '.join(t for t, _ in TABLES)} RESTART IDENTITY")

    def reset_ids(self) -> None:
        for table in WITH_IDS:
            self.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1,"
                              f" false) FROM {table}")


@contextmanager
def opened(location: StoreLocation, *, write: bool) -> Iterator[Side]:
    """`location`'s tables at this stagewise's schema version, in one transaction committed if all went well."""
    if location.kind == "sqlite":
        SqliteStore(Path(location.target)).close()  # creates or migrates it, as a server would
        with closing(sqlite3.connect(location.target, isolation_level=None)) as lite:
            yield SqliteSide(lite, write=write)
            lite.execute("COMMIT")
    else:
        PostgresStore(location).close()
        with psycopg.connect(location.target) as pg:  # commits on a clean exit, rolls back on an error
            yield PostgresSide(pg, write=write)


def copy_store(source: StoreLocation, target: StoreLocation, *, force: bool = False) -> dict[str, int]:
    """Copy every table of `source` into `target`; the rows copied per table. `StoreNotEmptyError` if the target
    holds anything and not `force`; `StoreError` (nothing written) if anything goes wrong."""
    if source.kind == target.kind and source.target == target.target:
        raise StoreError(f"{source}: the source and the target are the same store")
    if source.kind == "sqlite" and not Path(source.target).is_file():
        raise StoreError(f"{source}: no such file; give the state directory (sqlite:DIR) or its stagewise.db")
    try:
        with opened(source, write=False) as src, opened(target, write=True) as dst:
            return _copy_tables(src, dst, force=force, names=(str(source), str(target)))
    except (sqlite3.Error, psycopg.Error) as exc:
        raise StoreError(target.scrub(source.scrub(f"copying {source} to {target}: {exc}"))) from exc


def _copy_tables(src: Side, dst: Side, *, force: bool, names: tuple[str, str]) -> dict[str, int]:
    if src.version() != dst.version():
        raise StoreError(f"{names[0]} is at schema {src.version()}, {names[1]} at {dst.version()}")
    held = {table: n for table, _ in TABLES if (n := dst.count(table))}
    if held and not force:
        listed = ", ".join(f"{n} {table}" for table, n in held.items())
        raise StoreNotEmptyError(f"{names[1]} is not empty ({listed}); --force replaces what it holds")
    if held:
        dst.clear()
    for table, columns in TABLES:
        dst.insert(table, columns, src.rows(table, columns))
    dst.reset_ids()
    counts = {table: src.count(table) for table, _ in TABLES}
    copied = {table: dst.count(table) for table, _ in TABLES}
    if copied != counts:
        wrong = ", ".join(f"{t}: {copied[t]} of {n}" for t, n in counts.items() if copied[t] != n)
        raise StoreError(f"copying {names[0]} to {names[1]}: the target's counts differ ({wrong}); nothing copied")
    return counts
