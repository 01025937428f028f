"""Schemathesis against a live `stagewise server`: every route, every check, all four phases.

The server is a real process on a free port with its own state directory,
serving a real service (`shop`: the builtin router and the sample service,
one instance) that is mid-delivery, so routes that take a name meet a
delivery whose phase the verbs really change. `st run` reads the server's
`/openapi.json` and checks every answer against it: no 5xx, only documented
statuses, bodies matching their schemas, bad input refused, valid input
accepted, mutating routes refusing a missing token. Its exceptions (which the
document cannot express) are in `schemathesis.toml`, each with its reason.

Bounded: `MAX_EXAMPLES` cases per operation and phase, and a hard timeout.
The seed is fixed so a failure reproduces; set `STAGEWISE_SCHEMATHESIS_SEED`
to explore other inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import SERVICE, Stagewise
from tests.e2e.conftest import stagewise as stagewise  # the live server fixture, reused here

pytestmark = [pytest.mark.integration, pytest.mark.timeout(170)]

ST = Path(sys.executable).with_name("st")
"""The schemathesis command line of this environment (the `test` extra installs it)."""
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 100
SEED = os.environ.get("STAGEWISE_SCHEMATHESIS_SEED", "20240601")
RUN_TIMEOUT = 120.0
"""Seconds `st run` may take; 15 to 30 on a shared 2-core machine."""
PHASES = ("examples", "coverage", "fuzzing", "stateful")


def test_schemathesis_finds_no_failure_in_any_phase(stagewise: Stagewise, capsys: pytest.CaptureFixture[str]) -> None:
    sw = stagewise
    assert f'values = ["{SERVICE}"]' in CONFIG.read_text(), "the config's name dictionary must name the service"
    sw.apply("v1", {"full": {}}, replicas=1)
    sw.wait({"Succeeded"})
    sw.apply("v2", {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}, replicas=1)
    sw.wait({"Paused"})
    assert sw.client is not None
    token = (sw.state / "token").read_text().strip()
    report = sw.root / "schemathesis.json"
    started = time.monotonic()
    # One worker: with two, hypothesis's lambda-source cache (an LRUCache, not thread-safe) is shared by
    # the worker threads and once in a few thousand cases raised KeyError inside schemathesis.
    run = subprocess.run(
        [str(ST), "--config-file", str(CONFIG), "run", f"{sw.client.url}/openapi.json",
         "--checks", "all", "--phases", ",".join(PHASES), "--header", f"Authorization: Bearer {token}",
         "--max-examples", str(MAX_EXAMPLES), "--seed", SEED, "--workers", "1", "--request-timeout", "10",
         "--generation-database", "none", "--no-color", "--report", "json", "--report-json-path", str(report)],
        cwd=sw.root, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    summary = output[output.find("SUMMARY"):] if "SUMMARY" in output else output[-4000:]
    assert report.exists(), output[-6000:]
    result = json.loads(report.read_text())
    operations, cases = result["operations"], result["test_cases"]
    with capsys.disabled():  # the summary is the point of the run: shown even when the test passes
        print(f"\nschemathesis {result['schemathesis_version']}, seed {result['seed']}: {operations['tested']}/"
              f"{operations['total']} operations tested, {cases['generated']} cases generated, "
              f"{len(result['failures'])} failures, {len(result['errors'])} errors, in {elapsed:.1f} s\n{summary}")
    assert run.returncode == 0 and result["failures"] == [] and result["errors"] == [], output[-12000:]
    assert operations["tested"] == operations["total"] >= 13, operations
    assert {phase: result["phases"][phase]["status"] for phase in PHASES} == dict.fromkeys(PHASES, "success")
    assert cases["generated"] >= 10 * operations["total"], cases
    # The name dictionary reached the real service: reads of it were answered, not all 404.
    reached = result["valid_rates"]["GET /api/v1/services/{name}"]
    assert sum(rates["accepted"] for rates in reached.values()) > 0, reached
