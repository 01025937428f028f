"""The controller: a level-triggered reconcile loop over services and their deliveries.

A tick reconciles the services that are due (controller/schedule.py): a
delivery in flight and a world still converging on every tick, an idle
service once per resync period (10 s by default) — each compared in full,
desired against observed — and any service at once when an event concerns
it (a person's verb, a driver's news, a write by another process). For each,
the tick observes the world (instances, router counters) and routes to the
instances ready now (in the world already committed, so that a step waiting
for them ends only once traffic reaches them), asks `engine.decide` for the
delivery's next state (it judges the analysis runs and advances the state
machine; the simulator calls the same function), **commits** — every
service's changes of the tick in one transaction, and only what changed —
and only then makes the world match it (controller/work.py). A controller
killed at any moment and started again reads the committed state and
carries on; since every action is idempotent, repeating the last one does
no harm. The data plane never runs here: the router and the instances are
processes of their own, so a controller restart drops no request.

What it read is kept in memory (controller/held.py) and refreshed when the
store says another process wrote. Observations and actions of different
services run side by side, `CONCURRENCY` at a time, and a service whose
drivers are slow finishes on its own, past its tick, without holding back
the others' (its decision is still committed before anything is acted on).

Hook calls run beside the ticks like measurements do (controller/hooks.py):
a tick starts the calls the committed state asks for and feeds the answers
back as observations. Notifications leave through the store's outbox, sent
by a task of their own (controller/outbox.py) that never holds a delivery.

A service whose reconcile fails is left alone until its retry is due — after
a TemporaryError's delay, or with capped backoff for anything else — and the
failure is reported once (controller/retries.py). A router that cannot serve
the committed step does not stop the delivery's clock: the tick still
decides (a progress deadline or a failed analysis still aborts), only no
step ends on readiness while the router does not serve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from stagewise.controller import lifecycle
from stagewise.controller.collector import GC_THRESHOLDS, Collector
from stagewise.controller.held import Held
from stagewise.controller.hooks import HookRunner
from stagewise.controller.leases import LeaseKeeper, LeaseSettings, default_name, follow_changes
from stagewise.controller.lifecycle import DataPlane, Deletion
from stagewise.controller.measure import Measurer
from stagewise.controller.observer import Observer, Unobserved
from stagewise.controller.outbox import Sender
from stagewise.controller.reconcile import Applied
from stagewise.controller.retries import MAX_BACKOFF, Failing, Retries
from stagewise.controller.schedule import Budget, Schedule, can_wait, next_beat, next_resync, quiet_until
from stagewise.controller.shared_windows import SharedWindows
from stagewise.controller.work import (
    Aids,
    KnownReleases,
    Work,
    act,
    decide_one,
    failing_alone,
    observe,
    releases_of,
    steady_world,
)
from stagewise.core import delivery as machine
from stagewise.core.delivery import Delivery, Event
from stagewise.core.plan import Plan
from stagewise.core.service import ServiceRecord
from stagewise.core.spec import ReleaseSpec, ServiceSpec
from stagewise.errors import (
    ConflictError,
    ForbiddenError,
    LeaseLostError,
    NotFoundError,
    PreflightError,
    StagewiseError,
)
from stagewise.notify import Notifier
from stagewise.platforms import Platform, get_platform
from stagewise.routers import Router, get_router
from stagewise.store import Store, Write, open_store
from stagewise.store.locations import parse_location
from stagewise.strategies import compile_plan

__all__ = ["RESYNC", "TICK", "Controller", "Notifying", "steady_world"]

log = logging.getLogger("stagewise.controller")

TICK = 0.25
"""Seconds between reconcile passes."""
RESYNC = 10.0
"""Seconds between two full reconciles of an idle service (nothing in flight, its world as desired)."""
PAUSE_LOOK = 1.0
"""Seconds between two reconciles of a delivery that only waits out a timed pause: its instances' health."""
BUDGET = 0.7
"""The share of a tick's period its reconciles may take, of the controller's CPU (waiting on a driver is not
lightened by putting a look off): `schedule.Budget`. The rest is for what runs between two ticks — the
garbage collection, the API's calls (a burst of `apply`), notifications — so that the next tick begins on
time and a step due meanwhile is decided within a tick."""
CONCURRENCY = 32
"""Services whose drivers are asked side by side at most."""

@runtime_checkable
class Notifying(Protocol):
    """A driver that can tell, from memory, which services' data plane changed: they are reconciled at once."""

    def changed(self) -> Iterable[str]:
        """The services whose data plane changed since the last call (a restart lost their routes, ...)."""
        ...


class _Tick:
    """One tick's part of the work: whether it still waits for its services' observations."""

    def __init__(self) -> None:
        self.closed = False


class Controller:
    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        tick: float = TICK,
        resync: float = RESYNC,
        routers: dict[str, Router] | None = None,
        platforms: dict[str, Platform] | None = None,
        observer: Observer | None = None,
        notifier: Notifier | None = None,
        windows_file: Path | None = None,
        store: str = "sqlite",
        name: str | None = None,
        leases: LeaseSettings | None = None,
    ) -> None:
        self.state_dir, self.clock, self.tick_seconds = state_dir, clock, tick
        self.resync_seconds = resync
        """Seconds between two full reconciles of an idle service; 0: on every tick (a sweep over every service)."""
        self.store: Store = open_store(store, state_dir=state_dir)  # `--store`: sqlite, sqlite:PATH or PostgreSQL
        self.leases: LeaseKeeper | None = None
        """The services this controller holds, on a store that several share (controller/leases.py); None: all."""
        if leases is not None or parse_location(store, state_dir=state_dir).kind == "postgresql":
            self.leases = LeaseKeeper(self.store, name or default_name(), leases)
            self.store.fence_with(self.leases.fence)
        self._routers: dict[str, Router] = dict(routers or {})
        self._platforms: dict[str, Platform] = dict(platforms or {})
        self._locks: dict[str, asyncio.Lock] = {}
        self._deleting: set[str] = set()
        """Services whose data plane `delete` is stopping: the loop passes them by instead of waiting."""
        self._held = Held()
        """The services and their deliveries in flight, as committed (controller/held.py)."""
        self._epochs: dict[str, int] = {}
        """With leases: the services held at the last tick, each with its epoch."""
        self._mark: int | None = None
        """The store's change mark when `_held` was last read from it; None: never read."""
        self._schedule = Schedule()
        """When each service is due (controller/schedule.py)."""
        self._busy: set[str] = set()
        """Services whose reconcile is under way (possibly past the tick that began it)."""
        self._woken: set[str] = set()
        """Busy services that an event concerned: due again at once when their reconcile ends."""
        self._late: list[Work] = []
        """Observations that ended after their tick: decided on the next one."""
        self._budget = Budget(BUDGET * tick)
        """Which looks that can wait a tick takes in its time (controller/schedule.py)."""
        self._background: set[asyncio.Task[None]] = set()
        self._collector = Collector()  # the garbage of the ticks, collected between them (controller/collector.py)
        self._plans: dict[str, tuple[Delivery, Plan]] = {}
        self._releases = KnownReleases()
        self._applied = Applied()
        self._retries = Retries()
        self._measurer = Measurer()
        """Measurements of prometheus, http and command providers in flight (controller/measure.py)."""
        self.notifier = notifier or Notifier()
        self._hooks = HookRunner(self.notifier, clock)
        """Hook calls in flight (controller/hooks.py)."""
        self.sender = Sender(self.store, self.notifier, clock)
        """Sends the outbox (controller/outbox.py); `run` starts it."""
        self.windows = SharedWindows(windows_file)
        """The windows every service shares (the server's `--windows` file)."""
        self.changed = asyncio.Event()
        """Set whenever a delivery's state changes (for live views)."""
        self.observer: Observer = observer or Unobserved()
        """Told of every committed change, pass and failure (the server's metrics and event log)."""

    # --- drivers ------------------------------------------------------------------------

    def router(self, spec: ServiceSpec) -> Router:
        options = spec.spec.router
        # an external HAProxy (socket + backend) is a router of its own; every other kind is one per controller
        key = options.kind if options.socket is None else f"{options.kind}:{options.socket}:{options.backend}"
        if key not in self._routers:
            self._routers[key] = get_router(options.kind, state_dir=self.state_dir, socket=options.socket,
                                            backend=options.backend)
        return self._routers[key]

    def platform(self, spec: ServiceSpec) -> Platform:
        options = spec.spec.platform
        # local is one per controller; ssh is one per fleet of hosts and the way to reach them
        key = options.kind if options.kind == "local" else f"{options.kind}:{options.model_dump_json()}"
        if key not in self._platforms:
            self._platforms[key] = get_platform(options.kind, state_dir=self.state_dir, spec=options)
        return self._platforms[key]

    def failing(self) -> dict[str, Failing]:
        """The services whose last reconcile failed, each with when it is tried again."""
        return self._retries.everyone_failing()

    def lock(self, service: str) -> asyncio.Lock:
        lock = self._locks.get(service)
        if lock is None:
            lock = self._locks[service] = asyncio.Lock()
        return lock

    async def close(self) -> None:
        background, self._background = list(self._background), set()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for r in self._routers.values():
            await r.close()
        for p in self._platforms.values():
            await p.close()
        await self._measurer.close()
        await self._hooks.close()
        await self.notifier.close()
        self._write_looks()
        if self.leases is not None:
            self.leases.release_all()
        self.store.close()

    def _write_looks(self) -> None:
        """Write the looks held in memory only (held.py): a controller that stops loses none of them."""
        unwritten = self._held.unwritten()
        if not unwritten:
            return
        try:
            self.store.save_all([Write(service=d.service, delivery=d) for d in unwritten])
        except StagewiseError as exc:  # a lease lost meanwhile: its next holder looks again from the last point
            log.warning("cannot write the last looks of %d analyses: %s", len(unwritten), exc)

    # --- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every `tick_seconds`, on a fixed beat (`next_beat`), until `stop` is set.

        A tick due one period after the last began, not after the last was due, would start later by the
        moment its sleep woke late, each tick a little more: a step due just after a tick began would then be
        decided more than a tick later."""
        sender = asyncio.create_task(self.sender.run(stop))
        others = asyncio.create_task(follow_changes(self.store, self.changed, stop))
        first, due = True, time.perf_counter()
        try:
            while not stop.is_set():
                started = time.perf_counter()
                await self.tick()
                if first:
                    first = False
                    self.keep_still()
                self.observer.pass_finished(seconds=time.perf_counter() - started)
                due = next_beat(due, time.perf_counter(), self.tick_seconds)
                self.collect_between_ticks(until=due)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, due - time.perf_counter()))
        finally:
            stop.set()
            await sender
            await others

    def keep_still(self) -> None:
        """Move what the process holds now out of the garbage collector's way: the server calls it once its
        first tick read every service.

        What was read then lives long (an idle service's record, for days), and a full collection
        walked all of it again every few ticks: a sixth of a busy tick's time, at a thousand services.
        Garbage is collected first; what is frozen is still freed when no longer referenced, only a
        reference cycle among it would outlive its use (decoded records hold none).

        Then the collector looks less often (`GC_THRESHOLDS`): every tick keeps the new state of each
        delivery it moved, tens of thousands of objects that the default thresholds had it walk again
        and again — a collection every other tick at a thousand deliveries, a sixth of a busy tick's
        time. Nearly all of them are freed by their last reference going; only cycles wait for it.
        """
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    def collect_between_ticks(self, until: float | None = None) -> None:
        """Collect the garbage of the last ticks now, between two ticks, rather than in the middle of the next,
        unless the next tick, due at `until` (on the `perf_counter` clock), comes too soon for it
        (controller/collector.py): the server's loop calls it after each tick, once `keep_still` raised the
        collector's thresholds."""
        self._collector.between_ticks(until)

    async def tick(self) -> None:
        """One reconcile pass over the services due now: observe and decide each — the looks that can wait last,
        while the tick has time (`Budget`) — then commit all, then act on each."""
        self._refresh()
        self._follow_leases()
        self._driver_news()
        cpu, until, now = time.thread_time(), time.perf_counter() + self.tick_seconds, self.clock()
        self._budget.next_tick()
        musts, looks = self._needs(self._schedule.pop_due(now), now)
        works = await self._observe_all(musts, until)
        late, self._late = self._late, []
        if not works and not late and not looks:
            return
        now = self.clock()
        aids = Aids(now=now, hooks=self._hooks, measurer=self._measurer, windows=self.windows.current())
        waits = self._looks_that_can_wait(late, now)
        for work in works + late:
            if work.error is None and work.name not in waits:
                if not self._budget.may_wait(work.name):  # a look put off six times, taken now whatever
                    work.points = self._budget.deciding(time.thread_time() - cpu)  # its point can wait, though
                self._decide(work, aids)
        for work in late:  # observed on an earlier tick, and a look that can wait: as those below
            if work.name in waits:
                if not self._budget.deciding(time.thread_time() - cpu, work.name):
                    self._put_off(work)
                    continue
                self._decide(work, aids)
        works += [w for w in late if w.name not in self._budget.waiting]
        works += await self._observe_all(looks, until, looking=(aids, cpu))
        self._paused_until_now(works, aids)
        committing = time.thread_time()
        self._commit(works, now)
        acting = time.thread_time()
        await self._each(works, self._act_one)
        self._budget.ended(committing=acting - committing, acting=time.thread_time() - acting)

    def _paused_until_now(self, works: list[Work], aids: Aids) -> None:
        """Decide again, at the clock's time, the deliveries whose timed pause ended since the tick decided them.

        A delivery whose pause ends within a tick is taken by the tick before (`_next_due`), and goes on on
        that tick if the pause ended before it decided; otherwise on the next tick — which a burst of API
        calls between the two can delay past a period, and the step is then decided more than a tick after
        its time. Deciding again before the commit makes it the tick during which the pause ended. Only a
        delivery that waits out its timed pause and nothing else (`quiet_until`): it asks no hook and no
        provider, so a decision again asks nothing twice; nothing is decided before its time.
        """
        now, again = self.clock(), None
        for work in works:
            if work.error is None and work.write is None and work.active is not None and work.plan is not None:
                end = quiet_until(work.active, work.plan, aids.now)
                if end is not None and end <= now:
                    again = again or replace(aids, now=now)
                    with failing_alone(work):
                        decide_one(work, again)

    def _needs(self, due: list[str], now: float) -> tuple[list[str], list[str]]:
        """The services of `due` that this tick takes whatever its budget, and the looks that can wait: those whose
        delivery's only business until the next tick is another look, of its judges or at its instances not ready
        yet (`_can_wait`) — those put off longest first, so that a look waits one tick where it can, not two."""
        if self.resync_seconds <= 0:
            return due, []  # a sweep takes everything
        horizon, musts, looks = now + self.tick_seconds, list[str](), list[str]()
        for name in due:
            delivery = self._held.delivery(name)
            may_wait = delivery is not None and self._can_wait(name, delivery, self.plan(delivery), horizon)
            (looks if may_wait else musts).append(name)
        looks.sort(key=self._budget.waited, reverse=True)  # those put off longest first
        return musts, looks

    def _looks_that_can_wait(self, works: list[Work], now: float) -> set[str]:
        """The services among `works` (observed on an earlier tick) whose only business this tick is another look,
        and that may wait (as `_needs`)."""
        if self.resync_seconds <= 0:
            return set()  # a sweep decides everything
        horizon = now + self.tick_seconds
        return {w.name for w in works if w.error is None and w.active is not None and w.plan is not None
                and self._can_wait(w.name, w.active, w.plan, horizon)}

    def _can_wait(self, name: str, delivery: Delivery, plan: Plan, horizon: float) -> bool:
        """Whether the service's look may be put off: its only business until `horizon` is another look, of its
        judges or at its instances not ready yet (`schedule.can_wait`), and it was not put off `PUT_OFF_LONGEST`
        ticks in a row yet (`Budget.may_wait`)."""
        return self._budget.may_wait(name) and can_wait(delivery, plan, horizon)

    def _put_off_unobserved(self, name: str) -> None:
        """Leave a look that can wait to the next tick, not begun (`Budget`)."""
        self._budget.put_off([name])
        if name in self._held:
            self._schedule.at(name, self.clock())

    def _put_off(self, work: Work) -> None:
        """Leave a look that can wait, observed but not decided, to the next tick (`Budget`)."""
        name = work.name
        self._budget.put_off([name])
        try:
            if name in self._held:
                self._schedule.at(name, float("-inf") if name in self._woken else self.clock())
            self._woken.discard(name)
        finally:
            self._busy.discard(name)
            self.lock(name).release()

    def _refresh(self) -> None:
        """Read the store again if another process wrote to it since (and at first): what differs is due at once."""
        mark = self.store.change_mark()
        if mark == self._mark:
            return
        first, self._mark = self._mark is None, mark
        changed = self._held.load(self.store)
        for name in set(self._held.names()) if first else changed:
            self._plans.pop(name, None)
            if name in self._held:
                self._wake(name)
            else:
                self._forget(name)

    def _follow_leases(self) -> None:
        """With several controllers: renew and claim leases (controller/leases.py); a service taken, or written by
        another server meanwhile (its epoch moved on), is read again from the store and due at once; one lost is
        due no more (its state stays in memory: the fair share counts every service)."""
        if self.leases is None:
            return
        self.leases.sync(self._held.names())
        held, before = self.leases.held(), self._epochs
        for name, epoch in held.items():
            if before.get(name) != epoch:
                self._held.load_one(self.store, name)
                self._plans.pop(name, None)
                self._wake(name)
        for name in before.keys() - held.keys():
            self._schedule.drop(name)
        self._epochs = held

    def _driver_news(self) -> None:
        """Services whose data plane a driver saw change (the drivers that can tell): due at once."""
        for driver in [*self._routers.values(), *self._platforms.values()]:
            if isinstance(driver, Notifying):
                for name in driver.changed():
                    if name in self._held:
                        self._wake(name)

    def _wake(self, name: str) -> None:
        """An event concerns `name`: reconcile it on the next tick (or as soon as its reconcile under way ends)."""
        if name in self._busy:
            self._woken.add(name)
        else:
            self._schedule.soon(name, float("-inf"))

    # --- a tick's parts ---------------------------------------------------------------------

    async def _each(self, items: Sequence[Work] | Sequence[str], step: Callable[..., Awaitable[None]],
                    until: float | None = None) -> None:
        """`step` over `items`, CONCURRENCY at a time; back after a tick's time at most (or at `until`, on the
        `perf_counter` clock), the slow ones going on."""
        if not items:
            return
        queue = iter(items)

        async def worker() -> None:
            for item in queue:
                await step(item)

        tasks = [asyncio.create_task(worker()) for _ in range(min(CONCURRENCY, len(items)))]
        timeout = self.tick_seconds if until is None else max(0.0, until - time.perf_counter())
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:  # a slow router or host: its service finishes on its own
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _observe_all(self, names: list[str], until: float, *,
                           looking: tuple[Aids, float] | None = None) -> list[Work]:
        """Observe the services `names`: the work to decide (an observation that ends past the tick's time, `until`
        on the `perf_counter` clock, is decided on the next tick).

        `looking`: they are looks that can wait, each observed and decided in turn while the tick has time
        (`Budget.deciding`) — the tick's aids, and the controller's CPU clock when it began — and the others
        put off unobserved.
        """
        tick, works = _Tick(), list[Work]()

        async def observe_one(name: str) -> None:
            if looking is not None and name not in self._busy \
                    and not self._budget.deciding(time.thread_time() - looking[1], name):
                self._put_off_unobserved(name)
                return
            work = await self._begin(name)
            if work is None:
                return
            with failing_alone(work):
                await self._observe(work)
            if tick.closed:
                self._late.append(work)
                return
            if looking is not None and work.error is None:
                self._decide(work, looking[0])
            works.append(work)

        await self._each(names, observe_one, until)
        tick.closed = True
        return works

    async def _begin(self, name: str) -> Work | None:
        """Take the service for this tick (its lock, until `_settle`); None when it is not to be reconciled now."""
        if name in self._busy:
            self._woken.add(name)  # still at work since an earlier tick: again once that ends
            return None
        if name in self._deleting or name not in self._held:
            return None  # a drain takes seconds: the other services' deliveries must not wait for it
        if self.leases is not None and not self.leases.holds(name):
            return None  # another controller's (due again once this one takes it: `_follow_leases`)
        lock = self.lock(name)
        await lock.acquire()
        record = self._held.record(name)
        if record is None:  # deleted while this tick waited for the lock
            lock.release()
            return None
        self._busy.add(name)
        return Work(name=name, record=record, active=self._held.delivery(name), known=self._releases)

    def _decide(self, work: Work, aids: Aids) -> None:
        """Decide the service observed (`decide_one`), and count it in the tick's budget."""
        with failing_alone(work):
            decide_one(work, aids)
        self._budget.took(writes=work.write is not None)

    async def _observe(self, work: Work) -> None:
        spec = work.spec
        work.platform, work.router = self.platform(spec), self.router(spec)
        if work.active is not None:
            work.plan = self.plan(work.active)
        await observe(work, self._applied)

    def _commit(self, works: list[Work], now: float) -> None:
        """Commit every decision of the tick in one transaction; tell the observers what changed."""
        for w in works:
            if w.looked is not None:
                self._held.kept(name=w.name, delivery=w.looked)
        changed = [w for w in works if w.write is not None]
        if not changed:
            return
        try:
            self.store.save_all([w.write for w in changed if w.write is not None])
        except LeaseLostError as exc:
            assert self.leases is not None  # only a fenced write is refused so
            self.leases.refused(exc)  # that service is another's now; the others' decisions are made again at once
            for w in changed:
                w.write, w.world = None, None
                self._woken.add(w.name)
            return
        except StagewiseError as exc:
            for w in changed:  # nothing of it was stored: none of it may be acted on
                w.write, w.world = None, None
                w.fail(exc)
            return
        for w in changed:
            assert w.write is not None
            self._held.saved(name=w.name, record=w.write.record, delivery=w.moved)
            if w.moved is not None:
                self.observer.delivery_changed(before=w.active, after=w.moved, events=w.write.events, now=now)
            else:
                self.observer.service_events(service=w.name, events=w.write.events)
        if any(w.moved is not None for w in changed):
            self.changed.set()
            self.sender.wake.set()

    async def _act_one(self, work: Work) -> None:
        if self.leases is not None and not self.leases.holds(work.name):
            work.world = None  # the lease ran out meanwhile (on the monotonic clock): not ours to act on
        if work.error is None:
            with failing_alone(work):
                await act(work, self._applied)
        self._settle(work)

    def _settle(self, work: Work) -> None:
        """The service's reconcile ended: report how, set when it is due next, and let it go."""
        name = work.name
        try:
            now = self.clock()
            if work.error is not None:
                due = self._failed(name, work.error, bug=work.bug)
            else:
                self._recovered(name)
                due = self._next_due(work, now)
            if name in self._woken:
                self._woken.discard(name)
                due = float("-inf")
            if name in self._held:
                self._schedule.at(name, due)
        finally:
            self._busy.discard(name)
            self.lock(name).release()

    def _next_due(self, work: Work, now: float) -> float:
        """On the next tick while a delivery is in flight or the world converges — one that only waits out its
        timed pause when the pause ends, looked at every `PAUSE_LOOK` meanwhile; else at the next resync."""
        if not work.settled or self.resync_seconds <= 0:
            return now
        delivery = self._held.delivery(work.name)
        if delivery is None:
            return next_resync(work.name, now, self.resync_seconds)
        end = quiet_until(delivery, self.plan(delivery), now)
        if end is None:
            return now
        # a tick early: the tick that ends the pause is the one a sweep would end it on, whenever it decides
        return min(end - self.tick_seconds, now + PAUSE_LOOK)

    def _failed(self, service: str, exc: StagewiseError, *, bug: Exception | None = None) -> float:
        """Hold the service back until its retry is due, and when that is; report the failure if it is news."""
        now = self.clock()
        self.observer.reconcile_failed(service=service, error=exc, internal=bug is not None)
        news = self._retries.failed(service, exc, now)
        failing = self._retries.failing(service)
        assert failing is not None  # just noted
        if news is None:
            return failing.retry_at
        active = self._held.delivery(service)
        if active is not None:
            try:
                self.store.save_delivery(active, [Event(at=now, kind="error", message=news.message)])
            except StagewiseError as error:
                log.warning("%s: cannot record the failure in the event log: %s", service, error,
                            extra={"service": service})
            self.sender.wake.set()
        if news.permanent:
            log.error("%s: %s (tried again with backoff, at most every %gs)", service, news.message, MAX_BACKOFF,
                      exc_info=bug, extra={"service": service})
        else:
            log.warning("%s: %s (tried again in %gs)", service, news.message, news.retry_at - now,
                        extra={"service": service})
        return failing.retry_at

    def _recovered(self, service: str) -> None:
        recovered = self._retries.succeeded(service)
        if recovered is not None:
            log.info("%s: reconciled again after %d failure(s): %s", service, recovered.failures,
                     recovered.message, extra={"service": service})

    def plan(self, delivery: Delivery) -> Plan:
        """The delivery's plan; compiled once per delivery (and again when its rollback starts)."""
        cached = self._plans.get(delivery.service)
        if cached is not None:
            seen, plan = cached
            if seen.spec is delivery.spec and seen.stable is delivery.stable and seen.id == delivery.id \
                    and seen.attempt == delivery.attempt and (seen.abort_world is delivery.abort_world
                                                              or seen.abort_world == delivery.abort_world):
                return plan
        plan = compile_plan(delivery.spec, delivery.stable, abort_world=delivery.abort_world)
        self._plans[delivery.service] = (delivery, plan)
        return plan

    # --- verbs ----------------------------------------------------------------------------

    def _acted(self, name: str) -> None:
        """A person changed the service: tell live views, and reconcile it on the next tick even if it was failing."""
        self._retries.wake(name)
        self._wake(name)
        self.changed.set()

    def _committed(self, name: str) -> tuple[ServiceRecord | None, Delivery | None]:
        """The service's record and its latest delivery (or None when none is in flight), as committed: from
        memory while the store says no other process wrote since it was read (`change_mark`), else from the
        store — always with several controllers, whose leases move services between them."""
        if self.leases is None and self._mark is not None and self.store.change_mark() == self._mark:
            return self._held.record(name), self._held.delivery(name)
        return self.store.get_service(name), self.store.latest_delivery(name)

    async def apply(self, spec: ServiceSpec, *, actor: str = "",
                    override_freeze: str | None = None) -> tuple[str, Delivery | None]:
        """Store `spec`; start a delivery when its release differs from the stable one.

        `override_freeze`: the reason a person gives to let the delivery through the freeze windows
        (recorded in the event log, with `actor`); it also frees the same release's delivery in flight.
        """
        name = spec.name
        async with self.lock(name):
            now = self.clock()
            record, latest = self._committed(name)
            by = f" by {actor}" if actor else ""
            overridden = [] if override_freeze is None else [
                Event(at=now, kind="user", message=f"freeze windows overridden{by}: {override_freeze}")]
            if latest is not None and not latest.phase.terminal:
                if latest.candidate == spec.spec.release:
                    if overridden and latest.freeze_override is None:
                        self._save_verb(latest.model_copy(update={"freeze_override": override_freeze}),
                                        overridden, "", before=latest)
                    return "unchanged: this release is being delivered", latest
                raise ConflictError(
                    f"{name}: delivery {latest.id} ({latest.stable.version if latest.stable else '-'} → "
                    f"{latest.candidate.version}) is {latest.phase.value}; promote or abort it first"
                )
            if record is None:
                record = ServiceRecord(name=name, spec=spec, created_at=now, updated_at=now)
            elif record.stable == spec.spec.release:
                record = record.model_copy(update={"spec": spec, "updated_at": now})
                events = [Event(at=now, kind="user", message="spec applied; release unchanged")]
                self.store.put_service(record, events)
                self._held.saved(name=name, record=record)
                self.observer.service_events(service=name, events=events)
                self._acted(name)
                return "configured: release unchanged", None
            else:
                record = record.model_copy(update={"spec": spec, "updated_at": now})
            await self._preflight(spec, spec.spec.release)
            delivery = Delivery(service=name, spec=spec, stable=record.stable, created_at=now,
                                updated_at=now, progress_at=now, freeze_override=override_freeze)
            events = [Event(at=now, kind="user", message=f"applied {spec.spec.release.version}{by}"), *overridden]
            delivery = self.store.create_delivery(delivery, events, record)
            self._held.saved(name=name, record=record, delivery=delivery)
            self.observer.delivery_changed(before=None, after=delivery, events=events, now=now)
            self.sender.wake.set()
            self._acted(name)
            return "delivery started", delivery

    async def act(self, name: str, verb: str, *, full: bool = False, actor: str = "") -> Delivery:
        """promote, abort, pause, resume or retry the service's latest delivery; `actor`: who (a token's name)."""
        async with self.lock(name):
            now = self.clock()
            latest = self.store.latest_delivery(name)
            if latest is None:
                raise NotFoundError(f"service {name!r} has no delivery")
            by = f" by {actor}" if actor else ""
            if verb == "promote":
                d, events = machine.promote(latest, self.plan(latest), now=now, full=full,
                                            windows=self.windows.current())
            elif verb == "abort":
                d, events = machine.abort(latest, self.plan(latest), now=now, reason=f"aborted by a person{by}")
            elif verb == "pause":
                d, events = machine.pause(latest, now=now)
            elif verb == "resume":
                d, events = machine.resume(latest, now=now)
            elif verb == "retry":
                d, events = machine.retry(latest, now=now)
            else:
                raise NotFoundError(f"unknown verb {verb!r}")
            self._save_verb(d, events, by, before=latest)
            return d

    async def approve(self, name: str, *, who: str, comment: str = "", reject: bool = False) -> Delivery:
        """`who` approves (or rejects) what the service's delivery waits for; a refusal is in the event log too."""
        async with self.lock(name):
            now = self.clock()
            latest = self.store.latest_delivery(name)
            if latest is None:
                raise NotFoundError(f"service {name!r} has no delivery")
            plan = self.plan(latest)
            try:
                if reject:
                    d, events = machine.reject(latest, plan, now=now, who=who, comment=comment)
                else:
                    d, events = machine.approve(latest, plan, now=now, who=who, comment=comment,
                                                windows=self.windows.current())
            except ForbiddenError as exc:
                what = "rejection" if reject else "approval"
                self.store.save_delivery(latest, [Event(at=now, kind="user", message=f"{what} refused: {exc}")])
                self.changed.set()
                raise
            self._save_verb(d, events, "", before=latest)
            return d

    def _save_verb(self, delivery: Delivery, events: list[Event], by: str, *, before: Delivery) -> None:
        if by:
            events = [e.model_copy(update={"message": e.message + by}) if e.kind == "user" else e for e in events]
        try:
            self.store.save_delivery(delivery, events)
        except LeaseLostError as exc:
            if self.leases is not None:
                self.leases.refused(exc)  # says so in the log, and stops acting on the service
            raise
        self._held.saved(name=delivery.service, delivery=delivery)
        self.observer.delivery_changed(before=before, after=delivery, events=events, now=self.clock())
        self.sender.wake.set()
        self._acted(delivery.service)

    async def undo(self, name: str, *, actor: str = "") -> Delivery:
        """Deliver the previous stable release again, with the service's strategy."""
        async with self.lock(name):
            now = self.clock()
            record = self.store.get_service(name)
            if record is None:
                raise NotFoundError(f"no service named {name!r}")
            latest = self.store.latest_delivery(name)
            if latest is not None and not latest.phase.terminal:
                raise ConflictError(f"{name}: delivery {latest.id} is {latest.phase.value}; abort it before undo")
            previous = record.previous
            if previous is None:
                raise ConflictError(f"{name}: there is no previous release to go back to")
            spec = record.spec.model_copy(
                update={"spec": record.spec.spec.model_copy(update={"release": previous})})
            record = record.model_copy(update={"spec": spec, "updated_at": now})
            await self._preflight(spec, previous)
            delivery = Delivery(service=name, spec=spec, stable=record.stable, created_at=now,
                                updated_at=now, progress_at=now, undo=True)
            events = [Event(at=now, kind="user", message=f"undo: back to {previous.version}"
                            + (f" by {actor}" if actor else ""))]
            delivery = self.store.create_delivery(delivery, events, record)
            self._held.saved(name=name, record=record, delivery=delivery)
            self.observer.delivery_changed(before=None, after=delivery, events=events, now=now)
            self.sender.wake.set()
            self._acted(name)
            return delivery

    async def _preflight(self, spec: ServiceSpec, release: ReleaseSpec) -> None:
        """Refuse a delivery whose release could not start where it must (ssh: the hosts' checks)."""
        problems = await self.platform(spec).preflight(service=spec.name, release=release)
        if problems:
            raise PreflightError(f"{spec.name}: {release.version} cannot be delivered; pre-flight checks failed:\n"
                                 + "\n".join(f"  {p}" for p in problems))

    async def delete(self, name: str, *, keep_running: bool = False, force: bool = False) -> Deletion:
        """Stop the service's router (drained first) and instances, then forget it; its history stays.

        Refused while a delivery is in flight, unless `force`: that delivery then ends Failed where
        it stands. With `keep_running` the data plane is left running, unmanaged. Stopping comes
        before forgetting: a delete that fails midway leaves the service known, and the controller
        brings back what was stopped.
        """
        async with self.lock(name):
            record = self.store.get_service(name)
            if record is None:
                raise NotFoundError(f"no service named {name!r}")
            latest = self.store.latest_delivery(name)
            active = latest if latest is not None and not latest.phase.terminal else None
            if active is not None and not force:
                raise ConflictError(
                    f"{name}: delivery {active.id} ({active.stable.version if active.stable else '-'} → "
                    f"{active.candidate.version}) is {active.phase.value}; abort it and let it roll back "
                    "before deleting, or delete with force to stop it where it stands")
            spec = active.spec if active else record.spec
            platform = self.platform(spec)
            self._deleting.add(name)
            try:
                plane, news = await lifecycle.describe(name, spec, platform, releases_of(record, active),
                                                       lifecycle.Listeners())
                if not keep_running:
                    await lifecycle.stop(plane, platform=platform, router=self.router(spec))
            finally:
                self._deleting.discard(name)
                self._wake(name)  # passed by while it drained: due again (a delete that failed leaves it known)
            now = self.clock()
            ended = lifecycle.ended_by_deletion(active, now=now, kept_running=keep_running) if active else None
            events = [Event(at=now, kind="instance", message=m) for m in news]
            if ended is not None:
                events.append(Event(at=now, kind="phase", message=f"Failed: {ended.message}"))
            done = "kept running (unmanaged from now on)" if keep_running else "stopped"
            events.append(Event(at=now, kind="user", message=f"deleted; {done}: {lifecycle.in_words(plane)}"))
            self.store.delete_service(name, at=now, events=events, delivery=ended)
            if ended is not None and active is not None:
                self.observer.delivery_changed(before=active, after=ended, events=events, now=now)
            else:
                self.observer.service_events(service=name, events=events)
            self._forget(name)
            return Deletion(**plane.model_dump(), kept_running=keep_running,
                            ended_delivery=ended.id if ended else None)

    def _forget(self, name: str) -> None:
        """Drop everything the controller keeps of the service `name` (deleted; or, with several controllers,
        now held by another one)."""
        self._held.forget(name)
        self._schedule.drop(name)
        self._plans.pop(name, None)
        self._releases.forget(name)
        self._measurer.forget(name)
        self._hooks.forget(name)
        self._applied.forget(name)
        self._applied.boots.pop(name, None)
        self._retries.succeeded(name)
        self.changed.set()

    async def data_planes(self) -> list[DataPlane]:
        """What runs of every service's data plane now: what a server that stops leaves running."""
        planes = []
        listeners = lifecycle.Listeners()
        for record in self.store.list_services():
            async with self.lock(record.name):
                latest = self.store.latest_delivery(record.name)
                active = latest if latest is not None and not latest.phase.terminal else None
                spec = active.spec if active else record.spec
                plane, _ = await lifecycle.describe(record.name, spec, self.platform(spec),
                                                    releases_of(record, active), listeners)
            if plane.runs:
                planes.append(plane)
        return planes

