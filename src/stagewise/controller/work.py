"""One service's reconcile, in the three parts a tick runs it in: observe, decide, act.

A tick observes every service that is due side by side (each only waits
for its own drivers), then decides each with `engine.decide`, then commits
every decision in one transaction, then acts on each side by side. This
module holds each part for one service (`Work` carries it from one to the
next); the controller runs them over many and commits between decide and
act — never an action before the commit of the state that asks for it.

The decide part is pure apart from starting the hook calls and
measurements its state asks for (they run as tasks of their own); observe
only routes to instances ready now in the world already committed (see
`serve_ready`); act makes the world match the decision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from stagewise.controller.hooks import HookRunner
from stagewise.controller.measure import Measurer
from stagewise.controller.reconcile import READY, Applied, Victims, make_world, note_boot, serve_ready
from stagewise.core.delivery import Delivery, Event, Observation, Phase, desired_world
from stagewise.core.gates_spec import WindowSpec
from stagewise.core.plan import Plan, World
from stagewise.core.service import ServiceRecord
from stagewise.core.spec import ReleaseSpec, ServiceSpec
from stagewise.core.stats import RouterStats
from stagewise.engine import decide
from stagewise.errors import StagewiseError
from stagewise.platforms import Platform, PlatformView
from stagewise.routers import Router
from stagewise.store import Measurement, Write


@dataclass
class Work:
    """One service's reconcile within a tick: what it saw, what it decided, how it ended."""

    name: str
    record: ServiceRecord
    active: Delivery | None
    """The delivery in flight, as committed before this tick."""
    plan: Plan | None = None
    """The plan of `active`."""
    platform: Platform | None = None
    router: Router | None = None
    view: PlatformView | None = None
    stats: RouterStats | None = None
    committed: World | None = None
    """The world of the committed state, which `observe` routes to."""
    sorted: Victims | None = None
    """The instances as `observe` sorted them for `committed` (`act` reuses them for the same world)."""
    held: StagewiseError | None = None
    """Why the router could not serve the committed world (the delivery is decided all the same)."""
    write: Write | None = None
    """What to commit; none when nothing changed."""
    moved: Delivery | None = None
    """The delivery's next state, when it changed."""
    looked: Delivery | None = None
    """The delivery's next state when only its judges' looks changed it: kept in memory, not written."""
    world: World | None = None
    """The world to make real once the decision is committed; none: nothing to do."""
    settled: bool = False
    """The world was found as desired: nothing started, stopped or starting."""
    error: StagewiseError | None = None
    bug: Exception | None = None
    """The exception behind `error` when it was a bug."""
    news: list[Event] = field(default_factory=list)
    """Events of the service outside any delivery (its stable release's instances)."""
    known: KnownReleases | None = None
    """The controller's releases of each service, kept from tick to tick (none: made afresh)."""
    points: bool = True
    """Whether the judges' look may add a point to their history (`engine.decide`): not when the look was put
    off as often as it may be and comes in a tick short of time."""

    @property
    def spec(self) -> ServiceSpec:
        return self.active.spec if self.active is not None else self.record.spec

    @cached_property
    def releases(self) -> dict[str, ReleaseSpec]:
        """The releases the platform runs for the service (its record and delivery do not change within a tick)."""
        if self.known is not None:
            return self.known.of(self.record, self.active)
        return releases_of(self.record, self.active)

    def drivers(self) -> tuple[Platform, Router]:
        assert self.platform is not None and self.router is not None  # found before observing
        return self.platform, self.router

    def fail(self, error: StagewiseError, bug: Exception | None = None) -> None:
        if self.error is None:
            self.error, self.bug = error, bug


@contextlib.contextmanager
def failing_alone(work: Work) -> Iterator[None]:
    """Whatever fails within is the service's failure alone (retried on its schedule), never the tick's."""
    try:
        yield
    except StagewiseError as exc:
        work.fail(exc)
    except Exception as exc:  # noqa: BLE001 -- a bug must not stop the other services' deliveries
        work.fail(StagewiseError(f"internal error: {type(exc).__name__}: {exc}"), bug=exc)


async def observe(work: Work, applied: Applied) -> None:
    """What the service's instances and router look like; route to the instances ready now in the committed world."""
    platform, router = work.drivers()
    view = work.view = await platform.observe(service=work.name, releases=work.releases)
    work.stats = await router.stats(service=work.name)
    note_boot(applied, work.name, work.stats.boot)
    if work.active is None or work.plan is None:
        return
    work.committed = desired_world(work.active, work.plan)
    if work.committed is not None:
        try:
            work.sorted = await serve_ready(spec=work.spec, world=work.committed, view=view, router=router,
                                            applied=applied)
        except StagewiseError as exc:
            work.held = exc  # decided all the same, so that a deadline or a failed analysis still acts


@dataclass(frozen=True)
class Aids:
    """What a decision takes besides the service's own state: the same for every service of a tick."""

    now: float
    hooks: HookRunner
    measurer: Measurer
    windows: Sequence[WindowSpec]


def decide_one(work: Work, aids: Aids) -> None:
    """Decide the service's next state: what to commit (`write`) and the world to make real after (`world`)."""
    assert work.view is not None and work.stats is not None  # observed first
    now, view = aids.now, work.view
    instance_events = [Event(at=now, kind="instance", message=m) for m in view.events]
    if work.active is None or work.plan is None:
        if instance_events:
            work.news = instance_events
            work.write = Write(service=work.name, events=instance_events)
        work.world = steady_world(work.record)
        return
    active, plan = work.active, work.plan
    ready, live = instance_counts(view, work.releases)
    observation = Observation(
        now=now,
        ready=ready,
        live=live,
        failures=view.failures,
        stats=work.stats,
        unreachable=view.unreachable,
        held=f"the router does not serve the step: {work.held}" if work.held is not None else None,
        hook_answers=aids.hooks.collect(active, plan, now),
        windows=list(aids.windows),
    )
    decision = decide(active, plan, observation, measured=aids.measurer.collect(active, now), points=work.points)
    moved = decision.delivery
    events = instance_events + decision.events
    update = service_after(work.record, moved, now)
    if events or update is not None or not judged_only(active, moved):
        work.moved = moved
        work.write = Write(service=work.name, delivery=moved, events=events, record=update,
                           measurements=new_measurements(active, moved))
    elif moved is not active:
        work.looked = moved  # held in memory; written with the next point of history (`judged_only`)
    # ended, or not started yet (waiting for a confirm-rollout hook, a window): the steady world applies
    work.world = decision.world if decision.world is not None else steady_world(update or work.record)
    if work.held is not None and work.world == work.committed:
        work.fail(work.held)  # nothing new to try: the failure stands (and is retried on its schedule)


async def act(work: Work, applied: Applied) -> None:
    """Make the world match the committed decision: one idempotent pass."""
    if work.world is None:
        work.settled = True  # nothing to make: no release was ever stable, and none is being delivered
        return
    assert work.view is not None
    platform, router = work.drivers()
    known = work.sorted if work.world is work.committed else None
    work.settled = await make_world(spec=work.spec, world=work.world, releases=work.releases, view=work.view,
                                    platform=platform, router=router, applied=applied, sorted_for=known)


def instance_counts(view: PlatformView, releases: dict[str, ReleaseSpec]) -> tuple[dict[str, int], dict[str, int]]:
    """Ready and live (starting or ready) instances of each of `releases`, in one pass over the view."""
    ready, live = dict.fromkeys(releases, 0), dict.fromkeys(releases, 0)
    for instance in view.instances:
        release = instance.release
        if release in live:
            live[release] += 1
            if instance.state is READY:
                ready[release] += 1
    return ready, live


# --- what a decision implies ------------------------------------------------------------------------------

_LOOKED = frozenset({"analysis", "progress_at"})
"""The delivery's fields a judge's look changes (`judged_only` compares the rest)."""
_RUN_LOOKED = frozenset({"judge_state", "last", "verdict", "history"})
"""An analysis run's fields a look changes (`judged_only` compares the verdict's outcome and the history's
length, and the rest in full)."""


def judged_only(before: Delivery, after: Delivery) -> bool:
    """Whether `after` differs from `before` by its judges' looks alone: their states, the counters they saw, a
    verdict's evidence with the same outcome, the moment of progress a running analysis notes.

    Such a state is not written on every tick: the judges look four times a second, and writing each look was
    most of a busy tick's cost. It is written with the delivery's next change — at the latest the next point
    of its analysis's history, one a second (`analysis.judges.runs`; two, for a look in a hurry), which is what a
    chart and the event log show — so a crash loses at most those seconds of looks, which the next look makes up
    (held.py). Anything else (a step, a phase, a verdict's outcome, a provider's note, an event) is written before
    it is acted on.
    """
    fields = type(after).model_fields
    for name in fields:
        if name not in _LOOKED:
            old, new = getattr(before, name), getattr(after, name)
            if old is not new and old != new:
                return False
    if before.analysis.keys() != after.analysis.keys():
        return False
    for key, run in after.analysis.items():
        old_run = before.analysis[key]
        if run is old_run:
            continue
        if run.verdict.outcome is not old_run.verdict.outcome or len(run.history) != len(old_run.history):
            return False
        for name in type(run).model_fields:
            if name not in _RUN_LOOKED:
                old, new = getattr(old_run, name), getattr(run, name)
                if old is not new and old != new:
                    return False
    return True


def new_measurements(before: Delivery, after: Delivery) -> list[Measurement]:
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


def steady_world(record: ServiceRecord) -> World | None:
    """With no delivery in flight: the stable release on every instance, nothing else."""
    if record.stable is None:
        return None
    v = record.stable.version
    return World(instances={v: record.spec.spec.replicas}, stable=v)


def releases_of(record: ServiceRecord, active: Delivery | None) -> dict[str, ReleaseSpec]:
    """The releases the platform runs, `{version}` in their commands and environments replaced."""
    out: dict[str, ReleaseSpec] = {}
    if record.stable is not None:
        out[record.stable.version] = with_version(record.stable)
    if active is not None:
        if active.stable is not None:
            out[active.stable.version] = with_version(active.stable)
        out[active.candidate.version] = with_version(active.candidate)
    return out


class KnownReleases:
    """Each service's `releases_of`, kept while its releases stay the same objects.

    A delivery in flight is a new object after every look of its judges, but its releases are the
    same objects until it ends, and `{version}` in them was replaced once already: making the dict
    again cost about 8 µs of every reconcile. The dict given out is shared: read only.
    """

    def __init__(self) -> None:
        self._kept: dict[str, tuple[ReleaseSpec | None, ReleaseSpec | None, ReleaseSpec | None,
                                    dict[str, ReleaseSpec]]] = {}

    def of(self, record: ServiceRecord, active: Delivery | None) -> dict[str, ReleaseSpec]:
        stable, was, candidate = record.stable, None, None
        if active is not None:
            was, candidate = active.stable, active.candidate
        kept = self._kept.get(record.name)
        if kept is not None and kept[0] is stable and kept[1] is was and kept[2] is candidate:
            return kept[3]
        releases = releases_of(record, active)
        self._kept[record.name] = (stable, was, candidate, releases)
        return releases

    def forget(self, name: str) -> None:
        self._kept.pop(name, None)


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


def service_after(record: ServiceRecord, delivery: Delivery, now: float) -> ServiceRecord | None:
    """The service record once a delivery succeeds: its candidate is the new stable."""
    if delivery.phase is not Phase.SUCCEEDED or record.stable == delivery.candidate:
        return None
    return record.model_copy(update={
        "stable": delivery.candidate,
        "previous": record.stable,
        "updated_at": now,
    })
