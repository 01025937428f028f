"""Routers: the data planes that split a service's traffic between releases.

A router takes the whole desired route table of a service and makes it so,
atomically (`apply`), and counts requests, errors and latency per release
(`stats`). Each backend is a package of its own — `builtin`, `haproxy`, `nginx`
— that imports `stagewise.core` and the shared helpers of `common` only, never
another backend or another driver (import-linter contracts in pyproject.toml).
The controller picks one by name with `get_router`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from stagewise.core.routes import RouteTable
from stagewise.core.stats import RouterStats
from stagewise.errors import UnknownDriverError


class Router(Protocol):
    async def apply(self, *, table: RouteTable) -> None:
        """Make the data plane serve `table` (starting it if needed); idempotent."""

    async def stats(self, *, service: str) -> RouterStats:
        """Cumulative per-release counters since the data plane started."""

    async def stop(self, *, service: str) -> None:
        """Stop serving `service` (and its data plane, if stagewise runs it)."""

    async def close(self) -> None:
        """Release client resources; the data plane keeps running."""


ROUTER_KINDS = ("builtin", "haproxy", "nginx")


def get_router(kind: str, *, state_dir: Path, socket: str | None = None, backend: str | None = None) -> Router:
    """The router backend named `kind`, keeping its files under `state_dir`.

    `socket` and `backend` (haproxy only) attach to an HAProxy someone else runs instead of running one.
    """
    if kind == "builtin":
        from stagewise.routers.builtin import BuiltinRouter

        return BuiltinRouter(state_dir=state_dir)
    if kind == "haproxy":
        from stagewise.routers.haproxy import HaproxyRouter

        return HaproxyRouter(state_dir=state_dir, socket=socket, backend=backend)
    if kind == "nginx":
        from stagewise.routers.nginx import NginxRouter

        return NginxRouter(state_dir=state_dir)
    raise UnknownDriverError("router", kind, list(ROUTER_KINDS))
