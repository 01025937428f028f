"""Feed the router's counters to the judges of a delivery's analysis runs.

Each run remembers the counters it last saw; the judges get what arrived
since (increments), so a check after every tick costs the same however long
the run has been going. Baseline and candidate are measured over the same
interval — never before against after.
"""

from __future__ import annotations

import math

from stagewise.analysis.judges import judge
from stagewise.core.delivery import AnalysisRun, Delivery, Phase
from stagewise.core.stats import ReleaseStats, RouterStats
from stagewise.core.verdict import Outcome, combine

HISTORY_POINTS = 600
"""Points kept per run for charts; older ones are thinned out."""


def judge_runs(delivery: Delivery, stats: RouterStats | None, now: float) -> Delivery:
    """The delivery with every undecided analysis run judged on the counters in `stats`."""
    if stats is None or delivery.stable is None or delivery.phase is Phase.ABORTING:
        return delivery
    if not any(_open(run) for run in delivery.analysis.values()):
        return delivery
    d = delivery.model_copy(deep=True)
    baseline, candidate = d.stable.version if d.stable else "", d.candidate.version
    for run in d.analysis.values():
        if not _open(run):
            continue
        if run.since is None or run.last is None:
            run.since = run.last = stats
            continue
        increment = stats.since(run.last)
        b, c = increment.release(baseline), increment.release(candidate)
        verdicts = []
        for name in run.templates:
            template = d.spec.spec.analysis[name]
            state, verdict = judge(template, run.judge_state.get(name, {}), b, c,
                                   elapsed=now - run.started_at, duration=run.duration)
            run.judge_state[name] = state
            verdicts.append(verdict)
        run.verdict = combine(verdicts)
        run.last = stats
        _record(run, stats, now, baseline, candidate)
    return d


def _open(run: AnalysisRun) -> bool:
    return run.verdict.outcome in (Outcome.RUNNING, Outcome.NO_DATA)


def _record(run: AnalysisRun, stats: RouterStats, now: float, baseline: str, candidate: str) -> None:
    if run.history and now - run.history[-1]["t"] < 1.0:
        return
    window = stats.since(run.since)
    b, c = window.release(baseline), window.release(candidate)
    run.history.append({
        "t": round(now, 3),
        "baseline": _point(b),
        "candidate": _point(c),
        "outcome": run.verdict.outcome.value,
        "e_value": _e_values(run),
    })
    if len(run.history) > HISTORY_POINTS:
        run.history = run.history[::2]


def _e_values(run: AnalysisRun) -> dict[str, float]:
    """Each metric's e-value at this point, so a chart can draw it against the judge's bound."""
    out: dict[str, float] = {}
    for metric in run.verdict.evidence.get("metrics", []):
        evidence = metric.get("evidence") or {}
        if "e_value" in evidence:
            out[str(evidence.get("metric", "metric"))] = round(float(evidence["e_value"]), 6)
    return out


def _point(s: ReleaseStats) -> dict[str, float | None]:
    p50, p99 = s.quantile_ms(0.5), s.quantile_ms(0.99)
    return {"requests": s.requests, "errors": s.errors,
            "p50": p50 if math.isfinite(p50) else None, "p99": p99 if math.isfinite(p99) else None}
