"""The SQLite store's leases: which controller holds which service, and the fence every write of a service passes.

SQLite is the one-server default, but the tables and the fence are the same
as PostgreSQL's (`postgresql_leases.py`), so that a version of the schema
means the same tables in both, `stagewise store copy` moves between them,
and the store's contract suite checks the fence on both. Times are this
machine's clock (every process that opens the file runs on it); a lease is
expired once `expires_at` is behind it. Every statement runs inside one
`BEGIN IMMEDIATE` transaction, so a claim and a fenced write never interleave.

The policy (how many to take, when to renew, when to step down) is the
controller's (controller/leases.py); this module only keeps the rows.
"""

from __future__ import annotations

import sqlite3
import time

from stagewise.store import Fence, Lease
from stagewise.store.rows import LEASE_COLUMNS, lease_lost, lease_row
from stagewise.store.sql import SqlLeases


def v8_leases(conn: sqlite3.Connection) -> None:
    """Leases of services by controllers, with their epochs, and the controllers alive."""
    conn.execute("CREATE TABLE leases (service TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch INTEGER NOT NULL,"
                 " expires_at REAL NOT NULL)")
    conn.execute("CREATE INDEX leases_by_holder ON leases (holder)")
    conn.execute("CREATE TABLE controllers (name TEXT PRIMARY KEY, expires_at REAL NOT NULL)")


def check_fence(conn: sqlite3.Connection, service: str, fence: Fence | None) -> None:
    """The fence of a write of `service`'s state, inside its transaction (store/__init__.py): raises
    LeaseLostError when the writer's lease is gone, so the transaction rolls back."""
    if fence is None:
        return
    if fence.epoch is None:
        conn.execute("UPDATE leases SET epoch = epoch + 1 WHERE service = ?", (service,))
        return
    held = conn.execute("SELECT 1 FROM leases WHERE service = ? AND holder = ? AND epoch = ? AND expires_at > ?",
                        (service, fence.holder, fence.epoch, time.time())).fetchone()
    if held is None:
        row = conn.execute("SELECT holder, epoch, expires_at FROM leases WHERE service = ?", (service,)).fetchone()
        raise lease_lost(service, fence, row, time.time())


class LeaseTables(SqlLeases[sqlite3.Connection]):
    """Methods of `SqliteStore` over the leases and controllers tables that read this machine's clock."""

    def _fenced(self, conn: sqlite3.Connection, service: str) -> None:
        check_fence(conn, service, self._fence(service) if self._fence is not None else None)

    def leases(self) -> tuple[float, list[Lease]]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {LEASE_COLUMNS} FROM leases ORDER BY service").fetchall()
        return time.time(), [lease_row(r) for r in rows]

    def heartbeat(self, holder: str, *, duration: float) -> list[str]:
        now = time.time()
        with self._write() as conn:
            conn.execute("DELETE FROM controllers WHERE expires_at <= ?", (now,))
            conn.execute("INSERT INTO controllers (name, expires_at) VALUES (?, ?)"
                         " ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at", (holder, now + duration))
            return [r[0] for r in conn.execute("SELECT name FROM controllers ORDER BY name")]

    def acquire_leases(self, holder: str, services: list[str], *, duration: float) -> dict[str, int]:
        now = time.time()
        taken: dict[str, int] = {}
        with self._write() as conn:
            for service in services:
                row = conn.execute(
                    "INSERT INTO leases (service, holder, epoch, expires_at) VALUES (?, ?, 1, ?)"
                    " ON CONFLICT (service) DO UPDATE SET holder = excluded.holder, epoch = leases.epoch + 1,"
                    " expires_at = excluded.expires_at WHERE leases.holder = '' OR leases.expires_at <= ?"
                    " RETURNING epoch", (service, holder, now + duration, now)).fetchone()
                if row is not None:
                    taken[service] = int(row[0])
        return taken

    def renew_leases(self, holder: str, *, duration: float) -> dict[str, int]:
        now = time.time()
        with self._write() as conn:
            rows = conn.execute("UPDATE leases SET expires_at = ? WHERE holder = ? AND expires_at > ?"
                                " RETURNING service, epoch", (now + duration, holder, now)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def wait_for_changes(self, timeout: float) -> set[str] | None:
        """None: a SQLite file is one server's (nothing else writes to tell it of)."""
        return None
