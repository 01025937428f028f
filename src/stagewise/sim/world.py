"""The simulated platform and router: instances that start, get ready or crash; a route table.

`make_world` has the semantics of the controller's `reconcile.make_world`,
written again for speed over plain counters instead of driver calls:

1. instances to remove leave the route table first (drained at once: the
   simulator has no requests in flight between ticks), not-ready ones first,
   then the newest;
2. the route table holds every ready instance that stays;
3. missing instances are started; they join the table once ready.

The simulator may not import the controller (the layers of docs/architecture.md), so
this module repeats those rules; `tests/sim` checks them against the
controller's `choose_victims`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from stagewise.core.plan import World
from stagewise.core.routes import CohortRoute


@dataclass
class Instance:
    seq: int
    release: str
    due: float
    """When it gets ready — or, if it `crashes`, exits."""
    crashes: bool
    ready: bool = False


@dataclass
class Fleet:
    """Instances of every release, with the platform's start-up time and crashes."""

    rng: random.Random
    startup: dict[str, float]
    """Seconds from start to ready, per release."""
    jitter: float
    crash_chance: dict[str, float]
    instances: list[Instance] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    """Instances that exited instead of getting ready, per release, ever."""
    seq: int = 0
    version: int = 0
    """Grows with every change to the instances: an unchanged version means an unchanged fleet."""
    next_due: float = math.inf
    """The earliest moment a starting instance gets ready or exits."""

    def start(self, release: str, count: int, now: float) -> None:
        for _ in range(count):
            self.seq += 1
            delay = max(0.0, self.startup.get(release, 0.0) + self.rng.uniform(-self.jitter, self.jitter))
            crashes = self.rng.random() < self.crash_chance.get(release, 0.0)
            self.instances.append(Instance(self.seq, release, now + delay, crashes))
            self.version += 1
            self.next_due = min(self.next_due, now + delay)

    def settle(self, now: float) -> bool:
        """Instances due by `now` get ready or exit; whether anything changed."""
        if now < self.next_due:
            return False
        changed = False
        for inst in [i for i in self.instances if not i.ready and i.due <= now]:
            changed = True
            if inst.crashes:
                self.instances.remove(inst)
                self.failures[inst.release] = self.failures.get(inst.release, 0) + 1
            else:
                inst.ready = True
        if changed:
            self.version += 1
        self.next_due = min((i.due for i in self.instances if not i.ready), default=math.inf)
        return changed

    def counts(self, *, ready: bool) -> dict[str, int]:
        out: dict[str, int] = {}
        for inst in self.instances:
            if inst.ready or not ready:
                out[inst.release] = out.get(inst.release, 0) + 1
        return out


@dataclass(frozen=True)
class Routes:
    """What the router does with requests: the simulator's route table."""

    endpoints: dict[str, int]
    """Ready instances in the table, per release."""
    stable: str
    weights: dict[str, int] | None
    cohort: CohortRoute | None
    tester_release: str | None
    """Where requests carrying the preview or canary header go (a header route or the preview)."""
    reaching: frozenset[str] = frozenset()
    """The releases some request can reach (see `reaches`)."""
    split: tuple[tuple[str, ...], tuple[float, ...]] = ((), ())
    """How requests no header or cohort claims are shared: releases and their probabilities."""

    def reaches(self, release: str) -> bool:
        """Whether any request can reach `release` through this table."""
        if self.endpoints.get(release, 0) == 0:
            return False
        if self.weights is None or release in (self.stable, self.tester_release):
            return True
        if self.cohort is not None and self.cohort.release == release and self.cohort.percent > 0:
            return True
        return any(r == release and w > 0 for r, w in self.weights.items())


def choose_victims(instances: list[Instance], want: int) -> list[Instance]:
    """Which instances to stop to get down to `want`: not-ready ones first, then the newest."""
    if len(instances) <= want:
        return []
    newest_first = sorted(instances, key=lambda i: i.seq, reverse=True)
    not_ready = [i for i in newest_first if not i.ready]
    ready = [i for i in newest_first if i.ready]
    return (not_ready + ready)[: len(instances) - want]


def make_world(fleet: Fleet, world: World, now: float, *, preview: bool = True) -> Routes:
    """One pass towards `world`: stop the extra instances, route to the ready ones, start the missing."""
    by_release: dict[str, list[Instance]] = {}
    for inst in fleet.instances:
        by_release.setdefault(inst.release, []).append(inst)
    gone: set[int] = set()
    for release, instances in by_release.items():
        gone |= {v.seq for v in choose_victims(instances, world.instances.get(release, 0))}
    if gone:
        fleet.instances = [i for i in fleet.instances if i.seq not in gone]
        fleet.version += 1
    endpoints: dict[str, int] = {}
    for inst in fleet.instances:
        if inst.ready and world.instances.get(inst.release, 0) > 0:
            endpoints[inst.release] = endpoints.get(inst.release, 0) + 1
    live = fleet.counts(ready=False)
    for release, want in world.instances.items():
        if want > live.get(release, 0):
            fleet.start(release, want - live.get(release, 0), now)
    return routes_for(world, endpoints, preview=preview)


def routes_for(world: World, endpoints: dict[str, int], *, preview: bool = True) -> Routes:
    """The table `reconcile.build_table` would build, reduced to what routing needs.

    `preview`: whether the spec gives the preview slot a route (a header or a listen address).
    """
    weights = None
    if world.weights is not None:
        weights = {r: world.weights.get(r, 0) for r in set(endpoints) | set(world.weights)}
        if sum(weights.values()) != 100:
            weights = None
    tester = None
    if world.preview is not None and preview:
        tester = world.preview
    for route in world.header_routes:
        if tester is None or endpoints.get(tester, 0) == 0:
            tester = route.release
    routes = Routes(endpoints=endpoints, stable=world.stable, weights=weights, cohort=world.cohort,
                    tester_release=tester)
    return replace(routes, reaching=frozenset(r for r in endpoints if routes.reaches(r)),
                   split=_split(routes))


def _split(routes: Routes) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Weights over releases with ready instances; without weights, every instance counts the same."""
    present = routes.endpoints
    if not present:
        return (), ()
    if routes.weights is None:
        shares = dict(present)
    else:
        shares = {r: w for r, w in routes.weights.items() if w > 0 and present.get(r, 0)}
        if not shares:  # no weighted release has an instance: the stable release, or any there is
            shares = {routes.stable if present.get(routes.stable, 0) else sorted(present)[0]: 1}
    names = tuple(sorted(shares))
    total = sum(shares.values())
    return names, tuple(shares[r] / total for r in names)
