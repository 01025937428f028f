"""A converted Argo canary runs on this machine: Argo's rollout-analysis-step example, converted, delivered
by a real `stagewise server` with the builtin router and local instances, rolled back when its release fails
requests.

The converted spec is applied as the converter wrote it, except for what the
converter says a person must supply or what points at Kubernetes:

- run.command is a placeholder (the Rollout only names an image): it becomes
  the sample service, `--version vN`, the bad release with `--fail-rate 0.2`;
- the name and listen address become the test fixture's (a free port);
- the `random-fail` AnalysisTemplate is a Job that exits 0 or 1 at random
  (`$RANDOM`, which Debian's sh does not even have): it says nothing about the
  release, so the test replaces its body with the router's error rate under
  the sequential judge — the analysis step, its place and its other template
  stay as converted;
- `always-pass` runs as converted: the command provider runs `sh -c "exit 0"`
  on this host every 5s, as Argo's Job would in alpine.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ruamel.yaml import YAML

from stagewise.convert import to_stagewise
from tests.convert.cases import inputs
from tests.e2e.conftest import SERVICE, Stagewise
from tests.e2e.test_strategies import assert_no_more_requests_to, users, wait_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def stagewise() -> Iterator[Stagewise]:
    with Stagewise.running("sw-convert-e2e-", "builtin") as sw:
        yield sw


def converted_spec(sw: Stagewise, version: str, *flags: str) -> dict[str, Any]:
    output = to_stagewise(inputs("rollout-analysis-step")).outputs[0]
    spec: dict[str, Any] = YAML(typ="safe").load(output.text)
    assert spec["spec"]["release"]["run"]["command"][0].startswith("REPLACE-ME")
    assert spec["spec"]["analysis"]["random-fail"]["provider"] == "command"
    spec["metadata"]["name"] = SERVICE
    spec["spec"]["listen"] = sw.listen
    spec["spec"]["release"]["version"] = version
    spec["spec"]["release"]["run"] = {"command": [
        sys.executable, "-m", "stagewise.examples.sample_service", "--port", "{port}", "--version", version, *flags]}
    spec["spec"]["release"]["readiness"] = {"http": "/healthz", "timeout": "10s"}
    spec["spec"]["analysis"]["random-fail"] = {"metric": "error-rate"}
    return spec


def apply(sw: Stagewise, spec: dict[str, Any]) -> dict[str, Any]:
    assert sw.client is not None
    result: dict[str, Any] = sw.client.post("/api/v1/apply", {"spec": json.dumps(spec), "filename": "converted.yaml"})
    return result


def test_a_converted_argo_canary_rolls_a_bad_release_back(stagewise: Stagewise) -> None:
    apply(stagewise, converted_spec(stagewise, "v1"))
    assert stagewise.wait()["phase"] == "Succeeded"
    wait_serving(stagewise, "v1")
    load = users(stagewise)
    try:
        bad = converted_spec(stagewise, "v3", "--fail-rate", "0.2")
        assert apply(stagewise, bad)["delivery"]
        status = stagewise.wait(timeout=120)
    finally:
        report = load.stop()
    assert status["phase"] == "RolledBack", status["delivery"]
    assert "Failed" in status["delivery"]["abort_reason"]
    assert status["stable"] == "v1"
    titles = [p["title"] for p in status["delivery"]["forward_plan"][:2]]
    assert titles == ["setWeight 25", "analysis random-fail, always-pass"]
    assert report.by_version.get("v3", 0) > 0, "the bad release was never tried"
    assert_no_more_requests_to(stagewise, "v3")


def test_a_converted_argo_canary_promotes_a_good_release(stagewise: Stagewise) -> None:
    apply(stagewise, converted_spec(stagewise, "v1"))
    assert stagewise.wait()["phase"] == "Succeeded"
    load = users(stagewise)
    started = time.monotonic()
    try:
        good = converted_spec(stagewise, "v2")
        # the converted step analysis has no duration (random-fail ran until the rollout ended in Argo), so it
        # lasts stagewise's default minute; the test shortens it to keep the suite quick
        good["spec"]["strategy"]["canary"]["steps"][1]["analysis"]["duration"] = "10s"
        apply(stagewise, good)
        status = stagewise.wait(timeout=120)
    finally:
        load.stop()
    assert status["phase"] == "Succeeded", status["delivery"]
    assert status["stable"] == "v2"
    assert [(p["title"], p["state"]) for p in status["delivery"]["plan"][:2]] == [
        ("setWeight 25", "done"), ("analysis random-fail, always-pass", "done")]
    assert time.monotonic() - started >= 10
