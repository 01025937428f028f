"""The PostgreSQL store's outbox, tokens, audit log and pipelines: `sqlite_gates.py`'s methods in PostgreSQL's SQL.

Same tables, same guarantees: an event's outbox rows are inserted by
`write_events` in the transaction that appends the event; a token's name and
hash are each unique; audit and outbox ids grow in the order their rows were
committed (the store appends them under an advisory lock, postgresql.py),
so a reader paging by `after_id` never skips one.

Kept apart from `postgresql.py` so each module stays one concern; the
`PostgresStore` class takes these methods in as a mixin. It imports
`stagewise.core` only and lets no psycopg exception out (the caller's
`_write`/`_read` translate them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from psycopg import Connection

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

AUDIT_LOCK = 0x7374_6167_6577_0003
"""Held while an audit row is appended, so audit ids are committed in the order they grow."""


def write_events(conn: Connection[Any], events: Sequence[Event], delivery_id: int | None, service: str,
                 spec: ServiceSpec | None = None, delivery: Delivery | None = None) -> None:
    """Append `events`, and for each the outbox rows its sinks want, in the caller's transaction.

    The events go in one `executemany` (pipelined: one round trip however many), their ids come back in order.
    """
    if not events:
        return
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO events (delivery_id, service, at, kind, message) VALUES (%s, %s, %s, %s, %s)"
                        " RETURNING id", [(delivery_id, service, e.at, e.kind, e.message) for e in events],
                        returning=spec is not None)
        if spec is None:
            return
        ids = []
        while True:
            row = cur.fetchone()
            assert row is not None  # INSERT ... RETURNING gives one row per event
            ids.append(int(row[0]))
            if not cur.nextset():
                break
        outbox = [_outbox_row(event_id, event, service, spec, delivery) for event_id, event in zip(ids, events,
                                                                                                    strict=True)]
        cur.executemany("INSERT INTO outbox (key, event_id, service, sink, kind, target, payload, created_at, next_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", [row for rows in outbox for row in rows])


def _outbox_row(event_id: int, event: Event, service: str, spec: ServiceSpec,
                delivery: Delivery | None) -> list[tuple[Any, ...]]:
    """The outbox rows of one event: one per sink that wants it, under the idempotency key `<event id>.<sink>`."""
    rows = []
    for row in outbox_rows(event, spec, delivery):
        key = idempotency_key(event_id, row.sink)
        rows.append((key, event_id, service, row.sink, row.kind, json.dumps(row.target),
                     json.dumps({"id": key, **row.payload}), event.at, event.at))
    return rows


class PgGatesTables:
    """Methods of `PostgresStore` over the outbox, tokens, audit and pipeline tables."""

    if TYPE_CHECKING:
        def _write(self, *, ordered: int | None = None) -> AbstractContextManager[Connection[Any]]: ...
        def _read(self) -> AbstractContextManager[Connection[Any]]: ...

    # --- outbox ---

    def due_notifications(self, now: float, limit: int = 50) -> list[OutboxItem]:
        """Notifications not sent yet whose next try is due, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL AND gave_up_at IS NULL"
                " AND next_at <= %s ORDER BY id LIMIT %s", (now, limit)).fetchall()
        return [outbox_item(r) for r in rows]

    def notifications(self, service: str | None = None, *, after_id: int = 0, limit: int = 200) -> list[OutboxItem]:
        # Only the conditions asked for: a generic plan of `(%s IS NULL OR service = %s)` would not use the index.
        by_service = "" if service is None else " AND service = %(service)s"
        with self._read() as conn:
            rows = conn.execute(f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id > %(after)s{by_service}"
                                " ORDER BY id LIMIT %(limit)s",
                                {"after": after_id, "service": service, "limit": limit}).fetchall()
        return [outbox_item(r) for r in rows]

    def notification_sent(self, item_id: int, *, at: float) -> None:
        with self._write() as conn:
            conn.execute("UPDATE outbox SET sent_at = %s, attempts = attempts + 1, last_error = '' WHERE id = %s",
                         (at, item_id))

    def notification_failed(self, item_id: int, *, at: float, error: str, next_at: float, give_up: bool) -> None:
        with self._write() as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_at = %s, gave_up_at = %s"
                         " WHERE id = %s", (error, next_at, at if give_up else None, item_id))

    def retry_notifications_now(self, now: float) -> int:
        """Make every unsent notification due now (a restarted sender tries each once at once)."""
        with self._write() as conn:
            cursor = conn.execute("UPDATE outbox SET next_at = %s WHERE sent_at IS NULL AND gave_up_at IS NULL"
                                  " AND next_at > %s", (now, now))
            return cursor.rowcount

    def sink_health(self, service: str) -> list[SinkHealth]:
        """Per sink of `service`: what waits to be sent, how often its oldest was tried, its last error."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT sink, kind, count(*) FILTER (WHERE sent_at IS NULL AND gave_up_at IS NULL),"
                " count(*) FILTER (WHERE gave_up_at IS NOT NULL), max(sent_at),"
                " max(CASE WHEN sent_at IS NULL AND gave_up_at IS NULL THEN attempts ELSE 0 END)"
                " FROM outbox WHERE service = %s GROUP BY sink, kind ORDER BY sink", (service,)).fetchall()
            errors = dict(conn.execute(
                "SELECT sink, last_error FROM outbox WHERE id IN (SELECT max(id) FROM outbox WHERE service = %s"
                " AND last_error != '' AND sent_at IS NULL GROUP BY sink)", (service,)).fetchall())
        return sink_health_of(rows, errors)

    # --- tokens and audit ---

    def add_token(self, token: TokenRecord) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (token.name, token.role, token.hash, token.created_at, token.created_by))
            if cursor.rowcount != 1:
                raise ConflictError(f"a token named {token.name!r} exists; delete it first or choose another name")

    def put_token(self, token: TokenRecord) -> None:
        """Add or replace the token named `token.name` (the server's own admin token, when its file changed).

        An upsert, not a delete and an insert: servers starting together on one database each put theirs."""
        with self._write() as conn:
            conn.execute("DELETE FROM tokens WHERE hash = %s AND name != %s", (token.hash, token.name))
            conn.execute(
                "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET role = excluded.role, hash = excluded.hash,"
                " created_at = excluded.created_at, created_by = excluded.created_by",
                (token.name, token.role, token.hash, token.created_at, token.created_by))

    def token_by_hash(self, digest: str) -> TokenRecord | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = %s", (digest,)).fetchone()
        return None if row is None else token(row)

    def list_tokens(self) -> list[TokenRecord]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name").fetchall()
        return [token(r) for r in rows]

    def delete_token(self, name: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM tokens WHERE name = %s", (name,)).rowcount != 1:
                raise NotFoundError(f"no token named {name!r}")

    def record_audit(self, entry: AuditEntry) -> None:
        with self._write(ordered=AUDIT_LOCK) as conn:
            conn.execute("INSERT INTO audit (at, actor, role, method, path, status, detail)"
                         " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (entry.at, entry.actor, entry.role, entry.method, entry.path, entry.status, entry.detail))

    def audit(self, *, after_id: int = 0, limit: int = 200) -> list[AuditEntry]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit WHERE id > %s ORDER BY id LIMIT %s",
                                (after_id, limit)).fetchall()
        return [audit_entry(r) for r in rows]

    # --- pipelines ---

    def put_pipeline(self, record: PipelineRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO pipelines (name, record, created_at, updated_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                (record.name, record.model_dump_json(), record.created_at, record.updated_at))

    def get_pipeline(self, name: str) -> PipelineRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT record FROM pipelines WHERE name = %s", (name,)).fetchone()
        return None if row is None else PipelineRecord.model_validate_json(row[0])

    def list_pipelines(self) -> list[PipelineRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT record FROM pipelines ORDER BY name").fetchall()
        return [PipelineRecord.model_validate_json(r[0]) for r in rows]

    def create_pipeline_release(self, release: PipelineRelease) -> PipelineRelease:
        with self._write() as conn:
            row = conn.execute(
                "INSERT INTO pipeline_releases (pipeline, version, phase, state, created_at, updated_at)"
                " VALUES (%s, %s, %s, '{}', %s, %s) RETURNING id",
                (release.pipeline, release.version, release.phase, release.created_at, release.updated_at)).fetchone()
            assert row is not None  # INSERT ... RETURNING gives its row
            stored = release.model_copy(update={"id": int(row[0])})
            conn.execute("UPDATE pipeline_releases SET state = %s WHERE id = %s", (stored.model_dump_json(), stored.id))
        return stored

    def save_pipeline_release(self, release: PipelineRelease) -> None:
        with self._write() as conn:
            cursor = conn.execute("UPDATE pipeline_releases SET phase = %s, state = %s, updated_at = %s WHERE id = %s",
                                  (release.phase, release.model_dump_json(), release.updated_at, release.id))
            if cursor.rowcount != 1:
                raise NotFoundError(f"release {release.id} of pipeline {release.pipeline} does not exist")

    def pipeline_releases(self, pipeline: str | None = None, *, active: bool = False,
                          limit: int = 50) -> list[PipelineRelease]:
        """Releases of `pipeline` (of every pipeline when None), newest first; `active`: only those in flight."""
        conditions = [] if pipeline is None else ["pipeline = %(pipeline)s"]
        if active:
            conditions.append("phase = 'Progressing'")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._read() as conn:
            rows = conn.execute(f"SELECT state FROM pipeline_releases{where} ORDER BY id DESC LIMIT %(limit)s",
                                {"pipeline": pipeline, "limit": limit}).fetchall()
        return [PipelineRelease.model_validate_json(r[0]) for r in rows]
