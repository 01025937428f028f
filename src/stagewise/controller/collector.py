"""The garbage collector between ticks: each collection in a gap before the next tick, when it fits.

A tick at a thousand deliveries leaves tens of thousands of new objects (each
delivery it moved has a new state, the one before it is freed). The server's
loop collects them between two ticks (`Controller.collect_between_ticks`): a
young collection after every tick, a middle one after every third
(`GC_THRESHOLDS`), each walking only what lives of those few ticks. Waiting
for the collector's own count, which every freed object lowers, had let the
objects of many ticks pile up: the collection that came at last walked them
all, and the next tick began up to a quarter of a second late — every step
due meanwhile decided a tick late.

A collection still takes a few hundredths of a second at that scale; after
a tick that took most of its period, it would make the next one begin late.
So each waits for a gap long enough for it — as long as the last of its
generation took, per tick of garbage — `WAIT_MAX` ticks in a row at most.
A full collection, which walks all that `keep_still` did not freeze, comes
after every few thousand middle ones: 50 minutes of ticks of 0.25 s.
"""

from __future__ import annotations

import gc
import time

GC_THRESHOLDS = (200_000, 3, 4000)
"""The collector's thresholds once the first pass is done (Python's own: 700, 10, 10): allocations before
a young collection, young collections before a middle one, middle ones before a full one. The loop makes
the collections itself, between ticks (`Collector`): the first is a safety net within a tick, long out of
reach; the others say how often the older generations are walked."""
WAIT_MAX = 4
"""Ticks in a row a collection may wait for a gap long enough for it; then it runs in whatever gap there is."""


class Collector:
    """Runs the collection due after a tick in the gap before the next one, when it fits there."""

    def __init__(self) -> None:
        self.took: dict[int, float] = {}
        """Seconds the last collection of each generation took, per tick of garbage it collected."""
        self.waited = 0
        """Ticks in a row the due collection waited for a gap."""

    def between_ticks(self, until: float | None = None) -> int | None:
        """Collect the garbage of the ticks since the last collection, unless the next tick, due at `until` (on
        the `perf_counter` clock), comes too soon for it; the generation collected, or None."""
        _, middle, old = gc.get_count()
        _, middle_every, old_every = gc.get_threshold()
        generation = 0 if middle + 1 < middle_every else 1 if old + 1 < old_every else 2
        ticks = 1 + self.waited
        expected = self.took.get(generation, 0.0) * ticks
        started = time.perf_counter()
        if until is not None and started + expected > until and self.waited < WAIT_MAX:
            self.waited += 1
            return None
        gc.collect(generation)
        self.took[generation] = (time.perf_counter() - started) / ticks
        self.waited = 0
        return generation
