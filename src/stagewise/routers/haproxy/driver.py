"""The HAProxy router: traffic changes through the Runtime API, reloads only when the structure changes.

Two modes:

- *managed* (`router: {kind: haproxy}`): one master-worker HAProxy per service,
  run detached (it outlives the controller), its files under
  `<state_dir>/haproxy/<service>/` (see `config.Paths`). Weights,
  servers and map entries change at run time, with no reload; listeners,
  header names, the cohort key or more release slots need a new configuration,
  checked with `haproxy -c` and loaded by a reload through the master CLI.
  Everything changed at run time is also written to the configuration, the map
  files and the server-state file, so a reload or a restart comes back with the
  same routes.
- *external* (`router: {kind: haproxy, socket: ..., backend: ...}`): attach to an
  HAProxy someone else runs; stagewise manages the servers and weights of that
  one backend (so weights only: header routes, cohorts and a preview listener
  need managed mode).

With `metricsListen`, a managed HAProxy also serves its own Prometheus exporter
(`frontend metrics`, part of the layout: setting or moving it reloads). An
external HAProxy's exporter is configured by whoever runs it, so there the field
is refused.

Instances come and go as dynamic servers: added with `add server`; removed by
`set server … state drain` (no new request), reported in flight through
`stats().inflight` until their sessions end, then `maint` and `del server`
(their counts kept in `retired.json`, so a release's counters never go down).

Counters: responses and 5xx per server from `show stat` (`hrsp_*`: `req_tot`
is not per server), latency from HAProxy's log lines (`logs`). `boot`
names the HAProxy worker (pid and start time): it changes on a reload or a
restart, when `show stat` starts again from zero, and the controller then
applies the table again. When a managed HAProxy is down, `stats` says so with an
empty boot instead of failing, so the controller's next `apply` starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import time
from pathlib import Path

from stagewise.basics import files, waiting
from stagewise.core.routes import RouteTable
from stagewise.core.stats import ReleaseStats, RouterStats
from stagewise.errors import RouterConfigError, RouterError
from stagewise.routers.common import process
from stagewise.routers.common.shares import endpoint_weights
from stagewise.routers.haproxy.api import RuntimeApi, ServerStat
from stagewise.routers.haproxy.config import (
    MAX_WEIGHT,
    Desired,
    Layout,
    Paths,
    Server,
    assign_slots,
    desired_for,
    endpoint_of,
    layout_for,
    release_of,
    render,
    render_map,
    server_name,
)
from stagewise.routers.haproxy.logs import LogReceiver, open_pipe

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
RELOAD_TIMEOUT = 10.0
RELOAD_ASK_AGAIN = 2.5
"""Seconds without a new worker after which a reload is asked for again."""
OLD_WORKER_TIMEOUT = 5.0
"""After a reload, how long to wait for the old worker to finish its requests."""
RECOVER_TIMEOUT = 3.0
"""How long a master that runs gets for its worker to answer, before it is ended and started anew."""
_LEAVING = ("DRAIN", "MAINT")
_POOL = "pool-max-conn -1 pool-purge-delay 5s"


class HaproxyRouter:
    """Runs (managed) or attaches to (external) HAProxy; implements `stagewise.routers.Router`."""

    def __init__(self, state_dir: Path, *, socket: str | None = None, backend: str | None = None,
                 threads: int = 1) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.external_socket = Path(socket) if socket else None
        self.external_backend = backend
        if (socket is None) != (backend is None):
            raise RouterConfigError("haproxy external mode needs both socket and backend")
        self.threads = threads
        self._locks: dict[str, asyncio.Lock] = {}
        self._receivers: dict[str, LogReceiver] = {}

    @property
    def external(self) -> bool:
        return self.external_socket is not None

    # -- the Router protocol -------------------------------------------------------------

    async def apply(self, *, table: RouteTable) -> None:
        async with self._lock(table.service):
            paths = self._paths(table.service)
            paths.folder.mkdir(parents=True, exist_ok=True)
            self._receiver(table.service).start()
            if self.external:
                await self._apply_external(table)
            else:
                await self._apply_managed(table, paths)

    async def stats(self, *, service: str) -> RouterStats:
        async with self._lock(service):
            paths = self._paths(service)
            api = self._api(paths)
            if not self.external and not await self._answers(api):
                return RouterStats()  # nothing runs, so nothing was counted; the next apply starts it
            self._receiver(service).start()
            info = await api.info()
            boot = f"{info['Pid']}-{info.get('Start_time_sec', '')}"
            servers = await self._retire_drained(api, paths, boot, await api.servers())
            releases: dict[str, ReleaseStats] = {}
            inflight: dict[str, int] = {}
            for s in servers:
                if not self._ours(s):
                    continue
                r = release_of(s.name)
                releases[r] = releases.get(r, ReleaseStats()).plus(ReleaseStats(requests=s.responses,
                                                                                errors=s.errors))
                inflight[endpoint_of(s.name)] = inflight.get(endpoint_of(s.name), 0) + s.current
            for r, (responses, errors) in _read_retired(paths, boot).items():
                releases[r] = releases.get(r, ReleaseStats()).plus(ReleaseStats(requests=responses, errors=errors))
            for r, tally in self._receiver(service).tallies(str(info["Pid"])).items():
                latency = ReleaseStats(latency_buckets=tally.buckets, latency_sum_ms=tally.sum_ms)
                releases[r] = releases.get(r, ReleaseStats()).plus(latency)
            return RouterStats(boot=boot, releases=dict(sorted(releases.items())), inflight=inflight)

    async def stop(self, *, service: str) -> None:
        async with self._lock(service):
            paths = self._paths(service)
            receiver = self._receivers.pop(service, None)
            if receiver is not None:
                receiver.close()
            if self.external:
                api = self._api(paths)
                servers = [s for s in await api.servers() if self._ours(s)]
                await api.run([f"set server {s.backend}/{s.name} state maint" for s in servers], check=False)
                await api.run([f"del server {s.backend}/{s.name}" for s in servers], check=False)
                return
            pid = process.daemon_pid(paths.pid)
            if pid is not None:
                # SIGUSR1 to the master: a soft stop, the workers finish the requests they have
                await process.terminate(pid, first=signal.SIGUSR1, timeout=STOP_TIMEOUT)
            for path in (paths.admin, paths.master, paths.pid):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    async def close(self) -> None:
        receivers, self._receivers = self._receivers, {}
        for receiver in receivers.values():
            receiver.close()

    # -- managed mode ----------------------------------------------------------------------

    async def _apply_managed(self, table: RouteTable, paths: Paths) -> None:
        api = self._api(paths)
        running = await self._answers(api) or await self._recover(paths, api)
        loaded = _read_layout(paths)
        slots = assign_slots(table, _read_json(paths.slots))
        layout = layout_for(table, loaded, slots)
        desired = desired_for(table, layout, slots)
        for name, entries in desired.maps.items():
            files.write_atomic(paths.map(name), render_map(entries))
        if not running or layout != loaded:
            # the new configuration says everything; a server state saved before it would override its weights
            with contextlib.suppress(FileNotFoundError):
                paths.state.unlink()
        # a new HAProxy is handed the log pipe; a running one keeps the descriptor it was started with
        pipe = None if running else open_pipe(paths.pipe)
        try:
            config = render(layout, desired, paths, threads=self.threads,
                            log_fd=_read_log_fd(paths) if pipe is None else pipe)
            if pipe is not None:
                await self._write_config(paths, config, check=True)
                files.write_atomic(paths.log_fd, str(pipe))
                await self._start(paths, pipe)
            elif layout != loaded:
                await self._write_config(paths, config, check=True)
                await self._reload(paths, api)
            else:
                files.write_atomic(paths.config, config)
                await self._change_at_runtime(api, desired, paths, layout.maps())
        finally:
            if pipe is not None:
                os.close(pipe)  # HAProxy holds it now
        files.write_atomic(paths.layout, layout.to_json())
        files.write_atomic(paths.slots, json.dumps(slots))
        await self._save_server_state(api, paths)

    async def _change_at_runtime(self, api: RuntimeApi, desired: Desired, paths: Paths, maps: list[str]) -> None:
        """Servers, weights and maps to `desired`; capacity is added before any is taken away."""
        live = {(s.backend, s.name): s for s in await api.servers()}
        first: list[str] = []
        last: list[str] = []
        for key, server in desired.servers.items():
            s = live.get(key)
            target = f"{server.backend}/{server.name}"
            if s is None:
                # a dynamic server keeps no idle connection unless told to (config servers do by default):
                # without these, every request to it would open a new connection
                first += [f"add server {target} {server.address} weight {server.weight} {_POOL}",
                          f"enable server {target}"]
                continue
            if s.address != server.address:
                host, _, port = server.address.rpartition(":")
                first.append(f"set server {target} addr {host} port {port}")
            if s.status in _LEAVING:
                first.append(f"set server {target} state ready")
            if s.weight != server.weight:
                (first if server.weight > s.weight else last).append(f"set server {target} weight {server.weight}")
        drains = [
            f"set server {b}/{n} state drain"
            for (b, n), s in live.items()
            if (b, n) not in desired.servers and self._ours(s) and s.status not in _LEAVING
        ]
        await api.run(first)
        for name in maps:
            await api.replace_map(str(paths.map(name)), desired.maps[name])
        await api.run(last + drains)

    async def _start(self, paths: Paths, pipe: int) -> None:
        """Start a detached master-worker HAProxy on the configuration, holding the log pipe `pipe` (the
        descriptor the configuration names), and wait until it answers."""
        haproxy = process.binary("haproxy", "haproxy")
        for path in (paths.admin, paths.master):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        argv = [haproxy, "-W", "-D", "-S", f"{paths.master},mode,600", "-f", str(paths.config), "-p", str(paths.pid)]
        with open(paths.output, "ab") as output:  # noqa: ASYNC230 -- opening a local log file does not block
            # close_fds: the daemon outlives us and must hold no descriptor of ours (a listener of the
            # API server, say); the default already, said here because it matters
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                                                        stderr=output, close_fds=True, pass_fds=(pipe,))
            try:
                code = await asyncio.wait_for(proc.wait(), START_TIMEOUT)
            except TimeoutError as exc:
                proc.kill()
                await proc.wait()
                raise RouterError(f"HAProxy did not start within {START_TIMEOUT:.0f} s") from exc
        if code != 0:
            raise RouterError(f"HAProxy did not start (exit {code}): {files.tail(paths.output)}")
        if not await waiting.until_awaited(lambda: self._answers(self._api(paths)), timeout=START_TIMEOUT,
                                           interval=0.02):
            raise RouterError(f"HAProxy started but its socket did not answer: {files.tail(paths.output)}")

    async def _reload(self, paths: Paths, api: RuntimeApi) -> None:
        """Load the new configuration through the master CLI; wait for the new worker, then the old one's end."""
        old = (await api.info())["Pid"]
        asked = -math.inf

        async def reloaded() -> bool:
            nonlocal asked
            if time.monotonic() - asked > RELOAD_ASK_AGAIN:
                # a master still settling after its own start can drop a reload (seen on a loaded
                # machine, right after the first start): ask again; a reload more is harmless
                asked = time.monotonic()
                with contextlib.suppress(RouterError):  # not listening yet: the next round asks again
                    await master_command(paths.master, "reload", timeout=RELOAD_ASK_AGAIN)
            with contextlib.suppress(RouterError):
                return bool((await api.info())["Pid"] != old)
            return False

        if not await waiting.until_awaited(reloaded, timeout=RELOAD_TIMEOUT, interval=0.02):
            raise RouterError(f"HAProxy did not reload within {RELOAD_TIMEOUT:.0f} s: {files.tail(paths.output)}")
        # requests still running on the old worker may go to servers the new configuration dropped:
        # the controller stops those instances once `apply` returns, so wait for the old worker first
        await process.wait_exit(int(old), OLD_WORKER_TIMEOUT)

    async def _recover(self, paths: Paths, api: RuntimeApi) -> bool:
        """A master that runs but whose worker does not answer: give it a moment, else end it."""
        pid = process.daemon_pid(paths.pid)
        if pid is None:
            return False
        if await waiting.until_awaited(lambda: self._answers(api), timeout=RECOVER_TIMEOUT):
            return True
        await process.terminate(pid, first=signal.SIGTERM, timeout=2.0)
        return False

    async def _write_config(self, paths: Paths, config: str, *, check: bool) -> None:
        """Write the configuration; with `check`, only if `haproxy -c` accepts it (else RouterError)."""
        candidate = paths.config.with_name("haproxy.cfg.new")
        candidate.write_text(config)
        if check:
            haproxy = process.binary("haproxy", "haproxy")
            proc = await asyncio.create_subprocess_exec(
                haproxy, "-c", "-q", "-f", str(candidate),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RouterConfigError(f"HAProxy refused the configuration: {out.decode(errors='replace')[-2000:]}")
        candidate.replace(paths.config)

    async def _save_server_state(self, api: RuntimeApi, paths: Paths) -> None:
        state = await api.one("show servers state", check=False)
        if state.startswith("1"):
            files.write_atomic(paths.state, state.rstrip("\n") + "\n")

    # -- external mode -------------------------------------------------------------------

    async def _apply_external(self, table: RouteTable) -> None:
        if table.cohort is not None or table.header_routes or table.preview_listen:
            raise RouterConfigError(
                "an external HAProxy is driven by weights only: header routes, cohorts and a preview "
                "listener need managed mode (router: {kind: haproxy} without socket)")
        if table.metrics_listen:
            raise RouterConfigError(
                "metricsListen is not supported with an external HAProxy: its Prometheus exporter is configured "
                "by whoever runs it (a frontend with `http-request use-service prometheus-exporter`); "
                "remove metricsListen, or use managed mode (router: {kind: haproxy} without socket)")
        backend = self.external_backend
        assert backend is not None
        weights = endpoint_weights(table, MAX_WEIGHT)
        desired = Desired(servers={
            (backend, server_name(e.release, e.id)): Server(backend, server_name(e.release, e.id), e.address,
                                                             weights[e.release, e.id])
            for e in table.endpoints
        })
        await self._change_at_runtime(self._api(self._paths(table.service)), desired, self._paths(table.service), [])

    # -- removing servers ----------------------------------------------------------------

    async def _retire_drained(self, api: RuntimeApi, paths: Paths, boot: str,
                              servers: list[ServerStat]) -> list[ServerStat]:
        """Delete drained servers with nothing in flight, keeping their counts; the servers left."""
        idle = [s for s in servers if self._ours(s) and s.status in _LEAVING and s.current == 0]
        if not idle:
            return servers
        await api.run([f"set server {s.backend}/{s.name} state maint" for s in idle if s.status != "MAINT"],
                      check=False)
        now = {(s.backend, s.name): s for s in await api.servers()}
        gone = [s for s in (now.get((i.backend, i.name)) for i in idle) if s is not None and s.current == 0]
        answers = await api.run([f"del server {s.backend}/{s.name}" for s in gone], check=False)
        retired = _read_retired(paths, boot)
        deleted = set()
        for s, answer in zip(gone, answers, strict=True):
            if answer.strip().lower().startswith("server deleted"):
                responses, errors = retired.get(release_of(s.name), (0, 0))
                retired[release_of(s.name)] = (responses + s.responses, errors + s.errors)
                deleted.add((s.backend, s.name))
        if deleted:
            files.write_atomic(paths.retired, json.dumps({"boot": boot, "releases": retired}))
        return [s for s in now.values() if (s.backend, s.name) not in deleted]

    # -- helpers -------------------------------------------------------------------------

    def _ours(self, server: ServerStat) -> bool:
        """Servers stagewise manages: named `<release>:<id>`, in our backends."""
        if ":" not in server.name:
            return False
        return server.backend == self.external_backend if self.external else True

    async def _answers(self, api: RuntimeApi) -> bool:
        if not api.path.exists():
            return False
        try:
            await api.one("show info", check=False)
        except RouterError:
            return False
        return True

    def _paths(self, service: str) -> Paths:
        if not files.is_folder_name(service):
            raise RouterConfigError(f"service name {service!r} cannot name a router directory")
        return Paths(self.state_dir / "haproxy" / service)

    def _api(self, paths: Paths) -> RuntimeApi:
        return RuntimeApi(self.external_socket or paths.admin)

    def _receiver(self, service: str) -> LogReceiver:
        receiver = self._receivers.get(service)
        if receiver is None:
            receiver = self._receivers[service] = LogReceiver(self._paths(service).folder)
        return receiver

    def _lock(self, service: str) -> asyncio.Lock:
        return self._locks.setdefault(service, asyncio.Lock())


async def master_command(socket: Path, command: str, timeout: float = 5.0) -> str:
    """One command on the master CLI. Its socket refuses connections for a moment after the
    master (re)starts — until its worker is ready — so connecting is retried until `timeout`."""
    deadline = waiting.Deadline(timeout)
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket))
            break
        except OSError as exc:
            if deadline.expired:
                raise RouterError(f"HAProxy's master did not take {command!r}: {exc!r}") from exc
            await asyncio.sleep(deadline.nap(0.02))
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.read(), timeout)).decode(errors="replace")
    except (OSError, TimeoutError) as exc:
        if command == "reload":  # the master closes the connection as it re-executes itself
            return ""
        raise RouterError(f"HAProxy's master did not answer {command!r}: {exc!r}") from exc
    finally:
        writer.close()


def _read_json(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _read_log_fd(paths: Paths) -> int | None:
    """The log pipe's descriptor in the running HAProxy; None for one started before there was a pipe (it
    keeps logging to the datagram socket)."""
    try:
        return int(paths.log_fd.read_text())
    except (OSError, ValueError):
        return None


def _read_layout(paths: Paths) -> Layout | None:
    try:
        return Layout.from_json(paths.layout.read_text())
    except (OSError, ValueError, TypeError):
        return None


def _read_retired(paths: Paths, boot: str) -> dict[str, tuple[int, int]]:
    """Counts of deleted servers of the current worker, per release (responses, errors)."""
    try:
        data = json.loads(paths.retired.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("boot") != boot:
        return {}
    return {str(r): (int(v[0]), int(v[1])) for r, v in data.get("releases", {}).items()}

