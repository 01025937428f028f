"""threshold and mannwhitney: a check once per interval, Flagger's and Kayenta's semantics."""

from __future__ import annotations

import math
import random

import pytest

from stagewise.analysis.judges import judge
from stagewise.analysis.judges.mannwhitney import mann_whitney, representatives
from stagewise.core.judge_state import JUDGE_STATE, JudgeState, ThresholdState
from stagewise.core.spec import AnalysisTemplate, HttpTemplate, PrometheusTemplate, RouterTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats, bucket_of
from stagewise.core.verdict import Outcome, Verdict

pytestmark = pytest.mark.timeout(30)


def stats_of(latencies: list[float], errors: int = 0) -> ReleaseStats:
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for ms in latencies:
        buckets[bucket_of(ms)] += 1
    return ReleaseStats(requests=len(latencies), errors=errors, latency_buckets=buckets, latency_sum_ms=sum(latencies))


def stored(state: JudgeState | None) -> JudgeState | None:
    """`state` as the store gives it back: written as JSON and read again."""
    return None if state is None else JUDGE_STATE.validate_json(JUDGE_STATE.dump_json(state))


def feed(template: AnalysisTemplate, seconds: int, *, rate_b: float, rate_c: float, lat_c: float = 20.0,
         per_second: int = 20, duration: float | None = None, seed: int = 0) -> tuple[list[Verdict], JudgeState | None]:
    """One call per second, as the controller makes them (four times a second would do the same)."""
    rng = random.Random(seed)
    state: JudgeState | None = None
    verdicts = []
    for t in range(1, seconds + 1):
        lat_b = [rng.lognormvariate(math.log(20), 0.3) for _ in range(per_second)]
        lat_cs = [rng.lognormvariate(math.log(lat_c), 0.3) for _ in range(per_second)]
        b = stats_of(lat_b, sum(rng.random() < rate_b for _ in range(per_second)))
        c = stats_of(lat_cs, sum(rng.random() < rate_c for _ in range(per_second)))
        state, verdict = judge(template, stored(state), b, c, elapsed=t, duration=duration)
        verdicts.append(verdict)
        if verdict.outcome in (Outcome.FAILED, Outcome.SUCCESSFUL):
            break
    return verdicts, state


# ---- threshold ----------------------------------------------------------------------------------

def test_threshold_checks_only_at_its_interval_and_fails_after_failure_limit() -> None:
    template = RouterTemplate(judge="threshold", threshold_range={"max": 0.05}, interval=10, failure_limit=2)
    verdicts, _ = feed(template, 60, rate_b=0.01, rate_c=0.3)
    assert [v.evidence["checks"] for v in verdicts[:9]] == [0] * 9  # nothing checked before 10 s
    assert verdicts[9].evidence["checks"] == 1 and verdicts[9].outcome is Outcome.RUNNING
    last = verdicts[-1]
    assert last.outcome is Outcome.FAILED and len(verdicts) == 20  # the second failed check, at 20 s
    assert "out of range [-∞, 0.05] in 2 of 2 checks (failureLimit 2)" in last.message
    assert last.evidence["recent_checks"][-1]["value"] > 0.05


def test_threshold_latency_holds_the_quantile_to_the_range_and_passes_at_the_deadline() -> None:
    template = RouterTemplate(judge="threshold", metric="latency", threshold_range={"max": 200}, interval=10)
    verdicts, _ = feed(template, 40, rate_b=0, rate_c=0, duration=30)
    assert verdicts[-1].outcome is Outcome.SUCCESSFUL, verdicts[-1].message
    assert verdicts[-1].evidence["checks"] == 3 and "p99 latency" in verdicts[-1].message
    slow, _ = feed(template, 40, rate_b=0, rate_c=0, lat_c=250.0, duration=30)
    assert slow[-1].outcome is Outcome.FAILED and len(slow) == 10


def test_threshold_window_grows_until_it_has_min_requests() -> None:
    template = RouterTemplate(judge="threshold", threshold_range={"max": 0.05}, interval=1, min_requests=50)
    state, verdict = judge(template, None, ReleaseStats(requests=9), ReleaseStats(requests=20, errors=5), elapsed=1,
                           duration=None)
    assert verdict.outcome is Outcome.RUNNING and verdict.evidence["empty_checks"] == 1
    state, verdict = judge(template, state, ReleaseStats(requests=9), ReleaseStats(requests=40), elapsed=2,
                           duration=None)
    assert verdict.outcome is Outcome.FAILED  # 5 errors in the 60 requests of the grown window: 8.3%


def test_threshold_on_provider_values_checks_each_value_and_no_value_is_no_data() -> None:
    template = PrometheusTemplate(provider="prometheus", address="http://127.0.0.1:9", query="up", judge="threshold",
                                threshold_range={"min": 0.99}, failure_limit=2)
    empty = ReleaseStats()
    state, v = judge(template, None, empty, empty, elapsed=1, duration=10, values=(None, 0.995))
    state, v = judge(template, state, empty, empty, elapsed=2, duration=10)  # between measurements: nothing
    assert v.evidence["checks"] == 1 and v.outcome is Outcome.RUNNING
    state, v = judge(template, state, empty, empty, elapsed=3, duration=10, values=(None, 0.9))
    state, v = judge(template, state, empty, empty, elapsed=4, duration=10, values=(None, None))
    assert v.outcome is Outcome.RUNNING and v.evidence["empty_checks"] == 1
    state, v = judge(template, state, empty, empty, elapsed=5, duration=10, values=(None, 0.5))
    assert v.outcome is Outcome.FAILED and "2 of 3 checks" in v.message


@pytest.mark.parametrize(("policy", "outcome"), [("wait", Outcome.NO_DATA), ("fail", Outcome.FAILED),
                                                 ("pass", Outcome.SUCCESSFUL)])
def test_threshold_without_any_value_follows_no_data_and_says_what_is_missing(policy: str, outcome: Outcome) -> None:
    template = HttpTemplate(provider="http", url="http://127.0.0.1:9/", judge="threshold", no_data=policy)
    _, v = judge(template, None, ReleaseStats(), ReleaseStats(), elapsed=30, duration=30)
    assert v.outcome is outcome and "no value from the http provider" in v.message and policy in v.message
    probes, _ = judge(template, None, ReleaseStats(), ReleaseStats(), elapsed=1, duration=30, values=(None, 1.0))
    assert isinstance(probes, ThresholdState)
    assert probes.failed == 1  # http and command: any failed probe is a failed check ({max: 0})


def test_threshold_without_a_range_is_inconclusive() -> None:
    _, v = judge(RouterTemplate(judge="threshold"), None, ReleaseStats(), ReleaseStats(), elapsed=1, duration=None)
    assert v.outcome is Outcome.INCONCLUSIVE and "needs thresholdRange" in v.message


# ---- mannwhitney --------------------------------------------------------------------------------

def test_mann_whitney_on_histograms_matches_the_test_on_the_samples() -> None:
    # 1..5 against 3..7 with ties: U, z and p as R's wilcox.test(correct = TRUE) computes them
    values = [float(v) for v in range(8)]
    baseline = [0, 1, 1, 1, 1, 1, 0, 0]
    candidate = [0, 0, 0, 1, 1, 1, 1, 1]
    result = mann_whitney(baseline, candidate, values, 0.98)
    u = sum((c > b) + 0.5 * (c == b) for b in range(1, 6) for c in range(3, 8))
    assert result["u"] == u == 20.5
    n1 = n2 = 5
    ties = sum(t**3 - t for t in (1, 1, 2, 2, 2, 1, 1))
    sigma = math.sqrt(n1 * n2 / 12 * ((n1 + n2 + 1) - ties / ((n1 + n2) * (n1 + n2 - 1))))
    assert result["z"] == pytest.approx((u - 12.5 - 0.5) / sigma)
    assert result["p_value"] == pytest.approx(math.erfc(abs(result["z"]) / math.sqrt(2)))
    assert result["estimate"] == 2.0  # the median of the 25 pairwise differences


def test_mannwhitney_fails_a_shifted_median_at_the_first_check_and_passes_a_good_one() -> None:
    template = RouterTemplate(judge="mannwhitney", metric="latency", interval=10)
    verdicts, _ = feed(template, 60, rate_b=0, rate_c=0, lat_c=30.0)
    last = verdicts[-1]
    assert last.outcome is Outcome.FAILED and len(verdicts) == 10
    assert last.evidence["classification"] == "High" and last.evidence["confidence"] == 0.98
    low, high = last.evidence["hodges_lehmann"]["interval"]
    assert 0 < low <= last.evidence["hodges_lehmann"]["estimate"] <= high
    assert last.evidence["effect_size"] > 1.3
    good, _ = feed(template, 60, rate_b=0, rate_c=0, duration=30, seed=3)
    assert good[-1].outcome is Outcome.SUCCESSFUL, good[-1].message


def test_mannwhitney_allowed_increase_tolerates_a_small_significant_effect() -> None:
    strict = RouterTemplate(judge="mannwhitney", metric="latency", interval=10)
    tolerant = strict.model_copy(update={"allowed_increase": 1.2})
    assert feed(strict, 40, rate_b=0, rate_c=0, lat_c=22.0, duration=30)[0][-1].outcome is Outcome.FAILED
    assert feed(tolerant, 40, rate_b=0, rate_c=0, lat_c=22.0, duration=30)[0][-1].outcome is Outcome.SUCCESSFUL


def test_mannwhitney_error_rate_and_failure_limit() -> None:
    template = RouterTemplate(judge="mannwhitney", metric="error-rate", interval=10, failure_limit=2)
    verdicts, _ = feed(template, 60, rate_b=0.02, rate_c=0.2)
    assert verdicts[-1].outcome is Outcome.FAILED and verdicts[-1].evidence["failed_checks"] == 2
    assert verdicts[-1].evidence["effect_size"] > 3


def test_mannwhitney_critical_metric_without_data_fails_whatever_no_data_says() -> None:
    template = RouterTemplate(judge="mannwhitney", critical=True, no_data="pass", interval=10)
    _, v = judge(template, None, ReleaseStats(requests=3), ReleaseStats(requests=2), elapsed=30, duration=30)
    assert v.outcome is Outcome.FAILED and "a critical metric must have data" in v.message
    assert "baseline 3 of 50 requests needed, candidate 2 of 50" in v.message
    relaxed = template.model_copy(update={"critical": False, "no_data": "wait"})
    _, v = judge(relaxed, {}, ReleaseStats(requests=3), ReleaseStats(requests=2), elapsed=30, duration=30)
    assert v.outcome is Outcome.NO_DATA


def test_representatives_are_ordered_and_inside_their_buckets() -> None:
    values = representatives("latency")
    assert values == sorted(values) and len(values) == len(LATENCY_BOUNDS_MS) + 1
    assert all(lo < v <= hi for lo, v, hi in zip((0.0, *LATENCY_BOUNDS_MS), values, LATENCY_BOUNDS_MS, strict=False))
