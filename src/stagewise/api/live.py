"""Live updates: the server-sent event stream that tells an open dashboard page to refresh.

Why a stream of "something changed" and not of the data: the page already
knows how to render itself (server-side, through htmx partials), so the event
only says *when*. Each stream decides *whether* a change matters to its page
(the overview or one service's delivery page) before it says so, so a busy
controller does not make every open page re-render several times a second.

A stream ends when the server shuts down (`app.state.stopping`, set by
`serve`) or after `STREAM_LIFETIME`, so it never holds up a shutdown; the
browser's EventSource reconnects by itself and the page then refreshes once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request

from stagewise.controller import Controller

KEEPALIVE = 15.0
"""Seconds between comments on an idle event stream, so proxies and browsers keep it open."""
STREAM_LIFETIME = 300.0
"""A stream ends after this long and the browser reconnects (EventSource does so by itself)."""
POLL = 0.5
"""How often a waiting stream checks whether the server is shutting down."""


class ChangeFeed:
    """Fans the controller's single `changed` event out to any number of event streams.

    The controller only sets the event. The first stream to wake clears it and
    bumps `version`; the others, woken by the same `set`, see the new version.
    One asyncio loop runs all of them, so no change is lost between the two.
    """

    def __init__(self, changed: asyncio.Event) -> None:
        self._changed = changed
        self.version = 0

    async def wait(self, seen: int, timeout: float) -> int:
        """The version after `seen`, or `seen` again when nothing changed within `timeout` seconds."""
        if self.version == seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        if self._changed.is_set():
            self._changed.clear()
            self.version += 1
        return self.version


def _controller(request: Request) -> Controller:
    c: Controller = request.app.state.controller
    return c


def _feed(request: Request) -> ChangeFeed:
    state = request.app.state
    feed: ChangeFeed | None = getattr(state, "change_feed", None)
    if feed is None:
        feed = state.change_feed = ChangeFeed(_controller(request).changed)
    return feed


class _Watch:
    """Tells whether what a page shows changed since the last look: each watch says what it looks at."""

    seen: tuple[Any, ...]

    def changed(self) -> bool:
        now = self._look()
        if now == self.seen:
            return False
        self.seen = now
        return True

    def _look(self) -> tuple[Any, ...]:
        raise NotImplementedError


class OverviewWatch(_Watch):
    """Tells whether the overview changed: a delivery started, moved a step, paused or ended.

    Only deliveries in flight are read, never every service, so the check stays
    cheap with hundreds of idle services; an ending delivery leaves the set, so
    its outcome and the new stable release are noticed too.
    """

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.seen = self._look()

    def _look(self) -> tuple[Any, ...]:
        return tuple((d.service, d.id, d.phase, d.step, d.paused) for d in self.controller.store.active_deliveries())


class ServiceWatch(_Watch):
    """Tells whether what a delivery page shows of one service changed since the last look.

    The controller signals every committed tick, and a running analysis commits
    new counts on each one (four times a second); redrawing the page for each
    would only load the server. A page changes when the phase, step, hold,
    verdict outcome, service or event log changes — or when an analysis run
    gains a chart point, about once a second.
    """

    def __init__(self, controller: Controller, service: str) -> None:
        self.controller = controller
        self.service = service
        self.last_event = 0
        self.seen = self._look()

    def _look(self) -> tuple[Any, ...]:
        store = self.controller.store
        latest = store.latest_delivery(self.service)
        record = store.get_service(self.service)
        while batch := store.events(self.service, after_id=self.last_event, limit=1000):
            self.last_event = batch[-1].id
        delivery = None if latest is None else (
            latest.id, latest.phase, latest.step, latest.paused, latest.attempt, latest.abort_reason, latest.message,
            tuple((k, r.verdict.outcome, len(r.history)) for k, r in sorted(latest.analysis.items())))
        service = None if record is None else (record.stable, record.previous, record.updated_at)
        return delivery, service, self.last_event


async def event_stream(request: Request, service: str | None) -> AsyncIterator[str]:
    controller, feed = _controller(request), _feed(request)
    stopping: Callable[[], bool] = getattr(request.app.state, "stopping", lambda: False)
    seen = feed.version
    # The watches read the store: off the event loop, which the controller shares.
    watch: OverviewWatch | ServiceWatch = await asyncio.to_thread(
        lambda: ServiceWatch(controller, service) if service else OverviewWatch(controller))
    started = sent = time.monotonic()
    yield "retry: 1000\nevent: hello\ndata: {}\n\n"
    while not stopping() and time.monotonic() - started < STREAM_LIFETIME:
        version = await feed.wait(seen, POLL)
        if version != seen:
            seen = version
            if not await asyncio.to_thread(watch.changed):
                continue
            sent = time.monotonic()
            yield f"event: change\ndata: {json.dumps({'version': version})}\n\n"
        elif time.monotonic() - sent > KEEPALIVE:
            sent = time.monotonic()
            yield ": keepalive\n\n"
        if await request.is_disconnected():
            return
