"""In-memory platform and router on a hand-moved clock (see the package docstring)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from stagewise.core.routes import RouteTable, in_cohort
from stagewise.core.spec import ReleaseSpec
from stagewise.core.stats import ReleaseStats, RouterStats, bucket_of
from stagewise.platforms import Instance, InstanceState, PlatformView


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakePlatform:
    """Instances that become ready `startup` seconds after they start; some releases crash."""

    def __init__(self, clock: Callable[[], float], *, startup: float = 1.0) -> None:
        self.clock = clock
        self.startup = startup
        self.instances: dict[str, dict[str, Instance]] = {}
        self.failures: dict[str, dict[str, int]] = {}
        self.crashing: set[str] = set()
        """Releases whose instances die as soon as they start."""
        self.seq = 0
        self.starts = 0
        self.stops = 0
        self._views: dict[str, tuple[tuple[tuple[Instance, ...], tuple[tuple[str, int], ...]], PlatformView]] = {}
        """Each service's last view, and what it was made of: given again while none of that changed (an
        instance replaced, added or removed, by the platform or by a test's hand, makes a new one)."""

    async def observe(self, *, service: str, releases: dict[str, ReleaseSpec]) -> PlatformView:
        now = self.clock()
        events = []
        current = self.instances.setdefault(service, {})
        for iid, inst in list(current.items()):
            if inst.release in self.crashing:
                del current[iid]
                fails = self.failures.setdefault(service, {})
                fails[inst.release] = fails.get(inst.release, 0) + 1
                events.append(f"instance {iid} exited with status 1")
            elif inst.state is InstanceState.STARTING and now - inst.started_at >= self.startup:
                current[iid] = inst.model_copy(update={"state": InstanceState.READY, "ready_at": now})
        failures = self.failures.get(service, {})
        seen = (tuple(current.values()), tuple(failures.items()))
        kept = self._views.get(service)
        if not events and kept is not None and kept[0] == seen:
            return kept[1]  # nothing moved since: the same view (the controller only reads it)
        # built from instances it made itself: nothing to validate (a benchmark asks thousands of times a second)
        view = PlatformView.model_construct(instances=sorted(current.values(), key=lambda i: i.seq),
                                            failures=dict(failures), events=events, hosts=[], unreachable={})
        self._views[service] = (seen, view)
        return view

    async def start(self, *, service: str, release: ReleaseSpec, count: int) -> list[Instance]:
        out = []
        for _ in range(count):
            self.seq += 1
            self.starts += 1
            inst = Instance(id=f"{service}-{release.version}-{self.seq}", seq=self.seq, service=service,
                            release=release.version, address=f"127.0.0.1:{20000 + self.seq}",
                            state=InstanceState.STARTING, started_at=self.clock())
            self.instances.setdefault(service, {})[inst.id] = inst
            out.append(inst)
        return out

    async def stop(self, *, service: str, ids: list[str], grace: float = 10.0) -> None:
        for iid in ids:
            if self.instances.setdefault(service, {}).pop(iid, None) is not None:
                self.stops += 1

    async def preflight(self, *, service: str, release: ReleaseSpec) -> list[str]:
        return []

    async def close(self) -> None:
        return None

    def count(self, service: str, release: str, *, ready: bool = False) -> int:
        return sum(1 for i in self.instances.get(service, {}).values()
                   if i.release == release and (not ready or i.state is InstanceState.READY))


class FakeRouter:
    """Serves scripted traffic through the applied table whenever its counters are read.

    `rate` requests per second arrive; each goes where the table sends it (one
    in `cohort_keys` has a user key; one in `header_share` carries the
    header routes' and preview's header); a release fails `error_rate[r]` of
    its requests and answers in `latency_ms[r]` milliseconds, `slow_every[r]`
    making every n-th response `slow_ms` slower.
    """

    def __init__(self, clock: Callable[[], float], *, rate: float = 100.0, seed: int = 1,
                 header_share: float = 0.0, keyed_share: float = 1.0) -> None:
        self.clock = clock
        self.rate = rate
        self.rng = random.Random(seed)
        self.header_share = header_share
        self.keyed_share = keyed_share
        self.tables: dict[str, RouteTable] = {}
        self.counters: dict[str, dict[str, ReleaseStats]] = {}
        self.error_rate: dict[str, float] = {}
        self.latency_ms: dict[str, float] = {}
        self.slow_every: dict[str, int] = {}
        self.slow_ms = 100.0
        self.served: dict[str, dict[str, int]] = {}
        """Requests per release, ever (a test's view of who got traffic)."""
        self.timeline: list[tuple[float, dict[str, int]]] = []
        self.applies = 0
        self.boot = "fake-1"
        self._last: dict[str, float] = {}
        self._carry: dict[str, float] = {}
        self._n = 0

    async def apply(self, *, table: RouteTable) -> None:
        self._flow(table.service)
        self.tables[table.service] = table
        self.applies += 1

    async def stats(self, *, service: str) -> RouterStats:
        self._flow(service)
        return RouterStats(boot=self.boot, releases={r: s.model_copy(deep=True)
                                                     for r, s in self.counters.get(service, {}).items()})

    async def stop(self, *, service: str) -> None:
        self.tables.pop(service, None)

    async def close(self) -> None:
        return None

    def restart(self) -> None:
        """Lose the table and the counters, as a restarted data plane does."""
        self.tables.clear()
        self.counters.clear()
        self.boot = f"fake-{int(self.boot.split('-')[1]) + 1}"

    def _flow(self, service: str) -> None:
        now = self.clock()
        last = self._last.get(service, now)
        self._last[service] = now
        table = self.tables.get(service)
        if table is None or now <= last:
            return
        due = self.rate * (now - last) + self._carry.get(service, 0.0)
        n = math.floor(due)
        self._carry[service] = due - n
        got: dict[str, int] = {}
        for _ in range(n):
            release = self._pick(table)
            if release is None:
                continue
            got[release] = got.get(release, 0) + 1
            self._serve(service, release)
        self.timeline.append((now, got))

    def _pick(self, table: RouteTable) -> str | None:
        present = table.releases()
        if not present:
            return None
        rng = self.rng
        if rng.random() < self.header_share:
            for route in table.header_routes:
                if route.release in present:
                    return route.release
        if table.cohort is not None:
            if rng.random() < self.keyed_share:
                user = f"user-{rng.randrange(1_000_000)}"
                if in_cohort(user, table.cohort.percent) and table.cohort.release in present:
                    return table.cohort.release
            return table.stable if table.stable in present else sorted(present)[0]
        if table.weights is None:
            endpoints = list(table.endpoints)
            return rng.choice(endpoints).release
        live = {r: w for r, w in table.weights.items() if w > 0 and r in present}
        if not live:
            return table.stable if table.stable in present else sorted(present)[0]
        x = rng.random() * sum(live.values())
        for release, w in sorted(live.items()):
            x -= w
            if x < 0:
                return release
        return sorted(live)[-1]

    def _serve(self, service: str, release: str) -> None:
        self._n += 1
        stats = self.counters.setdefault(service, {}).setdefault(release, ReleaseStats())
        stats.requests += 1
        if self.rng.random() < self.error_rate.get(release, 0.0):
            stats.errors += 1
        latency = self.latency_ms.get(release, 2.0) * (0.5 + self.rng.random())
        every = self.slow_every.get(release)
        if every and stats.requests % every == 0:
            latency += self.slow_ms
        if not stats.latency_buckets:
            stats.latency_buckets = [0] * 61
        stats.latency_buckets[bucket_of(latency)] += 1
        stats.latency_sum_ms += latency
        served = self.served.setdefault(service, {})
        served[release] = served.get(release, 0) + 1


class SteadyRouter:
    """A router whose traffic is arithmetic: `rate` requests per second, split exactly as the table says.

    No draw per request, so reading its counters costs the same for any rate,
    and its numbers depend only on the applied tables and the clock — never on
    the order in which services are asked. A release fails `error_rate[r]` of
    its requests and answers every one in `latency_ms[r]` milliseconds. For
    benchmarks of the layers above the router, and for tests that compare two
    runs request for request.
    """

    def __init__(self, clock: Callable[[], float], *, rate: float = 100.0) -> None:
        self.clock = clock
        self.rate = rate
        self.tables: dict[str, RouteTable] = {}
        self.error_rate: dict[str, float] = {}
        self.latency_ms: dict[str, float] = {}
        self.applies = 0
        self.boot = "steady-1"
        self._served: dict[str, dict[str, float]] = {}
        self._last: dict[str, float] = {}
        self._shares: dict[str, dict[str, float]] = {}
        """Each service's split of its traffic, worked out once per table applied."""

    async def apply(self, *, table: RouteTable) -> None:
        self._flow(table.service)
        self.tables[table.service] = table
        self._shares[table.service] = _shares(table)
        self.applies += 1

    async def stats(self, *, service: str) -> RouterStats:
        self._flow(service)
        releases = {}
        for release, served in self._served.get(service, {}).items():
            requests = math.floor(served)
            buckets = [0] * 61
            buckets[bucket_of(self.latency_ms.get(release, 2.0))] = requests
            # counters it computed itself: nothing to validate, so that reading them costs next to nothing
            releases[release] = ReleaseStats.model_construct(
                requests=requests, errors=math.floor(served * self.error_rate.get(release, 0.0)),
                latency_buckets=buckets, latency_sum_ms=requests * self.latency_ms.get(release, 2.0))
        return RouterStats.model_construct(boot=self.boot, releases=releases, inflight={})

    async def stop(self, *, service: str) -> None:
        self.tables.pop(service, None)
        self._shares.pop(service, None)

    async def close(self) -> None:
        return None

    def _flow(self, service: str) -> None:
        now = self.clock()
        last = self._last.get(service, now)
        self._last[service] = now
        shares = self._shares.get(service)
        if shares is None or now <= last:
            return
        served = self._served.setdefault(service, {})
        for release, share in shares.items():
            served[release] = served.get(release, 0.0) + self.rate * (now - last) * share


def _shares(table: RouteTable) -> dict[str, float]:
    """Each release's share of the requests the table takes (header routes and preview aside)."""
    present: dict[str, int] = {}
    for endpoint in table.endpoints:
        present[endpoint.release] = present.get(endpoint.release, 0) + 1
    if not present:
        return {}
    fallback = table.stable if table.stable in present else sorted(present)[0]
    if table.cohort is not None:
        if table.cohort.release not in present:
            return {fallback: 1.0}
        share = table.cohort.percent / 100
        return {table.cohort.release: share, fallback: 1.0 - share} if table.cohort.release != fallback else {
            fallback: 1.0}
    if table.weights is None:
        total = sum(present.values())
        return {release: n / total for release, n in present.items()}
    live = {r: w for r, w in table.weights.items() if w > 0 and r in present}
    if not live:
        return {fallback: 1.0}
    return {r: w / sum(live.values()) for r, w in live.items()}
