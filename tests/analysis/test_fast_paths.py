"""What the judges make by hand on every look is what the slower general way makes: a histogram's quantiles
(`ReleaseStats.quantile_ms`); and a brief look (a Running verdict left unsaid) decides as a full one."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stagewise.analysis.judges import judge, runs
from stagewise.analysis.judges.runs import judge_runs
from stagewise.analysis.judges.sequential_latency import QUANTILES, _quantiles
from stagewise.core.delivery import AnalysisRun, Delivery, Phase
from stagewise.core.spec import ServiceSpec
from stagewise.core.stats import ReleaseStats, RouterStats, bucket_of
from stagewise.core.verdict import Outcome


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=61).map(lambda h: h + [0] * (61 - len(h))))
def test_the_latency_judges_quantiles_are_the_histograms(hist: list[int]) -> None:
    stats = ReleaseStats(latency_buckets=hist)
    expected = {name: (v if math.isfinite(v := stats.quantile_ms(q)) else None) for name, q in QUANTILES}
    assert _quantiles(hist) == expected
    assert list(_quantiles(hist)) == [name for name, _ in QUANTILES]


# --- brief looks ---------------------------------------------------------------------------------------------


def _stats(looks: int, *, errors_from: int, slow_from: int) -> RouterStats:
    """The router's counters after `looks` quarter-seconds: 40 requests a look per arm; the candidate fails 20 %
    of its requests from look `errors_from` on, and answers in 8 ms instead of 2 from look `slow_from` on."""
    bad = max(0, looks - errors_from)
    slow = max(0, looks - slow_from)
    fast_c = 40 * looks - 40 * slow
    baseline = [0] * 61
    baseline[bucket_of(2.0)] = 40 * looks
    candidate = [0] * 61
    candidate[bucket_of(2.0)] = fast_c
    candidate[bucket_of(8.0)] += 40 * slow
    return RouterStats.model_construct(boot="b", inflight={}, releases={
        "v1": ReleaseStats(requests=40 * looks, errors=looks // 10, latency_buckets=baseline),
        "v2": ReleaseStats(requests=40 * looks, errors=8 * bad + looks // 10, latency_buckets=candidate),
    })


def _looks(*, errors_from: int, slow_from: int, seconds: float) -> list[Delivery]:
    spec = ServiceSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "shop"},
        "spec": {"listen": "127.0.0.1:18080", "release": {"version": "v2", "run": {"command": ["app"]}},
                 "analysis": {"errors": {"metric": "error-rate"}, "latency": {"metric": "latency"}}}})
    stable = spec.spec.release.model_copy(update={"version": "v1"})
    start = _stats(0, errors_from=errors_from, slow_from=slow_from)
    d = Delivery(service="shop", spec=spec, stable=stable, phase=Phase.PROGRESSING, analysis={"step-1": AnalysisRun(
        key="step-1", templates=["errors", "latency"], started_at=0.0, duration=seconds, since=start, last=start)})
    out = []
    for look in range(1, int(seconds / 0.25) + 2):
        d = judge_runs(d, _stats(look, errors_from=errors_from, slow_from=slow_from), look * 0.25)
        out.append(d)
    return out


@pytest.mark.parametrize(("errors_from", "slow_from"), [(10**6, 10**6), (30, 10**6), (10**6, 30), (30, 30)])
def test_a_brief_look_decides_as_a_full_one_and_every_point_says_the_same(
    monkeypatch: pytest.MonkeyPatch, errors_from: int, slow_from: int
) -> None:
    """A look between two points leaves a Running verdict unsaid: the judges' states, every outcome, the history
    and the verdict at each point (and at the end) are those of looks that always say everything."""
    brief = _looks(errors_from=errors_from, slow_from=slow_from, seconds=20)
    monkeypatch.setattr(runs, "judge", lambda *args, brief, **kwargs: judge(*args, **kwargs))
    full = _looks(errors_from=errors_from, slow_from=slow_from, seconds=20)
    outcomes = set()
    for look, (b, f) in enumerate(zip(brief, full, strict=True), start=1):
        rb, rf = b.analysis["step-1"], f.analysis["step-1"]
        assert rb.judge_state == rf.judge_state and rb.history == rf.history
        assert rb.verdict.outcome is rf.verdict.outcome
        outcomes.add(rb.verdict.outcome)
        if rb.history[-1]["t"] == look * 0.25 or rb.verdict.outcome is not Outcome.RUNNING:
            assert rb.verdict == rf.verdict  # a look that made a point, or decided, said everything
    assert brief[-1].analysis["step-1"].verdict == full[-1].analysis["step-1"].verdict
    stale = [b for b, f in zip(brief, full, strict=True)
             if b.analysis["step-1"].verdict != f.analysis["step-1"].verdict]
    assert stale, "no look was brief"
    expected = Outcome.SUCCESSFUL if (errors_from, slow_from) == (10**6, 10**6) else Outcome.FAILED
    assert brief[-1].analysis["step-1"].verdict.outcome is expected, outcomes


def test_a_look_in_a_hurry_leaves_a_point_due_to_a_later_look_one_period_at_most_and_never_the_deciding_one() -> None:
    """`points=False` (a look the controller took in a tick short of time): a point of history comes once the last
    is two periods old, not one; the judges' states are those of looks that take every point; the deciding
    point is kept."""
    steady = _looks(errors_from=10**6, slow_from=10**6, seconds=20)
    start = steady[0].analysis["step-1"].since
    d = steady[0].model_copy(update={"analysis": {"step-1": AnalysisRun(
        key="step-1", templates=["errors", "latency"], started_at=0.0, duration=20.0, since=start, last=start)}})
    for look in range(1, 24):  # 5.75 s of looks in a hurry
        d = judge_runs(d, _stats(look, errors_from=10**6, slow_from=10**6), look * 0.25, points=False)
        assert d.analysis["step-1"].judge_state == steady[look - 1].analysis["step-1"].judge_state
    hurried = [p["t"] for p in d.analysis["step-1"].history]
    assert hurried == [0.25, 2.25, 4.25], hurried
    assert [p["t"] for p in steady[22].analysis["step-1"].history] == [0.25, 1.25, 2.25, 3.25, 4.25, 5.25]
    failing = d
    for look in range(24, 80):
        failing = judge_runs(failing, _stats(look, errors_from=24, slow_from=10**6), look * 0.25, points=False)
        if failing.analysis["step-1"].verdict.outcome is Outcome.FAILED:
            break
    run = failing.analysis["step-1"]
    assert run.verdict.outcome is Outcome.FAILED and run.history[-1]["outcome"] == "Failed"
    assert run.history[-1]["t"] - run.history[-2]["t"] < 2.0  # the deciding point, whatever the hurry
