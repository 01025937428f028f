"""Per-release tallies built from log lines, for the routers whose data plane is not ours.

HAProxy and nginx report each request in a log line; the drivers of those
routers fold the lines into these tallies (requests, 5xx, latency histogram)
and hand them out as `ReleaseStats`. Tallies serialise to JSON so a driver can
persist them and a restarted controller carries on counting from where the
last one stopped, instead of from zero — counters must only grow within one
`boot`.
"""

from __future__ import annotations

import json
from typing import Any

from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats, bucket_of


class Tally:
    """Requests, errors and a latency histogram of one release."""

    __slots__ = ("buckets", "errors", "requests", "sum_ms")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        self.sum_ms = 0.0

    def add(self, *, error: bool, latency_ms: float) -> None:
        self.requests += 1
        self.errors += error
        self.buckets[bucket_of(latency_ms)] += 1
        self.sum_ms += latency_ms

    def stats(self) -> ReleaseStats:
        return ReleaseStats(requests=self.requests, errors=self.errors, latency_buckets=list(self.buckets),
                            latency_sum_ms=self.sum_ms)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "buckets": self.buckets, "sum_ms": self.sum_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        tally = cls()
        tally.requests = int(data.get("requests", 0))
        tally.errors = int(data.get("errors", 0))
        buckets = [int(n) for n in data.get("buckets", [])]
        if len(buckets) == len(tally.buckets):
            tally.buckets = buckets
        tally.sum_ms = float(data.get("sum_ms", 0.0))
        return tally


Tallies = dict[str, Tally]
"""Release → tally."""


def dump(tallies: Tallies) -> str:
    return json.dumps({r: t.to_json() for r, t in tallies.items()})


def load(text: str) -> Tallies:
    data = json.loads(text)
    return {str(r): Tally.from_json(t) for r, t in data.items()} if isinstance(data, dict) else {}
