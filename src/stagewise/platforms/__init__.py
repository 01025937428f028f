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

from stagewise.core.spec import ReleaseSpec
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


class Platform(Protocol):
    async def observe(self, *, service: str, releases: dict[str, ReleaseSpec]) -> PlatformView:
        """Probe readiness, reap the dead, and report; `releases` gives readiness settings."""

    async def start(self, *, service: str, release: ReleaseSpec, count: int) -> list[Instance]:
        """Start `count` new instances of `release`; returns them (starting)."""

    async def stop(self, *, service: str, ids: list[str], grace: float = 10.0) -> None:
        """Stop these instances: SIGTERM, then SIGKILL after `grace` seconds."""

    async def close(self) -> None:
        """Release client resources; instances keep running."""


PLATFORM_KINDS = ("local", "ssh")


def get_platform(kind: str, *, state_dir: Path) -> Platform:
    if kind == "local":
        from stagewise.platforms.local import LocalPlatform

        return LocalPlatform(state_dir=state_dir)
    raise UnknownDriverError("platform", kind, ["local"])
