"""The controller's measurements: providers run as tasks at their interval, and their answers reach the judges."""

from __future__ import annotations

import asyncio
import sys

import pytest

from stagewise.analysis.judges.runs import judge_runs
from stagewise.controller.measure import Measurer
from stagewise.core.delivery import AnalysisRun, Delivery
from stagewise.core.spec import ServiceSpec
from stagewise.core.stats import RouterStats
from stagewise.core.verdict import Outcome

pytestmark = pytest.mark.timeout(60)


def delivery(args: list[str]) -> Delivery:
    spec = ServiceSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "shop"},
        "spec": {"listen": "127.0.0.1:1", "release": {"version": "v2", "run": {"command": ["x"]}},
                 "strategy": {"canary": {"steps": [{"analysis": {"templates": ["smoke"]}}]}},
                 "analysis": {"smoke": {"provider": "command", "args": args, "judge": "threshold",
                                        "interval": "1s", "failureLimit": 2}}},
    })
    stable = spec.spec.release.model_copy(update={"version": "v1"})
    run = AnalysisRun(key="step-0", templates=["smoke"], started_at=0.0, duration=60)
    return Delivery(id=1, service="shop", spec=spec, stable=stable, analysis={"step-0": run})


async def run_ticks(d: Delivery, seconds: float) -> Delivery:
    measurer = Measurer()
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while loop.time() - start < seconds:
            now = loop.time() - start
            d = judge_runs(d, RouterStats(), now, measurer.collect(d, now))
            if d.analysis["step-0"].verdict.outcome is Outcome.FAILED:
                break
            await asyncio.sleep(0.05)
    finally:
        await measurer.close()
    return d


async def test_a_failing_command_fails_the_run_after_failure_limit_checks_one_interval_apart() -> None:
    d = await run_ticks(delivery([sys.executable, "-c", "print('checkout broken'); raise SystemExit(1)"]), 10)
    verdict = d.analysis["step-0"].verdict
    assert verdict.outcome is Outcome.FAILED, verdict.message
    checks = verdict.evidence["metrics"][0]["evidence"]["recent_checks"]
    assert len(checks) == 2 and checks[1]["t"] - checks[0]["t"] >= 0.5  # not every tick: at the interval
    assert "checkout broken" in verdict.evidence["metrics"][0]["evidence"]["measurement"]["evidence"]["output"]


async def test_a_slow_command_does_not_hold_up_the_ticks() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    d = await run_ticks(delivery([sys.executable, "-c", "import time; time.sleep(30)"]), 1.0)
    assert loop.time() - started < 5  # the ticks went on while the command ran; closing cancelled it
    assert d.analysis["step-0"].verdict.outcome is Outcome.RUNNING
