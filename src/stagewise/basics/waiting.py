"""Polling until something holds or a deadline passes: async and blocking, never busy.

Much of stagewise waits on things it cannot be told about — a daemon that
writes its pid file, a process that exits, a router that answers, a log that
is reopened — so it looks again every `interval` seconds until a deadline.
Each wait here checks at least once, sleeps between checks (never spins),
never sleeps past its deadline, and checks once more at the deadline, so a
condition that holds by then is never reported as a timeout.

The deadline is on the monotonic clock: a change of the wall clock never
shortens or stretches a wait. What to do on a timeout (raise which error,
kill what) is the caller's: these return the check's last value.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

INTERVAL = 0.05
"""Default seconds between two checks."""


class Deadline:
    """A point `seconds` from now on the monotonic clock, for loops that do more than one check per round."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def nap(self, interval: float) -> float:
        """How long to sleep before the next check: `interval`, or what is left if that is less."""
        _check_interval(interval)
        return min(interval, self.remaining)


async def until(check: Callable[[], T], *, timeout: float, interval: float = INTERVAL) -> T:
    """Call `check` until it returns something truthy or `timeout` seconds pass; its last value.

    `check` is a plain function (it must not block for long: it runs on the event loop).
    """
    deadline = Deadline(timeout)
    while True:
        value = check()
        if value or deadline.expired:
            return value
        await asyncio.sleep(deadline.nap(interval))


async def until_awaited(check: Callable[[], Awaitable[T]], *, timeout: float, interval: float = INTERVAL) -> T:
    """`until` for a check that is a coroutine function (asks a socket, a router, a process)."""
    deadline = Deadline(timeout)
    while True:
        value = await check()
        if value or deadline.expired:
            return value
        await asyncio.sleep(deadline.nap(interval))


def blocking_until(check: Callable[[], T], *, timeout: float, interval: float = INTERVAL) -> T:
    """`until` for code outside an event loop (a thread, the command line, a test): sleeps with `time.sleep`."""
    deadline = Deadline(timeout)
    while True:
        value = check()
        if value or deadline.expired:
            return value
        time.sleep(deadline.nap(interval))


async def cancelled(tasks: Iterable[asyncio.Task[Any]], *expected: type[BaseException]) -> None:
    """Cancel every one of `tasks`, then wait until each has ended; what they raise is dropped if `expected`
    (their cancellation always is). A close() that stops what it started, so nothing outlives it."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, *expected):
            await task


def _check_interval(interval: float) -> None:
    if not interval > 0:
        raise ValueError(f"a polling interval must be positive, not {interval!r}: a zero one spins")
