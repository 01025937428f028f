"""The SQLite store's tables for notifications, people and pipelines, and their forward migrations.

- `outbox`: one row per (event, sink), inserted by `write_events` in the very
  transaction that appends the event, so a committed event is never lost to
  its sinks; the controller's sender marks each row sent, or failed with its
  next try. The idempotency key `<event id>.<sink>` is unique.
- `tokens` and `audit`: API tokens by name and role, stored as SHA-256 hashes
  only; every mutating call, with the token's name and the answer's status.
- `pipelines` and `pipeline_releases`: each pipeline's spec, and each
  release's way through its stages.

Kept apart from `sqlite.py` so that each module stays one concern; the
`SqliteStore` class takes these methods in as a mixin. Like the rest of the
store, it imports `stagewise.core` only and lets no sqlite3 exception out
(the caller's `_write`/`_read` translate them).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from stagewise.core.delivery import Delivery, Event
from stagewise.core.notifications import idempotency_key, outbox_rows
from stagewise.core.pipeline import PipelineRecord, PipelineRelease
from stagewise.core.spec import ServiceSpec
from stagewise.errors import ConflictError, NotFoundError
from stagewise.store import AuditEntry, OutboxItem, SinkHealth, TokenRecord
from stagewise.store.rows import (
    AUDIT_COLUMNS,
    OUTBOX_COLUMNS,
    TOKEN_COLUMNS,
    audit_entry,
    outbox_item,
    sink_health_of,
    token,
)

# --- migrations ---------------------------------------------------------------------------------


def v5_outbox(conn: sqlite3.Connection) -> None:
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


def v6_tokens_and_audit(conn: sqlite3.Connection) -> None:
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


def v7_pipelines(conn: sqlite3.Connection) -> None:
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


# --- events with their outbox rows ------------------------------------------------------------------


def write_events(conn: sqlite3.Connection, events: Sequence[Event], delivery_id: int | None, service: str,
                 spec: ServiceSpec | None = None, delivery: Delivery | None = None) -> None:
    """Append `events`, and for each the outbox rows its sinks want, in the caller's transaction."""
    for event in events:
        cursor = conn.execute(
            "INSERT INTO events (delivery_id, service, at, kind, message) VALUES (?, ?, ?, ?, ?)",
            (delivery_id, service, event.at, event.kind, event.message))
        if spec is None:
            continue
        event_id = cursor.lastrowid
        assert event_id is not None  # an INSERT into a rowid table always sets it
        for row in outbox_rows(event, spec, delivery):
            key = idempotency_key(event_id, row.sink)
            conn.execute(
                "INSERT INTO outbox (key, event_id, service, sink, kind, target, payload, created_at, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, event_id, service, row.sink, row.kind, json.dumps(row.target),
                 json.dumps({"id": key, **row.payload}), event.at, event.at))


class GatesTables:
    """Methods of `SqliteStore` over the outbox, tokens, audit and pipeline tables."""

    if TYPE_CHECKING:
        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    # --- outbox ---

    def due_notifications(self, now: float, limit: int = 50) -> list[OutboxItem]:
        """Notifications not sent yet whose next try is due, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL AND gave_up_at IS NULL"
                " AND next_at <= ? ORDER BY id LIMIT ?", (now, limit)).fetchall()
        return [outbox_item(r) for r in rows]

    def notifications(self, service: str | None = None, *, after_id: int = 0, limit: int = 200) -> list[OutboxItem]:
        sql = f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id > ?"
        args: list[object] = [after_id]
        if service is not None:
            sql += " AND service = ?"
            args.append(service)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()
        return [outbox_item(r) for r in rows]

    def notification_sent(self, item_id: int, *, at: float) -> None:
        with self._write() as conn:
            conn.execute("UPDATE outbox SET sent_at = ?, attempts = attempts + 1, last_error = '' WHERE id = ?",
                         (at, item_id))

    def notification_failed(self, item_id: int, *, at: float, error: str, next_at: float, give_up: bool) -> None:
        with self._write() as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ?, gave_up_at = ?"
                         " WHERE id = ?", (error, next_at, at if give_up else None, item_id))

    def retry_notifications_now(self, now: float) -> int:
        """Make every unsent notification due now (a restarted sender tries each once at once)."""
        with self._write() as conn:
            cursor = conn.execute("UPDATE outbox SET next_at = ? WHERE sent_at IS NULL AND gave_up_at IS NULL"
                                  " AND next_at > ?", (now, now))
            return cursor.rowcount

    def sink_health(self, service: str) -> list[SinkHealth]:
        """Per sink of `service`: what waits to be sent, how often its oldest was tried, its last error."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT sink, kind,"
                " SUM(sent_at IS NULL AND gave_up_at IS NULL), SUM(gave_up_at IS NOT NULL), MAX(sent_at),"
                " MAX(CASE WHEN sent_at IS NULL AND gave_up_at IS NULL THEN attempts ELSE 0 END)"
                " FROM outbox WHERE service = ? GROUP BY sink, kind ORDER BY sink", (service,)).fetchall()
            errors = dict(conn.execute(
                "SELECT sink, last_error FROM outbox WHERE id IN (SELECT MAX(id) FROM outbox WHERE service = ?"
                " AND last_error != '' AND sent_at IS NULL GROUP BY sink)", (service,)).fetchall())
        return sink_health_of(rows, errors)

    # --- tokens and audit ---

    def add_token(self, token: TokenRecord) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM tokens WHERE name = ?", (token.name,)).fetchone():
                raise ConflictError(f"a token named {token.name!r} exists; delete it first or choose another name")
            conn.execute("INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
                         (token.name, token.role, token.hash, token.created_at, token.created_by))

    def put_token(self, token: TokenRecord) -> None:
        """Add or replace the token named `token.name` (the server's own admin token, when its file changed)."""
        with self._write() as conn:
            conn.execute("DELETE FROM tokens WHERE name = ? OR hash = ?", (token.name, token.hash))
            conn.execute("INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
                         (token.name, token.role, token.hash, token.created_at, token.created_by))

    def token_by_hash(self, digest: str) -> TokenRecord | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?", (digest,)).fetchone()
        return None if row is None else token(row)

    def list_tokens(self) -> list[TokenRecord]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name").fetchall()
        return [token(r) for r in rows]

    def delete_token(self, name: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount != 1:
                raise NotFoundError(f"no token named {name!r}")

    def record_audit(self, entry: AuditEntry) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO audit (at, actor, role, method, path, status, detail)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (entry.at, entry.actor, entry.role, entry.method, entry.path, entry.status, entry.detail))

    def audit(self, *, after_id: int = 0, limit: int = 200) -> list[AuditEntry]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit WHERE id > ? ORDER BY id LIMIT ?",
                                (after_id, limit)).fetchall()
        return [audit_entry(r) for r in rows]

    # --- pipelines ---

    def put_pipeline(self, record: PipelineRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO pipelines (name, record, created_at, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                (record.name, record.model_dump_json(), record.created_at, record.updated_at))

    def get_pipeline(self, name: str) -> PipelineRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT record FROM pipelines WHERE name = ?", (name,)).fetchone()
        return None if row is None else PipelineRecord.model_validate_json(row[0])

    def list_pipelines(self) -> list[PipelineRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT record FROM pipelines ORDER BY name").fetchall()
        return [PipelineRecord.model_validate_json(r[0]) for r in rows]

    def create_pipeline_release(self, release: PipelineRelease) -> PipelineRelease:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO pipeline_releases (pipeline, version, phase, state, created_at, updated_at)"
                " VALUES (?, ?, ?, '{}', ?, ?)",
                (release.pipeline, release.version, release.phase, release.created_at, release.updated_at))
            assert cursor.lastrowid is not None
            stored = release.model_copy(update={"id": cursor.lastrowid})
            conn.execute("UPDATE pipeline_releases SET state = ? WHERE id = ?", (stored.model_dump_json(), stored.id))
        return stored

    def save_pipeline_release(self, release: PipelineRelease) -> None:
        with self._write() as conn:
            cursor = conn.execute("UPDATE pipeline_releases SET phase = ?, state = ?, updated_at = ? WHERE id = ?",
                                  (release.phase, release.model_dump_json(), release.updated_at, release.id))
            if cursor.rowcount != 1:
                raise NotFoundError(f"release {release.id} of pipeline {release.pipeline} does not exist")

    def pipeline_releases(self, pipeline: str | None = None, *, active: bool = False,
                          limit: int = 50) -> list[PipelineRelease]:
        """Releases of `pipeline` (of every pipeline when None), newest first; `active`: only those in flight."""
        sql, args = "SELECT state FROM pipeline_releases WHERE 1 = 1", []
        if pipeline is not None:
            sql += " AND pipeline = ?"
            args.append(pipeline)
        if active:
            sql += " AND phase = 'Progressing'"
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
        return [PipelineRelease.model_validate_json(r[0]) for r in rows]

