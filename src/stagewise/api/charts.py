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
    replay = _TrafficReplay(delivery, plan)
    points: list[tuple[float, dict[str, int]]] = []
    for e in events:
        weights = replay.weights_after(e)
        if weights is not None and (not points or points[-1][1] != weights):
            points.append((e.at, weights))
    return points


class _TrafficReplay:
    """Follows a delivery's events to tell the split it meant to serve after each one."""

    def __init__(self, delivery: Delivery, plan: Plan) -> None:
        self.plan = plan
        self.candidate = delivery.candidate.version
        self.back_to_stable = {delivery.stable.version: 100} if delivery.stable else {}
        self.steps = plan.steps
        self.rolling_back = False

    def weights_after(self, e: StoredEvent) -> dict[str, int] | None:
        """The intended split once `e` happened; None if `e` changed nothing."""
        if e.kind == "phase":
            return self._phase(e.message)
        done = _STEP_DONE.match(e.message) if e.kind == "step" else None
        if done is not None:
            index = int(done.group(1))
            if index < len(self.steps):
                return world_weights(self.steps[index].world)
            return self.back_to_stable if self.rolling_back else None
        plan = self.plan
        if e.kind == "user" and e.message.startswith("promoted fully") and plan.promote_from < len(plan.steps):
            return world_weights(plan.steps[plan.promote_from].world)
        return None

    def _phase(self, message: str) -> dict[str, int] | None:
        if message.startswith(f"{Phase.PROGRESSING.value}:"):
            self.rolling_back, self.steps = False, self.plan.steps
            return world_weights(self.steps[0].world) if self.steps else None
        if message.startswith(f"{Phase.ABORTING.value}:"):
            # A retried delivery no longer knows an earlier attempt's rollback plan; every
            # rollback starts by sending all traffic back to the stable release anyway.
            self.rolling_back, self.steps = True, self.plan.rollback
            return world_weights(self.steps[0].world) if self.steps else self.back_to_stable
        if message.startswith(f"{Phase.SUCCEEDED.value}:"):
            return {self.candidate: 100}
        if message.startswith(f"{Phase.ROLLED_BACK.value}:"):
            return self.back_to_stable
        return None


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
