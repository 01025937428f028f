"""Feed measurements to the judges of a delivery's analysis runs.

Each run remembers the router counters it last saw; the judges get what
arrived since (increments), so a check after every tick costs the same however
long the run has been going. Baseline and candidate are measured over the same
interval — never before against after. Templates with another provider
(prometheus, http, command) get what the controller measured for them on this
tick (`Measured`: increments, or one value per release), and nothing on the
ticks in between; the last thing the provider said stays in the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stagewise.analysis.judges import RUNNING_UNSAID, Values, judge
from stagewise.core.delivery import AnalysisRun, Delivery, Phase, evolve
from stagewise.core.judge_state import JudgeState, ProviderNote
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import ReleaseStats, RouterStats
from stagewise.core.verdict import OPEN, Outcome, Verdict, combine


@dataclass(frozen=True)
class Measured:
    """What a provider measured for one template of one run, on this tick."""

    baseline: ReleaseStats = field(default_factory=ReleaseStats)
    """Increment since the provider's previous measurement."""
    candidate: ReleaseStats = field(default_factory=ReleaseStats)
    values: Values | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """The provider could not measure: why, in its words."""


HISTORY_POINTS = 600
"""Points kept per run for charts; older ones are thinned out."""
POINT_EVERY = 1.0
"""Seconds between two points of a run's history (the deciding point is always kept); a look told to hurry
(`judge_runs(points=False)`) adds one only once the last is twice as old."""
_DECIDED = frozenset({Outcome.FAILED, Outcome.SUCCESSFUL})
"""(A set of members, as `verdict.OPEN` is.)"""


def judge_runs(
    delivery: Delivery,
    stats: RouterStats | None,
    now: float,
    measured: Mapping[tuple[str, str], Measured] | None = None,
    *,
    points: bool = True,
) -> Delivery:
    """The delivery with every undecided analysis run judged on `stats` and what providers `measured`.

    `measured` is keyed by (run key, template name). `points=False`: a look in a hurry, which leaves a point of
    history due to a later look, unless the last is two periods old or the look decides (`_point_due`).
    """
    if stats is None or delivery.stable is None or delivery.phase is Phase.ABORTING:
        return delivery
    measured = measured or {}
    if not any(_open(run) for run in delivery.analysis.values()):
        return delivery
    d = evolve(delivery)
    baseline, candidate = d.stable.version if d.stable else "", d.candidate.version
    every = POINT_EVERY if points else 2 * POINT_EVERY
    for run in d.analysis.values():
        if not _open(run):
            continue
        if run.since is None or run.last is None:
            run.since = run.last = stats
            continue
        b, c = _increment(stats, run.last, baseline), _increment(stats, run.last, candidate)
        _look(d, run, measured, b, c, now, every)
        run.last = stats
        _record(run, stats, now, baseline, candidate, every)
    return d


def _look(d: Delivery, run: AnalysisRun, measured: Mapping[tuple[str, str], Measured], b: ReleaseStats,
          c: ReleaseStats, now: float, every: float) -> None:
    """Each of the run's judges looks at the increments `b` and `c`; the run's verdict is what they say together.

    A look between two points of the run's history that finds the run still Running is brief: the judges
    leave their verdicts unsaid and the run keeps the verdict of its last point, at most a second old (two, in
    a hurry: nothing reads it before the next point but the tick's state machine, which wants only the outcome;
    the state holding it is not written before then either: controller/work.py). A look that finds another
    outcome tells it in full: the judges that were brief look again, from the same state at the same
    increments — a judge is a pure function — this time in words.
    """
    templates = d.spec.spec.analysis
    shares = sequential_metrics(run.templates, templates)
    elapsed = now - run.started_at
    brief = run.verdict.outcome is Outcome.RUNNING and not _point_due(run, now, every)
    verdicts: list[Verdict] = []
    befores = [run.judge_state.get(name) for name in run.templates]
    said = True
    for name, before in zip(run.templates, befores, strict=True):
        template = split_alpha(templates[name], shares)
        if template.provider == "router":
            state, verdict = judge(template, before, b, c, elapsed=elapsed, duration=run.duration, brief=brief)
            if verdict is RUNNING_UNSAID:
                said = False
        else:
            state, verdict = _judge_measured(run, name, template, measured.get((run.key, name)), now)
        if state is not None:
            run.judge_state[name] = state
        verdicts.append(verdict)
    if not said and all(v.outcome is Outcome.RUNNING for v in verdicts):
        return  # still Running: the verdict of the last point stands
    for i, name in enumerate(run.templates):
        if verdicts[i] is RUNNING_UNSAID:  # another judge decided: this one's words go with it
            _, verdicts[i] = judge(split_alpha(templates[name], shares), befores[i], b, c, elapsed=elapsed,
                                   duration=run.duration)
    several = len(run.templates) > 1
    run.verdict = combine([named(v, name, several=several) for v, name in zip(verdicts, run.templates, strict=True)])


def _increment(stats: RouterStats, last: RouterStats, release: str) -> ReleaseStats:
    """What `release` counted since `last` (all of it when the router restarted in between): `stats.since`, for
    one release."""
    now = stats.release(release)
    return now.minus(last.release(release)) if last.boot == stats.boot else now


def _point_due(run: AnalysisRun, now: float, every: float) -> bool:
    """Whether a look at `now` adds a point to the run's history (one `every` seconds: `_record`)."""
    return not run.history or now - run.history[-1]["t"] >= every


def sequential_metrics(names: list[str], templates: Mapping[str, AnalysisTemplate]) -> int:
    """How many of a run's templates are judged sequentially: they share the run's false-alarm rate."""
    return sum(1 for name in names if templates[name].judge == "sequential")


def split_alpha(template: AnalysisTemplate, shares: int) -> AnalysisTemplate:
    """The template judged at alpha / k when k sequential metrics decide one run (Bonferroni on e-values).

    Each of the k e-processes then fails at e ≥ k/α; the run false-alarms only
    if one of them does, so at most Σ α_i / k ≤ the largest α of them —
    looked at after every increment, as each one alone. (The mean of the k
    e-values is an e-value too, and fails sooner when several metrics move
    together; the split fails sooner when one metric moves alone, the usual
    way a release breaks, and names that metric.)
    """
    if shares <= 1 or template.judge != "sequential":
        return template
    # made once per template: a run's templates are its spec's, the same objects on every look
    kept = _split.get((id(template), shares))
    if kept is None or kept[0] is not template:
        if len(_split) >= SPLIT_MAX:
            _split.clear()
        split = template.model_copy(update={"alpha": template.alpha / shares})
        kept = _split[(id(template), shares)] = (template, split)
    return kept[1]


SPLIT_MAX = 16_384
"""Templates whose split `split_alpha` keeps (a spec's templates live as long as its delivery); past this many
it starts afresh."""
_split: dict[tuple[int, int], tuple[AnalysisTemplate, AnalysisTemplate]] = {}


def named(verdict: Verdict, name: str, *, several: bool) -> Verdict:
    """The verdict with its template's name in the evidence — and in the message when the run has several."""
    evidence = {**verdict.evidence, "template": name}
    message = f"{name}: {verdict.message}" if several and verdict.message else verdict.message
    return verdict.model_copy(update={"evidence": evidence, "message": message})


def _judge_measured(
    run: AnalysisRun, name: str, template: AnalysisTemplate, m: Measured | None, now: float
) -> tuple[JudgeState | None, Verdict]:
    """Judge a template whose numbers come from a provider; keep its last word in the evidence."""
    if m is not None:
        run.notes[name] = ProviderNote(at=round(now, 3), evidence=m.evidence, error=m.error)
    values = m.values if m is not None else None
    if m is not None and m.error is not None and values is None:
        values = (None, None)  # a check without data, so the deadline and noData apply
    empty = ReleaseStats()
    state, verdict = judge(template, run.judge_state.get(name), m.baseline if m else empty,
                           m.candidate if m else empty, elapsed=now - run.started_at, duration=run.duration,
                           values=values)
    note = run.notes.get(name)
    if note is not None:
        evidence = {**verdict.evidence, "measurement": {"at": note.at, "evidence": note.evidence, "error": note.error}}
        message = verdict.message
        if note.error and verdict.outcome is not Outcome.SUCCESSFUL:
            message = f"{message}; last measurement failed: {note.error}"
        verdict = verdict.model_copy(update={"evidence": evidence, "message": message})
    return state, verdict


def _open(run: AnalysisRun) -> bool:
    return run.verdict.outcome in OPEN


def _record(run: AnalysisRun, stats: RouterStats, now: float, baseline: str, candidate: str,
            every: float) -> None:
    final = run.verdict.outcome in _DECIDED
    if not final and not _point_due(run, now, every):
        return  # thinned to a point a second; the deciding point is always kept, for the charts
    assert run.since is not None  # set by the run's first look
    b, c = _increment(stats, run.since, baseline), _increment(stats, run.since, candidate)  # since the run began
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
