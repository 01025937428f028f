"""One host of the ssh platform: its connection, what it last listed, and the operations on it.

Every command on a host runs under that host's lock, one at a time: a listing
never interleaves with a spawn or a stop, so what it reports is never older
than what this controller did there (else an instance just started could be
missing from a view, and started twice). Hosts work in parallel, up to
`ssh.maxParallel` at once.

A host that fails to answer (ssh exit 255, a command past its timeout, a
listing in flight longer than `ssh.connectTimeout`) is *unreachable*: that
is reported with the error and the time, its instances leave the view (and
so the routers), and nothing of it counts as a failed release. It is
reachable again at its next answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.core.platform_spec import HostSpec, SshSpec
from stagewise.core.spec import ReleaseSpec
from stagewise.errors import HostKeyError, HostUnreachableError, PlatformError, PlatformRefusedError
from stagewise.platforms._ssh_artifact import Artifacts
from stagewise.platforms._ssh_scripts import (
    CHECK_RELEASE,
    LIST,
    PREFLIGHT,
    PRUNE,
    SPAWN,
    STOP,
    UNPACK,
    Listed,
    parse_listing,
)
from stagewise.platforms._ssh_transport import Connection

MAX_CLOCK_SKEW = 30.0
"""Seconds a host's clock may differ from the controller's before the pre-flight check fails."""


@dataclass
class HostCheck:
    """One pre-flight check of one host."""

    host: str
    check: str
    """reachable, host key, program, disk, root writable, clock."""
    ok: bool | None
    """None: not checked (an earlier check failed)."""
    detail: str


@dataclass
class Spawned:
    listed: Listed
    events: list[str] = field(default_factory=list)


class RemoteHost:
    def __init__(self, spec: HostSpec, rank: int, options: SshSpec, connection: Connection, root: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.rank = rank
        self.options = options
        self.conn = connection
        self.root = root
        self.address = spec.address or connection.hostname
        self._resolved = spec.address is not None
        self.lock = asyncio.Lock()
        self.listing: dict[str, dict[str, Listed]] = {}
        """service → instance id → what the host last said of it."""
        self.listed_at: dict[str, float] = {}
        self.skew = 0.0
        """The host's clock minus the controller's, at the last listing."""
        self.task: dict[str, asyncio.Task[None]] = {}
        self.busy_since: dict[str, float] = {}
        """service → when its listing command started (after the lock was taken); gone once it ended."""
        self.unreachable: str | None = None
        self.unreachable_since: float | None = None
        self.news: list[str] = []
        """Events not yet reported (reachable again, adopted, forgotten)."""
        self.dead: dict[str, list[tuple[str, str, bool, str]]] = {}
        self.present: set[tuple[str, str]] = set()
        """(service, version) known unpacked here."""

    @property
    def timeout(self) -> float:
        return self.options.connect_timeout + 3.0

    def endpoint(self, port: int) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{port}"

    # -- reachability --------------------------------------------------------------------------

    def lost(self, reason: str) -> None:
        if self.unreachable is None:
            self.unreachable_since = time.time()
        self.unreachable = reason

    def answered(self) -> None:
        if self.unreachable is not None and self.unreachable_since is not None:
            self.news.append(f"host {self.name} is reachable again after "
                             f"{time.time() - self.unreachable_since:.1f}s")
        self.unreachable = None
        self.unreachable_since = None

    async def _run(self, script: str, args: list[str], *, timeout: float, stdin: Path | None = None) -> str:
        try:
            result = await self.conn.run(script, [self.root, *args], timeout=timeout, stdin=stdin)
        except (HostUnreachableError, HostKeyError) as exc:
            self.lost(str(exc))
            raise
        self.answered()
        if result.status != 0:
            raise PlatformError(f"{self.name}: a command failed (status {result.status}): "
                                f"{result.stderr.strip()[-300:] or result.stdout.strip()[-300:]}")
        return result.stdout

    # -- listing -------------------------------------------------------------------------------

    async def resolve(self) -> None:
        """The address routers use, once: an ssh_config alias's HostName as OpenSSH reads it (`ssh -G`)."""
        if not self._resolved:
            self.address = await self.conn.resolve_address(self.timeout)
            self._resolved = True

    async def refresh(self, service: str) -> None:
        """List the service's instances here (adopting intents, reaping the dead); never raises for the network."""
        await self.resolve()
        async with self.lock:
            self.busy_since[service] = time.monotonic()
            try:
                out = await self._run(LIST, [service], timeout=self.timeout)
            except (HostUnreachableError, HostKeyError):
                return
            finally:
                self.busy_since.pop(service, None)
        listing = parse_listing(out)
        if listing.now:
            self.skew = listing.now - time.time()
        self.listing[service] = listing.instances
        self.listed_at[service] = time.monotonic()
        self.news += listing.notes
        self.dead.setdefault(service, []).extend(listing.dead)

    def stalled(self, service: str) -> float | None:
        """Seconds the service's listing has been waiting for an answer, if it has."""
        started = self.busy_since.get(service)
        return None if started is None else time.monotonic() - started

    # -- releases ------------------------------------------------------------------------------

    async def ensure_release(self, service: str, release: ReleaseSpec, artifacts: Artifacts,
                             copied: Callable[[str], None]) -> None:
        """The release unpacked here, copied only if it is not yet; call with the lock held."""
        key = (service, release.version)
        if key in self.present or release.artifact is None:
            return
        answer = (await self._run(CHECK_RELEASE, [service, release.version], timeout=self.timeout)).split()
        if answer and answer[0] == "H":
            self._same_artifact(release, answer[1] if len(answer) > 1 else "", artifacts)
        elif answer and answer[0] == "P":
            raise PlatformRefusedError(
                f"{self.name}: releases/{release.version} of {service} exists but was not unpacked from an "
                "artifact; remove it or give the release another version")
        else:
            artifact = artifacts.prepare(release.artifact)
            out = await self._run(UNPACK, [service, release.version, artifact.sha256],
                                  timeout=self.timeout + 30 + artifact.size / 1e6, stdin=artifact.path)
            if out.startswith("X"):
                raise PlatformError(f"{self.name}: the artifact arrived damaged (sha256 {out.split()[1][:12]}, "
                                    f"expected {artifact.sha256[:12]})")
            if out.startswith("U"):
                copied(f"copied artifact {artifact.sha256[:12]} ({artifact.size:,} bytes) of {release.version} "
                       f"to {self.name}")
        self.present.add(key)

    def _same_artifact(self, release: ReleaseSpec, sha: str, artifacts: Artifacts) -> None:
        assert release.artifact is not None
        try:
            artifact = artifacts.prepare(release.artifact)
        except PlatformRefusedError:
            return  # gone from this machine (a rollback to an old build): what the host holds is the release
        if artifact.sha256 != sha:
            raise PlatformRefusedError(
                f"{self.name}: release {release.version} is unpacked there from another artifact "
                f"(sha256 {sha[:12]}, this one {artifact.sha256[:12]}); a changed build needs a new version")

    async def prune(self, service: str, keep: int, protected: set[str]) -> list[str]:
        out = await self._run(PRUNE, [service, str(keep), *sorted(protected)], timeout=self.timeout)
        removed = [line.split()[1] for line in out.splitlines() if line.startswith("R ")]
        for version in removed:
            self.present.discard((service, version))
        return [f"pruned release {v} of {service} on {self.name} (keepReleases {keep})" for v in removed]

    # -- instances ------------------------------------------------------------------------------

    async def spawn(self, service: str, instance_id: str, seq: int, release: ReleaseSpec, token: str) -> Listed:
        """Start one instance; call with the lock held. Its port is chosen here, on the host."""
        await self.resolve()
        env = [f"{k}={v.replace('{host}', self.address)}" for k, v in release.run.env.items()]
        argv = [a.replace("{host}", self.address) for a in release.run.command]
        out = await self._run(SPAWN, [service, instance_id, str(seq), release.version, token, str(len(env)),
                                      *env, *argv], timeout=self.timeout + 10)
        fields = out.split()
        if not fields or fields[0] != "S":
            reason = out.strip().partition(" ")[2].partition(" ")[2] if out.startswith("E") else out.strip()
            raise PlatformRefusedError(f"cannot start {instance_id} on {self.name}: {reason or 'no answer'} "
                                       f"(run.command {argv[0]!r} must exist there or in the artifact)")
        listed = Listed(id=instance_id, seq=seq, release=release.version, port=int(fields[2]), pid=int(fields[3]),
                        start=int(fields[4]), created=float(fields[5]), stopping=False)
        self.listing.setdefault(service, {})[instance_id] = listed
        return listed

    async def stop(self, service: str, ids: list[str], grace: float) -> list[str]:
        """SIGTERM, `grace`, SIGKILL; returns the ids still running after that."""
        async with self.lock:
            out = await self._run(STOP, [service, str(max(0, round(grace * 10))), *ids],  # tenths of a second
                                  timeout=self.timeout + grace + 8)
        for line in out.splitlines():
            if line.startswith("G "):
                self.listing.get(service, {}).pop(line.split()[1], None)
        return [line.split()[1] for line in out.splitlines() if line.startswith("L ")]

    # -- pre-flight -----------------------------------------------------------------------------

    async def preflight(self, service: str, release: ReleaseSpec, need_bytes: int) -> list[HostCheck]:
        def check(name: str, ok: bool | None, detail: str) -> HostCheck:
            return HostCheck(host=self.name, check=name, ok=ok, detail=detail)

        program = release.run.command[0]
        in_artifact = "/" in program and not program.startswith("/")
        try:
            async with self.lock:
                out = await self._run(PREFLIGHT, [service, "" if in_artifact else program,
                                                  str(need_bytes // 1024 + 1)], timeout=self.timeout)
        except HostKeyError as exc:
            return [check("reachable", True, "answers"), check("host key", False, str(exc))]
        except (HostUnreachableError, PlatformRefusedError, PlatformError) as exc:
            return [check("reachable", False, str(exc))]
        lines = {line[0]: line[2:].strip() for line in out.splitlines() if len(line) > 2}
        skew = float(lines.get("T", "0") or 0) - time.time()
        avail, _, need = lines.get("D", "0 0").partition(" ")
        found = lines.get("C", "-")
        return [
            check("reachable", True, "answers"),
            check("host key", True, "known"),
            check("program", found != "!", f"{program} is in the artifact" if in_artifact else
                  (f"{program}: {found}" if found != "!" else f"{program} not found (command -v) on {self.name}")),
            check("disk", int(avail or 0) >= int(need or 0),
                  f"{int(avail or 0) // 1024:,} MiB free, {int(need or 0) // 1024 + 1:,} MiB needed"),
            check("root writable", lines.get("W") == "1",
                  f"{self.root}/{service}" + ("" if lines.get("W") == "1" else " is not writable")),
            check("clock", abs(skew) <= MAX_CLOCK_SKEW, f"{skew:+.1f}s from the controller's"),
        ]

