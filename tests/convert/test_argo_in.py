"""Argo Rollouts fields the upstream examples do not use, converted or reported as Argo means them."""

from __future__ import annotations

from typing import Any

import pytest
from ruamel.yaml import YAML

from stagewise.convert import to_stagewise

pytestmark = pytest.mark.timeout(60)

ROLLOUT = """\
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: checkout
spec:
  replicas: 3
  progressDeadlineSeconds: 120
  template:
    spec:
      containers:
      - name: app
        image: registry.local/checkout:v7
        command: [python3, -m, checkout]
        args: ["--port=$(PORT)", "--price=$$(cost)"]
        env:
        - {name: PORT, value: "8080"}
        - {name: SECRET, valueFrom: {secretKeyRef: {name: s, key: k}}}
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 2}
  strategy:
    canary:
      trafficRouting:
        plugins: {argoproj-labs/gatewayAPI: {httpRoute: checkout}}
      analysis:
        templates: [{templateName: success-rate}]
        startingStep: 3
        args: [{name: service-name, value: checkout.default.svc}]
      steps:
      - setCanaryScale: {matchTrafficWeight: true}
      - setWeight: 10
      - pause: {duration: 10}
      - pause: {duration: "10"}
      - pause: {duration: 1h}
      - setCanaryScale: {replicas: 2}
      - experiment: {templates: [{name: baseline, specRef: stable}]}
      - setMirrorRoute: {name: mirror, percentage: 10}
      - setHeaderRoute: {name: testers, match: [{headerName: X-Beta, headerValue: {exact: "1"}},
                                                  {headerName: User-Agent, headerValue: {regex: ".*Firefox.*"}}]}
      - analysis: {templates: [{templateName: success-rate}, {templateName: missing}],
                   args: [{name: service-name, value: checkout.default.svc}]}
      - plugin: {name: x}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate}
spec:
  args: [{name: service-name}]
  metrics:
  - name: success-rate
    interval: 30s
    count: 4
    failureLimit: 2
    successCondition: result[0] >= 0.95
    failureCondition: result[0] < 0.5
    provider:
      prometheus:
        address: http://prometheus:9090
        query: sum(rate(http_requests_total{service="{{args.service-name}}",code!~"5.."}[1m]))
"""


def converted() -> tuple[dict[str, Any], list[str]]:
    output = to_stagewise([("rollout.yaml", ROLLOUT)]).outputs[0]
    spec: dict[str, Any] = YAML(typ="safe").load(output.text)
    return spec["spec"], [str(n) for n in output.notes]


def test_steps_pauses_and_what_has_no_stagewise_step() -> None:
    spec, notes = converted()
    assert spec["strategy"]["canary"]["steps"] == [
        {"setWeight": 10}, {"pause": {"duration": "10s"}}, {"pause": {"duration": "10s"}},
        {"pause": {"duration": "1h"}},
        {"setHeaderRoute": {"name": "testers", "match": [{"headerName": "X-Beta", "headerValue": {"exact": "1"}}]}},
        {"analysis": {"templates": ["success-rate"], "duration": "2m"}},
    ]
    # Argo's step 3 is the third output step (the first setCanaryScale maps to nothing)
    assert spec["strategy"]["canary"]["analysis"] == {"templates": ["success-rate"], "startingStep": 2}
    for expected in ("rollout.yaml:34:9: spec.strategy.canary.steps[5].setCanaryScale: stagewise sizes the canary",
                     "rollout.yaml:35:9: spec.strategy.canary.steps[6]: stagewise has no experiments",
                     "rollout.yaml:36:9: spec.strategy.canary.steps[7]: stagewise's routers do not mirror",
                     "rollout.yaml:38:51: spec.strategy.canary.steps[8].setHeaderRoute.match[1]: stagewise's header",
                     "rollout.yaml:39:62: spec.strategy.canary.steps[9].analysis.templates[1]: AnalysisTemplate "
                     "'missing' is not in the input",
                     "rollout.yaml:41:9: spec.strategy.canary.steps[10]: stagewise has no step plugins",
                     "rollout.yaml:22:7: spec.strategy.canary.trafficRouting: the cluster's traffic router",
                     "rollout.yaml:17:11: spec.template.spec.containers[0].env[1]: a value from Kubernetes"):
        assert any(n.startswith(expected) for n in notes), (expected, notes)


def test_the_container_becomes_the_run_and_the_metric_a_threshold_template() -> None:
    spec, notes = converted()
    assert spec["release"] == {"version": "v7", "run": {"command": ["python3", "-m", "checkout", "--port={port}",
                                                                    "--price=$(cost)"], "env": {"PORT": "{port}"}},
                               "readiness": {"http": "/ready"}}
    assert spec["analysis"]["success-rate"] == {
        "provider": "prometheus", "address": "http://prometheus:9090",
        "query": 'sum(rate(http_requests_total{service="checkout.default.svc",code!~"5.."}[1m]))',
        "judge": "threshold", "failureLimit": 3, "thresholdRange": {"min": 0.95}, "interval": "30s"}
    assert spec["progressDeadline"] == "2m" and spec["replicas"] == 3
    assert len([n for n in notes if "judge: sequential" in n]) == 1
    assert not [n for n in notes if "does not know this field" in n]
