"""`--to argo`: the Rollout validates against the Rollout CRD's own schema; the rest of the output is what a
team moving to Kubernetes needs (two Services, AnalysisTemplates), and what Argo cannot say is carried."""

from __future__ import annotations

from typing import Any

import pytest
from ruamel.yaml import YAML

from stagewise.convert import to_argo, to_stagewise
from stagewise.spec import load_spec_text
from tests.convert.cases import CASES, inputs
from tests.convert.crd import rollout_errors, rollout_schema

pytestmark = pytest.mark.timeout(60)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(text) if d]


def normal(text: str) -> dict[str, Any]:
    """The spec as loaded, with the default length of a step's or a blue-green analysis (1m) written out: Argo
    counts measurements, so the trip through Argo states it (the same analysis, said explicitly)."""
    dumped: dict[str, Any] = load_spec_text(text).model_dump(mode="json", by_alias=True)
    strategy = dumped["spec"]["strategy"]
    refs = [s["analysis"] for s in (strategy.get("canary") or {}).get("steps", []) if s.get("analysis")]
    refs += [(strategy.get("blueGreen") or {}).get(k) for k in ("prePromotionAnalysis", "postPromotionAnalysis")]
    for ref in refs:
        if ref is not None and ref["duration"] is None:
            ref["duration"] = "1m"
    return dumped


def test_the_vendored_crd_is_the_rollout_schema() -> None:
    schema = rollout_schema()
    steps = schema["properties"]["spec"]["properties"]["strategy"]["properties"]["canary"]["properties"]["steps"]
    assert set(steps["items"]["properties"]) >= {"setWeight", "pause", "analysis", "setHeaderRoute"}
    assert rollout_errors({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                           "spec": {"replicas": "two", "strategy": {"canary": {"stepz": []}}}})  # it can fail


@pytest.mark.parametrize("case", list(CASES))
def test_every_converted_upstream_manifest_goes_to_argo_and_back(case: str) -> None:
    spec_text = to_stagewise(inputs(case)).outputs[0].text
    argo = to_argo([(f"{case}.yaml", spec_text)])
    docs = documents(argo.outputs[0].text)
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Rollout" and kinds.count("Service") == 2
    assert rollout_errors(docs[0]) == []
    back = to_stagewise([(f"{case}.argo.yaml", argo.outputs[0].text)])
    assert normal(back.outputs[0].text) == normal(spec_text)


SPEC = """\
apiVersion: stagewise.dev/v1alpha1
kind: Service
metadata: {name: checkout}
spec:
  listen: 127.0.0.1:8080
  router: {kind: haproxy}
  replicas: 3
  release:
    version: v2
    run: {command: [python3, -m, checkout, --port, "{port}"]}
    readiness: {tcp: true, timeout: 12s}
  strategy:
    %s
  analysis:
    errors: {metric: error-rate}
  progressDeadline: 5m
"""
STRATEGIES = {
    "full": "full: {}",
    "waves": "phased: {waves: [1, 50%], bake: 10s, analysis: {templates: [errors], duration: 1m}}",
    "cohorts": "phased: {cohorts: {key: {header: X-User}, steps: [5, 50, 100]}}",
    "blue-green": "blueGreen: {preview: {header: {X-Test: 'yes'}}, autoPromotion: {after: 30s}, "
                  "prePromotionAnalysis: {templates: [errors], duration: 2m}}",
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_gives_a_valid_rollout(name: str) -> None:
    argo = to_argo([("checkout.yaml", SPEC.replace("%s", STRATEGIES[name]))])
    rollout = documents(argo.outputs[0].text)[0]
    assert rollout_errors(rollout) == []
    assert rollout["metadata"]["annotations"]["stagewise.dev/router"] == '{"kind":"haproxy"}'
    container = rollout["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python3", "-m", "checkout", "--port", "$(STAGEWISE_PORT)"]
    assert container["startupProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 12}
    if name in ("full", "waves", "cohorts"):
        assert any(not n.mapped and n.field.startswith("spec.strategy.") for n in argo.outputs[0].notes)
    else:
        back = to_stagewise([("checkout.argo.yaml", argo.outputs[0].text)])
        assert normal(back.outputs[0].text) == normal(SPEC.replace("%s", STRATEGIES[name]))


def test_input_that_is_no_stagewise_spec_is_refused_with_its_position() -> None:
    from stagewise.errors import SpecError

    with pytest.raises(SpecError) as caught:
        to_argo(inputs("rollout-canary"))
    problem = caught.value.problems[0]
    assert (problem.line, problem.column) == (4, 1) and "--to stagewise" in problem.message
