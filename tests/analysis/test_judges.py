"""The judges on simulated traffic: false alarms stay under alpha, regressions are caught.

Traffic is simulated request by request with `random.Random(seed)`, fed to the
judge in small increments as the controller would, and every increment is a
look. Fixed seeds: the tests are deterministic.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import statistics
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.analysis.judges import judge
from stagewise.analysis.judges.sequential import log_sum_exp
from stagewise.analysis.judges.sequential_latency import active, judge_latency, log_choose, log_z, rungs
from stagewise.core.judge_state import JUDGE_STATE, ErrorRateState, JudgeState
from stagewise.core.spec import AnalysisTemplate, RouterTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats, bucket_of
from stagewise.core.verdict import Outcome, Verdict

pytestmark = pytest.mark.timeout(30)

ERRORS = RouterTemplate(metric="error-rate", judge="sequential", alpha=0.05)
LATENCY = RouterTemplate(metric="latency", judge="sequential", alpha=0.05)

Latency = Callable[[random.Random, int], float]
"""A latency in ms for the i-th request of an arm."""


def stats_of(latencies: list[float], errors: int = 0) -> ReleaseStats:
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for ms in latencies:
        buckets[bucket_of(ms)] += 1
    return ReleaseStats(requests=len(latencies), errors=errors, latency_buckets=buckets, latency_sum_ms=sum(latencies))


def error_increments(
    rng: random.Random, *, baseline_rate: float, candidate_rate: float, share: float, size: int
) -> Iterator[tuple[ReleaseStats, ReleaseStats]]:
    """Endless increments of `size` requests; each goes to the candidate with probability `share`."""
    while True:
        n = [0, 0]
        e = [0, 0]
        for _ in range(size):
            arm = 1 if rng.random() < share else 0
            n[arm] += 1
            e[arm] += rng.random() < (candidate_rate if arm else baseline_rate)
        yield ReleaseStats(requests=n[0], errors=e[0]), ReleaseStats(requests=n[1], errors=e[1])


def latency_increments(
    rng: random.Random, *, baseline: Latency, candidate: Latency, share: float, size: int
) -> Iterator[tuple[ReleaseStats, ReleaseStats]]:
    counters = [0, 0]
    while True:
        arms: tuple[list[float], list[float]] = ([], [])
        for _ in range(size):
            arm = 1 if rng.random() < share else 0
            arms[arm].append((candidate if arm else baseline)(rng, counters[arm]))
            counters[arm] += 1
        yield stats_of(arms[0]), stats_of(arms[1])


def run(
    template: AnalysisTemplate,
    increments: Iterator[tuple[ReleaseStats, ReleaseStats]],
    *,
    looks: int,
    duration: float | None = None,
    state: JudgeState | None = None,
) -> tuple[JudgeState | None, Verdict, int]:
    """Feed `looks` increments (one per second) until a decision; returns the state, verdict, look."""
    verdict = Verdict(outcome=Outcome.RUNNING)
    for look in range(1, looks + 1):
        baseline, candidate = next(increments)
        state, verdict = judge(template, state, baseline, candidate, elapsed=float(look), duration=duration)
        if verdict.decided:
            return state, verdict, look
    return state, verdict, looks


def two_ms(rng: random.Random, _: int) -> float:
    """Lognormal-ish around 2 ms: almost all of it between 1 and 3 ms."""
    return rng.lognormvariate(math.log(2.0), 0.2)


# ---- error rate ---------------------------------------------------------------------------------


def test_identical_error_rates_false_alarm_at_most_alpha_though_checked_after_every_increment() -> None:
    replications, looks, size = 200, 80, 25
    alarms = 0
    for seed in range(replications):
        rng = random.Random(seed)
        increments = error_increments(rng, baseline_rate=0.1, candidate_rate=0.1, share=0.2, size=size)
        _, verdict, _ = run(ERRORS, increments, looks=looks)
        alarms += verdict.outcome is Outcome.FAILED
    # Ville's bound is alpha; the slack covers the binomial noise of 200 replications.
    assert alarms / replications <= ERRORS.alpha + 0.02


def test_identical_error_rates_under_a_drifting_split_do_not_false_alarm_more() -> None:
    alarms = 0
    for seed in range(80):
        rng = random.Random(10_000 + seed)
        state: JudgeState | None = None
        verdict = Verdict(outcome=Outcome.RUNNING)
        for look in range(1, 51):
            # The split grows like a canary's steps, and jumps around: the test must not care.
            share = min(0.9, 0.01 * look) if look % 7 else 0.5
            baseline, candidate = next(
                error_increments(rng, baseline_rate=0.05, candidate_rate=0.05, share=share, size=20)
            )
            state, verdict = judge(ERRORS, state, baseline, candidate, elapsed=look, duration=None)
            if verdict.decided:
                break
        alarms += verdict.outcome is Outcome.FAILED
    assert alarms / 80 <= ERRORS.alpha + 0.03


def test_candidate_failing_twenty_times_as_often_fails_within_a_few_hundred_requests() -> None:
    requests_needed = []
    for seed in range(20):
        increments = error_increments(random.Random(seed), baseline_rate=0.005, candidate_rate=0.10, share=0.2, size=10)
        _, verdict, look = run(ERRORS, increments, looks=200)
        assert verdict.outcome is Outcome.FAILED, verdict.message
        requests_needed.append(look * 10)
    assert statistics.median(requests_needed) <= 400
    assert max(requests_needed) <= 1500
    assert "candidate error rate" in verdict.message and "≥ 1/α = 20" in verdict.message
    evidence = verdict.evidence
    assert evidence["e_value"] >= 20 and evidence["p_value"] <= 0.05
    assert evidence["rho_hat"] > 2
    assert evidence["error_rate"]["candidate"] > 5 * evidence["error_rate"]["baseline"]
    assert sum(evidence["requests"].values()) == requests_needed[-1]
    assert evidence["errors"]["candidate"] > 0


def test_doubled_error_rate_is_detected() -> None:
    requests_needed = []
    for seed in range(20):
        increments = error_increments(
            random.Random(100 + seed), baseline_rate=0.05, candidate_rate=0.10, share=0.5, size=50
        )
        _, verdict, look = run(ERRORS, increments, looks=200)
        assert verdict.outcome is Outcome.FAILED, f"seed {seed}: {verdict.message}"
        requests_needed.append(look * 50)
    assert statistics.median(requests_needed) <= 3_000


def test_slightly_worse_candidate_within_the_margin_passes() -> None:
    template = ERRORS.model_copy(update={"margin": 1.0})  # twice the baseline's rate is allowed
    increments = error_increments(random.Random(7), baseline_rate=0.05, candidate_rate=0.06, share=0.5, size=50)
    _, verdict, _ = run(template, increments, looks=120, duration=100)
    assert verdict.outcome is Outcome.SUCCESSFUL, verdict.message
    assert "more than 2× the baseline's" in verdict.message


def test_a_state_kept_for_another_grid_starts_afresh() -> None:
    """A delivery in flight across an upgrade that changed the grid of alternatives restarts its e-process."""
    increments = error_increments(random.Random(5), baseline_rate=0.01, candidate_rate=0.01, share=0.5, size=40)
    state, _, _ = run(ERRORS, increments, looks=5)
    assert isinstance(state, ErrorRateState)
    old = dataclasses.replace(state, llr=(0.5,) * (len(state.llr) + 4), max_log_e=2.0)
    baseline, candidate = next(increments)
    new, verdict = judge(ERRORS, old, baseline, candidate, elapsed=6, duration=None)
    assert verdict.outcome is Outcome.RUNNING
    assert isinstance(new, ErrorRateState) and len(new.llr) == len(state.llr)
    assert new.requests == (baseline.requests, candidate.requests)


def test_good_candidate_is_successful_at_the_deadline_and_running_before() -> None:
    increments = error_increments(random.Random(3), baseline_rate=0.01, candidate_rate=0.01, share=0.2, size=40)
    state, verdict, look = run(ERRORS, increments, looks=59, duration=60)
    assert verdict.outcome is Outcome.RUNNING and look == 59
    baseline, candidate = next(increments)
    state, verdict = judge(ERRORS, state, baseline, candidate, elapsed=60, duration=60)
    assert verdict.outcome is Outcome.SUCCESSFUL, verdict.message
    assert "no evidence of an error rate higher than the baseline's" in verdict.message


def test_without_a_duration_a_good_candidate_is_never_final() -> None:
    increments = error_increments(random.Random(4), baseline_rate=0.01, candidate_rate=0.01, share=0.5, size=40)
    _, verdict, _ = run(ERRORS, increments, looks=200, duration=None)
    assert verdict.outcome is Outcome.RUNNING


@pytest.mark.parametrize(
    ("policy", "outcome"),
    [("wait", Outcome.NO_DATA), ("fail", Outcome.FAILED), ("pass", Outcome.SUCCESSFUL)],
)
@pytest.mark.parametrize("metric", ["error-rate", "latency"])
def test_too_little_traffic_at_the_deadline_follows_no_data(policy: str, outcome: Outcome, metric: str) -> None:
    template = RouterTemplate(metric=metric, no_data=policy, min_requests=50)
    state, verdict = judge(template, None, stats_of([2.0] * 12), stats_of([2.0] * 3), elapsed=30, duration=60)
    assert verdict.outcome is Outcome.RUNNING
    state, verdict = judge(template, state, ReleaseStats(), ReleaseStats(), elapsed=60, duration=60)
    assert verdict.outcome is outcome
    assert "baseline 12 of 50 requests needed, candidate 3 of 50" in verdict.message
    assert f"noData: {policy}" in verdict.message
    assert verdict.evidence["no_data"] == policy


def test_no_traffic_at_all_is_never_a_silent_pass() -> None:
    _, verdict = judge(ERRORS, None, ReleaseStats(), ReleaseStats(), elapsed=60, duration=60)
    assert verdict.outcome is Outcome.NO_DATA
    assert "baseline 0 of 50 requests needed, candidate 0 of 50" in verdict.message


def test_waiting_for_data_turns_successful_when_traffic_arrives() -> None:
    state, verdict = judge(ERRORS, None, ReleaseStats(requests=10), ReleaseStats(requests=5), elapsed=60, duration=60)
    assert verdict.outcome is Outcome.NO_DATA
    state, verdict = judge(ERRORS, state, ReleaseStats(requests=30), ReleaseStats(requests=30), elapsed=61, duration=60)
    assert verdict.outcome is Outcome.NO_DATA
    assert "baseline 40 of 50 requests needed, candidate 35 of 50" in verdict.message
    state, verdict = judge(ERRORS, state, ReleaseStats(requests=20), ReleaseStats(requests=20), elapsed=62, duration=60)
    assert verdict.outcome is Outcome.SUCCESSFUL, verdict.message


def test_a_decided_verdict_is_final() -> None:
    state, verdict = judge(
        ERRORS,
        None,
        ReleaseStats(requests=400, errors=0),
        ReleaseStats(requests=100, errors=30),
        elapsed=1,
        duration=60,
    )
    assert verdict.outcome is Outcome.FAILED
    again_state, again = judge(
        ERRORS, state, ReleaseStats(requests=10**6), ReleaseStats(requests=10**6), elapsed=90, duration=60
    )
    assert again == verdict and again_state == state


def test_increments_without_both_arms_carry_no_evidence() -> None:
    state, first = judge(
        ERRORS,
        None,
        ReleaseStats(requests=100, errors=5),
        ReleaseStats(requests=100, errors=5),
        elapsed=1,
        duration=None,
    )
    for baseline, candidate in [
        (ReleaseStats(), ReleaseStats()),
        (ReleaseStats(), ReleaseStats(requests=50, errors=50)),
        (ReleaseStats(requests=50, errors=0), ReleaseStats()),
        (ReleaseStats(), ReleaseStats(requests=0, errors=3)),  # errors the router counted without requests
    ]:
        state, verdict = judge(ERRORS, state, baseline, candidate, elapsed=2, duration=None)
        assert verdict.evidence["e_value"] == first.evidence["e_value"]


def _json(state: JudgeState | None) -> JudgeState | None:
    """`state` as the store gives it back: written as JSON and read again."""
    return None if state is None else JUDGE_STATE.validate_json(JUDGE_STATE.dump_json(state))


@pytest.mark.parametrize("template", [ERRORS, LATENCY], ids=["error-rate", "latency"])
def test_state_survives_a_json_round_trip_with_identical_results(template: AnalysisTemplate) -> None:
    def slow_tail(rng: random.Random, i: int) -> float:
        return two_ms(rng, i) + (100.0 if i % 20 == 0 else 0.0)

    def feed(rng: random.Random) -> Iterator[tuple[ReleaseStats, ReleaseStats]]:
        if template.metric == "latency":
            return latency_increments(rng, baseline=two_ms, candidate=slow_tail, share=0.3, size=10)
        return error_increments(rng, baseline_rate=0.02, candidate_rate=0.06, share=0.3, size=10)

    plain, through_json = feed(random.Random(5)), feed(random.Random(5))
    state_a: JudgeState | None = None
    state_b: JudgeState | None = None
    verdicts = []
    for look in range(1, 301):
        (b1, c1), (b2, c2) = next(plain), next(through_json)
        state_a, verdict_a = judge(template, state_a, b1, c1, elapsed=look, duration=300)
        state_b, verdict_b = judge(template, _json(state_b), b2, c2, elapsed=look, duration=300)
        assert verdict_a == verdict_b
        assert state_a == _json(state_b)
        verdicts.append(verdict_a.outcome)
        if verdict_a.decided:
            break
    assert verdicts[-1] is Outcome.FAILED  # the comparison covered a whole run up to a decision


def test_judge_does_not_mutate_the_state_it_is_given() -> None:
    state, _ = judge(
        ERRORS,
        None,
        ReleaseStats(requests=50, errors=1),
        ReleaseStats(requests=50, errors=3),
        elapsed=1,
        duration=None,
    )
    frozen = JUDGE_STATE.dump_json(state)
    judge(
        ERRORS,
        state,
        ReleaseStats(requests=50, errors=1),
        ReleaseStats(requests=50, errors=9),
        elapsed=2,
        duration=None,
    )
    assert JUDGE_STATE.dump_json(state) == frozen


# ---- latency ------------------------------------------------------------------------------------


def test_tail_only_regression_fails() -> None:
    def every_twentieth_slow(rng: random.Random, i: int) -> float:
        return two_ms(rng, i) + (100.0 if i % 20 == 19 else 0.0)

    for seed in range(5):
        increments = latency_increments(
            random.Random(seed), baseline=two_ms, candidate=every_twentieth_slow, share=0.2, size=20
        )
        _, verdict, look = run(LATENCY, increments, looks=200)
        assert verdict.outcome is Outcome.FAILED, verdict.message
        assert look * 20 <= 2_000
    assert "candidate requests slower than" in verdict.message
    worst = verdict.evidence["worst"]
    assert 5 <= worst["threshold_ms"] <= 100
    assert worst["slow"]["candidate"] > 0 and worst["slow"]["baseline"] == 0
    quantiles = verdict.evidence["latency_ms"]
    assert quantiles["baseline"]["p50"] == quantiles["candidate"]["p50"]  # the median did not move
    assert quantiles["candidate"]["p99"] > 100 > quantiles["baseline"]["p99"]


def test_identical_fast_latencies_never_fail_and_pass_at_the_deadline() -> None:
    def one_to_three(rng: random.Random, _: int) -> float:
        return rng.uniform(1.0, 3.0)

    for seed in range(5):
        increments = latency_increments(
            random.Random(seed), baseline=two_ms, candidate=one_to_three, share=0.2, size=20
        )
        _, verdict, _ = run(LATENCY, increments, looks=150, duration=150)
        assert verdict.outcome is Outcome.SUCCESSFUL, verdict.message


def test_identical_heavy_tailed_latencies_false_alarm_at_most_alpha() -> None:
    # Around 20 ms with a long tail: every rung up to seconds sees events, so this can fail.
    def heavy(rng: random.Random, _: int) -> float:
        return rng.lognormvariate(math.log(20.0), 1.0)

    alarms = 0
    for seed in range(30):
        increments = latency_increments(random.Random(seed), baseline=heavy, candidate=heavy, share=0.3, size=30)
        _, verdict, _ = run(LATENCY, increments, looks=40)
        alarms += verdict.outcome is Outcome.FAILED
    assert alarms <= 3  # 10%: alpha plus the noise of 30 replications


def test_rungs_count_once_requests_fall_on_both_sides_of_them() -> None:
    # seen: 10 requests so far; per rung, how many of them were slower than it
    assert active([10, 10, 7, 3, 0, 0]) == [1, 2]
    assert active([0, 0, 0]) == []


def test_rungs_far_from_the_traffic_do_not_dilute_the_evidence() -> None:
    # The same regression judged with rungs from 5 ms and from 0.1 ms (more rungs below every request):
    # idle rungs get no weight, so both decide at the same look.
    def slower(rng: random.Random, i: int) -> float:
        return rng.lognormvariate(math.log(40.0), 0.3) * 1.3

    def base(rng: random.Random, _: int) -> float:
        return rng.lognormvariate(math.log(40.0), 0.3)

    looks = []
    for floor in (0.005, 0.0001):
        increments = latency_increments(random.Random(1), baseline=base, candidate=slower, share=0.5, size=10)
        template = RouterTemplate(metric="latency", judge="sequential", floor=floor)
        _, verdict, look = run(template, increments, looks=200)
        assert verdict.outcome is Outcome.FAILED, verdict.message
        looks.append(look)
    assert looks[0] == looks[1]


@settings(max_examples=200, deadline=None)
@given(n_b=st.integers(1, 2_000), n_c=st.integers(1, 2_000), share=st.floats(0.001, 0.999),
       log_psi=st.floats(-2.0, 5.0))
def test_the_normaliser_walked_from_its_peak_equals_the_full_sum(
    n_b: int, n_c: int, share: float, log_psi: float
) -> None:
    slow = min(n_b + n_c - 1, max(1, round(share * (n_b + n_c))))
    ys = range(max(0, slow - n_b), min(slow, n_c) + 1)
    full = log_sum_exp([log_choose(n_c, y) + log_choose(n_b, slow - y) + y * log_psi for y in ys])
    assert log_z(n_b, n_c, slow, math.exp(log_psi)) == pytest.approx(full, rel=1e-12, abs=1e-9)


def test_uniformly_half_a_millisecond_slower_at_two_ms_passes_thanks_to_the_floor() -> None:
    def slower(rng: random.Random, i: int) -> float:
        return two_ms(rng, i) + 0.5

    increments = latency_increments(random.Random(8), baseline=two_ms, candidate=slower, share=0.5, size=50)
    _, verdict, _ = run(LATENCY, increments, looks=100, duration=100)
    assert verdict.outcome is Outcome.SUCCESSFUL, verdict.message

    # Without the floor the same shift is found at once: the floor is what lets it pass.
    increments = latency_increments(random.Random(8), baseline=two_ms, candidate=slower, share=0.5, size=50)
    state: JudgeState | None = None
    for look in range(1, 101):
        baseline, candidate = next(increments)
        state, verdict = judge_latency(LATENCY, state, baseline, candidate, elapsed=look, duration=100, floor_ms=0.25)
        if verdict.decided:
            break
    assert verdict.outcome is Outcome.FAILED


def test_latency_rungs_start_at_the_floor_and_take_every_bound() -> None:
    # every bound, 25 % apart: a doubling ladder stepped over the narrow band where a tail-only shift shows
    ladder = [LATENCY_BOUNDS_MS[i] for i in rungs()]
    assert 5.0 <= ladder[0] < 7.0
    assert all(1.24 < b / a < 1.26 for a, b in itertools.pairwise(ladder))
    assert ladder[-1] == LATENCY_BOUNDS_MS[-1]


# ---- properties ---------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=5_000)


def _histogram(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice((0, 0, 0, 1, 7, 300)) for _ in range(length)]


histograms = st.builds(
    _histogram, st.integers(min_value=0, max_value=len(LATENCY_BOUNDS_MS) + 1), st.integers(0, 2**32)
)
"""Histograms of any length up to the full one (shorter ones mean zeros), mostly empty buckets."""
increments_strategy = st.lists(
    st.tuples(counts, counts, counts, counts, histograms, histograms), min_size=1, max_size=12
)


@settings(max_examples=40, deadline=None)
@given(
    increments=increments_strategy,
    metric=st.sampled_from(["error-rate", "latency"]),
    margin=st.one_of(st.none(), st.floats(min_value=0, max_value=10)),
    alpha=st.floats(min_value=1e-6, max_value=0.5),
    duration=st.one_of(st.none(), st.floats(min_value=0, max_value=30)),
)
def test_judge_never_raises_and_e_values_stay_valid(
    increments: list[tuple[int, int, int, int, list[int], list[int]]],
    metric: str,
    margin: float | None,
    alpha: float,
    duration: float | None,
) -> None:
    template = RouterTemplate(metric=metric, margin=margin, alpha=alpha)
    state: JudgeState | None = None
    for look, (n_b, e_b, n_c, e_c, h_b, h_c) in enumerate(increments):
        baseline = ReleaseStats(requests=n_b, errors=min(e_b, n_b), latency_buckets=h_b)
        candidate = ReleaseStats(requests=n_c, errors=e_c, latency_buckets=h_c)  # errors may exceed requests
        state, verdict = judge(template, _json(state), baseline, candidate, elapsed=look, duration=duration)
        e = verdict.evidence["e_value"]
        assert 0.0 <= e < math.inf
        assert 0.0 <= verdict.evidence["p_value"] <= 1.0
        assert json.loads(json.dumps(verdict.evidence, allow_nan=False)) is not None
        if verdict.outcome is Outcome.FAILED and "noData" not in verdict.message:
            assert e >= 1 / alpha * (1 - 1e-12)
