"""stagewise → Argo Rollouts → stagewise is the identity, for every spec in the subset Argo can carry.

The subset: canary and blue-green strategies; templates read by prometheus
(with a query), command (a Job) or http (a web metric) under the threshold
judge with an explicit interval, plus templates Argo has no field for (the
router's counts, the sequential judge), carried in annotations; every step,
pre- or post-promotion analysis of a spec runs for one duration, a multiple of
every template's interval (Argo counts measurements per template); whole
seconds; no environment value that is literally the container port (8080),
which reads back as `{port}`. Each generated Rollout must also fit the CRD's
schema, as written and strict.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from stagewise.convert import to_argo, to_stagewise
from stagewise.convert.render import dump_documents
from stagewise.core.durations import format_duration
from stagewise.spec import load_spec_text
from tests.convert.crd import rollout_errors

pytestmark = pytest.mark.timeout(300)

EXAMPLES = int(os.environ.get("STAGEWISE_ROUNDTRIP_EXAMPLES", "200"))
seconds = st.integers(1, 7200).map(format_duration)
names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
words = st.sampled_from(["python3", "-m", "app", "--port", "{port}", "--bind=127.0.0.1:{port}", "$(HOME)", "$$",
                         "a b", "x{port}y", "--cost=$5", "8080", "é", "$(STAGEWISE_PORT)", ""])
env_values = st.sampled_from(["info", "{port}", "http://127.0.0.1:{port}/", "$(HOME)", "a$b", "", "$$(X)"])
queries = st.sampled_from([
    'sum(rate(errors{release="{{release}}"}[{{window}}])) / sum(rate(requests{release="{{release}}"}[{{window}}]))',
    'histogram_quantile(0.99, rate(latency_bucket{service="{{service}}"}[5m]))',
    "scalar(up)",
])
bounds = st.sampled_from([0.0, 0.01, 0.5, 1.0, 99.0, 250.0, 500.5])
intervals = st.sampled_from([5, 10, 15, 30, 60])


@st.composite
def templates(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["prometheus", "command", "http", "router", "sequential-prometheus"]))
    interval = format_duration(draw(intervals))
    limit = draw(st.integers(1, 5))
    if kind == "prometheus":
        low, high = draw(st.none() | bounds), draw(st.none() | bounds)
        rng = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
        t = {"provider": "prometheus", "address": "http://127.0.0.1:9090", "query": draw(queries),
             "judge": "threshold", "interval": interval, "failureLimit": limit}
        return {**t, "thresholdRange": rng} if rng else t
    if kind == "command":
        t = {"provider": "command", "args": draw(st.lists(st.sampled_from(
            ["./check.sh", "{{candidate}}", "{{baseline}}", "{{service}}", "--strict", "$(X)"]), min_size=1,
            max_size=4)), "judge": "threshold", "interval": interval, "failureLimit": limit}
        return {**t, "latencyLimit": draw(seconds)} if draw(st.booleans()) else t
    if kind == "http":
        t = {"provider": "http", "url": draw(st.sampled_from(["http://127.0.0.1:9/healthz",
                                                              "http://{{service}}.local/{{release}}"])),
             "judge": "threshold", "interval": interval, "failureLimit": limit}
        if draw(st.booleans()):
            t["method"] = draw(st.sampled_from(["HEAD", "POST"]))
        return t
    if kind == "router":
        return {"metric": draw(st.sampled_from(["error-rate", "latency"])),
                "alpha": draw(st.sampled_from([0.05, 0.01])), "minRequests": draw(st.integers(1, 500))}
    return {"provider": "prometheus", "address": "http://127.0.0.1:9090", "metric": "latency",
            "judge": draw(st.sampled_from(["sequential", "mannwhitney"])), "interval": interval}


def reference(draw: st.DrawFn, defined: list[str], duration: str) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(defined), min_size=1, max_size=len(defined), unique=True))
    return {"templates": chosen, "duration": duration}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    template_names = st.sampled_from(["errors", "latency", "promql", "smoke", "404s percentage", "P99 (ms)"])
    analysis = draw(st.dictionaries(template_names, templates(), max_size=3))
    defined = list(analysis)
    duration = format_duration(60 * draw(st.integers(1, 5)))  # a multiple of every interval above
    port = draw(st.integers(1024, 60000))
    release = draw_release(draw)
    if draw(st.booleans()):
        strategy: dict[str, Any] = {"canary": draw_canary(draw, defined, duration)}
    else:
        strategy = {"blueGreen": draw_blue_green(draw, defined, duration, port)}
    body: dict[str, Any] = {"listen": f"127.0.0.1:{port}"}
    if draw(st.booleans()):
        body["router"] = draw(st.sampled_from([{"kind": "haproxy"}, {"kind": "nginx"},
                                               {"kind": "builtin", "metricsListen": "127.0.0.1:9101"}]))
    if draw(st.booleans()):
        body["platform"] = {"kind": "ssh", "hosts": ["web1", "deploy@web2:2222"]}
    body.update({"replicas": draw(st.integers(1, 20)), "release": release, "strategy": strategy})
    if analysis:
        body["analysis"] = analysis
    body["progressDeadline"] = draw(seconds)
    metadata: dict[str, Any] = {"name": draw(names)}
    if draw(st.booleans()):
        metadata["labels"] = draw(st.dictionaries(st.sampled_from(["team", "tier"]), st.sampled_from(["pay", "a-b"]),
                                                  min_size=1))
    return {"apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": metadata, "spec": body}


def draw_release(draw: st.DrawFn) -> dict[str, Any]:
    release: dict[str, Any] = {
        "version": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)),
        "run": {"command": [draw(st.sampled_from(["python3", "/usr/bin/app"])),
                            *draw(st.lists(words, max_size=5))]},
    }
    env = draw(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,6}", fullmatch=True), env_values, max_size=3))
    if env:
        release["run"]["env"] = env
    probe = draw(st.sampled_from(["none", "http", "tcp"]))
    if probe != "none":
        release["readiness"] = {"http": "/healthz"} if probe == "http" else {"tcp": True}
        release["readiness"]["timeout"] = format_duration(draw(st.integers(1, 300)))
    return release


def draw_canary(draw: st.DrawFn, defined: list[str], duration: str) -> dict[str, Any]:
    steps = [draw_step(draw, defined, duration) for _ in range(draw(st.integers(1, 6)))]
    canary: dict[str, Any] = {"steps": steps}
    if defined and draw(st.booleans()):
        background = {"templates": draw(st.lists(st.sampled_from(defined), min_size=1, unique=True))}
        start = draw(st.integers(0, len(steps) - 1))
        canary["analysis"] = {**background, "startingStep": start} if start else background
    return canary


def draw_step(draw: st.DrawFn, defined: list[str], duration: str) -> dict[str, Any]:
    choice = draw(st.sampled_from(["weight", "pause", "timed", "analysis", "route"]))
    if choice == "weight":
        return {"setWeight": draw(st.integers(0, 100))}
    if choice == "pause":
        return {"pause": {}}
    if choice == "timed":
        return {"pause": {"duration": draw(seconds)}}
    if choice == "analysis" and defined:
        return {"analysis": reference(draw, defined, duration)}
    match = draw(st.lists(st.fixed_dictionaries({
        "headerName": st.sampled_from(["X-Canary", "X-Beta"]),
        "headerValue": st.fixed_dictionaries({"exact": st.sampled_from(["1", "yes", "on"])})}),
        max_size=2))
    return {"setHeaderRoute": {"name": draw(st.sampled_from(["testers", "beta"])), "match": match}}


def draw_blue_green(draw: st.DrawFn, defined: list[str], duration: str, port: int) -> dict[str, Any]:
    blue_green: dict[str, Any] = {"scaleDownDelay": draw(seconds)}
    if draw(st.booleans()):
        blue_green["autoPromotion"] = {"after": format_duration(draw(st.integers(0, 600)))}
    blue_green["preview"] = draw(st.sampled_from([
        {"header": {"X-Preview": "1"}}, {"header": {"X-Test": "yes"}}, {"listen": f"127.0.0.1:{port + 1}"},
        {"listen": f"127.0.0.2:{port}"}]))
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if defined and draw(st.booleans()):
            blue_green[key] = reference(draw, defined, duration)
    return blue_green


def loaded(text: str) -> dict[str, Any]:
    dumped: dict[str, Any] = load_spec_text(text).model_dump(mode="json", by_alias=True)
    return dumped


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_stagewise_to_argo_and_back_is_the_identity(spec: dict[str, Any]) -> None:
    text = dump_documents([spec])
    original = loaded(text)
    argo = to_argo([("service.yaml", text)])
    rollout = next(d for d in YAML(typ="safe").load_all(argo.outputs[0].text) if d and d["kind"] == "Rollout")
    assert rollout_errors(rollout) == []
    names = [d["metadata"]["name"] for d in YAML(typ="safe").load_all(argo.outputs[0].text) if d]
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", n) for n in names), names
    back = to_stagewise([("service.argo.yaml", argo.outputs[0].text)])
    assert loaded(back.outputs[0].text) == original
