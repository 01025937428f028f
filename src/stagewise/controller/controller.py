"""The controller: a level-triggered reconcile loop over services and their deliveries.

Each tick, for each service: observe the world (instances, router counters),
route to the instances ready now (in the world already committed, so that a
step waiting for them ends only once traffic reaches them), ask
`engine.decide` for the delivery's next state (it judges the analysis runs
and advances the state machine; the simulator calls the same function),
**commit it to the store**, and only then make the world match it. A
controller killed at any moment and started again reads the committed state
and carries on; since every action is idempotent, repeating the last one
does no harm. The data plane never runs here: the router and the instances
are processes of their own, so a controller restart drops no request.

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
import logging
import time
from collections.abc import Callable
from pathlib import Path

from stagewise.controller import lifecycle
from stagewise.controller.hooks import HookRunner
from stagewise.controller.leases import LeaseKeeper, LeaseSettings, default_name, follow_changes
from stagewise.controller.lifecycle import DataPlane, Deletion
from stagewise.controller.measure import Measurer
from stagewise.controller.observer import Observer, Unobserved
from stagewise.controller.outbox import Sender
from stagewise.controller.reconcile import Applied, make_world, note_boot, serve_ready
from stagewise.controller.retries import MAX_BACKOFF, Failing, Retries
from stagewise.controller.shared_windows import SharedWindows
from stagewise.core import delivery as machine
from stagewise.core.delivery import Delivery, Event, Observation, Phase, desired_world
from stagewise.core.plan import Plan, World
from stagewise.core.service import ServiceRecord
from stagewise.core.spec import ReleaseSpec, ServiceSpec
from stagewise.core.stats import RouterStats
from stagewise.engine import decide
from stagewise.errors import (
    ConflictError,
    ForbiddenError,
    LeaseLostError,
    NotFoundError,
    PreflightError,
    StagewiseError,
)
from stagewise.notify import Notifier
from stagewise.platforms import Platform, PlatformView, get_platform
from stagewise.routers import Router, get_router
from stagewise.store import Measurement, Store, open_store
from stagewise.store.locations import parse_location
from stagewise.strategies import compile_plan

log = logging.getLogger("stagewise.controller")

TICK = 0.25
"""Seconds between reconcile passes."""


class Controller:
    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        tick: float = TICK,
        routers: dict[str, Router] | None = None,
        platforms: dict[str, Platform] | None = None,
        observer: Observer | None = None,
        notifier: Notifier | None = None,
        windows_file: Path | None = None,
        store: str = "sqlite",
        name: str | None = None,
        leases: LeaseSettings | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.clock = clock
        self.tick_seconds = tick
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
        return self._locks.setdefault(service, asyncio.Lock())

    async def close(self) -> None:
        for r in self._routers.values():
            await r.close()
        for p in self._platforms.values():
            await p.close()
        await self._measurer.close()
        await self._hooks.close()
        await self.notifier.close()
        if self.leases is not None:
            self.leases.release_all()
        self.store.close()

    # --- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        sender = asyncio.create_task(self.sender.run(stop))
        others = asyncio.create_task(follow_changes(self.store, self.changed, stop))
        try:
            while not stop.is_set():
                started = time.perf_counter()
                await self.tick()
                self.observer.pass_finished(seconds=time.perf_counter() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.tick_seconds)
        finally:
            stop.set()
            await sender
            await others

    async def tick(self) -> None:
        """One reconcile pass over every service (held by this controller) whose retry (after a failure) is due."""
        records = self.store.list_services()
        if self.leases is not None:
            self.leases.sync([r.name for r in records])
        for record in records:
            name = record.name
            if name in self._deleting:
                continue  # a drain takes seconds: the other services' deliveries must not wait for it
            if self.leases is not None and not self.leases.holds(name):
                continue  # another controller's
            if not self._retries.due(name, self.clock()):
                continue
            async with self.lock(name):
                try:
                    await self._reconcile(name)
                except LeaseLostError as exc:
                    assert self.leases is not None  # only a fenced write is refused so
                    self.leases.refused(exc)
                except StagewiseError as exc:
                    self._failed(name, exc)
                except Exception as exc:  # noqa: BLE001 -- a bug must not stop the other services' deliveries
                    self._failed(name, StagewiseError(f"internal error: {type(exc).__name__}: {exc}"), bug=exc)
                else:
                    recovered = self._retries.succeeded(name)
                    if recovered is not None:
                        log.info("%s: reconciled again after %d failure(s): %s", name, recovered.failures,
                                 recovered.message, extra={"service": name})

    def _failed(self, service: str, exc: StagewiseError, *, bug: Exception | None = None) -> None:
        """Hold the service back until its retry is due; report the failure if it is news (controller/retries.py)."""
        now = self.clock()
        self.observer.reconcile_failed(service=service, error=exc, internal=bug is not None)
        news = self._retries.failed(service, exc, now)
        if news is None:
            return
        latest = self.store.latest_delivery(service)
        if latest is not None and not latest.phase.terminal:
            self.store.save_delivery(latest, [Event(at=now, kind="error", message=news.message)])
            self.sender.wake.set()
        if news.permanent:
            log.error("%s: %s (tried again with backoff, at most every %gs)", service, news.message, MAX_BACKOFF,
                      exc_info=bug, extra={"service": service})
        else:
            log.warning("%s: %s (tried again in %gs)", service, news.message, news.retry_at - now,
                        extra={"service": service})

    async def _reconcile(self, name: str) -> None:
        record = self.store.get_service(name)
        if record is None:
            return
        active = self.store.latest_delivery(name)
        if active is not None and active.phase.terminal:
            active = None
        spec = active.spec if active else record.spec
        releases = _releases(record, active)
        platform, router = self.platform(spec), self.router(spec)
        view = await platform.observe(service=name, releases=releases)
        stats = await router.stats(service=name)
        note_boot(self._applied, name, stats.boot)
        now = self.clock()
        if active is not None:
            world = await self._tick_delivery(record, active, view, stats, router, now)
        else:
            if view.events:
                self.store.put_service(record, _instance_events(view, now))
                self.observer.service_events(service=name, events=_instance_events(view, now))
            world = steady_world(record)
        if world is None or (self.leases is not None and not self.leases.holds(name)):
            return  # nothing to make; or the lease ran out meanwhile (on the monotonic clock): not ours to act on
        await make_world(spec=spec, world=world, releases=releases, view=view,
                         platform=platform, router=router, applied=self._applied)

    async def _tick_delivery(self, record: ServiceRecord, active: Delivery, view: PlatformView,
                             stats: RouterStats, router: Router, now: float) -> World | None:
        """Decide the delivery's next state (`engine.decide`), commit it; the world to make real."""
        plan = self.plan(active)
        committed = desired_world(active, plan)
        held: StagewiseError | None = None
        if committed is not None:
            try:
                await serve_ready(spec=active.spec, world=committed, view=view, router=router,
                                  applied=self._applied)
            except StagewiseError as exc:
                held = exc  # decided all the same, so that a deadline or a failed analysis still acts
        releases = _releases(record, active)
        observation = Observation(
            now=now,
            ready={r: sum(1 for i in view.instances if i.release == r and i.state == "ready") for r in releases},
            live={r: sum(1 for i in view.instances if i.release == r) for r in releases},
            failures=view.failures,
            stats=stats,
            unreachable=view.unreachable,
            held=f"the router does not serve the step: {held}" if held is not None else None,
            hook_answers=self._hooks.collect(active, plan, now),
            windows=self.windows.current(),
        )
        decision = decide(active, plan, observation, measured=self._measurer.collect(active, now))
        moved = decision.delivery
        events = _instance_events(view, now) + decision.events
        update = _service_after(record, moved, now)
        if moved != active or events:
            self.store.save_delivery(moved, events, update)
            self.store.add_measurements(_new_measurements(active, moved))
            self.changed.set()
            self.observer.delivery_changed(before=active, after=moved, events=events, now=now)
            self.sender.wake.set()
        # ended, or not started yet (waiting for a confirm-rollout hook, a window): the steady world applies
        world = decision.world if decision.world is not None else steady_world(update or record)
        if held is not None and world == committed:
            raise held  # nothing new to try: the failure stands (and is retried on its schedule)
        return world

    def plan(self, delivery: Delivery) -> Plan:
        return compile_plan(delivery.spec, delivery.stable, abort_world=delivery.abort_world)

    # --- verbs ----------------------------------------------------------------------------

    def _acted(self, name: str) -> None:
        """A person changed the service: tell live views, and reconcile it on the next tick even if it was failing."""
        self._retries.wake(name)
        self.changed.set()

    async def apply(self, spec: ServiceSpec, *, actor: str = "",
                    override_freeze: str | None = None) -> tuple[str, Delivery | None]:
        """Store `spec`; start a delivery when its release differs from the stable one.

        `override_freeze`: the reason a person gives to let the delivery through the freeze windows
        (recorded in the event log, with `actor`); it also frees the same release's delivery in flight.
        """
        name = spec.name
        async with self.lock(name):
            now = self.clock()
            record = self.store.get_service(name)
            latest = self.store.latest_delivery(name)
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
                plane, news = await lifecycle.describe(name, spec, platform, _releases(record, active),
                                                       lifecycle.Listeners())
                if not keep_running:
                    await lifecycle.stop(plane, platform=platform, router=self.router(spec))
            finally:
                self._deleting.discard(name)
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
            self._measurer.forget(name)
            self._applied.tables.pop(name, None)
            self._applied.boots.pop(name, None)
            self._retries.succeeded(name)
            self._acted(name)
            return Deletion(**plane.model_dump(), kept_running=keep_running,
                            ended_delivery=ended.id if ended else None)

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
                                                    _releases(record, active), listeners)
            if plane.runs:
                planes.append(plane)
        return planes


def _new_measurements(before: Delivery, after: Delivery) -> list[Measurement]:
    """Rows for the analysis points taken this tick: requests, errors and latency per release."""
    rows: list[Measurement] = []
    if after.stable is None:
        return rows
    names = {"baseline": after.stable.version, "candidate": after.candidate.version}
    for key, run in after.analysis.items():
        seen = len(before.analysis[key].history) if key in before.analysis else 0
        for point in run.history[seen:]:
            for arm, release in names.items():
                values = point.get(arm)
                if not isinstance(values, dict):
                    continue
                for metric, value in values.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        rows.append(Measurement(delivery_id=after.id, at=float(point["t"]), run=key,
                                                release=release, metric=metric, value=float(value)))
    return rows


def _instance_events(view: PlatformView, now: float) -> list[Event]:
    return [Event(at=now, kind="instance", message=m) for m in view.events]


def steady_world(record: ServiceRecord) -> World | None:
    """With no delivery in flight: the stable release on every instance, nothing else."""
    if record.stable is None:
        return None
    v = record.stable.version
    return World(instances={v: record.spec.spec.replicas}, stable=v)


def _releases(record: ServiceRecord, active: Delivery | None) -> dict[str, ReleaseSpec]:
    """The releases the platform runs, `{version}` in their commands and environments replaced."""
    out: dict[str, ReleaseSpec] = {}
    if record.stable is not None:
        out[record.stable.version] = with_version(record.stable)
    if active is not None:
        if active.stable is not None:
            out[active.stable.version] = with_version(active.stable)
        out[active.candidate.version] = with_version(active.candidate)
    return out


VERSION_PLACEHOLDER = "{version}"


def with_version(release: ReleaseSpec) -> ReleaseSpec:
    """`release` with `{version}` replaced by its version in its argv and environment (a pipeline's stages
    name their release that way; the platform replaces `{port}` itself)."""
    run = release.run
    if not any(VERSION_PLACEHOLDER in a for a in [*run.command, *run.env.values()]):
        return release
    command = [a.replace(VERSION_PLACEHOLDER, release.version) for a in run.command]
    env = {k: v.replace(VERSION_PLACEHOLDER, release.version) for k, v in run.env.items()}
    return release.model_copy(update={"run": run.model_copy(update={"command": command, "env": env})})


def _service_after(record: ServiceRecord, delivery: Delivery, now: float) -> ServiceRecord | None:
    """The service record once a delivery succeeds: its candidate is the new stable."""
    if delivery.phase is not Phase.SUCCEEDED or record.stable == delivery.candidate:
        return None
    return record.model_copy(update={
        "stable": delivery.candidate,
        "previous": record.stable,
        "updated_at": now,
    })
