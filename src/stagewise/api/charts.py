"""Series for the delivery page's charts: traffic share, error rate, evidence and latency over time.

Traffic share over time is *derived*, not stored: every step of a plan carries
the whole desired world (weights per release), and the delivery's events say
when each step began — "Progressing" enters the first step, "step k/n done"
enters step k, "Aborting" enters the rollback plan, "promoted fully" jumps to
the promotion. Replaying those events over the plan gives the share each
release was meant to get, and when, without a second record that could
disagree with the first. The analysis series come from each run's `history`,
the points the controller records about once a second.

Every series is shaped for uPlot: one shared x array (Unix seconds) and one
y array per line, `None` where there is no value. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from stagewise.core.delivery import AnalysisRun, Delivery, Phase
from stagewise.core.plan import Plan, World
from stagewise.core.routes import split_weights
from stagewise.store import StoredEvent

_STEP_DONE = re.compile(r"^step (\d+)/(\d+) done")


def world_weights(world: World) -> dict[str, int]:
    """The share of requests each release with instances is meant to get in `world`."""
    if world.weights is not None:
        return {r: w for r, w in world.weights.items() if world.instances.get(r, 0) > 0}
    return split_weights({r: n for r, n in world.instances.items() if n > 0})


def traffic_points(delivery: Delivery, plan: Plan, events: Iterable[StoredEvent]) -> list[tuple[float, dict[str, int]]]:
    """(time, weights) each time the delivery's intended split changed, replayed from its events."""
    stable = delivery.stable.version if delivery.stable else None
    candidate = delivery.candidate.version
    back_to_stable = {stable: 100} if stable else {}
    steps = plan.steps
    rolling_back = False
    points: list[tuple[float, dict[str, int]]] = []

    def at(t: float, weights: dict[str, int]) -> None:
        if not points or points[-1][1] != weights:
            points.append((t, weights))

    for e in events:
        message = e.message
        done = _STEP_DONE.match(message) if e.kind == "step" else None
        if e.kind == "phase" and message.startswith(f"{Phase.PROGRESSING.value}:"):
            rolling_back, steps = False, plan.steps
            if steps:
                at(e.at, world_weights(steps[0].world))
        elif e.kind == "phase" and message.startswith(f"{Phase.ABORTING.value}:"):
            # A retried delivery no longer knows an earlier attempt's rollback plan; every
            # rollback starts by sending all traffic back to the stable release anyway.
            rolling_back, steps = True, plan.rollback
            at(e.at, world_weights(steps[0].world) if steps else back_to_stable)
        elif e.kind == "phase" and message.startswith(f"{Phase.SUCCEEDED.value}:"):
            at(e.at, {candidate: 100})
        elif e.kind == "phase" and message.startswith(f"{Phase.ROLLED_BACK.value}:"):
            at(e.at, back_to_stable)
        elif done is not None:
            index = int(done.group(1))
            if index < len(steps):
                at(e.at, world_weights(steps[index].world))
            elif rolling_back:
                at(e.at, back_to_stable)
        elif e.kind == "user" and message.startswith("promoted fully") and plan.promote_from < len(plan.steps):
            at(e.at, world_weights(plan.steps[plan.promote_from].world))
    return points


def traffic_series(delivery: Delivery, plan: Plan, events: Iterable[StoredEvent], now: float) -> dict[str, Any]:
    """Traffic share per release as stepped lines, held up to `now` (or the delivery's end)."""
    points = traffic_points(delivery, plan, events)
    releases = _ordered_releases(delivery, (r for _, w in points for r in w))
    if not points:
        return {"t": [], "releases": releases, "series": {r: [] for r in releases}}
    end = delivery.finished_at if delivery.finished_at is not None else now
    times = [t for t, _ in points]
    if end > times[-1]:
        times.append(end)
        points.append((end, points[-1][1]))
    return {
        "t": [round(t, 3) for t in times],
        "releases": releases,
        "series": {r: [w.get(r, 0) for _, w in points] for r in releases},
    }


def _ordered_releases(delivery: Delivery, seen: Iterable[str]) -> list[str]:
    """Stable first, then the candidate, then anything else: the same colours on every chart."""
    order = [delivery.stable.version] if delivery.stable else []
    order.append(delivery.candidate.version)
    extra = sorted(set(seen) - set(order))
    return [r for r in order if r] + extra


def analysis_series(run: AnalysisRun, baseline: str, candidate: str) -> dict[str, Any]:
    """Error rate (%), p50/p99 latency (ms) per release and e-values per metric, over the run."""
    points = [p for p in run.history if "baseline" in p and "candidate" in p]
    arms = {"baseline": baseline, "candidate": candidate}
    out: dict[str, Any] = {
        "t": [p["t"] for p in points],
        "releases": arms,
        "error_rate": {arm: [_rate(p[arm]) for p in points] for arm in arms},
        "p50": {arm: [p[arm].get("p50") for p in points] for arm in arms},
        "p99": {arm: [p[arm].get("p99") for p in points] for arm in arms},
        "requests": {arm: [p[arm].get("requests", 0) for p in points] for arm in arms},
    }
    bounds = evidence_bounds(run)
    if bounds:
        out["e_value"] = {m: [(p.get("e_value") or {}).get(m) for p in points] for m in bounds}
        out["bounds"] = bounds
    return out


def evidence_bounds(run: AnalysisRun) -> dict[str, float]:
    """Per metric judged with an e-value, the bound at which the judge fails the candidate (1/α)."""
    out: dict[str, float] = {}
    for metric in run.verdict.evidence.get("metrics", []):
        evidence = metric.get("evidence") or {}
        if "e_value" in evidence and "threshold" in evidence:
            out[str(evidence.get("metric", "metric"))] = float(evidence["threshold"])
    return out


def _rate(point: dict[str, Any]) -> float | None:
    requests = point.get("requests") or 0
    return round(100.0 * (point.get("errors") or 0) / requests, 4) if requests else None
