"""Platforms: what starts, probes and stops instances of a release.

Each backend lives in its own module and imports `stagewise.core` only. The
controller decides which instances to start and stop; a platform carries that
out and reports what it sees, including instances that died by themselves.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from stagewise.core.spec import PlatformSpec, ReleaseSpec
from stagewise.errors import UnknownDriverError


class InstanceState(StrEnum):
    STARTING = "starting"
    READY = "ready"


class Instance(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    """Unique within the service; its number grows with each start, so the newest sorts last."""
    seq: int
    service: str
    release: str
    address: str
    """host:port the instance serves on."""
    host: str | None = None
    """The host it runs on (ssh: the host's target); none on the local platform."""
    state: InstanceState
    pid: int | None = None
    started_at: float
    ready_at: float | None = None
    log: str | None = None


class PlatformView(BaseModel):
    """What a platform sees of one service now."""

    instances: list[Instance] = []
    """Live instances (starting or ready); dead and failed ones are gone from here."""
    failures: dict[str, int] = {}
    """Per release: instances that exited or missed their readiness deadline, ever."""
    events: list[str] = []
    """What happened since the previous call, in words (an instance exited, ...)."""
    hosts: list[str] = []
    """The hosts instances may run on, in the spec's order (ssh); empty on the local platform."""
    unreachable: dict[str, str] = {}
    """Hosts that cannot be reached now (ssh), each with the error and since when; their instances are not
    in `instances` (nothing can be known of them, and no router must send them a request)."""


class Platform(Protocol):
    async def observe(self, *, service: str, releases: dict[str, ReleaseSpec]) -> PlatformView:
        """Probe readiness, reap the dead, and report; `releases` gives readiness settings."""

    async def start(self, *, service: str, release: ReleaseSpec, count: int) -> list[Instance]:
        """Start `count` new instances of `release`; returns them (starting)."""

    async def stop(self, *, service: str, ids: list[str], grace: float = 10.0) -> None:
        """Stop these instances: SIGTERM, then SIGKILL after `grace` seconds."""

    async def preflight(self, *, service: str, release: ReleaseSpec) -> list[str]:
        """What would stop `release` from starting, one problem a line naming where; empty when nothing would."""

    async def close(self) -> None:
        """Release client resources; instances keep running."""


PLATFORM_KINDS = ("local", "ssh")


def get_platform(kind: str, *, state_dir: Path, spec: PlatformSpec | None = None) -> Platform:
    """The platform of `kind`; ssh needs the spec's `platform:` (its hosts and how to reach them)."""
    if kind == "local":
        from stagewise.platforms.local import LocalPlatform

        return LocalPlatform(state_dir=state_dir)
    if kind == "ssh":
        from stagewise.platforms.ssh import SshPlatform

        if spec is None or not spec.hosts:
            raise UnknownDriverError("platform", "ssh without hosts", ["local", "ssh with hosts"])
        return SshPlatform(state_dir=state_dir, spec=spec)
    raise UnknownDriverError("platform", kind, list(PLATFORM_KINDS))
