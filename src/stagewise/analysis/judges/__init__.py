"""Judges: is the candidate worse than the baseline serving beside it?

A judge is a pure function. The controller calls it every second or so with
what arrived since the previous call (`baseline`, `candidate` are increments,
never totals), the judge's own state from that call (`{}` at the start; JSON,
stored on every tick), and the time: `elapsed` since the analysis started and
its `duration` (None: until stopped, so never a final pass). It returns the
new state and a verdict: Running until decided, Failed as soon as the
candidate is shown worse, and at the deadline Successful or — with too little
traffic — whatever the template's `noData` says, named in the message.

Failed and Successful are final: called again with the state that produced
them, a judge repeats them and ignores new data, so a controller that restarts
after deciding hears the same answer. NoData under `wait` is not final: a later
call with enough traffic turns it into Successful (or Failed).

Judges never read a clock, touch a file or draw random numbers, and import only
`stagewise.core`, `stagewise.errors` and the standard library.
"""

from __future__ import annotations

from typing import Any, Protocol

from stagewise.analysis.judges import sequential as seq
from stagewise.analysis.judges.sequential import judge_error_rate
from stagewise.analysis.judges.sequential_latency import judge_latency
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import ReleaseStats
from stagewise.core.verdict import Outcome, Verdict
from stagewise.errors import UnknownDriverError

__all__ = ["JUDGES", "JudgeFn", "judge"]


class JudgeFn(Protocol):
    def __call__(
        self,
        template: AnalysisTemplate,
        state: dict[str, Any],
        baseline: ReleaseStats,
        candidate: ReleaseStats,
        *,
        elapsed: float,
        duration: float | None,
    ) -> tuple[dict[str, Any], Verdict]: ...


def judge(
    template: AnalysisTemplate,
    state: dict[str, Any],
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
) -> tuple[dict[str, Any], Verdict]:
    """Fold one increment into the template's judge; return its new state and verdict."""
    key = f"{template.judge}/{template.metric}"
    fn = JUDGES.get(key)
    if fn is None:
        raise UnknownDriverError("judge", key, list(JUDGES))
    return fn(template, state, baseline, candidate, elapsed=elapsed, duration=duration)


def _not_available(
    template: AnalysisTemplate,
    state: dict[str, Any],
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
) -> tuple[dict[str, Any], Verdict]:
    """Judges still to come: Inconclusive (a person decides), never a silent pass."""
    del baseline, candidate, elapsed, duration
    return dict(state), Verdict(
        outcome=Outcome.INCONCLUSIVE,
        message=(f"judge {template.judge} is not available yet for metric {template.metric}; use judge: sequential"),
        evidence={"judge": template.judge, "metric": template.metric},
    )


_THRESHOLD_KIND = "threshold/error-rate"


def _threshold_error_rate(
    template: AnalysisTemplate,
    state: dict[str, Any],
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
) -> tuple[dict[str, Any], Verdict]:
    """A fixed limit on the candidate's cumulative error rate; `margin` is that limit (0.01 = 1%).

    Flagger/Argo style and deliberately minimal: no statistics, so it checks the
    limit only once the candidate has `min_requests` requests (a first request
    that fails is not a 100% error rate). Its false-alarm rate is not controlled.
    """
    limit = template.margin
    if limit is None:
        return dict(state), Verdict(
            outcome=Outcome.INCONCLUSIVE,
            message="judge threshold needs margin: the highest acceptable error rate, such as 0.01",
            evidence={"judge": "threshold", "metric": "error-rate"},
        )
    if state.get("kind") == _THRESHOLD_KIND and "verdict" in state:
        return dict(state), Verdict.model_validate(state["verdict"])
    fresh = state.get("kind") != _THRESHOLD_KIND
    requests = [0, 0] if fresh else [int(x) for x in state["requests"]]
    errors = [0, 0] if fresh else [int(x) for x in state["errors"]]
    for arm, stats in enumerate((baseline, candidate)):
        n, e = seq.counts(stats)
        requests[arm] += n
        errors[arm] += e
    rates = [e / n if n else 0.0 for n, e in zip(requests, errors, strict=True)]
    outcome, lack = seq.decide(
        template,
        detected=requests[1] >= template.min_requests and rates[1] > limit,
        requests=(requests[0], requests[1]),
        elapsed=elapsed,
        duration=duration,
    )
    words = f"candidate error rate {rates[1]:.1%} (limit {limit:.1%}, baseline {rates[0]:.1%})"
    if lack:
        message = lack
    elif outcome is Outcome.SUCCESSFUL:
        message = f"{words}: within the limit after {requests[1]:,} candidate requests"
    else:
        message = f"{words} after {requests[1]:,} candidate requests"
    evidence: dict[str, Any] = {
        "judge": "threshold",
        "metric": "error-rate",
        "limit": limit,
        "error_rate": {"baseline": rates[0], "candidate": rates[1]},
        "requests": {"baseline": requests[0], "candidate": requests[1]},
        "errors": {"baseline": errors[0], "candidate": errors[1]},
        "min_requests": template.min_requests,
    }
    if lack:
        evidence["no_data"] = template.no_data
    verdict = Verdict(outcome=outcome, message=message, evidence=evidence)
    new_state: dict[str, Any] = {"kind": _THRESHOLD_KIND, "requests": requests, "errors": errors}
    if seq.finished(outcome):
        new_state["verdict"] = verdict.model_dump(mode="json")
    return new_state, verdict


JUDGES: dict[str, JudgeFn] = {
    "sequential/error-rate": judge_error_rate,
    "sequential/latency": judge_latency,
    "threshold/error-rate": _threshold_error_rate,
    "threshold/latency": _not_available,
    "mannwhitney/error-rate": _not_available,
    "mannwhitney/latency": _not_available,
}
"""Judge functions by "judge/metric", the names of AnalysisTemplate."""
