"""The ssh platform: instances are detached processes on a fleet of hosts reached over SSH.

Why it is built this way:

- Agentless, as Ansible and Kamal are: a host needs sshd, a POSIX shell,
  coreutils-level tools and the release's program. Everything the platform
  does there is one of a few fixed sh scripts (`_ssh_scripts`) run over
  OpenSSH's client with a multiplexed master per host (`_ssh_transport` says
  why OpenSSH and not a Python SSH library).
- The truth about instances lives on the hosts: each instance's record (pid
  and kernel start time, written as an intent before the spawn) sits beside
  it under `<root>/<service>/instances/`, so a restarted controller re-adopts
  every instance by listing its hosts, exactly as the local platform does
  with its own records. The controller keeps only what it alone knows, in
  `<state>/ssh/services/<service>.json`: the next instance number, failures
  per release, when each instance was first seen ready (so a restart does not
  take ready instances out of the routers while they are probed again), and
  how many artifact copies were made.
- Readiness is probed from the controller, over the network, at the address
  routers use (the router's view); liveness comes from the host (pid + start
  time), listed at most every `LIST_INTERVAL` and at once after this
  controller started or stopped something there.
- Placement: a new instance goes to the reachable host with the fewest
  instances of the service, then the fewest of its release, then the first in
  the spec's order — replicas spread evenly, a phased wave's replacement lands
  on the host its predecessor left (the controller takes victims from the most
  loaded, then the first hosts: controller/reconcile.py), and a lost host's
  instances are replaced on the others until it comes back.
- Unreachable hosts are their own kind: `PlatformView.unreachable` names them
  with the error and the time; their instances leave the view at once (no
  router sends them a request), and nothing of them counts as a failure of
  the release. Whether the delivery goes on is `platform.maxUnreachable`'s
  call, in core.
- Artifacts are copied once per host and release (the host's copy is checked
  by hash first), unpacked atomically, and pruned to `keepReleases`, never the
  releases in use (stable, candidate, or any with an instance on the host).
  A rollback or `undo` finds the stable release still unpacked and copies
  nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from stagewise.basics import files
from stagewise.core.platform_spec import PlatformSpec
from stagewise.core.spec import ReleaseSpec
from stagewise.errors import HostKeyError, HostUnreachableError, PlatformError, PlatformRefusedError
from stagewise.platforms import Instance, InstanceState, PlatformView
from stagewise.platforms._ssh_artifact import Artifacts
from stagewise.platforms._ssh_hosts import HostCheck, RemoteHost
from stagewise.platforms._ssh_scripts import Listed
from stagewise.platforms._ssh_transport import Connection, control_dir

LIST_INTERVAL = 1.0
"""Seconds between listings of a host's instances (liveness); starts and stops update the view at once."""
OBSERVE_WAIT = 0.5
"""Longest an observe waits for a slow host's listing; the host's last listing stands meanwhile."""
PROBE_TIMEOUT = 1.0
KILL_GRACE = 0.0


def _clock(at: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) if at else "?"


class SshPlatform:
    """Starts instances on the spec's hosts over SSH and finds them again after a restart."""

    def __init__(self, state_dir: Path, spec: PlatformSpec) -> None:
        self.spec = spec
        self.state_dir = Path(state_dir)
        sockets = control_dir(self.state_dir)
        self.hosts = [RemoteHost(h, i, spec.ssh, Connection(h, spec.ssh, sockets), spec.root)
                      for i, h in enumerate(spec.hosts)]
        self.artifacts = Artifacts(self.state_dir / "ssh" / "artifacts")
        self._parallel = asyncio.Semaphore(spec.ssh.max_parallel)
        self._protected: dict[str, set[str]] = {}
        self._client: httpx.AsyncClient | None = None

    # -- the Platform protocol -------------------------------------------------------------

    async def observe(self, *, service: str, releases: dict[str, ReleaseSpec]) -> PlatformView:
        self._protected[service] = set(releases)
        await self._listed(service)
        state = self._state(service)
        events = self._news(service, state)
        alive: list[tuple[RemoteHost, Listed]] = [
            (h, listed) for h in self.hosts if h.unreachable is None
            for listed in h.listing.get(service, {}).values()]
        starting = [(h, i) for h, i in alive if i.id not in state["ready"]]
        answers = await asyncio.gather(*(self._probe(h, i, releases.get(i.release)) for h, i in starting))
        now = time.time()
        expired = []
        for (host, listed), ready in zip(starting, answers, strict=True):
            if ready:
                state["ready"][listed.id] = now
            elif self._late(host, listed, releases.get(listed.release), now) and not listed.stopping:
                expired.append((host, listed))
        if expired:
            events += await self._expire(service, expired, releases, state)
        known = {i.id for _, i in alive} | {i for h in self.hosts if h.unreachable for i in h.listing.get(service, {})}
        state["ready"] = {k: v for k, v in state["ready"].items() if k in known}
        self._save_state(service, state)
        gone = {i.id for _, i in expired}
        return PlatformView(
            instances=sorted((self._instance(service, h, i, state) for h, i in alive if i.id not in gone),
                             key=lambda i: i.seq),
            failures=dict(state["failures"]),
            events=events,
            hosts=[h.name for h in self.hosts],
            unreachable={h.name: f"{h.unreachable} (since {_clock(h.unreachable_since)})"
                         for h in self.hosts if h.unreachable is not None},
        )

    async def start(self, *, service: str, release: ReleaseSpec, count: int) -> list[Instance]:
        """Start `count` instances, placed over the reachable hosts; copies the release where it is missing."""
        placement = self._place(service, release.version, count)
        state = self._state(service)
        plan = [(host, self._next_seq(service, state)) for host in placement]
        by_host: dict[int, list[int]] = {}
        for host, seq in plan:
            by_host.setdefault(host.rank, []).append(seq)
        results = await asyncio.gather(
            *(self._start_on(self.hosts[rank], service, release, seqs) for rank, seqs in by_host.items()),
            return_exceptions=True)
        state = self._state(service)
        started: list[Instance] = []
        refused: list[BaseException] = []
        for rank, result in zip(by_host, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, HostUnreachableError | HostKeyError):
                    refused.append(result)  # an unreachable host is reported by the next observe, not here
                continue
            started += [self._instance(service, self.hosts[rank], listed, state) for listed in result]
        if refused:
            first = refused[0]
            raise first if isinstance(first, PlatformError | PlatformRefusedError) else PlatformError(str(first))
        return started

    async def stop(self, *, service: str, ids: list[str], grace: float = 10.0) -> None:
        wanted = set(ids)
        work = {h.rank: sorted(wanted & set(h.listing.get(service, {}))) for h in self.hosts}
        work = {rank: found for rank, found in work.items() if found}
        results = await asyncio.gather(
            *(self._bounded(self.hosts[rank].stop(service, found, grace)) for rank, found in work.items()),
            return_exceptions=True)
        stuck: list[str] = []
        for rank, result in zip(work, results, strict=True):
            if isinstance(result, HostUnreachableError | HostKeyError):
                continue  # its instances are out of the view; stopped once it answers, if still unwanted
            if isinstance(result, BaseException):
                raise PlatformError(f"{self.hosts[rank].name}: could not stop {', '.join(work[rank])}: "
                                    f"{result}") from result
            stuck += result
        if stuck:
            raise PlatformError(f"still running after SIGKILL: {', '.join(stuck)}")

    async def preflight(self, *, service: str, release: ReleaseSpec) -> list[str]:
        """The failed checks of `check`, each naming its host and check."""
        return [f"{c.host}: {c.check}: {c.detail}" for c in await self.check(service=service, release=release)
                if c.ok is False]

    async def check(self, *, service: str, release: ReleaseSpec) -> list[HostCheck]:
        """Every pre-flight check on every host (`stagewise hosts check`)."""
        need = 0
        if release.artifact is not None:
            try:
                need = self.artifacts.prepare(release.artifact).size * 4  # the archive, and unpacked
            except PlatformRefusedError as exc:
                return [HostCheck(host="(controller)", check="artifact", ok=False, detail=str(exc))]
        results = await asyncio.gather(*(self._bounded(h.preflight(service, release, need)) for h in self.hosts))
        return [c for checks in results for c in checks]

    async def close(self) -> None:
        for host in self.hosts:
            for task in host.task.values():
                task.cancel()
        await asyncio.gather(*(h.conn.close() for h in self.hosts), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- listing -------------------------------------------------------------------------------

    async def _listed(self, service: str) -> None:
        """Fresh enough listings of every host; a host that does not answer in time is declared unreachable."""
        first = [h for h in self.hosts if service not in h.listed_at and h.unreachable is None]
        tasks = []
        for host in self.hosts:
            task = host.task.get(service)
            due = time.monotonic() - host.listed_at.get(service, float("-inf")) >= LIST_INTERVAL
            if (task is None or task.done()) and (due or host.unreachable is not None):
                task = asyncio.create_task(self._bounded(host.refresh(service)))
                host.task[service] = task
            if task is not None and not task.done():
                tasks.append(task)
        if tasks:
            wait = max(h.timeout for h in self.hosts) if first else OBSERVE_WAIT
            await asyncio.wait(tasks, timeout=wait)
        for host in self.hosts:
            stalled = host.stalled(service)
            if stalled is not None and stalled > host.options.connect_timeout:
                host.lost(f"{host.name}: no answer for {stalled:.1f}s")

    def _news(self, service: str, state: dict[str, Any]) -> list[str]:
        events: list[str] = []
        for host in self.hosts:
            events += host.news
            host.news = []
            if host.unreachable is not None and not state["lost"].get(host.name):
                events.append(f"host {host.name} unreachable since {_clock(host.unreachable_since)}: "
                              f"{host.unreachable}")
            if (host.unreachable is not None) != bool(state["lost"].get(host.name)):
                state["lost"][host.name] = host.unreachable is not None
            for instance_id, release, stopping, last in host.dead.pop(service, []):
                if stopping:
                    continue
                state["failures"][release] = int(state["failures"].get(release, 0)) + 1
                note = f", last line: {last}" if last else " (empty)"
                events.append(f"instance {instance_id} on {host.name} exited; log {self.spec.root}/{service}/logs/"
                              f"{instance_id}.log{note}")
        return events

    # -- readiness -----------------------------------------------------------------------------

    async def _probe(self, host: RemoteHost, listed: Listed, spec: ReleaseSpec | None) -> bool:
        if listed.pid is None:
            return False  # an intent: its process is not there yet
        address = host.endpoint(listed.port)
        http = spec.readiness.http if spec is not None else None
        try:
            if http is not None:
                response = await self._http().get(f"http://{address}{http}")
                return 200 <= response.status_code < 400
            target, _, port = address.rpartition(":")
            _, writer = await asyncio.wait_for(asyncio.open_connection(target.strip("[]"), int(port)), PROBE_TIMEOUT)
            writer.close()
            return True
        except (httpx.HTTPError, OSError, TimeoutError):
            return False

    def _late(self, host: RemoteHost, listed: Listed, spec: ReleaseSpec | None, now: float) -> bool:
        timeout = spec.readiness.timeout if spec is not None else 30.0
        return now - (listed.created - host.skew) > timeout

    async def _expire(self, service: str, expired: list[tuple[RemoteHost, Listed]],
                      releases: dict[str, ReleaseSpec], state: dict[str, Any]) -> list[str]:
        events = []
        for host, listed in expired:
            try:
                await host.stop(service, [listed.id], KILL_GRACE)
            except (HostUnreachableError, HostKeyError):
                continue
            host.dead.pop(service, None)
            state["failures"][listed.release] = int(state["failures"].get(listed.release, 0)) + 1
            spec = releases.get(listed.release)
            timeout = spec.readiness.timeout if spec is not None else 30.0
            events.append(f"instance {listed.id} on {host.name} was not ready within {timeout:g}s and was killed; "
                          f"log {self.spec.root}/{service}/logs/{listed.id}.log")
        return events

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=PROBE_TIMEOUT, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0),
                headers={"Connection": "close", "User-Agent": "stagewise-probe"})
        return self._client

    # -- starting ------------------------------------------------------------------------------

    def _place(self, service: str, release: str, count: int) -> list[RemoteHost]:
        reachable = [h for h in self.hosts if h.unreachable is None]
        if not reachable:
            raise PlatformError(f"no host of {service} is reachable: "
                                + "; ".join(f"{h.name}: {h.unreachable}" for h in self.hosts))
        load = {h.rank: len(h.listing.get(service, {})) for h in reachable}
        mine = {h.rank: sum(1 for i in h.listing.get(service, {}).values() if i.release == release)
                for h in reachable}
        chosen = []
        for _ in range(count):
            host = min(reachable, key=lambda h: (load[h.rank], mine[h.rank], h.rank))
            load[host.rank] += 1
            mine[host.rank] += 1
            chosen.append(host)
        return chosen

    async def _start_on(self, host: RemoteHost, service: str, release: ReleaseSpec, seqs: list[int]) -> list[Listed]:
        async with self._parallel, host.lock:
            await host.ensure_release(service, release, self.artifacts, lambda news: self._copied(service, host, news))
            started = []
            for seq in seqs:
                instance_id = f"{service}-{release.version}-{seq}"
                started.append(await host.spawn(service, instance_id, seq, release, secrets.token_hex(16)))
            if self._state(service).get("pending_prune", {}).get(host.name):
                host.news += await host.prune(service, self.spec.keep_releases, self._in_use(service))
                self._set_prune(service, host.name, False)
        return started

    def _copied(self, service: str, host: RemoteHost, news: str) -> None:
        """An artifact was copied to `host`: counted, reported, and old releases there pruned after this start."""
        state = self._state(service)
        state["copies"] = int(state.get("copies", 0)) + 1
        self._save_state(service, state)
        host.news.append(news)
        self._set_prune(service, host.name, True)

    def _set_prune(self, service: str, host: str, due: bool) -> None:
        state = self._state(service)
        state.setdefault("pending_prune", {})[host] = due
        self._save_state(service, state)

    def _in_use(self, service: str) -> set[str]:
        return set(self._protected.get(service, set())) | {
            i.release for h in self.hosts for i in h.listing.get(service, {}).values()}

    async def _bounded(self, work: Any) -> Any:
        async with self._parallel:
            return await work

    # -- what the controller keeps ----------------------------------------------------------

    def _state_path(self, service: str) -> Path:
        return self.state_dir / "ssh" / "services" / f"{service}.json"

    def _state(self, service: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._state_path(service).read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise PlatformError(f"cannot read {self._state_path(service)}: {exc}") from exc
        for key, default in (("next_seq", 1), ("failures", {}), ("ready", {}), ("copies", 0), ("lost", {})):
            data.setdefault(key, default)
        return data

    def _save_state(self, service: str, data: dict[str, Any]) -> None:
        path = self._state_path(service)
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, json.dumps(data, indent=1, sort_keys=True))

    def _next_seq(self, service: str, state: dict[str, Any]) -> int:
        listed = [i.seq + 1 for h in self.hosts for i in h.listing.get(service, {}).values()]
        seq = max([int(state["next_seq"]), *listed])
        state["next_seq"] = seq + 1
        self._save_state(service, state)
        return seq

    def copies(self, service: str) -> int:
        """Artifact copies made for the service so far, over all hosts."""
        return int(self._state(service)["copies"])

    def _instance(self, service: str, host: RemoteHost, listed: Listed, state: dict[str, Any]) -> Instance:
        ready_at = state["ready"].get(listed.id)
        return Instance(
            id=listed.id, seq=listed.seq, service=service, release=listed.release,
            address=host.endpoint(listed.port), host=host.name,
            state=InstanceState.READY if ready_at is not None else InstanceState.STARTING,
            pid=listed.pid, started_at=listed.created - host.skew, ready_at=ready_at,
            log=f"{host.name}:{self.spec.root}/{service}/logs/{listed.id}.log",
        )
