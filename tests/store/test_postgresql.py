"""What only the PostgreSQL store has, against a real PostgreSQL (tests/pg.py): servers starting together migrate
once, a connection lost mid-transaction commits nothing and is a temporary error, the pool comes back after the
server restarts at its address, appends are ordered, and the password never shows.

Everything both backends promise is checked on PostgreSQL too, by the contract suite (test_contract.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from stagewise.core.delivery import Phase
from stagewise.errors import StoreError, StoreUnreachableError, TemporaryError, UnknownDriverError
from stagewise.store import open_store
from stagewise.store.locations import mask_password, parse_location
from stagewise.store.postgresql import EVENTS_LOCK, PostgresStore
from stagewise.store.postgresql_schema import SCHEMA_VERSION
from tests.pg import Cluster
from tests.store.samples import ev, make_delivery, make_service

pytestmark = pytest.mark.timeout(90)
T = TypeVar("T")
NOWHERE = Path("/nonexistent")


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    s = open_store(pg_url, state_dir=NOWHERE)
    assert isinstance(s, PostgresStore)
    try:
        yield s
    finally:
        s.close()


def until(check: Callable[[], T], *, timeout: float = 10, what: str = "the condition") -> T:
    """Poll `check` until it returns something true; that."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.02)
    return found


def sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)  # type: ignore[arg-type]  # fixed test SQL
        return cursor.fetchall() if cursor.description else []


# --- migrations ---------------------------------------------------------------------------------

MIGRATE = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from stagewise.store import open_store, postgresql_schema

    log, go = sys.argv[2], float(sys.argv[3])

    def logged(step, number):
        def run(conn):
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {number}\\n")
            time.sleep(0.05)  # widen the window in which another process could run the same step
            step(conn)
        return run

    postgresql_schema.MIGRATIONS = tuple(logged(m, n + 1) for n, m in enumerate(postgresql_schema.MIGRATIONS))
    time.sleep(max(0.0, go - time.time()))  # both processes start migrating at the same instant
    open_store(sys.argv[1], state_dir=Path("/nonexistent")).close()
""")


def test_servers_starting_together_migrate_once(pg_url: str, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "steps.log"
    go = time.time() + 2.0  # after both interpreters have started and imported the store
    children = [subprocess.Popen([sys.executable, "-c", MIGRATE, pg_url, str(log), str(go)], env=env, cwd=root,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for child in children:
        _, stderr = child.communicate(timeout=60)
        assert child.returncode == 0, stderr
    steps = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(number) for _, number in steps) == list(range(1, SCHEMA_VERSION + 1)), steps
    assert sql(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


# --- a lost connection, a restarted server ------------------------------------------------------------


def test_a_connection_lost_mid_transaction_commits_nothing_and_is_temporary(store: PostgresStore,
                                                                           pg_url: str) -> None:
    d = store.create_delivery(make_delivery(), [ev("created")], make_service())
    before = (store.get_delivery(d.id), store.events(), store.list_services())
    moved = d.model_copy(update={"phase": Phase.PROGRESSING, "step": 2})
    with psycopg.connect(pg_url) as holder, ThreadPoolExecutor(1) as pool:
        # Hold the service's row: the save's last statement, its upsert, waits on it with the rest written.
        holder.execute("SELECT 1 FROM services WHERE name = 'web' FOR UPDATE")
        saving: Future[None] = pool.submit(store.save_delivery, moved, [ev("a"), ev("b")], make_service(at=500.0))
        [(pid,)] = until(lambda: sql(pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'stagewise'"
                                             " AND wait_event_type = 'Lock'"), what="the save waiting on the row")
        sql(pg_url, "SELECT pg_terminate_backend(%s)", pid)
        with pytest.raises(StoreUnreachableError) as caught:
            saving.result(timeout=30)
        holder.rollback()
    assert isinstance(caught.value, TemporaryError) and caught.value.delay > 0
    assert (store.get_delivery(d.id), store.events(), store.list_services()) == before
    store.save_delivery(moved, [ev("a")])  # the next call has a sound connection
    assert store.get_delivery(d.id) == moved


def test_the_pool_comes_back_after_postgresql_restarts_at_its_address(store: PostgresStore,
                                                                      pg_cluster: Cluster) -> None:
    d = store.create_delivery(make_delivery(), [ev("created")], make_service())
    pg_cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnreachableError):
            store.get_delivery(d.id)  # down: a temporary error within the pool's timeout, not a hang
        assert time.monotonic() - started < 15
    finally:
        pg_cluster.start()  # the same socket directory and port: the address a user's server keeps
    failures = 0
    for i in range(5):
        try:
            store.save_delivery(d, [ev(f"after restart {i}")])
        except StoreUnreachableError:
            failures += 1  # a pooled connection from before the restart, found dead and dropped
    assert failures <= 1
    assert [e.message for e in store.events()][-5 + failures:] == [f"after restart {i}" for i in range(failures, 5)]


def test_events_are_appended_one_transaction_at_a_time(store: PostgresStore, pg_url: str) -> None:
    """Appends hold the events lock: a reader paging by `after_id` never passes an id that commits later."""
    d = store.create_delivery(make_delivery(), [])
    with psycopg.connect(pg_url) as holder, ThreadPoolExecutor(1) as pool:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))
        saving = pool.submit(store.save_delivery, d, [ev("waits its turn")])
        until(lambda: sql(pg_url, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'stagewise'"
                                  " AND wait_event = 'advisory'"), what="the append waiting on the lock")
        store.save_delivery(d.model_copy(update={"step": 1}), [])  # a save without events does not wait
        assert not saving.done()
        holder.rollback()
        saving.result(timeout=30)
    assert [e.message for e in store.events()] == ["waits its turn"]


# --- where it is, and its password ------------------------------------------------------------------


def test_the_password_never_shows(pg_cluster: Cluster) -> None:
    url = pg_cluster.url("no_such_database").replace("postgres@", "postgres:s3cr%40t@")
    with pytest.raises(StoreUnreachableError) as caught:
        open_store(url, state_dir=NOWHERE)
    message = str(caught.value)
    assert "no_such_database" in message and "does not exist" in message
    assert "s3cr" not in message and "postgres:***@" in message


@pytest.mark.parametrize(("given", "shown"), [
    ("postgresql://u:pw@db.example:5432/sw", "postgresql://u:***@db.example:5432/sw"),
    ("postgres://u@db/sw?password=pw&sslmode=require", "postgres://u@db/sw?password=***&sslmode=require"),
    ("postgresql:///sw?host=/run/postgresql", "postgresql:///sw?host=/run/postgresql"),
    ("host=/run/postgresql dbname=sw password='p w'", "host=/run/postgresql dbname=sw password=***"),
])
def test_locations_are_shown_without_their_password(given: str, shown: str) -> None:
    where = parse_location(given, state_dir=NOWHERE)
    assert where.kind == "postgresql" and where.target == given
    assert mask_password(given) == str(where) == shown
    if where.secret:
        assert where.scrub(f"failed for {where.secret}") == "failed for ***"


def test_an_unknown_location_lists_the_forms() -> None:
    with pytest.raises(UnknownDriverError, match=r"unknown store 'mysql://u:\*\*\*@h/db'.*postgresql://USER@HOST/DB"):
        open_store("mysql://u:pw@h/db", state_dir=NOWHERE)


def test_a_database_that_is_not_stagewise_s_is_refused_not_misread(pg_url: str) -> None:
    sql(pg_url, "CREATE TABLE services (name TEXT PRIMARY KEY)")  # someone else's table, no schema version
    with pytest.raises(StoreError, match='relation "services" already exists'):
        open_store(pg_url, state_dir=NOWHERE)
