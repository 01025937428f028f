"""What only the SQLite store has: a file under the state directory, its pragmas (WAL, FULL sync, foreign keys,
a busy timeout), checkpoints beside the controller, a file that is not a database, and the file's integrity
after a writer was killed.

Everything both backends promise is checked on SQLite too, by the contract suite (test_contract.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from stagewise.basics import waiting
from stagewise.errors import StoreError
from stagewise.store import Write, open_store
from stagewise.store.sqlite import CHECKPOINT_BACKSTOP, SqliteStore
from tests.store.samples import make_delivery, make_service
from tests.store.test_contract import run_writer_until_killed

pytestmark = pytest.mark.timeout(30)


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A plain connection beside the store's, to look at the file directly."""
    return closing(sqlite3.connect(path, isolation_level=None))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "stagewise.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    with SqliteStore(db) as s:
        yield s


def test_open_store_creates_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    s = open_store("sqlite", state_dir=state)
    try:
        assert isinstance(s, SqliteStore)
        assert (state / "stagewise.db").exists()
    finally:
        s.close()


def test_sqlite_path_names_a_file_or_a_state_directory(tmp_path: Path) -> None:
    """`sqlite:PATH`: a file, or the `stagewise.db` of a directory (a state directory, as `store copy` takes it)."""
    state = tmp_path / "state"
    state.mkdir()
    for location, file in ((f"sqlite:{state}", state / "stagewise.db"),
                           (f"sqlite:{tmp_path / 'other.db'}", tmp_path / "other.db"),
                           (f"sqlite://{tmp_path / 'third.db'}", tmp_path / "third.db")):
        s = open_store(location, state_dir=tmp_path / "unused")
        s.close()
        assert file.exists(), location
    assert not (tmp_path / "unused").exists()


def test_pragmas(store: SqliteStore, db: Path) -> None:
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = store._conn
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_refuses_a_file_that_is_not_a_database(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"definitely not sqlite " * 100)
    with pytest.raises(StoreError, match="not a database"):
        SqliteStore(db)


def test_a_writer_killed_mid_loop_leaves_the_file_intact(db: Path) -> None:
    """The contract suite checks what was committed; here, that the file itself is sound after the kill."""
    SqliteStore(db).close()
    run_writer_until_killed(f"sqlite:{db}")
    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_controllers_writes_are_checkpointed_beside_it_not_within_its_commits(store: SqliteStore,
                                                                                   db: Path) -> None:
    deliveries = []
    for i in range(200):
        store.put_service(make_service(f"svc-{i}"))
        deliveries.append(store.create_delivery(make_delivery(f"svc-{i}"), []))
    store.close()  # the last close checkpoints: the file holds all of that, and the WAL is empty
    with SqliteStore(db) as again:
        mark, size = again.change_mark(), db.stat().st_size
        padded = [d.model_copy(update={"message": f"{i}" * 20_000}) for i, d in enumerate(deliveries)]
        again.save_all([Write(service=d.service, delivery=d) for d in padded])  # 4 MB: past SQLite's own 1,000 pages
        with raw(db) as conn:
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # another connection: its own
        assert again._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == CHECKPOINT_BACKSTOP
        assert waiting.blocking_until(lambda: db.stat().st_size > size + 4_000_000, timeout=10)  # while open
        assert again.change_mark() == mark  # a checkpoint moves no content: nothing to read again
        assert [d.message for d in again.active_deliveries()] == [d.message for d in padded]
    assert not [t for t in threading.enumerate() if t.name.startswith("checkpoint ")]  # closed with the store
