"""The outbox, tokens, audit log and pipelines of both SQL stores, written once (the way `sql.py` is).

- `outbox`: one row per (event, sink), inserted by `_write_events` (sql.py)
  in the very transaction that appends the event, so a committed event is
  never lost to its sinks; the controller's sender marks each row sent, or
  failed with its next try. The idempotency key `<event id>.<sink>` is unique.
- `tokens` and `audit`: API tokens by name and role, stored as SHA-256
  hashes only (a token's name and hash are each unique); every mutating
  call, with the token's name and the answer's status. Audit ids grow in
  the order their rows commit (`_audit_lock`), so a reader paging by
  `after_id` never skips one.
- `pipelines` and `pipeline_releases`: each pipeline's spec, and each
  release's way through its stages.

Statements use `?` placeholders and reach the database through the hooks of
`SqlBackend`. It imports neither sqlite3 nor psycopg, nothing above
`stagewise.core`, and catches no exception (the caller's `_write`/`_read`
translate them).
"""

from __future__ import annotations

from typing import ClassVar

from stagewise.core.pipeline import PipelineRecord, PipelineRelease
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
from stagewise.store.sql import Conn, SqlBackend

INSERT_TOKEN = "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (?, ?, ?, ?, ?)"


class SqlGatesTables(SqlBackend[Conn]):
    """The `Store` methods over the outbox, tokens, audit and pipeline tables, for either backend."""

    _audit_lock: ClassVar[int | None] = None
    """The lock (`_write`'s `ordered`) an audit row is appended under, so audit ids commit in the order they
    grow; None where the database lets one writer in at a time."""
    _tokens_lock: ClassVar[int | None] = None
    """The lock a token is put under, so that of servers putting the same token at once each waits for the one
    before; None where the database lets one writer in at a time."""

    # --- outbox ---

    def due_notifications(self, now: float, limit: int = 50) -> list[OutboxItem]:
        """Notifications not sent yet whose next try is due, oldest first."""
        with self._read() as conn:
            rows = self._execute(conn, f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL"
                                       " AND gave_up_at IS NULL AND next_at <= ? ORDER BY id LIMIT ?",
                                 (now, limit)).fetchall()
        return [outbox_item(r) for r in rows]

    def notifications(self, service: str | None = None, *, after_id: int = 0, limit: int = 200) -> list[OutboxItem]:
        return [outbox_item(r) for r in self._following("outbox", OUTBOX_COLUMNS, after_id, limit, service=service)]

    def notification_sent(self, item_id: int, *, at: float) -> None:
        with self._write() as conn:
            self._execute(conn, "UPDATE outbox SET sent_at = ?, attempts = attempts + 1, last_error = ''"
                                " WHERE id = ?", (at, item_id))

    def notification_failed(self, item_id: int, *, at: float, error: str, next_at: float, give_up: bool) -> None:
        with self._write() as conn:
            self._execute(conn, "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ?,"
                                " gave_up_at = ? WHERE id = ?", (error, next_at, at if give_up else None, item_id))

    def retry_notifications_now(self, now: float) -> int:
        """Make every unsent notification due now (a restarted sender tries each once at once)."""
        with self._write() as conn:
            return self._execute(conn, "UPDATE outbox SET next_at = ? WHERE sent_at IS NULL AND gave_up_at IS NULL"
                                       " AND next_at > ?", (now, now)).rowcount

    def sink_health(self, service: str) -> list[SinkHealth]:
        """Per sink of `service`: what waits to be sent, how often its oldest was tried, its last error."""
        with self._read() as conn:
            rows = self._execute(
                conn, "SELECT sink, kind, count(*) FILTER (WHERE sent_at IS NULL AND gave_up_at IS NULL),"
                      " count(*) FILTER (WHERE gave_up_at IS NOT NULL), max(sent_at),"
                      " max(CASE WHEN sent_at IS NULL AND gave_up_at IS NULL THEN attempts ELSE 0 END)"
                      " FROM outbox WHERE service = ? GROUP BY sink, kind ORDER BY sink", (service,)).fetchall()
            errors = dict(self._execute(
                conn, "SELECT sink, last_error FROM outbox WHERE id IN (SELECT max(id) FROM outbox WHERE service = ?"
                      " AND last_error != '' AND sent_at IS NULL GROUP BY sink)", (service,)).fetchall())
        return sink_health_of(rows, errors)

    # --- tokens and audit ---

    def add_token(self, token: TokenRecord) -> None:
        with self._write() as conn:
            # One statement checks the name and inserts: of two servers adding one name at once, one is refused.
            added = self._execute(conn, INSERT_TOKEN + " ON CONFLICT (name) DO NOTHING",
                                  (token.name, token.role, token.hash, token.created_at, token.created_by)).rowcount
            if added != 1:
                raise ConflictError(f"a token named {token.name!r} exists; delete it first or choose another name")

    def put_token(self, token: TokenRecord) -> None:
        """Add or replace the token named `token.name` (the server's own admin token, when its file changed).

        An upsert, not a delete and an insert, under `_tokens_lock`: servers starting together on one database each
        put theirs, one after another."""
        with self._write(ordered=self._tokens_lock) as conn:
            self._execute(conn, "DELETE FROM tokens WHERE hash = ? AND name != ?", (token.hash, token.name))
            self._execute(conn, INSERT_TOKEN + " ON CONFLICT (name) DO UPDATE SET role = excluded.role,"
                                " hash = excluded.hash, created_at = excluded.created_at,"
                                " created_by = excluded.created_by",
                          (token.name, token.role, token.hash, token.created_at, token.created_by))

    def token_by_hash(self, digest: str) -> TokenRecord | None:
        with self._read() as conn:
            row = self._execute(conn, f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?", (digest,)).fetchone()
        return None if row is None else token(row)

    def list_tokens(self) -> list[TokenRecord]:
        with self._read() as conn:
            rows = self._execute(conn, f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name").fetchall()
        return [token(r) for r in rows]

    def delete_token(self, name: str) -> None:
        with self._write() as conn:
            if self._execute(conn, "DELETE FROM tokens WHERE name = ?", (name,)).rowcount != 1:
                raise NotFoundError(f"no token named {name!r}")

    def record_audit(self, entry: AuditEntry) -> None:
        with self._write(ordered=self._audit_lock) as conn:
            self._execute(conn, "INSERT INTO audit (at, actor, role, method, path, status, detail)"
                                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (entry.at, entry.actor, entry.role, entry.method, entry.path, entry.status, entry.detail))

    def audit(self, *, after_id: int = 0, limit: int = 200) -> list[AuditEntry]:
        return [audit_entry(r) for r in self._following("audit", AUDIT_COLUMNS, after_id, limit)]

    # --- pipelines ---

    def put_pipeline(self, record: PipelineRecord) -> None:
        with self._write() as conn:
            self._execute(conn, "INSERT INTO pipelines (name, record, created_at, updated_at) VALUES (?, ?, ?, ?)"
                                " ON CONFLICT (name) DO UPDATE SET record = excluded.record,"
                                " updated_at = excluded.updated_at",
                          (record.name, record.model_dump_json(), record.created_at, record.updated_at))

    def get_pipeline(self, name: str) -> PipelineRecord | None:
        with self._read() as conn:
            row = self._execute(conn, "SELECT record FROM pipelines WHERE name = ?", (name,)).fetchone()
        return None if row is None else PipelineRecord.model_validate_json(row[0])

    def list_pipelines(self) -> list[PipelineRecord]:
        with self._read() as conn:
            rows = self._execute(conn, "SELECT record FROM pipelines ORDER BY name").fetchall()
        return [PipelineRecord.model_validate_json(r[0]) for r in rows]

    def create_pipeline_release(self, release: PipelineRelease) -> PipelineRelease:
        with self._write() as conn:
            release_id = self._inserted_id(conn, "INSERT INTO pipeline_releases (pipeline, version, phase, state,"
                                                 " created_at, updated_at) VALUES (?, ?, ?, '{}', ?, ?)",
                                           (release.pipeline, release.version, release.phase, release.created_at,
                                            release.updated_at))
            stored = release.model_copy(update={"id": release_id})
            self._execute(conn, "UPDATE pipeline_releases SET state = ? WHERE id = ?",
                          (stored.model_dump_json(), stored.id))
        return stored

    def save_pipeline_release(self, release: PipelineRelease) -> None:
        with self._write() as conn:
            cursor = self._execute(conn, "UPDATE pipeline_releases SET phase = ?, state = ?, updated_at = ?"
                                         " WHERE id = ?",
                                   (release.phase, release.model_dump_json(), release.updated_at, release.id))
            if cursor.rowcount != 1:
                raise NotFoundError(f"release {release.id} of pipeline {release.pipeline} does not exist")

    def pipeline_releases(self, pipeline: str | None = None, *, active: bool = False,
                          limit: int = 50) -> list[PipelineRelease]:
        """Releases of `pipeline` (of every pipeline when None), newest first; `active`: only those in flight."""
        conditions, args = ([], []) if pipeline is None else (["pipeline = ?"], [pipeline])
        if active:
            conditions.append("phase = 'Progressing'")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._read() as conn:
            rows = self._execute(conn, f"SELECT state FROM pipeline_releases{where} ORDER BY id DESC LIMIT ?",
                                 [*args, limit]).fetchall()
        return [PipelineRelease.model_validate_json(r[0]) for r in rows]
