"""A test service's own Prometheus metrics: per-release counters, a latency histogram and a gauge, per instance.

It stands for what a team exports beside the router's counts. Each scrape of
`/metrics` advances the simulated traffic by the time since the previous
scrape: requests at `RATE` per second and instance, errors at the release's
rate, latencies drawn into Prometheus's default buckets, and a queue length
per instance. A release can mirror another (the very same numbers: an A/A
candidate that cannot false-alarm by chance, so the test is not flaky), and
an instance can be restarted — its counters begin again at zero, as a
restarted process's do.

Seeded, standard library only, loopback only.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.serving import serving as in_thread

RATE = 100.0
"""Requests per second and instance."""
INSTANCES = ("a", "b")
LE = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Prometheus's default histogram buckets, in seconds."""


@dataclass(frozen=True)
class Release:
    error_rate: float = 0.01
    latency_factor: float = 1.0
    queue_mean: float = 20.0
    mirror: str | None = None
    """Another release whose numbers this one repeats exactly."""


@dataclass
class Counters:
    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LE) + 1))
    queue: float = 0.0


class Exporter:
    def __init__(self, releases: dict[str, Release], seed: int = 1) -> None:
        self.releases = releases
        self.rng = random.Random(seed)
        self.counters = {(r, i): Counters() for r in releases for i in INSTANCES}
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def restart(self, release: str, instance: str) -> None:
        """The instance's process restarted: its counters begin again at zero."""
        with self.lock:
            self.counters[release, instance] = Counters()

    def _advance(self) -> None:
        now = time.monotonic()
        seconds, self.last = min(now - self.last, 5.0), now
        drawn: dict[tuple[str, str], tuple[int, int, list[int], float]] = {}
        for name, release in self.releases.items():
            for instance in INSTANCES:
                if release.mirror is None:
                    drawn[name, instance] = self._draw(release, seconds)
        for name, release in self.releases.items():
            for instance in INSTANCES:
                n, e, hist, queue = drawn[release.mirror or name, instance]
                c = self.counters[name, instance]
                c.requests += n
                c.errors += e
                c.buckets = [a + b for a, b in zip(c.buckets, hist, strict=True)]
                c.queue = queue

    def _draw(self, release: Release, seconds: float) -> tuple[int, int, list[int], float]:
        expected = RATE * seconds
        n = int(expected) + (self.rng.random() < expected - int(expected))
        errors = sum(self.rng.random() < release.error_rate for _ in range(n))
        hist = [0] * (len(LE) + 1)
        for _ in range(n):
            latency = 0.04 * release.latency_factor * math.exp(0.5 * self.rng.gauss(0.0, 1.0))
            hist[next((k for k, le in enumerate(LE) if latency <= le), len(LE))] += 1
        queue = min(100.0, max(0.0, self.rng.gauss(release.queue_mean, 3.0)))
        return n, errors, hist, queue

    def exposition(self) -> str:
        with self.lock:
            self._advance()
            lines = ["# TYPE shop_requests_total counter", "# TYPE shop_errors_total counter",
                     "# TYPE shop_request_duration_seconds histogram", "# TYPE shop_queue_length gauge"]
            for (release, instance), c in self.counters.items():
                labels = f'release="{release}",instance="{instance}"'
                lines.append(f"shop_requests_total{{{labels}}} {c.requests}")
                if c.errors:  # as real counters with a code label: no series before the first error
                    lines.append(f"shop_errors_total{{{labels}}} {c.errors}")
                cumulative = 0
                for le, count in zip((*map(str, LE), "+Inf"), c.buckets, strict=True):
                    cumulative += count
                    lines.append(f'shop_request_duration_seconds_bucket{{{labels},le="{le}"}} {cumulative}')
                lines.append(f"shop_request_duration_seconds_count{{{labels}}} {cumulative}")
                lines.append(f"shop_queue_length{{{labels}}} {c.queue:.3f}")
        return "\n".join(lines) + "\n"


@contextmanager
def serving(exporter: Exporter) -> Iterator[str]:
    """The exporter's /metrics on a loopback port; yields host:port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exporter.exposition().encode() if self.path == "/metrics" else b"not found"
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with in_thread(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as address:
        yield address
