"""Send the outbox: every notification at least once, retried with backoff, never in a delivery's way.

The store writes a notification into its outbox in the same transaction as
the event it is about (store/sql.py), so what was committed is
never lost. This sender, a task of its own in the controller's process,
reads what is due, sends each to its sink (stagewise.notify) — a sink gets
its notifications in the order of their events — and records the outcome:

- taken (2xx, exit 0): marked sent, never sent again;
- not taken: tried again after an exponential backoff with jitter — from
  `FIRST_RETRY` doubling up to `MAX_RETRY`, each wait drawn between half
  and all of it, so sinks that failed together do not retry together — and
  given up after `GIVE_UP_AFTER`, which `status` reports;
- the process died between sending and marking: sent again after the
  restart, under the same idempotency key (`<event id>.<sink>`, the body's
  `id`), so a receiver can drop the repeat.

A restarted sender tries every pending notification once at once, whatever
backoff it was in. A sink that keeps failing costs a delivery nothing: the
reconcile loop never waits for this task, and a slow sink only delays its
own notifications (`CONCURRENCY` are in flight at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from stagewise.errors import NotifyError, StagewiseError
from stagewise.notify import Notifier
from stagewise.store import OutboxItem, Store

log = logging.getLogger("stagewise.notify")

FIRST_RETRY = 1.0
"""Seconds before the first retry of a notification a sink did not take."""
MAX_RETRY = 300.0
"""Longest wait between two tries."""
GIVE_UP_AFTER = 24 * 3600.0
"""A notification not taken this long after its event is given up (and reported by `status`)."""
CONCURRENCY = 8
BATCH = 50
POLL = 0.5
"""Seconds between looks at the outbox when nothing woke the sender."""


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds before the next try after `attempts` failed ones: exponential, capped, with equal jitter."""
    ceiling = min(MAX_RETRY, FIRST_RETRY * 2.0 ** min(attempts - 1, 32))
    return ceiling / 2 + rng.random() * ceiling / 2


class Sender:
    def __init__(self, store: Store, notifier: Notifier, clock: Callable[[], float], *,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.rng = rng or random.Random()
        self.wake = asyncio.Event()
        """Set when events were committed: look at the outbox now rather than at the next poll."""
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; the first pass retries everything pending at once (a restart)."""
        try:
            self.store.retry_notifications_now(self.clock())
        except StagewiseError as exc:
            log.warning("cannot read the outbox: %s", exc)
        while not stop.is_set():
            try:
                await self.flush()
            except StagewiseError as exc:  # the store busy or failing: the next pass tries again
                log.warning("cannot read the outbox: %s", exc)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, self.wake), timeout=POLL)

    async def flush(self) -> int:
        """Send every notification due now, once; how many were taken.

        Each sink gets its notifications in order, one at a time, and nothing after one it did not take
        (that one is tried again first); different sinks are sent to side by side.
        """
        due = self.store.due_notifications(self.clock(), limit=BATCH)
        queues: dict[tuple[str, str], list[OutboxItem]] = {}
        for item in due:
            queues.setdefault((item.service, item.sink), []).append(item)
        results = await asyncio.gather(*(self._send_in_order(queue) for queue in queues.values()))
        return sum(results)

    async def _send_in_order(self, queue: list[OutboxItem]) -> int:
        taken = 0
        for item in queue:
            if not await self._send(item):
                break
            taken += 1
        return taken

    async def _send(self, item: OutboxItem) -> bool:
        async with self._slots:
            try:
                await self.notifier.send(kind=item.kind, target=item.target, payload=item.payload)
            except NotifyError as exc:
                self._failed(item, str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 -- a sink's bug must not stop the others: it is not taken
                self._failed(item, f"internal error: {type(exc).__name__}: {exc}")
                return False
        self.store.notification_sent(item.id, at=self.clock())
        return True

    def _failed(self, item: OutboxItem, error: str) -> None:
        now = self.clock()
        attempts = item.attempts + 1
        give_up = now - item.created_at >= GIVE_UP_AFTER
        self.store.notification_failed(item.id, at=now, error=error, next_at=now + backoff(attempts, self.rng),
                                       give_up=give_up)
        if attempts == 1 or give_up:
            log.warning("%s: notification %s to %s not taken%s: %s", item.service, item.key, item.sink,
                        "; given up" if give_up else ", will retry", error)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
