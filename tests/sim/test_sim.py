"""The simulator: the real planner and judges on a virtual clock, fast and reproducible."""

from __future__ import annotations

import random
import time

import pytest

from stagewise.core.spec import CanarySpec
from stagewise.sim import default_scenario, run_one
from stagewise.sim.draws import Exposure, binomial, cohort_size, multinomial, poisson
from stagewise.sim.scenario import Scenario

pytestmark = pytest.mark.timeout(120)

HOUR_CANARY = CanarySpec.model_validate({
    "steps": [{"setWeight": 10}, {"pause": {"duration": "20m"}}, {"setWeight": 30}, {"pause": {"duration": "20m"}},
              {"setWeight": 60}, {"pause": {"duration": "20m"}}],
    "analysis": {"templates": ["errors"], "startingStep": 0},
}, by_alias=True)


def with_canary(scenario: Scenario, canary: CanarySpec) -> Scenario:
    return scenario.model_copy(update={"strategies": scenario.strategies.model_copy(update={"canary": canary})})


def test_one_simulated_hour_of_a_canary_takes_under_a_second() -> None:
    scenario = with_canary(default_scenario(), HOUR_CANARY)
    walls = []
    for _ in range(3):  # the best of three: other processes on the machine only ever slow a run down
        started = time.perf_counter()
        result = run_one(scenario, "canary", "good", seed=1)
        walls.append(time.perf_counter() - started)
        if walls[-1] < 1.0:
            break
    assert result.outcome == "Succeeded"
    assert result.finished_at is not None and result.finished_at >= 3600, result.finished_at
    assert min(walls) < 1.0, walls


@pytest.mark.parametrize("strategy", ["full", "phased", "canary", "blue-green"])
def test_a_good_release_is_promoted_and_a_bad_one_is_rolled_back(strategy: str) -> None:
    scenario = default_scenario()
    good = run_one(scenario, strategy, "good", seed=3)  # type: ignore[arg-type]
    bad = run_one(scenario, strategy, "bad", seed=3)  # type: ignore[arg-type]
    assert good.outcome == "Succeeded" and good.serving == "v2"
    assert good.full_at is not None
    assert bad.serving == "v1" and bad.decided_at is not None
    assert bad.gone_at is not None and bad.gone_at >= bad.decided_at
    assert bad.candidate_requests > 0 and 0 < bad.candidate_users <= bad.candidate_requests
    if strategy == "full":  # no analysis: a person undoes it after the alert
        assert bad.outcome == "Undone" and bad.decided_by == "person (undo)"
        assert bad.decided_at is not None and bad.decided_at >= scenario.human.delay
        assert good.downtime > 0 and good.peak_extra == 0
    else:
        assert bad.outcome == "RolledBack" and bad.decided_by == "analysis", bad.reason
        assert bad.candidate_requests < 1000


def test_a_seed_reproduces_a_run_exactly() -> None:
    scenario = default_scenario()
    a, b = (run_one(scenario, "canary", "bad", seed=7, record=True) for _ in range(2))
    assert a == b
    assert run_one(scenario, "canary", "bad", seed=8) != a


@pytest.mark.parametrize("strategy", ["phased", "canary", "blue-green"])
def test_the_shortcuts_reach_the_same_outcomes_as_asking_every_tick(strategy: str) -> None:
    """Skipping `advance` and the judges when nothing can change them must not change what happens."""
    scenario = default_scenario()
    for seed in range(4):
        for which in ("good", "bad"):
            fast = run_one(scenario, strategy, which, seed)  # type: ignore[arg-type]
            exact = run_one(scenario, strategy, which, seed, exact=True)  # type: ignore[arg-type]
            assert (fast.outcome, fast.serving, fast.decided_by) == (exact.outcome, exact.serving, exact.decided_by)
            if fast.decided_at is not None and exact.decided_at is not None:
                assert abs(fast.decided_at - exact.decided_at) <= 15
            if which == "good":
                assert fast.finished_at == exact.finished_at


def test_an_instance_that_crashes_on_start_aborts_a_wave() -> None:
    scenario = default_scenario()
    bad = scenario.releases.bad.model_copy(update={"crash_on_start": 1.0, "error_rate": 0.001})
    scenario = scenario.model_copy(update={"releases": scenario.releases.model_copy(update={"bad": bad})})
    result = run_one(scenario, "phased", "bad", seed=0)
    assert result.outcome == "RolledBack"
    assert result.decided_by == "instances", result.reason
    assert result.candidate_requests == 0


def test_a_blue_green_without_preview_traffic_waits_for_the_deadline() -> None:
    """With no tester on the preview route the pre-promotion analysis has no data: NoData, then the deadline."""
    scenario = default_scenario()
    testers = scenario.traffic.testers.model_copy(update={"share": 0.0})
    traffic = scenario.traffic.model_copy(update={"testers": testers})
    scenario = scenario.model_copy(update={"traffic": traffic, "progress_deadline": 300.0})
    result = run_one(scenario, "blue-green", "good", seed=0)
    assert result.outcome == "RolledBack"
    assert result.decided_by == "deadline", result.reason
    assert "no data" in result.reason or "too little traffic" in result.reason


def test_draws_have_the_right_means() -> None:
    rng = random.Random(1)
    for n, p in ((10, 0.3), (200, 0.001), (200, 0.05), (5000, 0.4), (50, 0.9)):
        mean = sum(binomial(rng, n, p) for _ in range(4000)) / 4000
        assert mean == pytest.approx(n * p, rel=0.08, abs=0.02)
    for lam in (0.5, 5.0, 200.0):
        assert sum(poisson(rng, lam) for _ in range(4000)) / 4000 == pytest.approx(lam, rel=0.05)
    counts = multinomial(rng, 1000, [0.5, 0.0, 0.25, 0.25])
    assert sum(counts) == 1000 and counts[1] == 0


def test_cohorts_and_exposure_count_users_exactly() -> None:
    assert cohort_size(10_000, 0) == 0
    assert cohort_size(10_000, 100) == 10_000
    assert cohort_size(10_000, 10) == pytest.approx(1000, rel=0.1)
    exposure = Exposure(users=100, testers=5)
    rng = random.Random(2)
    exposure.hit(rng, 10_000, among=10)
    assert exposure.count == 10  # only the cohort's 10 users can be reached
    exposure.hit(rng, 1000, testers=True)
    assert exposure.count == 15
