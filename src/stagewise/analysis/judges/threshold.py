"""threshold: Flagger's and Argo Rollouts' judge — a value held to a range, once per interval.

Each check reads one value and compares it with `thresholdRange` ({min, max});
the run fails when `failureLimit` checks have failed (Flagger's `threshold`),
and at the deadline passes when some check had data. Where the value comes
from:

- a provider's value (`values`): a PromQL query per release, or an http or
  command check (0 passed, 1 failed; their range defaults to {max: 0}). The
  judge checks each value when it arrives: the provider measures at the interval.
- else the router's counts over the interval: the candidate's error rate (a
  fraction), or its latency at `quantile` in ms. A window with fewer than
  `minRequests` candidate requests is no check yet — it grows until it has
  them — since one failed request of one is not a 100 % error rate.

Its false-alarm rate is not controlled: every check is one more chance to
cross the line on noise. The benchmark prints how often it does.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from stagewise.analysis.judges import sequential as seq
from stagewise.analysis.judges.checks import CheckState, check_due, conclude
from stagewise.core.judge_state import JudgeState, ThresholdState
from stagewise.core.spec import AnalysisTemplate, PrometheusTemplate, ThresholdRange
from stagewise.core.stats import ReleaseStats
from stagewise.core.verdict import Outcome, Verdict

KIND = "threshold"
PROBE_RANGE = ThresholdRange(max=0.0)
"""http and command checks give 1 when they failed: any failure is a failed check."""


def limits(template: AnalysisTemplate) -> ThresholdRange | None:
    """The range a value must stay in; `margin` was the maximum before thresholdRange existed."""
    if template.threshold_range is not None:
        return template.threshold_range
    if template.provider in ("http", "command"):
        return PROBE_RANGE
    if template.margin is not None:
        return ThresholdRange(max=template.margin)
    return None


def judge_threshold(
    template: AnalysisTemplate,
    state: JudgeState | None,
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
    values: tuple[float | None, float | None] | None = None,
) -> tuple[JudgeState | None, Verdict]:
    """Fold the increment into the window; check when due; say what the checks show."""
    metric = template.metric
    bounds = limits(template)
    if bounds is None:
        return state, Verdict(
            outcome=Outcome.INCONCLUSIVE,
            message="judge threshold needs thresholdRange, such as {max: 0.01} for at most 1% errors",
            evidence={"judge": KIND, "metric": metric},
        )
    kind: Literal["threshold/error-rate", "threshold/latency"] = (
        "threshold/latency" if metric == "latency" else "threshold/error-rate")
    kept = state if isinstance(state, ThresholdState) and state.kind == kind else None
    if kept is not None and kept.verdict is not None:
        return kept, kept.verdict
    checks = CheckState.load(kept)
    window = (kept.window if kept is not None else ReleaseStats()).plus(candidate)
    totals = list(kept.requests) if kept is not None else [0, 0]
    totals = [totals[0] + seq.counts(baseline)[0], totals[1] + seq.counts(candidate)[0]]
    from_provider = template.gives_values
    if from_provider:
        checked, value = _check_value(checks, bounds, values, elapsed=elapsed, duration=duration)
    else:
        checked, value, window = _check_window(template, checks, bounds, window, elapsed=elapsed, duration=duration)
    outcome, lack = conclude(
        template, checks, requests=None if from_provider else (totals[0], totals[1]),
        elapsed=elapsed, duration=duration,
    )
    if from_provider and lack:
        lack = lack.replace("no value measured", f"no value from the {template.provider} provider")
    what = _what(template)
    evidence: dict[str, Any] = {
        "judge": KIND, "metric": metric, "source": what,
        "range": bounds.model_dump(), "failure_limit": template.failure_limit,
        "requests": {"baseline": totals[0], "candidate": totals[1]},
        **checks.summary(),
    }
    if checked:
        evidence["value"] = value
    if lack:
        evidence["no_data"] = template.no_data
    message = lack or _message(template, outcome, checks, bounds)
    verdict = Verdict(outcome=outcome, message=message, evidence=evidence)
    new_state = ThresholdState(kind=kind, **checks.kept(), window=window,
                               requests=(totals[0], totals[1]), verdict=verdict if seq.finished(outcome) else None)
    return new_state, verdict


def _check_value(checks: CheckState, bounds: ThresholdRange, values: tuple[float | None, float | None] | None, *,
                 elapsed: float, duration: float | None) -> tuple[bool, float | None]:
    """A provider that gives values (a query, a probe) is checked whenever it gives one: (checked, value)."""
    if values is not None:
        checks.started = True
        checks.next_at = elapsed
        value = values[1] if values[1] is not None and math.isfinite(values[1]) else None
        checks.record(elapsed, failed=None if value is None else not _inside(value, bounds), value=value)
        return True, value
    if duration is not None and elapsed >= duration > checks.last_at and checks.count == 0:
        checks.started = True
        checks.last_at = elapsed
    return False, None


def _check_window(template: AnalysisTemplate, checks: CheckState, bounds: ThresholdRange, window: ReleaseStats, *,
                  elapsed: float, duration: float | None) -> tuple[bool, float | None, ReleaseStats]:
    """Counts from the router are checked once per interval, over the window since the last check:
    (checked, value, the window from now on)."""
    if not check_due(checks, template, elapsed, duration):
        return False, None, window
    if window.requests < template.min_requests:
        checks.record(elapsed, failed=None, value=None)
        return False, None, window
    value = window.error_rate if template.metric == "error-rate" else window.quantile_ms(template.quantile)
    checks.record(elapsed, failed=not _inside(value, bounds), value=value)
    return True, value, ReleaseStats()


def _message(template: AnalysisTemplate, outcome: Outcome, checks: CheckState, bounds: ThresholdRange) -> str:
    what = _what(template)
    if outcome is Outcome.FAILED:
        return (f"{what} out of range {_range(bounds)} in {checks.failed} of {checks.count} checks "
                f"(failureLimit {template.failure_limit}); last {_fmt(checks, template)}")
    if outcome is Outcome.SUCCESSFUL:
        return f"{what} within {_range(bounds)}: {checks.failed} of {checks.count} checks failed"
    return (f"{what} {_fmt(checks, template)}, range {_range(bounds)}; "
            f"{checks.failed} of {checks.count} checks failed")


def _inside(value: float, bounds: ThresholdRange) -> bool:
    if math.isnan(value):
        return False
    return (bounds.min is None or value >= bounds.min) and (bounds.max is None or value <= bounds.max)


def _what(template: AnalysisTemplate) -> str:
    if isinstance(template, PrometheusTemplate) and template.query:
        return "the candidate's query value"
    if template.provider in ("http", "command"):
        return f"{template.provider} check failures"
    if template.metric == "error-rate":
        return "candidate error rate"
    return f"candidate p{template.quantile * 100:g} latency (ms)"


def _range(bounds: ThresholdRange) -> str:
    low = "-∞" if bounds.min is None else f"{bounds.min:g}"
    high = "∞" if bounds.max is None else f"{bounds.max:g}"
    return f"[{low}, {high}]"


def _fmt(checks: CheckState, template: AnalysisTemplate) -> str:
    last = checks.last
    if last is None:
        return "not checked yet"
    value = last.get("value")
    if value is None:
        return "no data"
    fraction = template.metric == "error-rate" and not template.gives_values  # counts: an error rate
    return f"{value:.2%}" if fraction else f"{value:.4g}"
