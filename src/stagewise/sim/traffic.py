"""Simulated users: requests per tick through the route table, counted as the router counts them.

Each tick a Poisson number of requests arrives (the rate follows a daily
curve). They are split as the real router splits them — tester headers to a
header route or the preview, keyed users by their cohort bucket, the rest by
release weights or, without weights, evenly over ready instances — with a
few binomial draws per tick instead of one decision per request. Each
release fails its share and answers with its latency distribution, and the
router's per-release counters (`core.stats`) grow as the builtin router's
would: the judges read them through the very `RouterStats` they read in
production. Requests that find no ready instance at all fail: that is
downtime.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from stagewise.core.stats import ReleaseStats, RouterStats
from stagewise.sim import draws
from stagewise.sim.scenario import ReleaseBehaviour, Traffic
from stagewise.sim.world import Routes

DAY = 86_400.0
HISTOGRAM = 61
"""Buckets of `core.stats.LATENCY_BOUNDS_MS` plus the overflow bucket."""


@dataclass
class Counter:
    requests: int = 0
    errors: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM)
    latency_sum_ms: float = 0.0

    def stats(self) -> ReleaseStats:
        last = max((i for i, n in enumerate(self.histogram) if n), default=-1)
        return ReleaseStats(requests=self.requests, errors=self.errors,
                            latency_buckets=self.histogram[: last + 1], latency_sum_ms=self.latency_sum_ms)


@dataclass
class Served:
    """One tick of traffic."""

    requests: int = 0
    by_release: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    """Failed requests of every release, and requests that found no instance."""
    unserved: int = 0
    """Requests that found no ready instance."""


class Users:
    """The traffic of a scenario: arrivals, routing, errors, latencies, and who met `tracked`.

    Counting distinct users costs a draw per request of `tracked`, so it is
    only done for the release whose exposure is measured (a bad one).
    """

    def __init__(self, traffic: Traffic, behaviours: dict[str, ReleaseBehaviour], rng: random.Random, *,
                 latency: bool, tracked: str | None, who: random.Random) -> None:
        self.traffic, self.rng, self.tracked, self.who = traffic, rng, tracked, who
        """`who` draws which users sent the requests: a stream of its own, so that counting users
        or not leaves every other draw of a seed as it was."""
        self.behaviours = behaviours
        self.latency = latency
        """Fill the latency histograms (only a latency judge reads them; they cost a draw per bucket)."""
        self.counters: dict[str, Counter] = {}
        self.exposure = draws.Exposure(traffic.users, traffic.testers.users)
        self._buckets = {
            name: draws.latency_buckets(b.latency.median * 1000, b.latency.p99 * 1000,
                                        b.latency.slow_share, b.latency.slow_by * 1000)
            for name, b in behaviours.items()
        }
        self._mean_ms = {name: _mean_ms(b) for name, b in behaviours.items()}

    def rate(self, t: float) -> float:
        """Requests per second at `t` seconds after the start."""
        daily = self.traffic.daily
        if daily.amplitude == 0.0:
            return self.traffic.rate
        hour = (self.traffic.start_at + t - daily.peak_at) / DAY
        return self.traffic.rate * (1.0 + daily.amplitude * math.cos(2.0 * math.pi * hour))

    def flow(self, routes: Routes, t: float, dt: float) -> Served:
        """The requests of the tick (t, t + dt] through `routes`."""
        rng = self.rng
        n = draws.poisson(rng, self.rate(t + dt / 2) * dt)
        tick = Served(requests=n)
        if not routes.endpoints:
            tick.unserved = tick.errors = n
            return tick
        testers = 0
        if routes.tester_release is not None and routes.endpoints.get(routes.tester_release, 0):
            testers = draws.binomial(rng, n, self.traffic.testers.share)
            self._serve(tick, routes.tester_release, testers, testers=True)
        rest = n - testers
        cohort = routes.cohort
        if cohort is not None and cohort.percent > 0 and routes.endpoints.get(cohort.release, 0):
            keyed = draws.binomial(rng, rest, self.traffic.keyed_share)
            among = draws.cohort_size(self.traffic.users, cohort.percent)
            to_cohort = draws.binomial(rng, keyed, among / self.traffic.users)
            self._serve(tick, cohort.release, to_cohort, among=among)
            rest -= to_cohort
            if routes.endpoints.get(routes.stable, 0):
                self._serve(tick, routes.stable, rest)
                return tick
        names, probabilities = routes.split
        if len(names) == 1:
            self._serve(tick, names[0], rest)
        else:
            for release, k in zip(names, draws.multinomial(rng, rest, probabilities), strict=True):
                self._serve(tick, release, k)
        return tick

    def _serve(self, tick: Served, release: str, k: int, *, among: int | None = None,
               testers: bool = False) -> None:
        if k <= 0:
            return
        rng = self.rng
        counter = self.counters.get(release)
        if counter is None:
            counter = self.counters[release] = Counter()
        behaviour = self.behaviours.get(release) or _UNKNOWN
        errors = draws.binomial(rng, k, behaviour.error_rate)
        counter.requests += k
        counter.errors += errors
        counter.latency_sum_ms += k * self._mean_ms.get(release, 20.0)
        if self.latency:
            probabilities = self._buckets.get(release) or draws.latency_buckets(20.0, 80.0, 0.0, 0.0)
            for i, m in enumerate(draws.multinomial(rng, k, probabilities)):
                if m:
                    counter.histogram[i] += m
        tick.by_release[release] = tick.by_release.get(release, 0) + k
        tick.errors += errors
        if release == self.tracked:
            self.exposure.hit(self.who, k, among=among, testers=testers)

    def stats(self, boot: str = "sim") -> RouterStats:
        return RouterStats(boot=boot, releases={r: c.stats() for r, c in self.counters.items()})


_UNKNOWN = ReleaseBehaviour()
"""How a release the scenario does not describe behaves: the defaults."""


def _mean_ms(behaviour: ReleaseBehaviour) -> float:
    lat = behaviour.latency
    sigma = math.log(max(lat.p99, lat.median * 1.0001) / lat.median) / 2.3263
    mean = lat.median * 1000 * math.exp(sigma * sigma / 2)
    return mean + lat.slow_share * lat.slow_by * 1000
