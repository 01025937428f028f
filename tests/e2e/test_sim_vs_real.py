"""The simulator and a real run of the same canary reach the same outcome.

The same spec — a canary of the sample service with the errors and latency
analysis — is delivered for real (a `stagewise server` process, the builtin
router, local instances, a load generator) and simulated with a scenario
that describes the same world: two instances starting in about a second,
the load generator's request rate, the sample service's error rates. A good
release must be promoted and a release failing 20% of requests rolled back
by its analysis, in both.
"""

from __future__ import annotations

import pytest

from stagewise.core.spec import ReleaseSpec, ServiceSpec
from stagewise.examples.load import LoadInBackground, LoadReport
from stagewise.sim import simulate
from stagewise.sim.result import RunResult
from stagewise.sim.scenario import Fleet, Latency, ReleaseBehaviour, Traffic
from stagewise.spec import load_spec_text
from tests.e2e.conftest import TICK, Stagewise, spec_json

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CANARY = {"canary": {"steps": [
    {"setWeight": 50}, {"analysis": {"templates": ["errors", "latency"], "duration": "3s"}},
    {"pause": {"duration": "1s"}},
]}}
RATE = 300.0
SAMPLE_SERVICE = Latency(median=0.001, p99=0.004)
BEHAVIOURS = {
    "v1": ReleaseBehaviour(error_rate=0.0, latency=SAMPLE_SERVICE),
    "v2": ReleaseBehaviour(error_rate=0.0, latency=SAMPLE_SERVICE),
    "v3": ReleaseBehaviour(error_rate=0.2, latency=SAMPLE_SERVICE),  # `--fail-rate 0.2` (conftest.BAD_FLAGS)
}


def spec(sw: Stagewise, version: str) -> ServiceSpec:
    return load_spec_text(spec_json(sw.listen, version, CANARY), f"{version}.yaml")


def deliver_for_real(sw: Stagewise, version: str) -> tuple[str, str, LoadReport]:
    load = LoadInBackground(sw.url, connections=4, rate=RATE, max_seconds=60, max_requests=20_000).start()
    try:
        sw.apply(version, CANARY)
        status = sw.wait(timeout=60)
    finally:
        report = load.stop()
    return status["phase"], (status.get("delivery") or {}).get("abort_reason") or "", report


def deliver_simulated(sw: Stagewise, version: str, stable: ReleaseSpec, seed: int) -> RunResult:
    return simulate(spec(sw, version), stable, traffic=Traffic(rate=RATE, users=500),
                    fleet=Fleet(replicas=2, startup=0.8, startup_jitter=0.3), behaviours=BEHAVIOURS, human=None,
                    seed=seed, tick=TICK, horizon=120)


def test_the_simulator_reaches_the_outcome_of_a_real_canary(stagewise: Stagewise) -> None:
    stagewise.apply("v1", {"full": {}})
    assert stagewise.wait()["phase"] == "Succeeded"
    v1 = spec(stagewise, "v1").spec.release

    real_good, good_reason, report = deliver_for_real(stagewise, "v2")
    assert report.by_version.get("v2", 0) > 0
    assert real_good == "Succeeded", (good_reason, stagewise.status()["events"][-12:])
    real_bad, reason, report = deliver_for_real(stagewise, "v3")
    assert report.by_version.get("v3", 0) > 0
    assert real_bad == "RolledBack", reason
    assert "analysis Failed" in reason

    v2 = spec(stagewise, "v2").spec.release
    for seed in range(5):
        good = deliver_simulated(stagewise, "v2", v1, seed)
        bad = deliver_simulated(stagewise, "v3", v2, seed)
        assert good.outcome == real_good, (seed, good.reason)
        assert bad.outcome == real_bad, (seed, bad.reason)
        assert bad.decided_by == "analysis" and "analysis Failed" in bad.reason
