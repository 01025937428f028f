"""Helpers shared by the HAProxy, nginx and zero-drop tests: tables, a tolerant client, counting.

The balancers close idle keep-alive connections when they reload, as any
client must expect; `Client` reconnects once in that case (a reused
connection closed before any byte of the answer), like every HTTP client and
like `stagewise.examples.load` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

from stagewise.core.routes import Endpoint, RouteTable
from tests.routers.conftest import RawClient, Response


def table(port: int, upstreams: dict[str, Any], service: str = "shop", **kw: Any) -> RouteTable:
    endpoints = tuple(Endpoint(id=n, release=u.release, address=u.address) for n, u in upstreams.items())
    return RouteTable(service=service, listen=f"127.0.0.1:{port}", stable="v1", endpoints=endpoints, **kw)


class Client(RawClient):
    """RawClient that reconnects once when a reused connection was closed under it."""

    async def get(self, path: str = "/", headers: dict[str, str] | None = None) -> Response:
        reused = self._conn is not None
        try:
            return await super().get(path, headers)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            await self.close()
            if not reused:
                raise
            return await super().get(path, headers)


async def versions(port: int, n: int, headers_for: Callable[[int], dict[str, str]] | None = None) -> Counter[str]:
    """Which release answered each of `n` requests (all must be 200)."""
    client = Client(port)
    try:
        return Counter([await client.version(headers=headers_for(i) if headers_for else None) for i in range(n)])
    finally:
        await client.close()


async def each_user(port: int, users: list[str], header: str = "X-User") -> dict[str, str]:
    """The release that answers each user (by cohort key header)."""
    client = Client(port)
    try:
        return {u: await client.version(headers={header: u}) for u in users}
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def slow_request(port: int, ms: int) -> Any:
    """A request that takes `ms` at the upstream, running while the block runs; yields its task."""
    client = Client(port)
    task = asyncio.create_task(client.get(f"/?ms={ms}"))
    try:
        yield task
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await client.close()
