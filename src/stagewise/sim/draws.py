"""Random draws for aggregated traffic: counts per tick, never one request at a time.

The simulator moves a tick of traffic (hundreds of requests) in a handful of
draws: how many requests arrived (Poisson), how many of them a release took
(binomial), how many failed (binomial), how their latencies fall into the
router's histogram buckets (multinomial). Drawing each request would be
exact and a hundred times slower; these draws have the same distribution
(the normal approximation only where the count is large enough for it not
to matter).

Every draw takes a seeded `random.Random`: the simulator reads no other
source of randomness, so a seed reproduces a run exactly.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from bisect import bisect_left
from collections.abc import Sequence

from stagewise.core.routes import BUCKETS, cohort_bucket
from stagewise.core.stats import LATENCY_BOUNDS_MS

_SMALL_N = 24
"""Below this many trials a binomial is drawn trial by trial."""
_SMALL_MEAN = 12.0
"""Below this mean a binomial or Poisson is drawn exactly; above, the normal approximation is close."""


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Successes in `n` trials of probability `p`."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    if n < _SMALL_N:
        draw = rng.random
        return sum(1 for _ in range(n) if draw() < p)
    mean = n * p
    if mean < _SMALL_MEAN:
        # waiting times between successes are geometric: about `mean` draws, whatever n is
        log_q = math.log1p(-p)
        count, position = 0, 0
        while True:
            position += int(math.log(1.0 - rng.random()) / log_q) + 1
            if position > n:
                return count
            count += 1
    x = round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))
    return min(n, max(0, x))


def poisson(rng: random.Random, mean: float) -> int:
    """Arrivals of a Poisson process with this mean."""
    if mean <= 0.0:
        return 0
    if mean < _SMALL_MEAN:
        limit, k, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            k += 1
            product *= rng.random()
        return k
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def multinomial(rng: random.Random, n: int, probabilities: Sequence[float]) -> list[int]:
    """`n` trials spread over categories with these probabilities (summing to 1)."""
    out = [0] * len(probabilities)
    left, mass = n, 1.0
    for i, p in enumerate(probabilities):
        if left <= 0:
            break
        if p <= 0.0:
            continue
        k = left if mass <= p else binomial(rng, left, p / mass)
        out[i] = k
        left -= k
        mass -= p
    if left > 0:  # rounding left a little mass over: give it to the last category that has any
        last = max(i for i, p in enumerate(probabilities) if p > 0.0)
        out[last] += left
    return out


@functools.lru_cache(maxsize=64)
def latency_buckets(median_ms: float, p99_ms: float, slow_share: float, slow_ms: float) -> tuple[float, ...]:
    """Probability of each router histogram bucket for a lognormal latency, with a slow share.

    The lognormal has the given median and 99th percentile; `slow_share` of
    requests wait `slow_ms` longer (a lock, a cold cache: the tail faults a
    median never shows). The last bucket is the router's overflow bucket.
    """
    sigma = max(1e-6, math.log(max(p99_ms, median_ms * 1.0001) / median_ms) / 2.3263)
    fast = _lognormal_buckets(median_ms, sigma)
    if slow_share <= 0.0:
        return fast
    slow = _lognormal_buckets(median_ms + slow_ms, sigma)
    return tuple((1.0 - slow_share) * a + slow_share * b for a, b in zip(fast, slow, strict=True))


def _lognormal_buckets(median_ms: float, sigma: float) -> tuple[float, ...]:
    def cdf(x: float) -> float:
        return 0.5 * math.erfc(-(math.log(x) - math.log(median_ms)) / (sigma * math.sqrt(2.0)))

    cdfs = [cdf(b) for b in LATENCY_BOUNDS_MS]
    probs = [cdfs[0]] + [b - a for a, b in itertools.pairwise(cdfs)] + [1.0 - cdfs[-1]]
    return tuple(p if p > 1e-12 else 0.0 for p in probs)


@functools.lru_cache(maxsize=8)
def sorted_user_buckets(users: int) -> tuple[int, ...]:
    """The cohort bucket of each user `user-0` … `user-{users-1}`, sorted.

    The same hash as the real router's cohorts, so a cohort of 5% holds the
    share of this population that the router would send to the candidate.
    Users are anonymous in the simulator: user i of the sorted order is
    simply the i-th lowest bucket, so a cohort is a prefix of that order.
    """
    return tuple(sorted(cohort_bucket(f"user-{i}") for i in range(users)))


def cohort_size(users: int, percent: float) -> int:
    """How many of `users` users fall in a cohort of `percent`%."""
    return bisect_left(sorted_user_buckets(users), round(percent * BUCKETS / 100))


class Exposure:
    """Distinct users who reached one release, in a bitmap: bounded memory, exact counts.

    Regular users are 0 … users-1 (in cohort order, see `sorted_user_buckets`);
    testers, who reach preview and header routes, are numbered after them.
    """

    def __init__(self, users: int, testers: int) -> None:
        self.users, self.testers = users, testers
        self.seen = bytearray(users + testers)
        self.count = 0

    def hit(self, rng: random.Random, requests: int, *, among: int | None = None, testers: bool = False) -> None:
        """`requests` requests from users drawn uniformly among the first `among` users (or the testers)."""
        if requests <= 0:
            return
        size = self.testers if testers else (self.users if among is None else among)
        if size <= 0:
            return
        offset = self.users if testers else 0
        seen, draw, new = self.seen, rng.random, 0
        for _ in range(requests):
            i = offset + int(draw() * size)
            if not seen[i]:
                seen[i] = 1
                new += 1
        self.count += new
