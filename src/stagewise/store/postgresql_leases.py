"""The PostgreSQL store's leases, the fence every write of a service passes, and the news of writes by others.

Several controllers share one database; each service is held by one of them
(controller/leases.py decides which). Here are only the rows and the checks,
with every time taken from the database's clock (`clock_timestamp()`), so
that controllers on machines whose clocks disagree still agree on when a
lease expires.

The fence is the last statement of a write's transaction and locks the
lease's row (`FOR SHARE`): a takeover then waits for that transaction to end,
so a write commits either before another controller's term begins, or not
at all. Each write of a service's state also sends `NOTIFY` on CHANNEL (at
commit, with the service's name), so every server's dashboard and API see
changes made by the others; a connection of its own LISTENs for them.

Never catches a psycopg exception (the store translates them), never imports
another driver.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import Connection

from stagewise.store import Fence, Lease
from stagewise.store.rows import LEASE_COLUMNS, lease_lost, lease_row
from stagewise.store.sql import SqlLeases

CHANNEL = "stagewise_changes"
"""The NOTIFY channel a write of a service's state announces the service on."""

NOW = "extract(epoch FROM clock_timestamp())::float8"
"""The database's clock, in seconds since the epoch (clock_timestamp moves within a transaction; now() does not)."""


def v8_leases(conn: Connection[Any]) -> None:
    """Leases of services by controllers, with their epochs, and the controllers alive."""
    conn.execute("CREATE TABLE leases (service TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch BIGINT NOT NULL,"
                 " expires_at DOUBLE PRECISION NOT NULL)")
    conn.execute("CREATE INDEX leases_by_holder ON leases (holder)")
    conn.execute("CREATE TABLE controllers (name TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL)")


def check_fence(conn: Connection[Any], service: str, fence: Fence | None) -> None:
    """Announce the write of `service` and check its fence (module docstring); raises LeaseLostError."""
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, service))
    if fence is None:
        return
    if fence.epoch is None:
        conn.execute("UPDATE leases SET epoch = epoch + 1 WHERE service = %s", (service,))
        return
    row = conn.execute(f"SELECT holder, epoch, expires_at, {NOW} FROM leases WHERE service = %s FOR SHARE",
                       (service,)).fetchone()
    if row is None or (row[0], row[1]) != (fence.holder, fence.epoch) or row[2] <= row[3]:
        now = row[3] if row is not None else 0.0
        raise lease_lost(service, fence, None if row is None else (row[0], int(row[1]), row[2]), now)


class PgLeaseTables(SqlLeases[Connection[Any]]):
    """Methods of `PostgresStore` over the leases and controllers tables that read the database's clock, and the
    LISTEN side of CHANNEL."""

    _listener: Connection[Any] | None = None
    _listener_lock: threading.Lock

    if TYPE_CHECKING:
        def _translated(self) -> AbstractContextManager[None]: ...
        def _connect(self) -> Connection[Any]: ...

    def _fenced(self, conn: Connection[Any], service: str) -> None:
        check_fence(conn, service, self._fence(service) if self._fence is not None else None)

    def leases(self) -> tuple[float, list[Lease]]:
        with self._read() as conn:
            now = conn.execute(f"SELECT {NOW}").fetchone()
            rows = conn.execute(f"SELECT {LEASE_COLUMNS} FROM leases ORDER BY service").fetchall()
        assert now is not None  # a SELECT of an expression gives one row
        return float(now[0]), [lease_row(r) for r in rows]

    def heartbeat(self, holder: str, *, duration: float) -> list[str]:
        with self._write() as conn:
            conn.execute(f"DELETE FROM controllers WHERE expires_at <= {NOW}")
            conn.execute(f"INSERT INTO controllers (name, expires_at) VALUES (%s, {NOW} + %s)"
                         " ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at", (holder, duration))
            return [r[0] for r in conn.execute("SELECT name FROM controllers ORDER BY name").fetchall()]

    def acquire_leases(self, holder: str, services: list[str], *, duration: float) -> dict[str, int]:
        if not services:
            return {}
        with self._write() as conn:
            rows = conn.execute(
                f"INSERT INTO leases (service, holder, epoch, expires_at) SELECT s, %s, 1, {NOW} + %s"
                " FROM unnest(%s::text[]) AS s ON CONFLICT (service) DO UPDATE SET holder = excluded.holder,"
                " epoch = leases.epoch + 1, expires_at = excluded.expires_at"
                f" WHERE leases.holder = '' OR leases.expires_at <= {NOW} RETURNING service, epoch",
                (holder, duration, services)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def renew_leases(self, holder: str, *, duration: float) -> dict[str, int]:
        with self._write() as conn:
            rows = conn.execute(f"UPDATE leases SET expires_at = {NOW} + %s WHERE holder = %s AND expires_at > {NOW}"
                                " RETURNING service, epoch", (duration, holder)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def wait_for_changes(self, timeout: float) -> set[str]:
        """The services written since the last call (by any server, this one too), waiting up to `timeout`
        seconds for the first; on a connection of its own, opened at the first call and again after a loss."""
        with self._listener_lock, self._translated():
            if self._listener is None or self._listener.closed:
                self._listener = self._connect()
                self._listener.execute(f"LISTEN {CHANNEL}")
            try:
                seen = {n.payload for n in self._listener.notifies(timeout=timeout, stop_after=1)}
                seen |= {n.payload for n in self._listener.notifies(timeout=0.01)}
            except psycopg.Error:
                self._listener.close()  # opened afresh on the next call
                raise
            return seen

    def _close_listener(self) -> None:
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
