"""Judges: is the candidate worse than the baseline serving beside it?

A judge is a pure function. The controller calls it every second or so with
what arrived since the previous call (`baseline`, `candidate` are increments,
never totals), the judge's own state from that call (None at the start; a
typed record of `core.judge_state`, stored on every tick), and the time: `elapsed` since the analysis started and
its `duration` (None: until stopped, so never a final pass). It returns the
new state and a verdict: Running until decided, Failed as soon as the
candidate is shown worse, and at the deadline Successful or — with too little
traffic — whatever the template's `noData` says, named in the message.

Failed and Successful are final: called again with the state that produced
them, a judge repeats them and ignores new data, so a controller that restarts
after deciding hears the same answer. NoData under `wait` is not final: a later
call with enough traffic turns it into Successful (or Failed).

Judges that decide on a schedule (threshold, mannwhitney) keep it in their
state and check once per `interval`; the sequential judges may be looked at
after every increment, even of one request. A provider that measures a value
rather than counts (a PromQL query, an http or command check) hands it over
as `values` (baseline, candidate) on the tick it was measured: one pair of a
gauge for the sequential value judge (`sequential_value`), or a value for
threshold.

Judges never read a clock, touch a file or draw random numbers, and import only
`stagewise.core`, `stagewise.errors` and the standard library.
"""

from __future__ import annotations

from typing import Any, Protocol

from stagewise.analysis.judges.mannwhitney import judge_mannwhitney
from stagewise.analysis.judges.sequential import RUNNING_UNSAID, judge_error_rate
from stagewise.analysis.judges.sequential_latency import judge_latency
from stagewise.analysis.judges.sequential_value import judge_value
from stagewise.analysis.judges.threshold import judge_threshold
from stagewise.core.judge_state import JudgeState
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import ReleaseStats
from stagewise.core.verdict import Verdict
from stagewise.errors import UnknownDriverError

__all__ = ["JUDGES", "RUNNING_UNSAID", "JudgeFn", "Values", "judge"]

Values = tuple[float | None, float | None]
"""A provider's value for the baseline and the candidate, measured on this tick."""


class JudgeFn(Protocol):
    def __call__(
        self,
        template: AnalysisTemplate,
        state: JudgeState | None,
        baseline: ReleaseStats,
        candidate: ReleaseStats,
        *,
        elapsed: float,
        duration: float | None,
        values: Values | None = None,
    ) -> tuple[JudgeState | None, Verdict]: ...


def judge(
    template: AnalysisTemplate,
    state: JudgeState | None,
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
    values: Values | None = None,
    brief: bool = False,
) -> tuple[JudgeState | None, Verdict]:
    """Fold one increment into the template's judge; return its new state (None: nothing to keep) and verdict.

    `brief`: a Running verdict may come without its sentence and evidence (`RUNNING_UNSAID`), for a look
    whose verdict nobody reads unless it is final (analysis/judges/runs.py); the sequential judges of counts
    skip writing them then, a third of their look. Any other outcome comes in full.
    """
    key = f"{template.judge}/{template.metric}"
    fn = JUDGES.get(key)
    if fn is None:
        raise UnknownDriverError("judge", key, list(JUDGES))
    if brief and key in _BRIEF:
        said: tuple[JudgeState | None, Verdict] = _BRIEF[key](template, state, baseline, candidate,
                                                               elapsed=elapsed, duration=duration, brief=True)
        return said
    return fn(template, state, baseline, candidate, elapsed=elapsed, duration=duration, values=values)


def _counts_only(fn: Any) -> JudgeFn:
    """A sequential judge: it tests counts, so a provider's single value has nothing for it."""

    def call(
        template: AnalysisTemplate,
        state: JudgeState | None,
        baseline: ReleaseStats,
        candidate: ReleaseStats,
        *,
        elapsed: float,
        duration: float | None,
        values: Values | None = None,
    ) -> tuple[JudgeState | None, Verdict]:
        del values
        result: tuple[JudgeState | None, Verdict] = fn(
            template, state, baseline, candidate, elapsed=elapsed, duration=duration)
        return result

    return call


def _values_only(
    template: AnalysisTemplate,
    state: JudgeState | None,
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
    values: Values | None = None,
) -> tuple[JudgeState | None, Verdict]:
    """The sequential value judge: it tests a provider's values, so counts have nothing for it."""
    del baseline, candidate
    return judge_value(template, state, values=values, elapsed=elapsed, duration=duration)


JUDGES: dict[str, JudgeFn] = {
    "sequential/error-rate": _counts_only(judge_error_rate),
    "sequential/latency": _counts_only(judge_latency),
    "threshold/error-rate": judge_threshold,
    "threshold/latency": judge_threshold,
    "sequential/value": _values_only,
    "threshold/value": judge_threshold,
    "mannwhitney/error-rate": judge_mannwhitney,
    "mannwhitney/latency": judge_mannwhitney,
}
"""Judge functions by "judge/metric", the names of AnalysisTemplate."""
_BRIEF: dict[str, Any] = {"sequential/error-rate": judge_error_rate, "sequential/latency": judge_latency}
"""The judges that can leave a Running verdict unsaid (`judge(brief=True)`)."""
