"""Flagger fields the golden examples do not use: templateRef, a Deployment in the input, exact A/B matches,
skipAnalysis, and webhooks reported with the hook each will become."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ruamel.yaml import YAML

from stagewise.convert import to_stagewise
from stagewise.convert.flagger_hooks import HOOK_TYPES, hook_entry

pytestmark = pytest.mark.timeout(60)

CANARY = """\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  skipAnalysis: %s
  analysis:
    interval: 1m
    threshold: 3
    iterations: 5
    match:
    - headers: {x-canary: {exact: insider}}
    metrics:
    - name: "404s percentage"
      templateRef: {name: not-found-percentage}
      thresholdRange: {max: 5}
      interval: 1m
    webhooks:
    - {name: load-test, url: "http://loadtester/", timeout: 5s, metadata: {cmd: "hey -z 1m"}}
    - {name: gate, type: confirm-promotion, url: "http://gate/"}
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: not-found-percentage, namespace: test}
spec:
  provider: {type: prometheus, address: "http://prometheus:9090"}
  query: sum(rate(requests{code="404",pod=~"{{ target }}-.*",ns="{{ namespace }}"}[{{ interval }}]))
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo}
spec:
  replicas: 3
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata: {labels: {app: podinfo}}
    spec:
      containers:
      - name: podinfod
        image: ghcr.io/stefanprodan/podinfo:6.0.1
        command: [./podinfo, "--port=$(PORT)"]
        env: [{name: PORT, value: "9898"}]
        ports: [{containerPort: 9898}]
        readinessProbe: {httpGet: {path: /readyz, port: 9898}}
"""


def convert(skip: str) -> tuple[dict[str, Any], list[str]]:
    output = to_stagewise([("canary.yaml", CANARY.replace("%s", skip))]).outputs[0]
    spec: dict[str, Any] = YAML(typ="safe").load(output.text)
    return spec["spec"], [str(n) for n in output.notes]


def test_an_ab_test_with_a_metric_template_and_its_deployment() -> None:
    spec, notes = convert("false")
    assert spec["replicas"] == 3
    assert spec["release"] == {"version": "6.0.1", "run": {"command": ["./podinfo", "--port={port}"],
                                                            "env": {"PORT": "{port}"}},
                               "readiness": {"http": "/readyz"}}
    assert spec["strategy"] == {"blueGreen": {
        "preview": {"header": {"x-canary": "insider"}}, "autoPromotion": {"after": "0s"},
        "prePromotionAnalysis": {"templates": ["404s percentage"], "duration": "5m"}}}
    assert spec["analysis"]["404s percentage"] == {
        "provider": "prometheus", "address": "http://prometheus:9090",
        "query": 'sum(rate(requests{code="404",pod=~"podinfo-.*",ns="test"}[{{window}}]))', "judge": "threshold",
        "thresholdRange": {"max": 5}, "interval": "1m", "failureLimit": 3}
    assert spec["hooks"] == [  # no type: Flagger's default, rollout; metadata travels in the call's body
        {"type": "rollout", "name": "load-test", "http": {"url": "http://loadtester/", "timeout": "5s"},
         "metadata": {"cmd": "hey -z 1m"}},
        {"type": "confirm-promotion", "name": "gate", "http": {"url": "http://gate/"}}]
    assert not [n for n in notes if "webhooks" in n]


def test_skip_analysis_promotes_without_analysis() -> None:
    spec, notes = convert("true")
    assert spec["strategy"] == {"blueGreen": {"autoPromotion": {"after": "0s"}}}
    assert "analysis" not in spec
    assert any("skipAnalysis: true" in n for n in notes)


def test_every_flagger_webhook_type_has_its_hook() -> None:
    for kind in HOOK_TYPES:
        entry = hook_entry({"name": "h", "type": kind, "url": "http://x/", "timeout": "1m30s"})
        assert entry == {"type": kind, "name": "h", "http": {"url": "http://x/", "timeout": "1m30s"}}
        json.dumps(entry)
    assert hook_entry({"name": "h", "type": "pre-promotion", "url": "http://x/"}) is None


def test_a_webhook_a_hook_cannot_call_as_it_is_is_dropped_or_keeps_the_default_timeout() -> None:
    """Flagger takes any string as a webhook's url and any duration as its timeout; a hook calls only http:// or
    https:// URLs and waits at most 300 s. Neither may be written into a spec that the loader then refuses: a
    webhook with another url is dropped in words at its place, one with a longer timeout keeps the default."""
    text = (CANARY.replace("%s", "false").replace('url: "http://gate/"', 'url: "1h"')
            .replace("timeout: 5s", "timeout: 1h"))
    output = to_stagewise([("canary.yaml", text)]).outputs[0]
    spec = YAML(typ="safe").load(output.text)["spec"]
    assert spec["hooks"] == [{"type": "rollout", "name": "load-test", "http": {"url": "http://loadtester/"},
                              "metadata": {"cmd": "hey -z 1m"}}]
    assert any("webhooks" in str(n) and "http:// or https:// url" in str(n) for n in output.notes), output.notes
