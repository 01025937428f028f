"""`stagewise store copy`: an installation's SQLite state moved into a real PostgreSQL and back, every table row
for row with its ids, readable through the store afterwards; a target that holds data is refused unless --force.

The SQLite side is filled the way a server fills it: a pipeline release delivered through the real controller and
pipeline runner on the fakes (services, deliveries, events, measurements, notifications waiting in the outbox,
pipeline releases), plus tokens, the audit log and a deleted service through the store.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from stagewise.core.pipeline import PipelineSpec
from stagewise.errors import StoreNotEmptyError
from stagewise.pipelines import Pipelines
from stagewise.store import AuditEntry, Store, TokenRecord, open_store
from stagewise.store.copy import TABLES, copy_store
from stagewise.store.locations import parse_location
from tests.controller.conftest import World
from tests.pipelines.test_pipelines import service
from tests.store.conftest import Backend, PostgresBackend, SqliteBackend
from tests.store.samples import ev, make_service

pytestmark = pytest.mark.timeout(120)
NOWHERE = Path("/nonexistent")
SINKS = [{"name": "ops", "webhook": {"url": "http://127.0.0.1:9/notify", "secret": "s"}}]


async def fill_like_a_server(state: Path) -> None:
    """A state directory as a server leaves it after a pipeline release, people, and a deleted service."""
    world = World(state)
    runner = Pipelines(world.controller)
    staging = service("shop-staging", 18081)
    staging["spec"]["notifications"] = SINKS  # their notifications wait in the outbox: no sender runs here
    await runner.apply(PipelineSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "shop"},
        "spec": {"stages": [{"name": "staging", "service": staging, "requiredSoak": "30s"},
                            {"name": "production", "service": service("shop-prod", 18082)}]}}))
    for version in ("v1", "v2"):  # the first is installed at once; the second goes through a canary, analysed
        await runner.release("shop", version, actor="alice")
        for _ in range(2400):  # at most ten minutes of the fake clock, in ticks of 0.25 s
            await world.controller.tick()
            await runner.tick()
            await asyncio.sleep(0)
            world.clock.advance(0.25)
            if world.controller.store.pipeline_releases("shop", limit=1)[0].phase != "Progressing":
                break
        assert world.controller.store.pipeline_releases("shop", limit=1)[0].phase == "Succeeded"
    store = world.controller.store
    store.add_token(TokenRecord(name="alice", role="operator", hash="ab" * 32, created_at=1, created_by="admin"))
    store.record_audit(AuditEntry(at=2, actor="alice", role="operator", method="POST", path="/api/v1/apply",
                                  status=200, detail="shop v1"))
    store.put_service(make_service("old"), [ev("applied", kind="user")])
    store.delete_service("old", at=300.0, events=[ev("deleted", 300.0, "user")])
    store.heartbeat("ctl-a", duration=15.0)  # as a server on PostgreSQL leaves them, had it been one
    store.acquire_leases("ctl-a", ["shop-prod"], duration=15.0)
    await runner.close()
    store.close()


def table_rows(backend: Backend) -> dict[str, list[tuple[Any, ...]]]:
    return {table: backend.sql(f"SELECT {columns} FROM {table} ORDER BY 1") for table, columns in TABLES}


def readable(store: Store) -> tuple[Any, ...]:
    """Everything a reader of the store sees."""
    names = [s.name for s in store.list_services()]
    deliveries = [d for name in names for d in store.deliveries(name, limit=1000)]
    return (store.list_services(), deliveries, store.events(limit=100_000),
            [store.measurements(d.id) for d in deliveries], store.notifications(limit=100_000),
            store.list_tokens(), store.audit(), store.list_pipelines(), store.pipeline_releases(limit=1000),
            store.deleted_services("old"), store.active_deliveries())


async def test_copy_sqlite_to_postgresql_and_back(tmp_path: Path, pg_url: str) -> None:
    state = tmp_path / "state"
    await fill_like_a_server(state)
    lite, pg = SqliteBackend(state / "stagewise.db"), PostgresBackend(pg_url)
    assert {t for t, _ in TABLES} == lite.tables() - {"schema_version", "sqlite_sequence"}
    source = table_rows(lite)
    assert all(source[t] for t, _ in TABLES), str({t: len(rows) for t, rows in source.items()})

    counts = copy_store(parse_location(f"sqlite:{state}", state_dir=NOWHERE), parse_location(pg_url,
                                                                                              state_dir=NOWHERE))
    assert counts == {t: len(rows) for t, rows in source.items()}
    assert {t for t, _ in TABLES} == pg.tables() - {"schema_version"}
    assert table_rows(pg) == source, "row for row, ids and all"

    with closing(open_store(f"sqlite:{state}", state_dir=NOWHERE)) as before, \
            closing(open_store(pg_url, state_dir=NOWHERE)) as after:
        assert readable(after) == readable(before)
        # the id counters went past the ids copied: what is written next follows them
        last_event = max(e.id for e in before.events(limit=100_000))
        after.put_service(make_service("new"), [ev("after the copy")])
        [new] = after.events("new")
        assert new.id == last_event + 1

    # back into a new SQLite file: the same rows again
    back = tmp_path / "back.db"
    copy_store(parse_location(pg_url, state_dir=NOWHERE), parse_location(f"sqlite:{back}", state_dir=NOWHERE))
    assert table_rows(SqliteBackend(back)) == table_rows(pg)


async def test_a_target_that_holds_data_is_refused_unless_forced(tmp_path: Path, pg_url: str) -> None:
    state = tmp_path / "state"
    await fill_like_a_server(state)
    with closing(open_store(pg_url, state_dir=NOWHERE)) as target:
        target.put_service(make_service("stray"), [ev("already here")])
    source, target_at = parse_location(f"sqlite:{state}", state_dir=NOWHERE), parse_location(pg_url,
                                                                                             state_dir=NOWHERE)
    with pytest.raises(StoreNotEmptyError, match=r"is not empty \(1 services, 1 events\); --force replaces"):
        copy_store(source, target_at)
    copy_store(source, target_at, force=True)
    assert table_rows(PostgresBackend(pg_url)) == table_rows(SqliteBackend(state / "stagewise.db"))


def test_the_cli_verb(tmp_path: Path, pg_url: str) -> None:
    state = tmp_path / "state"
    with closing(open_store("sqlite", state_dir=state)) as store:
        store.put_service(make_service("web"), [ev("applied", kind="user")])
    copied = subprocess.run([sys.executable, "-m", "stagewise", "store", "copy", "--from", "sqlite", "--to", pg_url,
                             "--state", str(state)], capture_output=True, text=True, timeout=60)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert "copied 2 rows; the counts match in both stores" in copied.stdout
    again = subprocess.run([sys.executable, "-m", "stagewise", "store", "copy", "--from", "sqlite", "--to",
                            pg_url.replace("postgres@", "postgres:hunter2@"), "--state", str(state)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "is not empty (1 services, 1 events)" in again.stderr
    assert "hunter2" not in again.stderr and "Traceback" not in again.stderr
    missing = subprocess.run([sys.executable, "-m", "stagewise", "store", "copy", "--from",
                              f"sqlite:{tmp_path}/nowhere", "--to", pg_url], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nowhere: no such file" in missing.stderr
    assert not (tmp_path / "nowhere").exists(), "a missing source is not created"
