"""A canary with no traffic at all ends by its NoData policy, with a message that names the missing data.

No load generator here: nobody calls the service. `noData: fail` rolls back
at the analysis deadline; `noData: wait` waits until the progress deadline
aborts the delivery, and says that the analysis had no data.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from tests.e2e.conftest import SERVICE, Stagewise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CANARY = {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"templates": ["errors"], "duration": "2s"}}]}}


def apply(sw: Stagewise, version: str, strategy: dict[str, Any], no_data: str, deadline: str = "30s") -> None:
    command = [sys.executable, "-m", "stagewise.examples.sample_service", "--port", "{port}", "--version", version]
    spec = json.dumps({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": SERVICE},
        "spec": {
            "listen": sw.listen, "replicas": 1,
            "release": {"version": version, "run": {"command": command},
                        "readiness": {"http": "/healthz", "timeout": "10s"}},
            "strategy": strategy,
            "analysis": {"errors": {"metric": "error-rate", "noData": no_data, "minRequests": 20}},
            "progressDeadline": deadline,
        },
    })
    assert sw.client is not None
    sw.client.post("/api/v1/apply", {"spec": spec, "filename": f"{version}.yaml"})


def test_no_traffic_with_no_data_fail_rolls_back_naming_the_missing_requests(stagewise: Stagewise) -> None:
    apply(stagewise, "v1", {"full": {}}, "fail")
    assert stagewise.wait()["phase"] == "Succeeded"
    apply(stagewise, "v2", CANARY, "fail")
    status = stagewise.wait(timeout=60)
    reason = status["delivery"]["abort_reason"]
    print("abort reason:", reason)  # shown with -s
    assert status["phase"] == "RolledBack", status["delivery"]
    assert "too little traffic to judge" in reason
    assert "baseline 0 of 20 requests needed, candidate 0 of 20" in reason and "noData: fail" in reason
    assert status["stable"] == "v1"


def test_no_traffic_with_no_data_wait_is_stopped_by_the_progress_deadline(stagewise: Stagewise) -> None:
    apply(stagewise, "v1", {"full": {}}, "wait")
    assert stagewise.wait()["phase"] == "Succeeded"
    apply(stagewise, "v2", CANARY, "wait", deadline="6s")
    status = stagewise.wait(timeout=60)
    reason = status["delivery"]["abort_reason"]
    print("abort reason:", reason)  # shown with -s
    assert status["phase"] == "RolledBack", status["delivery"]
    assert "progress deadline 6s exceeded: analysis has no data" in reason
    assert "baseline 0 of 20 requests needed, candidate 0 of 20" in reason and "noData: wait" in reason
