"""Live updates: the change feed, what counts as a change for each page, and the event stream."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from stagewise.api.live import ChangeFeed, OverviewWatch, ServiceWatch
from stagewise.core.delivery import Phase
from tests.controller.conftest import World, make_spec
from tests.dashboard.conftest import CANARY_PAUSE, Server, wait_for
from tests.dashboard.test_pages import apply, phase

LIVE_BOUND = 1.0
"""Seconds from a state change to its event on the stream (the issue's target for the whole page)."""


async def test_one_change_wakes_every_waiting_stream_once() -> None:
    changed = asyncio.Event()
    feed = ChangeFeed(changed)
    waiters = [asyncio.create_task(feed.wait(0, timeout=5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    changed.set()
    assert await asyncio.gather(*waiters) == [1, 1, 1]
    assert not changed.is_set()
    assert await feed.wait(1, timeout=0.01) == 1, "no change, no new version"
    changed.set()
    assert await feed.wait(0, timeout=5) == 2, "a stream behind the feed catches up, with the new change"
    assert await feed.wait(2, timeout=0.01) == 2


async def test_analysis_ticks_are_not_changes_for_the_overview_but_a_pause_is(world: World) -> None:
    strategy = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}],
                           "analysis": {"templates": ["errors"], "startingStep": 0}}}
    await world.controller.apply(make_spec("v2", strategy))
    assert await world.run(until={Phase.PAUSED}) is Phase.PAUSED
    overview, page = OverviewWatch(world.controller), ServiceWatch(world.controller, "shop")
    await world.run(seconds=0.5, step=0.1)
    assert not overview.changed(), "new counts alone do not change the overview"
    assert not page.changed(), "nor the delivery page, within the same second"
    await world.run(seconds=2, step=0.25)
    assert page.changed(), "a new chart point is a change for the delivery page"
    assert not overview.changed()
    await world.controller.act("shop", "pause")
    assert overview.changed() and page.changed()
    assert not overview.changed() and not page.changed(), "a change is reported once"


def read_events(server: Server, path: str, into: list[tuple[float, str]], stop: threading.Event) -> None:
    with server.client() as c, c.stream("GET", path) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                into.append((time.monotonic(), line.removeprefix("event: ")))
            if stop.is_set():
                return


@pytest.mark.timeout(60)
def test_a_change_reaches_the_stream_within_a_second(live: Server) -> None:
    with live.client(authorised=True) as c:
        apply(c, "shop", "v1", {"full": {}})
        wait_for(lambda: phase(c, "shop") == "Succeeded", what="v1")
        apply(c, "shop", "v2", CANARY_PAUSE)
        wait_for(lambda: phase(c, "shop") == "Paused", what="the canary's pause")
        events: list[tuple[float, str]] = []
        stop = threading.Event()
        reader = threading.Thread(target=read_events, args=(live, "/api/v1/events/stream?service=shop", events, stop),
                                  daemon=True)
        reader.start()
        wait_for(lambda: any(kind == "hello" for _, kind in events), what="the stream's hello")
        delays = []
        for verb in ("pause", "resume") * 5:
            before = len(events)
            started = time.monotonic()
            assert c.post(f"/api/v1/services/shop/{verb}").status_code == 200
            arrived: Any = wait_for(lambda n=before: [t for t, kind in events[n:] if kind == "change"],
                                    timeout=5, what=f"a change event after {verb}")
            delays.append(arrived[0] - started)
        stop.set()
    print(f"\nstream delay after an API call: max {max(delays) * 1000:.0f} ms over {len(delays)} changes")
    assert max(delays) < LIVE_BOUND


@pytest.mark.timeout(60)
def test_an_open_stream_does_not_hold_up_the_servers_shutdown(live: Server) -> None:
    events: list[tuple[float, str]] = []
    reader = threading.Thread(target=read_events, args=(live, "/api/v1/events/stream", events, threading.Event()),
                              daemon=True)
    reader.start()
    wait_for(lambda: events, what="the stream's hello")
    started = time.monotonic()
    live.stop()
    assert time.monotonic() - started < 5
    reader.join(5)
    assert not reader.is_alive(), "the stream did not end with the server"
