"""Which services this controller may act on, when several controllers share one store: per-service leases.

Each service is held by one controller at a time under a lease that expires
(`leases` in the store: service, holder, epoch, expires_at). A `LeaseKeeper`
claims the services whose lease is free, given up or expired, renews those it
holds, gives them all up when the controller stops, and tells the controller
which services it holds and at which epoch. Three rules keep two controllers
from ever acting on one service together:

- fencing: every write of a service's state carries the epoch its holder holds
  it at, and the store refuses it (`LeaseLostError`, nothing committed) once
  that is no longer so — a controller that was paused, cut off or slow past
  its lease can never commit again, and since the controller commits before it
  acts, it never acts on what it could not commit;
- stepping down on the monotonic clock: a lease counts as held only until
  `renew_deadline` after the start of its last successful renewal, shorter
  than the `duration` the store gives it from the renewal's arrival, so a
  controller stops acting on a service before anyone else can take it over —
  whatever the wall clocks of the machines say;
- a fair share: with N live controllers (each notes itself in the store at
  every renewal), a controller holds at most ceil(services / N); one holding
  more gives the rest up, so a new controller takes its share without any
  other restarting, and the services of one that died are taken by the others
  once their leases expire.

The defaults are Argo Rollouts' (15 s lease, 10 s renew deadline, 2 s retry).
Holds no lock of the controller's and never touches the data plane.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from stagewise.errors import LeaseLostError, StagewiseError
from stagewise.store import Fence, Lease, Store

log = logging.getLogger("stagewise.controller.leases")

LISTEN_TIMEOUT = 1.0
"""Seconds one wait for another server's writes lasts, so that a stop is noticed within it."""


@dataclass(frozen=True)
class LeaseSettings:
    """How long a lease lasts and how it is kept; tests make them shorter."""

    duration: float = 15.0
    """Seconds a lease lasts from its last renewal (the store's clock): how long a dead holder's services wait."""
    renew_deadline: float = 10.0
    """Seconds after the start of its last successful renewal that a holder stops acting (the monotonic clock)."""
    retry: float = 2.0
    """Seconds between two renewals (and claims of free services)."""

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError(f"lease settings: expected 0 < retry ({self.retry}) < renew deadline "
                             f"({self.renew_deadline}) < duration ({self.duration})")


def default_name() -> str:
    """hostname:pid: unique among the live controllers of one store."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper:
    """Claims, renews and gives up one controller's leases; answers which services it holds, at which epoch."""

    def __init__(self, store: Store, name: str, settings: LeaseSettings | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.name = name
        self.settings = settings or LeaseSettings()
        self._monotonic = monotonic
        self._held: dict[str, int] = {}
        """The services held, each with its epoch."""
        self._valid_until = -math.inf
        """Monotonic time until which the leases held count as held: a renewal's start plus the renew deadline."""
        self._next_sync = -math.inf
        self._known: set[str] = set()
        """The services there were at the last sync: a new one is claimed at once, not at the next."""
        self._stepped_down = False

    # --- what the controller asks ---------------------------------------------------------

    def holds(self, service: str) -> bool:
        """Whether this controller may act on `service` now: it holds the lease, renewed recently enough."""
        return service in self._held and self._monotonic() < self._valid_until

    def fence(self, service: str) -> Fence:
        """The fence of a write of `service` (the store checks it): the epoch held, or None when not held."""
        return Fence(holder=self.name, epoch=self._held.get(service))

    def held(self) -> dict[str, int]:
        """The services held now, each with its epoch."""
        return dict(self._held) if self._monotonic() < self._valid_until else {}

    def lease(self, service: str) -> Lease | None:
        """Who holds `service`, as the store says (for status on any server)."""
        return self.store.lease(service)

    # --- keeping them ----------------------------------------------------------------------

    def sync(self, services: list[str]) -> None:
        """At the start of a tick, outside every service's lock: renew and claim when due (every `retry`
        seconds, or at once when a service appeared that nobody is known to hold); step down when too late."""
        now = self._monotonic()
        unknown = any(s not in self._known for s in services)
        if now >= self._next_sync or unknown:
            self._next_sync = now + self.settings.retry
            try:
                self._sync(services)
            except StagewiseError as exc:
                log.warning("%s: cannot renew its leases: %s (held until %.1fs from now at most)", self.name, exc,
                            max(0.0, self._valid_until - self._monotonic()))
        if self._held and self._monotonic() >= self._valid_until and not self._stepped_down:
            self._stepped_down = True
            log.error("%s: stepping down: its leases were not renewed within %gs; not acting on %s until they are",
                      self.name, self.settings.renew_deadline, ", ".join(sorted(self._held)))

    def _sync(self, services: list[str]) -> None:
        started = self._monotonic()
        live = self.store.heartbeat(self.name, duration=self.settings.duration)
        renewed = self.store.renew_leases(self.name, duration=self.settings.duration)
        self._note_renewed(renewed)
        self._valid_until = started + self.settings.renew_deadline
        self._stepped_down = False
        db_now, leases = self.store.leases()
        by_service = {lease.service: lease for lease in leases}
        share = math.ceil(len(services) / max(1, len(live)))
        if len(self._held) > share:
            self._give_up(sorted(self._held, key=self._order)[share:], share)
        elif len(self._held) < share:
            free = [s for s in services if s not in self._held and _free(by_service.get(s), db_now)]
            free.sort(key=self._order)
            self._take(free[: share - len(self._held)], by_service)
        self._known = set(services)

    def _note_renewed(self, renewed: dict[str, int]) -> None:
        for service, epoch in sorted(self._held.items()):
            if service not in renewed:
                now = self.store.lease(service)
                who = f"{now.holder} holds it at epoch {now.epoch}" if now and now.holder else "it expired"
                log.warning("%s: lost the lease of %s (epoch %d): %s; stopped acting on it", self.name, service,
                            epoch, who, extra={"service": service})
            elif renewed[service] != epoch:
                log.info("%s: %s was written by another server (epoch %d → %d); reconciling it from the store",
                         self.name, service, epoch, renewed[service], extra={"service": service})
        self._held = dict(renewed)

    def _take(self, services: list[str], before: dict[str, Lease]) -> None:
        if not services:
            return
        taken = self.store.acquire_leases(self.name, services, duration=self.settings.duration)
        for service, epoch in sorted(taken.items()):
            was = before.get(service)
            whence = f" from {was.holder} (its lease expired)" if was is not None and was.holder else ""
            log.info("%s: took the lease of %s%s, epoch %d", self.name, service, whence, epoch,
                     extra={"service": service})
        self._held.update(taken)

    def _give_up(self, services: list[str], share: float) -> None:
        self.store.release_leases(self.name, services)
        for service in services:
            self._held.pop(service, None)
        log.info("%s: gave up %d lease(s) for its fair share of %d: %s", self.name, len(services), share,
                 ", ".join(services))

    def _order(self, service: str) -> int:
        """A fixed order of services per controller, so that controllers claiming together seldom collide."""
        return zlib.crc32(f"{self.name}/{service}".encode())

    def refused(self, exc: LeaseLostError) -> None:
        """A write of `exc.service` was refused: stop acting on it (the next sync takes it back if it is still
        this controller's, at the epoch another server's write moved it to)."""
        service = exc.service
        self._held.pop(service, None)
        self._next_sync = -math.inf
        if exc.holder == self.name:
            log.info("%s: %s; reconciling it again from the store", self.name, exc, extra={"service": service})
        else:
            log.warning("%s: lost the lease: %s; stopped acting on %s", self.name, exc, service,
                        extra={"service": service})

    def release_all(self) -> None:
        """Give every lease up (the controller stops): the others may take the services at once."""
        held, self._held = self._held, {}
        try:
            self.store.release_leases(self.name)
        except StagewiseError as exc:
            log.warning("%s: cannot give its leases up (they expire within %gs): %s", self.name,
                        self.settings.duration, exc)
            return
        if held:
            log.info("%s: gave up the leases of %s", self.name, ", ".join(sorted(held)))


def _free(lease: Lease | None, db_now: float) -> bool:
    return lease is None or lease.holder == "" or lease.expires_at <= db_now


async def follow_changes(store: Store, changed: asyncio.Event, stop: asyncio.Event) -> None:
    """Set `changed` whenever any server writes a service's state, so that live views on this server follow the
    others' work (PostgreSQL's LISTEN/NOTIFY); returns at once for a store that cannot tell (SQLite)."""
    while not stop.is_set():
        try:
            seen = await asyncio.to_thread(store.wait_for_changes, LISTEN_TIMEOUT)
        except StagewiseError as exc:
            log.warning("cannot follow the other servers' writes: %s (tried again in %gs)", exc, LISTEN_TIMEOUT)
            await asyncio.sleep(LISTEN_TIMEOUT)
            continue
        if seen is None:
            return
        if seen:
            changed.set()
