"""mannwhitney: Kayenta's NetflixACAJudge, for those who know it and for comparison.

What it does. Once per `interval` (default 60 s) it compares everything the
candidate and the baseline served since the run began (Kayenta's growing
window) with a two-sided Mann–Whitney U test at 98 % confidence: the metric is
High when the candidate is significantly larger and its effect size — the
ratio of the candidate's mean to the baseline's — exceeds `allowedIncrease`.
A High check is a failed check; the run fails after `failureLimit` of them, or
at the first one when the metric is `critical`. At the deadline a run with no
failed check passes, or, with too little data, follows `noData` — a critical
metric then fails, as Kayenta fails a critical metric without data.

Why it is not the default. A fixed-sample test looked at again and again as
data accrue false-alarms far more often than its level: every interval is one
more chance (the benchmark prints how often). The sequential judges do not.

Samples. The controller hands over counts, not requests, so the judge works on
what `ReleaseStats` holds: for latency, the router's histogram (log-spaced
buckets 25 % wide); for the error rate, requests as 0 (ok) or 1 (error). The
rank test on histograms is exact with ties (mid-ranks and the tie-corrected
variance); each bucket stands for its geometric middle, so the Hodges–Lehmann
shift and its interval — the weighted median and order statistics of the
pairwise differences, as R's `wilcox.test` reports them — are precise to a
bucket's width. The state is two histograms: bounded, whatever the traffic.

Pure: no clock, no I/O; `elapsed` says when.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Literal

from stagewise.analysis.judges import sequential as seq
from stagewise.analysis.judges.checks import CheckState, check_due, conclude
from stagewise.core.judge_state import JudgeState, MannWhitneyState
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats
from stagewise.core.verdict import Outcome, Verdict

KIND = "mannwhitney"
DEFAULT_CONFIDENCE = 0.98
"""NetflixACAJudge's confidence level; `alpha` given in the template sets 1 − alpha instead."""
BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def representatives(metric: str) -> list[float]:
    """The value each bucket stands for: a latency bucket's geometric middle, or 0/1 for ok/error."""
    if metric == "error-rate":
        return [0.0, 1.0]
    lows = (0.0, *LATENCY_BOUNDS_MS)
    highs = (*LATENCY_BOUNDS_MS, LATENCY_BOUNDS_MS[-1] * 1.25)
    return [math.sqrt(lo * hi) if lo > 0 else hi / 2 for lo, hi in zip(lows, highs, strict=True)]


def histogram(stats: ReleaseStats, metric: str) -> list[int]:
    """An increment's samples as counts per bucket."""
    if metric == "error-rate":
        requests, errors = seq.counts(stats)
        errors = min(errors, requests)
        return [requests - errors, errors]
    raw = [max(0, n) for n in stats.latency_buckets[:BUCKETS]]
    return raw + [0] * (BUCKETS - len(raw))


def mann_whitney(baseline: list[int], candidate: list[int], values: list[float], confidence: float) -> dict[str, Any]:
    """The two-sided Mann–Whitney test of candidate against baseline, from histograms over ordered `values`.

    U counts the pairs where the candidate is larger (ties count a half); the
    normal approximation uses the tie-corrected variance and a continuity
    correction, as R's `wilcox.test(exact = FALSE, correct = TRUE)`.
    """
    n1, n2 = sum(baseline), sum(candidate)
    total = n1 + n2
    below = 0
    u = 0.0
    ties = 0.0
    for b, c in zip(baseline, candidate, strict=True):
        u += c * (below + b / 2)
        below += b
        t = b + c
        ties += t**3 - t
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1))) if total > 1 else 0.0
    z_crit = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    if variance <= 0:
        z, p = 0.0, 1.0
    else:
        diff = u - mean
        z = (diff - math.copysign(0.5, diff)) / math.sqrt(variance) if diff else 0.0
        p = min(1.0, math.erfc(abs(z) / math.sqrt(2)))
    estimate, low, high = _hodges_lehmann(baseline, candidate, values, z_crit * math.sqrt(max(variance, 0.0)))
    return {"u": u, "z": z, "p_value": p, "estimate": estimate, "interval": [low, high], "confidence": confidence}


def _hodges_lehmann(
    baseline: list[int], candidate: list[int], values: list[float], spread: float
) -> tuple[float, float, float]:
    """Median of the pairwise differences candidate − baseline, and the order statistics bounding it."""
    pairs = sorted(
        (values[j] - values[i], b * c)
        for i, b in enumerate(baseline) if b
        for j, c in enumerate(candidate) if c
    )
    weight = sum(w for _, w in pairs)
    if not weight:
        return math.nan, math.nan, math.nan
    k = max(1.0, math.floor(weight / 2 - spread))

    def at_rank(rank: float) -> float:
        seen = 0
        for d, w in pairs:
            seen += w
            if seen >= rank:
                return d
        return pairs[-1][0]

    return at_rank((weight + 1) / 2), at_rank(k), at_rank(weight - k + 1)


def judge_mannwhitney(
    template: AnalysisTemplate,
    state: JudgeState | None,
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
    values: tuple[float | None, float | None] | None = None,
) -> tuple[MannWhitneyState, Verdict]:
    """Add the increment to both histograms; at each interval, test and classify."""
    del values  # this judge needs samples; a provider's single value has none
    metric = template.metric
    kind: Literal["mannwhitney/error-rate", "mannwhitney/latency"] = (
        "mannwhitney/latency" if metric == "latency" else "mannwhitney/error-rate")
    kept = state if isinstance(state, MannWhitneyState) and state.kind == kind else None
    if kept is not None and kept.verdict is not None:
        return kept, kept.verdict
    checks = CheckState.load(kept)
    hist = [list(h) for h in kept.hist] if kept is not None else [[0] * len(representatives(metric))] * 2
    sums = list(kept.sums) if kept is not None else [0.0, 0.0]
    for arm, stats in enumerate((baseline, candidate)):
        hist[arm] = [a + b for a, b in zip(hist[arm], histogram(stats, metric), strict=True)]
        sums[arm] += max(0.0, stats.latency_sum_ms) if metric == "latency" else 0.0
    requests = (sum(hist[0]), sum(hist[1]))
    confidence = 1 - template.alpha if "alpha" in template.model_fields_set else DEFAULT_CONFIDENCE

    evidence: dict[str, Any] = {
        "judge": KIND,
        "metric": metric,
        "requests": {"baseline": requests[0], "candidate": requests[1]},
        "min_requests": template.min_requests,
        "allowed_increase": template.allowed_increase,
        "critical": template.critical,
    }
    message = ""
    if check_due(checks, template, elapsed, duration):
        if min(requests) >= template.min_requests:
            test = mann_whitney(hist[0], hist[1], representatives(metric), confidence)
            ratio = _mean_ratio(hist, sums, metric)
            high = test["z"] > 0 and test["p_value"] < 1 - confidence and ratio > template.allowed_increase
            checks.record(elapsed, failed=high, value=ratio)
            evidence.update(_evidence(test, ratio))
            evidence["classification"] = "High" if high else "Pass"
            message = _sentence(metric, test, ratio, high, requests)
        else:
            checks.record(elapsed, failed=None, value=None)
            evidence["classification"] = "NoData"
    elif checks.last is not None:
        evidence["last_check"] = checks.last
    outcome, lack = conclude(
        template, checks, requests=requests, elapsed=elapsed, duration=duration,
        fail_at_once=template.critical, fail_without_data=template.critical,
    )
    evidence.update(checks.summary())
    if lack:
        message = lack
        evidence["no_data"] = "fail (critical)" if template.critical else template.no_data
    elif not message:
        message = (f"{checks.failed} of {checks.count} checks High after {sum(requests):,} requests; "
                   f"next check at {checks.next_at:g}s")
    if outcome is Outcome.SUCCESSFUL and not lack:
        message = f"no significant increase in {checks.count} checks after {sum(requests):,} requests"
    verdict = Verdict(outcome=outcome, message=message, evidence=evidence)
    new_state = MannWhitneyState(kind=kind, **checks.kept(), hist=(tuple(hist[0]), tuple(hist[1])),
                                 sums=(sums[0], sums[1]), verdict=verdict if seq.finished(outcome) else None)
    return new_state, verdict


def _mean_ratio(hist: list[list[int]], sums: list[float], metric: str) -> float:
    """Kayenta's effect size: the candidate's mean over the baseline's (inf when the baseline's is 0)."""
    n_b, n_c = sum(hist[0]), sum(hist[1])
    if metric == "error-rate":
        mean_b, mean_c = hist[0][1] / n_b, hist[1][1] / n_c
    else:
        mean_b, mean_c = sums[0] / n_b, sums[1] / n_c
    if mean_b <= 0:
        return math.inf if mean_c > 0 else 1.0
    return mean_c / mean_b


def _evidence(test: dict[str, Any], ratio: float) -> dict[str, Any]:
    def clean(x: float) -> float | None:
        return round(x, 6) if math.isfinite(x) else None

    return {
        "statistic": {"u": test["u"], "z": round(test["z"], 4)},
        "p_value": test["p_value"],
        "confidence": test["confidence"],
        "hodges_lehmann": {"estimate": clean(test["estimate"]),
                           "interval": [clean(test["interval"][0]), clean(test["interval"][1])]},
        "effect_size": clean(ratio),
    }


def _sentence(metric: str, test: dict[str, Any], ratio: float, high: bool, requests: tuple[int, int]) -> str:
    unit = " ms" if metric == "latency" else ""
    shift = (f"shift {test['estimate']:+.3g}{unit} ({test['confidence']:.0%} interval "
             f"{test['interval'][0]:+.3g} to {test['interval'][1]:+.3g})")
    what = "High" if high else "Pass"
    return (f"{metric} {what}: mean ratio {ratio:.3g}, {shift}, p = {test['p_value']:.3g} "
            f"after {sum(requests):,} requests")
