"""The builtin router driver: one `stagewise.routers.builtin.proxy` process per service.

The proxy runs detached (its own session, output to a log file), not as a
child that lives and dies with the controller: a controller restart must never
drop a request. So the driver keeps no state that matters — everything it
needs is on disk under `<state_dir>/routers/<service>/`:

    admin.sock        the proxy's admin API (HTTP over a Unix socket, mode 0600)
    admin.sock.lock   held by the running proxy, so two can never serve one socket
    pid               the proxy's pid, as the proxy itself reports it
    router.log        the proxy's log, stdout and stderr (kept after stop, for post-mortems); rotated
                      to router.log.1 past `log_max_bytes` by the proxy itself

A new `BuiltinRouter` (say, after a controller restart) re-attaches by just
talking to the socket; if nothing answers, `apply` starts a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from stagewise.basics import files, proc, waiting
from stagewise.core.routes import RouteTable
from stagewise.core.stats import RouterStats
from stagewise.errors import RouterConfigError, RouterError
from stagewise.routers.builtin.output import LOG_MAX_BYTES
from stagewise.routers.common import process

START_TIMEOUT = 10.0
"""Seconds a new proxy gets to answer /healthz."""
STOP_TIMEOUT = 10.0
"""Seconds a proxy gets to drain after SIGTERM before SIGKILL."""
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with the terminating NUL
_PROXY_MODULE = "stagewise.routers.builtin.proxy"
_SRC_DIR = str(Path(__file__).resolve().parents[3])


class BuiltinRouter:
    """Runs and drives the builtin proxy; implements `stagewise.routers.Router`."""

    def __init__(self, state_dir: Path, *, log_max_bytes: int = LOG_MAX_BYTES) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.log_max_bytes = log_max_bytes
        """Size past which a proxy rotates its log (it keeps one older file)."""
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def apply(self, *, table: RouteTable) -> None:
        service = table.service
        async with self._lock(service):
            health = await self._health(service)
            if health is None:
                health = await self._start(service, metrics_listen=table.metrics_listen)
            self._record_pid(service, health)
            try:
                response = await self._client(service).put(
                    "/table", content=table.model_dump_json(), headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError as exc:
                raise RouterError(f"router of {service} did not take the table: {exc!r}") from exc
            if response.status_code != 204:
                why = f"router of {service} refused the table ({response.status_code}): {response.text.strip()}"
                if response.status_code == 400:  # the table itself is unusable: the same table fails again
                    raise RouterConfigError(why)
                raise RouterError(why, delay=5.0)  # 409: a listener could not bind; 503: stopping

    async def stats(self, *, service: str) -> RouterStats:
        if not self._socket(service).exists() and self._running_pid(service) is None:
            return RouterStats()
        try:
            response = await self._client(service).get("/stats")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            if self._running_pid(service) is None:
                return RouterStats()  # no data plane, so nothing was counted
            raise RouterError(f"router of {service} did not answer /stats: {exc!r}") from exc
        return RouterStats.model_validate_json(response.content)

    async def stop(self, *, service: str) -> None:
        async with self._lock(service):
            pid = self._running_pid(service)
            if pid is None:
                health = await self._health(service)
                if health is not None and self._is_proxy(int(health["pid"]), service):
                    pid = int(health["pid"])
            if pid is not None:
                await process.terminate(pid, first=signal.SIGTERM, timeout=STOP_TIMEOUT, name=f"router of {service}")
            client = self._clients.pop(service, None)
            if client is not None:
                await client.aclose()
            folder = self._folder(service)
            for name in ("admin.sock", "admin.sock.lock", "pid"):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    # -- the proxy process ---------------------------------------------------------

    async def _start(self, service: str, *, metrics_listen: str | None = None) -> dict[str, Any]:
        """Start a proxy for `service` and wait until it answers; its /healthz."""
        folder = self._folder(service)
        folder.mkdir(parents=True, exist_ok=True)
        sock = self._socket(service)
        env = dict(os.environ)
        # the child runs the code this process runs, however stagewise was found here
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_DIR, env.get("PYTHONPATH")) if p)
        log_path = str(folder / "router.log")
        try:
            # posix_spawn rather than subprocess.Popen: the proxy must outlive this process, and a
            # Popen object of a running child warns (ResourceWarning) when collected. We reap by pid.
            pid = os.posix_spawn(  # noqa: ASYNC221 -- returns once the child exists, no waiting
                sys.executable,
                [sys.executable, "-m", _PROXY_MODULE, "--admin-socket", str(sock),
                 "--log-file", log_path, "--log-max-bytes", str(self.log_max_bytes),
                 *(["--metrics-listen", metrics_listen] if metrics_listen else [])],
                env,
                # the proxy outlives this process: it must hold no descriptor of ours (posix_spawn closes
                # only close-on-exec ones; a listener left inheritable would stay open with the proxy)
                file_actions=[
                    *((os.POSIX_SPAWN_CLOSE, fd) for fd in proc.inheritable_descriptors()),
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise RouterError(f"cannot start the router of {service}: {exc}") from exc
        return await self._first_health(service, pid)

    async def _first_health(self, service: str, pid: int) -> dict[str, Any]:
        """The /healthz of a proxy just started as `pid`, once it answers; RouterError if it exits or hangs."""
        health: dict[str, Any] | None = None

        async def settled() -> bool:
            nonlocal health
            health = await self._health(service)
            if health is None and not proc.alive(pid):
                # it may have lost the lock to a proxy started at the same moment: ask once more
                health = await self._health(service)
                return True
            return health is not None

        exited = await waiting.until_awaited(settled, timeout=START_TIMEOUT)
        if health is not None:
            return health
        if exited:
            log = files.tail(self._folder(service) / "router.log")
            raise RouterError(f"router of {service} exited at start: {log}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await process.wait_exit(pid, 2.0)
        raise RouterError(f"router of {service} did not answer within {START_TIMEOUT:.0f} s")

    async def _health(self, service: str) -> dict[str, Any] | None:
        """The proxy's /healthz, or None when nothing answers on its socket."""
        if not self._socket(service).exists():
            return None
        try:
            response = await self._client(service).get("/healthz", timeout=1.0)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        health: dict[str, Any] = response.json()
        return health

    def _record_pid(self, service: str, health: dict[str, Any]) -> None:
        pid = str(health["pid"])
        path = self._folder(service) / "pid"
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == pid:
                return
        files.write_atomic(path, pid + "\n")

    def _running_pid(self, service: str) -> int | None:
        """The pid in the pid file, if that process is alive and is this service's proxy."""
        try:
            pid = int((self._folder(service) / "pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if proc.alive(pid) and self._is_proxy(pid, service) else None

    def _is_proxy(self, pid: int, service: str) -> bool:
        """Whether `pid` runs our proxy on this service's socket (and not a process that reused the pid)."""
        argv = proc.cmdline(pid) or []
        if _PROXY_MODULE not in argv or "--admin-socket" not in argv[:-1]:
            return False
        sock = argv[argv.index("--admin-socket") + 1]
        return os.path.realpath(sock) == os.path.realpath(self._socket(service))

    # -- files and clients -----------------------------------------------------------

    def _folder(self, service: str) -> Path:
        if not files.is_folder_name(service):
            raise RouterConfigError(f"service name {service!r} cannot name a router directory")
        return self.state_dir / "routers" / service

    def _socket(self, service: str) -> Path:
        return self._folder(service) / "admin.sock"

    def _client(self, service: str) -> httpx.AsyncClient:
        client = self._clients.get(service)
        if client is None:
            sock = self._socket(service)
            if len(os.fsencode(sock)) > _SOCKET_PATH_MAX:
                raise RouterConfigError(
                    f"{sock} is too long for a Unix socket ({_SOCKET_PATH_MAX} bytes at most): "
                    "use a state directory with a shorter path"
                )
            client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(sock)),
                base_url="http://stagewise-router",
                timeout=httpx.Timeout(5.0, connect=1.0),
            )
            self._clients[service] = client
        return client

    def _lock(self, service: str) -> asyncio.Lock:
        return self._locks.setdefault(service, asyncio.Lock())
