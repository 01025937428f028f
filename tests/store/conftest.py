"""The store under test, in each backend: `backend` and `store` run a test once on SQLite, once on PostgreSQL.

A `Backend` opens its store and also reaches past it, with a plain connection of
its own, to look at or tamper with the tables directly (a raw row, a trigger that
refuses writes, an old schema version), so one test body checks both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from stagewise.store import Store, open_store
from stagewise.store import postgresql_schema as pg_schema
from stagewise.store import sqlite as sqlite_store

BACKENDS = ("sqlite", "postgresql")


class Backend:
    """One backend's store location, and a plain connection beside the store's."""

    name: str
    location: str
    """What `open_store` and `--store` take."""
    schema: ModuleType
    """The module holding its MIGRATIONS and migrate()."""

    def open(self) -> Store:
        return open_store(self.location, state_dir=Path("/nonexistent"))

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (`?` placeholders) outside the store, committed; the rows it returns."""
        raise NotImplementedError

    def migrate(self, upto: int) -> None:
        """Create the schema at version `upto` only, as an older stagewise left it."""
        raise NotImplementedError

    def refuse_updates(self, table: str) -> None:
        """Make the database itself refuse any UPDATE of `table` (message: refused)."""
        raise NotImplementedError

    def version(self) -> int:
        return int(self.sql("SELECT version FROM schema_version")[0][0])

    def tables(self) -> set[str]:
        raise NotImplementedError


class SqliteBackend(Backend):
    name, schema = "sqlite", sqlite_store

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = f"sqlite:{path}"

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            return conn.execute(statement, params).fetchall()

    def migrate(self, upto: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            assert sqlite_store.migrate(conn, upto=upto) == upto

    def refuse_updates(self, table: str) -> None:
        self.sql(f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} BEGIN SELECT RAISE(ABORT, 'refused'); END")

    def tables(self) -> set[str]:
        return {r[0] for r in self.sql("SELECT name FROM sqlite_master WHERE type = 'table'")}


class PostgresBackend(Backend):
    name, schema = "postgresql", pg_schema

    def __init__(self, url: str) -> None:
        self.location = url

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.location, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def migrate(self, upto: int) -> None:
        with psycopg.connect(self.location, autocommit=True) as conn:
            assert pg_schema.migrate(conn, upto=upto) == upto

    def refuse_updates(self, table: str) -> None:
        self.sql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
                 " AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$")
        self.sql(f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()")

    def tables(self) -> set[str]:
        return {r[0] for r in self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn; PostgreSQL's cluster starts only when a test asks for it."""
    if request.param == "sqlite":
        return SqliteBackend(tmp_path / "state" / "stagewise.db")
    return PostgresBackend(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    try:
        yield s
    finally:
        s.close()
