"""The sequential value judge: a gauge's mean, candidate against baseline, checked after every scrape.

Validity by simulation: A/A runs (both releases drawn alike, pair by pair)
looked at after every pair must false-alarm in at most alpha of the runs —
here and with k = 5 metrics sharing one run's alpha. Power: a shift beyond
the margin is caught, in the direction asked for.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from stagewise.analysis.judges import judge
from stagewise.analysis.judges.runs import judge_runs, split_alpha
from stagewise.analysis.judges.sequential_value import Tally, fresh_state, loss_scale
from stagewise.core.analysis_spec import parse_template
from stagewise.core.delivery import AnalysisRun, Delivery
from stagewise.core.judge_state import JUDGE_STATE, JudgeState, ValueState
from stagewise.core.spec import AnalysisTemplate, PrometheusTemplate, ServiceSpec
from stagewise.core.stats import ReleaseStats, RouterStats
from stagewise.core.verdict import Outcome, Verdict

pytestmark = pytest.mark.timeout(120)

EMPTY = ReleaseStats()
Draw = Callable[[random.Random, int], float]
"""A value of one release at scrape t."""


def template(**fields: object) -> PrometheusTemplate:
    base: dict[str, object] = {"provider": "prometheus", "address": "http://127.0.0.1:9090", "query": "q",
                               "metric": "value", "bounds": {"min": 0, "max": 1}}
    return PrometheusTemplate.model_validate({**base, **fields})


def interval95(alarms: int, runs: int) -> tuple[float, float]:
    """Wilson's 95 % interval of a binomial proportion."""
    z = 1.959964
    p = alarms / runs
    centre = (p + z * z / (2 * runs)) / (1 + z * z / runs)
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / (1 + z * z / runs)
    return max(0.0, centre - half), min(1.0, centre + half)


def false_alarms(t: AnalysisTemplate, baseline: Draw, candidate: Draw, *, runs: int, pairs: int, seed: int) -> int:
    """Runs whose e-value ever reached 1/alpha, looked at after every pair."""
    bound = math.log(1 / t.alpha)
    alarms = 0
    for run in range(runs):
        rng = random.Random(seed * 100_003 + run)
        tally = Tally(fresh_state(t))
        for i in range(pairs):
            tally.add(baseline(rng, i), candidate(rng, i))
            if tally.log_e >= bound:
                alarms += 1
                break
    return alarms


def drifting_share(rng: random.Random, t: int) -> float:
    """A CPU share that follows the load (a shared curve) with scrape noise: 0.4 ± 0.15 ± 0.05."""
    return 0.4 + 0.15 * math.sin(t / 25) + rng.gauss(0.0, 0.05)


def queue_length(rng: random.Random, _: int) -> float:
    """Skewed: exponential with mean 5 in bounds [0, 100]."""
    return rng.expovariate(1 / 5)


def coin(rng: random.Random, _: int) -> float:
    """The worst case for a bounded test: every value at a bound."""
    return float(rng.random() < 0.5)


@pytest.mark.parametrize(("name", "draw", "bounds", "direction"), [
    ("drifting CPU share", drifting_share, (0, 1), "increase"),
    ("skewed queue length", queue_length, (0, 100), "either"),
    ("values at the bounds", coin, (0, 1), "decrease"),
])
def test_a_a_false_alarms_at_most_alpha_checked_after_every_pair(
    name: str, draw: Draw, bounds: tuple[float, float], direction: str
) -> None:
    t = template(bounds={"min": bounds[0], "max": bounds[1]}, direction=direction)
    runs = 1000
    alarms = false_alarms(t, draw, draw, runs=runs, pairs=200, seed=1)
    low, high = interval95(alarms, runs)
    print(f"A/A {name}: {alarms}/{runs} = {alarms / runs:.1%} (95 % interval {low:.1%}–{high:.1%})")
    assert alarms / runs <= t.alpha


def test_five_metrics_sharing_one_run_keep_its_alpha() -> None:
    """k = 5 metrics, each at alpha/5 (Bonferroni on e-values): a run false-alarms if any of them does."""
    t = split_alpha(template(direction="either"), 5)
    assert t.alpha == pytest.approx(0.01)
    bound = math.log(1 / t.alpha)
    runs, alarms = 1000, 0
    for run in range(runs):
        rng = random.Random(7_000_000 + run)
        tallies = [Tally(fresh_state(t)) for _ in range(5)]
        failed = False
        for i in range(120):
            for tally in tallies:
                tally.add(drifting_share(rng, i), drifting_share(rng, i))
                failed = failed or tally.log_e >= bound
            if failed:
                break
        alarms += failed
    low, high = interval95(alarms, runs)
    print(f"A/A k=5: {alarms}/{runs} = {alarms / runs:.1%} (95 % interval {low:.1%}–{high:.1%})")
    assert alarms / runs <= 0.05


def shifted(by: float) -> Draw:
    return lambda rng, t: drifting_share(rng, t) * (1 + by)


@pytest.mark.parametrize(("direction", "shift", "fails"), [
    ("increase", 0.25, True), ("increase", -0.25, False),
    ("decrease", -0.25, True), ("decrease", 0.25, False),
    ("either", 0.25, True), ("either", -0.25, True),
])
def test_a_shift_fails_only_in_the_direction_asked_for(direction: str, shift: float, fails: bool) -> None:
    t = template(direction=direction)
    state: JudgeState | None = None
    rng = random.Random(3)
    verdict = Verdict(outcome=Outcome.RUNNING)
    for i in range(300):
        values = (drifting_share(rng, i), shifted(shift)(rng, i))
        state, verdict = judge(t, state, EMPTY, EMPTY, elapsed=float(i), duration=None, values=values)
        if verdict.decided:
            break
    assert (verdict.outcome is Outcome.FAILED) is fails, verdict.message
    if fails:
        assert i < 150 and ("higher" if shift > 0 else "lower") in verdict.message
        assert verdict.evidence["metric"] == "value" and verdict.evidence["pairs"] == i + 1


def test_a_shift_within_the_margin_passes_at_the_deadline() -> None:
    t = template(margin=0.2)
    state: JudgeState | None = None
    rng = random.Random(5)
    for i in range(200):
        values = (drifting_share(rng, i), shifted(0.05)(rng, i))
        state, verdict = judge(t, state, EMPTY, EMPTY, elapsed=float(i), duration=199.0, values=values)
    assert verdict.outcome is Outcome.SUCCESSFUL, verdict.message
    assert "more than 1.2× the baseline's" in verdict.message


def test_missing_values_are_no_data_never_a_pass() -> None:
    t = template(min_samples=5)
    state: JudgeState | None = None
    for i in range(10):
        state, verdict = judge(t, state, EMPTY, EMPTY, elapsed=float(i), duration=9.0, values=(0.5, None))
    assert verdict.outcome is Outcome.NO_DATA
    assert "too few samples" in verdict.message and "candidate 0 of 5 samples needed" in verdict.message


def test_values_outside_the_bounds_are_clipped_and_counted() -> None:
    t = template()
    _, verdict = judge(t, None, EMPTY, EMPTY, elapsed=1.0, duration=None, values=(-3.0, 7.0))
    assert verdict.evidence["clipped"] == 2 and verdict.evidence["mean"] == {"baseline": 0.0, "candidate": 1.0}


def test_state_survives_a_json_round_trip_and_a_decision_is_final() -> None:
    t = template()
    state: JudgeState | None = None
    rng = random.Random(9)
    for i in range(300):
        values = (drifting_share(rng, i), shifted(0.3)(rng, i))
        stored = JUDGE_STATE.validate_python(JUDGE_STATE.dump_python(state, mode="json")) if state else None
        state, verdict = judge(t, stored, EMPTY, EMPTY, elapsed=float(i), duration=None, values=values)
        if verdict.decided:
            break
    assert verdict.outcome is Outcome.FAILED and isinstance(state, ValueState)
    again, repeated = judge(t, state, EMPTY, EMPTY, elapsed=999.0, duration=999.0, values=(0.0, 0.0))
    assert repeated == verdict and again == state


def test_a_state_for_another_margin_starts_afresh() -> None:
    state, _ = judge(template(), None, EMPTY, EMPTY, elapsed=1.0, duration=None, values=(0.2, 0.9))
    fresh, verdict = judge(template(margin=0.5), state, EMPTY, EMPTY, elapsed=2.0, duration=None, values=None)
    assert isinstance(fresh, ValueState) and fresh.pairs == 0 and verdict.evidence["margin"] == 0.5


def test_the_loss_scale_bounds_every_pair_below_by_minus_one() -> None:
    for direction, margin in (("increase", 0.0), ("increase", 0.3), ("decrease", 0.2)):
        scale = loss_scale(direction, margin, 2.0, 10.0)
        for b in (2.0, 10.0):
            for c in (2.0, 10.0):
                d = c - (1 + margin) * b if direction == "increase" else (1 - margin) * b - c
                assert d / scale >= -1 - 1e-12


@pytest.mark.parametrize(("fields", "words"), [
    ({"bounds": None}, "needs bounds"),
    ({"judge": "mannwhitney"}, "not mannwhitney"),
    ({"margin": 0.1, "bounds": {"min": -1, "max": 1}}, "bounds.min ≥ 0"),
    ({"margin": 1.0, "direction": "either"}, "allows any decrease"),
    ({"bounds": {"min": 1, "max": 1}}, "min must be below max"),
    ({"query": None}, "needs a query"),
])
def test_a_value_template_that_cannot_be_judged_is_refused_with_reasons(fields: dict[str, object],
                                                                        words: str) -> None:
    data: dict[str, object] = {"provider": "prometheus", "address": "http://127.0.0.1:9090", "query": "q",
                               "metric": "value", "bounds": {"min": 0, "max": 1}, **fields}
    with pytest.raises(ValidationError, match=words):
        parse_template({k: v for k, v in data.items() if v is not None})


def test_router_and_error_rate_templates_refuse_value_fields() -> None:
    with pytest.raises(ValidationError, match="router counts requests"):
        parse_template({"metric": "value", "bounds": {"min": 0, "max": 1}})
    with pytest.raises(ValidationError, match="direction is for metric: value"):
        parse_template({"metric": "error-rate", "direction": "decrease"})
    with pytest.raises(ValidationError, match="needs total"):
        parse_template({"provider": "prometheus", "address": "http://x", "query": "errors_total"})


# ---- several metrics, one decision -------------------------------------------------------------


def router_delivery(templates: dict[str, dict[str, object]]) -> Delivery:
    spec = ServiceSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "shop"},
        "spec": {"listen": "127.0.0.1:1", "release": {"version": "v2", "run": {"command": ["x"]}},
                 "strategy": {"canary": {"steps": [{"analysis": {"templates": list(templates)}}]}},
                 "analysis": templates},
    })
    stable = spec.spec.release.model_copy(update={"version": "v1"})
    run = AnalysisRun(key="step-0", templates=list(templates), started_at=0.0, duration=None)
    return Delivery(id=1, service="shop", spec=spec, stable=stable, analysis={"step-0": run})


def test_a_run_of_several_sequential_metrics_splits_alpha_and_names_the_one_that_failed() -> None:
    d = router_delivery({"errors": {"metric": "error-rate"}, "latency": {"metric": "latency"},
                         "p99": {"metric": "latency", "judge": "threshold", "thresholdRange": {"max": 10_000}}})
    fast = [0] * 20 + [100] + [0] * 40
    totals = {"v1": [0, 0], "v2": [0, 0]}
    for second in range(120):
        totals["v1"] = [totals["v1"][0] + 100, totals["v1"][1] + 1]
        totals["v2"] = [totals["v2"][0] + 100, totals["v2"][1] + 12]
        stats = RouterStats(boot="b", releases={
            v: ReleaseStats(requests=n, errors=e, latency_buckets=[x * n // 100 for x in fast])
            for v, (n, e) in totals.items()})
        d = judge_runs(d, stats, float(second))
        if d.analysis["step-0"].verdict.outcome is Outcome.FAILED:
            break
    verdict = d.analysis["step-0"].verdict
    assert verdict.outcome is Outcome.FAILED and verdict.message.startswith("errors: candidate error rate")
    metrics = {m["evidence"]["template"]: m["evidence"] for m in verdict.evidence["metrics"]}
    assert metrics["errors"]["alpha"] == metrics["latency"]["alpha"] == pytest.approx(0.025)  # two sequential
    assert metrics["errors"]["threshold"] == pytest.approx(40.0)
    assert metrics["p99"]["judge"] == "threshold"  # not sequential: its own checks, alpha untouched
