"""Whatever a manifest holds, `convert` answers with a conversion or a SpecError — never another exception.

Documents shaped like Rollouts, Canaries and AnalysisTemplates, with random
values in every place, and the upstream examples with one value replaced.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from stagewise.convert import to_argo, to_stagewise
from stagewise.errors import SpecError
from tests.convert.cases import CASES, inputs

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ["spec", "strategy", "canary", "blueGreen", "steps", "setWeight", "pause", "duration", "analysis",
        "templates", "templateName", "args", "metrics", "provider", "prometheus", "job", "web", "query",
        "interval", "count", "failureLimit", "successCondition", "template", "containers", "image", "command",
        "ports", "containerPort", "env", "setHeaderRoute", "match", "headerName", "headerValue", "exact",
        "previewService", "activeService", "autoPromotionSeconds", "stepWeight", "maxWeight", "stepWeights",
        "iterations", "thresholdRange", "min", "max", "webhooks", "type", "url", "metadata", "name", "annotations",
        "targetRef", "service", "port", "startingStep", "readinessProbe", "httpGet", "path", "startupProbe"]
scalars = st.none() | st.booleans() | st.integers(-5, 200) | st.floats(allow_nan=True) | st.sampled_from(
    ["1h", "10", "10s", "x", "", "{port}", "$(PORT)", "result[0] >= 0.9", "random-fail", "a:b", "Latest"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=25)


def dump(documents: list[Any]) -> str:
    stream = io.StringIO()
    YAML(typ="safe", pure=True).dump_all(documents, stream)
    return stream.getvalue()


def converts_or_refuses(text: str, *, argo: bool = False) -> None:
    try:
        conversion = (to_argo if argo else to_stagewise)([("fuzz.yaml", text)])
    except SpecError as exc:
        assert exc.problems and all(p.line >= 1 and p.column >= 1 for p in exc.problems)
        # input may be refused; a converted spec the loader refuses is the converter's defect
        assert not [str(p) for p in exc.problems if "a defect of stagewise convert" in p.message]
    else:
        assert conversion.outputs


@FUZZ
@given(st.sampled_from([("argoproj.io/v1alpha1", "Rollout"), ("flagger.app/v1beta1", "Canary")]),
       st.dictionaries(st.sampled_from(KEYS), values, max_size=6), values)
def test_random_rollouts_and_canaries(kind: tuple[str, str], spec: dict[str, Any], template: Any) -> None:
    documents = [{"apiVersion": kind[0], "kind": kind[1], "metadata": {"name": "x"}, "spec": spec},
                 {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
                  "metadata": {"name": "random-fail"}, "spec": template}]
    converts_or_refuses(dump(documents))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _paths(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _paths(v, (*path, i))]
    return [path]


@FUZZ
@given(st.sampled_from(list(CASES)), st.data())
def test_upstream_examples_with_one_value_replaced(case: str, data: st.DataObject) -> None:
    files = inputs(case)
    documents = [d for _, text in files for d in YAML(typ="safe").load_all(text) if d]
    target = data.draw(st.integers(0, len(documents) - 1))
    path = data.draw(st.sampled_from(_paths(documents[target])[1:]))
    parent = documents[target]
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = data.draw(values)
    converts_or_refuses(dump(documents))


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_random_stagewise_specs_to_argo(spec: dict[str, Any]) -> None:
    converts_or_refuses(dump([{"apiVersion": "stagewise.dev/v1alpha1", "kind": "Service",
                               "metadata": {"name": "x"}, "spec": spec}]), argo=True)


@FUZZ
@given(st.integers(-2, 70000) | scalars, st.integers(-2, 70000) | scalars)
def test_any_service_and_container_port(service_port: Any, container_port: Any) -> None:
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "x"},
               "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1",
                                                               "ports": [{"containerPort": container_port}]}]}},
                        "strategy": {"blueGreen": {"activeService": "a", "previewService": "p"}}}}
    services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}, "spec": {"ports": [{"port": p}]}}
                for n, p in (("a", service_port), ("p", service_port))]
    converts_or_refuses(dump([rollout, *services]))
    canary = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "x"},
              "spec": {"service": {"port": service_port}, "analysis": {"iterations": 2}}}
    converts_or_refuses(dump([canary]))
