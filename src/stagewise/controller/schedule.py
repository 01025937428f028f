"""When each service is reconciled next: a priority queue by due time, so a tick touches only what is due.

A sweep over every service on every tick costs as much for a thousand
services that have nothing to do as for a thousand deliveries in flight.
Instead each service has one due time, and a tick takes the services due by
its `now` (controller-runtime's work queue, informers' periodic resync):

- a delivery in flight, or a world still converging, is due on the next tick;
- a failing service is due when its retry is (controller/retries.py);
- an idle service — nothing in flight, its world as desired — is resynced
  once per `period`, each at its own phase within the period (a fixed hash of
  its name), so that ten thousand idle services spread evenly over the ticks
  instead of all coming due together, and none waits longer than one period;
- an event that concerns a service (a person's verb, a driver's news, a
  write by another process) makes it due at once.

A service being reconciled has no due time until its reconcile ends and
sets the next one. Holds no clock and does no I/O: times are arguments.
"""

from __future__ import annotations

import heapq
import itertools
import math
import zlib

COMPACT_AT = 4
"""Rebuild the heap once stale entries outnumber live ones this many times."""


class Schedule:
    """Each service's next due time; the services due by a time, earliest first."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    def __contains__(self, service: str) -> bool:
        return service in self._due

    def __len__(self) -> int:
        return len(self._due)

    def due_at(self, service: str) -> float | None:
        return self._due.get(service)

    def at(self, service: str, when: float) -> None:
        """`service` is due at `when`, whatever it was due at before."""
        if self._due.get(service) == when:
            return
        self._due[service] = when
        heapq.heappush(self._heap, (when, next(self._order), service))
        if len(self._heap) > COMPACT_AT * len(self._due) + 64:
            self._compact()

    def soon(self, service: str, when: float) -> None:
        """`service` is due at `when`, or earlier if it already was."""
        due = self._due.get(service)
        if due is None or when < due:
            self.at(service, when)

    def drop(self, service: str) -> None:
        """`service` is not due at all (deleted, or being reconciled)."""
        self._due.pop(service, None)

    def pop_due(self, now: float) -> list[str]:
        """The services due by `now`, earliest first; each is then due no more until `at` is called again."""
        out: list[str] = []
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= now:
            when, _, service = heapq.heappop(heap)
            if due.get(service) == when:  # otherwise a stale entry: the service was rescheduled since
                del due[service]
                out.append(service)
        return out

    def next_due(self) -> float | None:
        """The earliest due time of any service."""
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _compact(self) -> None:
        self._heap = [(when, next(self._order), service) for service, when in self._due.items()]
        heapq.heapify(self._heap)


def phase_of(service: str) -> float:
    """The service's fixed place within a resync period, in [0, 1): spreads services evenly, same on every run."""
    return zlib.crc32(service.encode()) / 2**32


def next_resync(service: str, now: float, period: float) -> float:
    """The first time after `now` at the service's phase within `period`: at most one period away."""
    offset = phase_of(service) * period
    return (math.floor((now - offset) / period) + 1) * period + offset
