"""Release weights turned into server weights, for balancers that weigh servers, not releases.

HAProxy and nginx split traffic by per-server weights within one pool; a
route table gives each *release* a share of requests. A release's share is
spread evenly over its endpoints, and the result scaled to integers no larger
than the balancer allows (HAProxy: 256): a 1/99 split over 1 and 4 endpoints
gives 10 and 4 × 256, 0.97% instead of 1% — close enough for a canary, and
exact for the common 0/100, 50/50, 10/90 steps.
"""

from __future__ import annotations

from stagewise.core.routes import RouteTable


def endpoint_weights(table: RouteTable, max_weight: int) -> dict[tuple[str, str], int]:
    """Weight of each endpoint, keyed (release, id), so each release gets its share of requests.

    As the builtin router: releases of weight 0 get nothing (weight 0) while a release of weight > 0
    has endpoints; when none has, every endpoint serves alike (weight 1).
    """
    groups: dict[str, list[str]] = {}
    for e in table.endpoints:
        groups.setdefault(e.release, []).append(e.id)
    positive = {r: w for r, w in (table.weights or {}).items() if w > 0 and r in groups}
    if not positive:
        return {(e.release, e.id): 1 for e in table.endpoints}
    per_server = {r: w / len(groups[r]) for r, w in positive.items()}
    scale = max_weight / max(per_server.values())
    return {
        (e.release, e.id): max(1, round(per_server[e.release] * scale)) if e.release in per_server else 0
        for e in table.endpoints
    }
