"""Per-release request counters of the builtin router, and their two renderings.

Recording a request must cost next to nothing, so counters are plain objects
with slots and a preallocated histogram; the pydantic `RouterStats` and the
Prometheus text are built only when someone asks (`GET /stats`, `/metrics`).
Counters are cumulative since the process started and identified by `boot`,
as `stagewise.core.stats` expects; they survive route table swaps.
"""

from __future__ import annotations

from collections.abc import Iterable

from stagewise.core.stats import LATENCY_BOUNDS_MS, RouterStats, bucket_of
from stagewise.routers.builtin.plan import Endpoint
from stagewise.routers.common.tallies import Tallies, Tally


class Counters:
    """Requests, errors and latency per release since `boot`."""

    def __init__(self, boot: str) -> None:
        self.boot = boot
        self.releases: Tallies = {}

    def record(self, release: str, *, error: bool, latency_ms: float) -> None:
        counter = self.releases.get(release)
        if counter is None:
            counter = self.releases[release] = Tally()
        # Tally.add inlined: this runs once per proxied request
        counter.requests += 1
        if error:
            counter.errors += 1
        counter.buckets[bucket_of(latency_ms)] += 1
        counter.sum_ms += latency_ms

    def stats(self, endpoints: Iterable[Endpoint]) -> RouterStats:
        inflight: dict[str, int] = {}
        for (ep_id, _), n in _inflight(endpoints).items():
            inflight[ep_id] = inflight.get(ep_id, 0) + n
        return RouterStats(
            boot=self.boot,
            releases={
                name: c.stats() for name, c in sorted(self.releases.items())
            },
            inflight=inflight,
        )

    def metrics(self, service: str, endpoints: Iterable[Endpoint]) -> str:
        """Prometheus text exposition format 0.0.4."""
        svc = _label(service)
        items = sorted(self.releases.items())
        lines = [
            "# HELP stagewise_router_requests_total Requests the router answered, per release.",
            "# TYPE stagewise_router_requests_total counter",
        ]
        lines += [
            f'stagewise_router_requests_total{{service="{svc}",release="{_label(r)}"}} {c.requests}' for r, c in items
        ]
        lines += [
            "# HELP stagewise_router_errors_total Responses with status >= 500 and requests not forwarded.",
            "# TYPE stagewise_router_errors_total counter",
        ]
        lines += [
            f'stagewise_router_errors_total{{service="{svc}",release="{_label(r)}"}} {c.errors}' for r, c in items
        ]
        lines += [
            "# HELP stagewise_router_request_duration_seconds From request received to response sent.",
            "# TYPE stagewise_router_request_duration_seconds histogram",
        ]
        bounds = [*(repr(b / 1000) for b in LATENCY_BOUNDS_MS), "+Inf"]
        for r, c in items:
            labels = f'service="{svc}",release="{_label(r)}"'
            seen = 0
            for le, n in zip(bounds, c.buckets, strict=True):
                seen += n
                lines.append(f'stagewise_router_request_duration_seconds_bucket{{{labels},le="{le}"}} {seen}')
            lines.append(f"stagewise_router_request_duration_seconds_sum{{{labels}}} {c.sum_ms / 1000!r}")
            lines.append(f"stagewise_router_request_duration_seconds_count{{{labels}}} {seen}")
        lines += [
            "# HELP stagewise_router_inflight Requests being served now, per endpoint.",
            "# TYPE stagewise_router_inflight gauge",
        ]
        lines += [
            f'stagewise_router_inflight{{service="{svc}",release="{_label(release)}",endpoint="{_label(ep_id)}"}} {n}'
            for (ep_id, release), n in _inflight(endpoints).items()
        ]
        return "\n".join(lines) + "\n"


def _inflight(endpoints: Iterable[Endpoint]) -> dict[tuple[str, str], int]:
    """In-flight requests per (endpoint id, release): an endpoint removed and added back while a
    request to it still runs exists twice for a while, but is one series."""
    out: dict[tuple[str, str], int] = {}
    for ep in endpoints:
        out[ep.id, ep.release] = out.get((ep.id, ep.release), 0) + ep.inflight
    return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
