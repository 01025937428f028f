"""A Flagger `Canary` → a stagewise Service spec (as the loader's YAML document, a dict).

Flagger's analysis is a loop: every `interval` it checks its metrics, counts a
failed check, rolls back at `threshold` failed checks, and otherwise moves the
weight one step (`stepWeight` up to `maxWeight`, or the `stepWeights` list).
In stagewise that is a canary whose steps are `setWeight w` + `pause interval`,
judged all along by a background analysis of threshold templates whose
`failureLimit` is Flagger's `threshold`. With `iterations` instead of weights,
Flagger runs Blue/Green (or, with `match`, A/B testing): a candidate reached
only by a test route for `iterations × interval` of analysis, then promoted —
stagewise's blueGreen with a preview route and a pre-promotion analysis.

The builtin metrics map to the router's own counts (`request-success-rate` →
error rate, `request-duration` → p99 latency); a `templateRef` to the
MetricTemplate's Prometheus query. Webhooks go to `flagger_hooks`.

Pure: reads the documents it is given.
"""

from __future__ import annotations

import re
from typing import Any

from stagewise.convert.argo_analysis import go_seconds
from stagewise.convert.argo_in import STAGEWISE_API, metadata
from stagewise.convert.flagger_hooks import convert_webhooks
from stagewise.convert.kube import is_port
from stagewise.convert.ledger import Ledger, as_dict, is_number
from stagewise.convert.sources import FLAGGER_GROUP, Index, Source
from stagewise.convert.workload import KUBE_ONLY, PLACEHOLDER_VERSION, placeholder_command, release_from_pod
from stagewise.core.durations import format_duration
from stagewise.spec.yamltree import Path

DEFAULT_INTERVAL = 60.0
MESH = "the cluster's mesh or ingress; stagewise's router is spec.router (builtin by default)"
_DROPPED_ANALYSIS = {
    "stepWeightPromotion": "promotion moves all traffic to the candidate at once",
    "alerts": "stagewise has no notifications yet: its event log and `stagewise status` say what happened",
    "mirror": "stagewise's routers do not mirror requests",
    "mirrorWeight": "stagewise's routers do not mirror requests",
    "sessionAffinity": "stagewise keeps users on a release with cohorts (phased), not with a canary's cookie",
    "primaryReadyThreshold": "every stable instance must be ready",
    "canaryReadyThreshold": "every candidate instance must be ready",
}
_FLAGGER_VARIABLE = re.compile(r"\{\{\s*(interval|target|namespace|variables\.([^}\s]+))\s*\}\}")


def convert_canary(source: Source, index: Index) -> tuple[dict[str, Any], list[Source]]:
    """The stagewise spec of one Canary, and the other documents it read."""
    led = source.ledger
    led.mapped(("apiVersion",), ("kind",))
    meta = metadata(led, source.name)
    used: list[Source] = []
    body: dict[str, Any] = {"listen": _listen(led)}
    release, replicas = _release(led, index, used)
    if replicas is not None:
        body["replicas"] = replicas
    body["release"] = release
    if led.get(("spec", "provider")) is not None:
        led.dropped(("spec", "provider"), MESH)
    if led.get(("spec", "autoscalerRef")) is not None:
        led.dropped(("spec", "autoscalerRef"), "stagewise runs spec.replicas instances of each release; no autoscaler")
    namespace = str(led.get(("metadata", "namespace")) or "default")
    templates: dict[str, dict[str, Any]] = {}
    body["strategy"] = _strategy(led, index, templates, namespace, used)
    if templates:
        body["analysis"] = templates
    deadline = led.get(("spec", "progressDeadlineSeconds"))
    if isinstance(deadline, int) and not isinstance(deadline, bool) and deadline > 0:
        body["progressDeadline"] = format_duration(deadline)
        led.mapped(("spec", "progressDeadlineSeconds"))
    hooks = convert_webhooks(led, ("spec", "analysis", "webhooks"), led.get(("spec", "analysis", "webhooks")))
    if hooks:
        body["hooks"] = hooks
    spec = led.get(("spec",))
    for key in ("revertOnDeletion", "suspend", "upstreamRef", "ingressRef", "routeRef"):
        if isinstance(spec, dict) and key in spec:
            led.dropped(("spec", key), KUBE_ONLY)
    return {"apiVersion": STAGEWISE_API, "kind": "Service", "metadata": meta, "spec": body}, used


def _listen(led: Ledger) -> str:
    service = led.get(("spec", "service"))
    port = service.get("port") if isinstance(service, dict) else None
    if not isinstance(port, int) or not is_port(port):
        led.caveat(("spec",), "no service.port: listen is 127.0.0.1:8080")
        port = 8080
    else:
        led.mapped(("spec", "service", "port"))
        led.caveat(("spec", "service", "port"), f"users call 127.0.0.1:{port}: change the host to serve others")
    for key in service if isinstance(service, dict) else ():
        if key == "name":
            led.mapped(("spec", "service", "name"))
        elif key in ("targetPort", "portName", "portDiscovery", "appProtocol"):
            led.dropped(("spec", "service", key), "stagewise gives each instance its own port, {port}")
        elif key != "port":
            led.dropped(("spec", "service", key), MESH)
    return f"127.0.0.1:{port}"


def _release(led: Ledger, index: Index, used: list[Source]) -> tuple[dict[str, Any], int | None]:
    target = led.get(("spec", "targetRef"))
    name = target.get("name") if isinstance(target, dict) else None
    kind = target.get("kind") if isinstance(target, dict) else None
    deployment = next((s for s in index.sources if s.kind == kind and s.name == name), None)
    if deployment is None or not isinstance(deployment.ledger.get(("spec", "template")), dict):
        led.dropped(("spec", "targetRef"), f"the {kind} {name!r} is not in the input: the release's version and "
                                           "command are placeholders (give its file to read them)")
        return {"version": PLACEHOLDER_VERSION, "run": {"command": placeholder_command(None)}}, None
    led.mapped(("spec", "targetRef"))
    deployment.used = True
    used.append(deployment)
    dled = deployment.ledger
    dled.mapped(("apiVersion",), ("kind",), ("metadata",))
    replicas = dled.get(("spec", "replicas"))
    if isinstance(replicas, int) and not isinstance(replicas, bool):
        dled.mapped(("spec", "replicas"))
    release = release_from_pod(dled, ("spec", "template"))
    spec = dled.get(("spec",))
    for key in spec if isinstance(spec, dict) else ():
        if key not in ("replicas", "template"):
            dled.dropped(("spec", key), KUBE_ONLY)
    return release, max(1, replicas) if isinstance(replicas, int) and not isinstance(replicas, bool) else None


def _interval(led: Ledger, path: Path) -> float | None:
    return go_seconds(led, path, led.get(path))


def _strategy(led: Ledger, index: Index, templates: dict[str, dict[str, Any]], namespace: str,
              used: list[Source]) -> dict[str, Any]:
    a: Path = ("spec", "analysis")
    skip = led.get(("spec", "skipAnalysis"))
    if skip is not None:
        led.mapped(("spec", "skipAnalysis"))
    if skip is True:
        for key in led.get(a) or {}:
            if key != "webhooks":
                led.dropped((*a, key), "skipAnalysis: true — Flagger promotes without analysis")
        return {"blueGreen": {"autoPromotion": {"after": "0s"}}}
    interval = _interval(led, (*a, "interval")) or DEFAULT_INTERVAL
    threshold = led.get((*a, "threshold"))
    limit = threshold if isinstance(threshold, int) and not isinstance(threshold, bool) and threshold > 0 else 1
    if threshold is not None:
        led.mapped((*a, "threshold"))
    names = _metrics(led, index, templates, interval, limit, namespace, used)
    for key, why in _DROPPED_ANALYSIS.items():
        if led.get((*a, key)) is not None:
            led.dropped((*a, key), why)
    weights = _weights(led)
    if weights:
        return {"canary": _canary(led, weights, interval, names)}
    return {"blueGreen": _blue_green(led, interval, names)}


def _canary(led: Ledger, weights: list[int], interval: float, names: list[str]) -> dict[str, Any]:
    """Flagger's weights as a canary: each held one interval, judged by a background analysis."""
    a: Path = ("spec", "analysis")
    steps: list[dict[str, Any]] = []
    for w in weights:
        steps += [{"setWeight": w}, {"pause": {"duration": format_duration(interval)}}]
    if led.get((*a, "match")) is not None:
        led.dropped((*a, "match"), "with weights, Flagger splits all users by weight; the match is unused")
    canary: dict[str, Any] = {"steps": steps}
    if names:
        canary["analysis"] = {"templates": names}
    led.caveat(a, "each weight is held for one interval while a background analysis judges the candidate; "
                  "a failed check does not hold the weight back as Flagger's does")
    return canary


def _blue_green(led: Ledger, interval: float, names: list[str]) -> dict[str, Any]:
    """Flagger's iterations (no weights) as a blue-green: the checks run before the switch."""
    a: Path = ("spec", "analysis")
    iterations = led.get((*a, "iterations"))
    blue_green: dict[str, Any] = {"preview": _preview(led, a), "autoPromotion": {"after": "0s"}}
    if isinstance(iterations, int) and not isinstance(iterations, bool) and iterations > 0:
        led.mapped((*a, "iterations"))
        if names:
            blue_green["prePromotionAnalysis"] = {"templates": names,
                                                  "duration": format_duration(iterations * interval)}
    else:
        led.caveat(a, "neither weights nor iterations: the candidate is switched to after its pre-promotion checks")
    return blue_green


def _weights(led: Ledger) -> list[int]:
    a: Path = ("spec", "analysis")
    listed = led.get((*a, "stepWeights"))
    if isinstance(listed, list) and listed:
        good = [w for w in listed if isinstance(w, int) and not isinstance(w, bool) and 0 < w <= 100]
        if len(good) == len(listed):
            led.mapped((*a, "stepWeights"))
            for key in ("maxWeight", "stepWeight"):
                if led.get((*a, key)) is not None:
                    led.dropped((*a, key), "stepWeights is given: Flagger uses it instead")
            return good
        led.dropped((*a, "stepWeights"), "expected weights from 1 to 100")
    step, top = led.get((*a, "stepWeight")), led.get((*a, "maxWeight"))
    if not isinstance(step, int) or isinstance(step, bool) or step <= 0:
        return []
    maximum = top if isinstance(top, int) and not isinstance(top, bool) and 0 < top <= 100 else 100
    led.mapped((*a, "stepWeight"))
    if top is not None:
        led.mapped((*a, "maxWeight"))
    weights, weight = [], 0
    while weight < maximum:  # Flagger advances while below maxWeight, so the last step may pass it (up to 100)
        weight = min(weight + step, 100)
        weights.append(weight)
    return weights


def _preview(led: Ledger, a: Path) -> dict[str, Any]:
    matches = led.get((*a, "match"))
    exact: list[tuple[str, str]] = []
    for i, m in enumerate(matches if isinstance(matches, list) else []):
        headers = m.get("headers") if isinstance(m, dict) else None
        for name, rule in (headers or {}).items() if isinstance(headers, dict) else ():
            if isinstance(rule, dict) and list(rule) == ["exact"] and not exact:
                exact.append((str(name), str(rule["exact"])))
                led.mapped((*a, "match", i, "headers", name))
            else:
                led.dropped((*a, "match", i, "headers", name), "stagewise's preview route matches one header's "
                                                                 "exact value, not a regex, a prefix or a second rule")
        for key in m if isinstance(m, dict) else ():
            if key != "headers":
                led.dropped((*a, "match", i, key), "stagewise's preview route matches one header's exact value")
    if exact:
        return {"header": {exact[0][0]: exact[0][1]}}
    led.caveat(a, "the candidate is reached on the preview header X-Preview: 1 (Flagger: the canary Service)")
    return {"header": {"X-Preview": "1"}}


def _metrics(led: Ledger, index: Index, templates: dict[str, dict[str, Any]], interval: float, limit: int,
             namespace: str, used: list[Source]) -> list[str]:
    a: Path = ("spec", "analysis", "metrics")
    names: list[str] = []
    metrics = led.get(a)
    if metrics is not None and not isinstance(metrics, list):
        led.dropped(a, "expected a list of metrics")
        return names
    for i, metric in enumerate(metrics or []):
        at: Path = (*a, i)
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            led.dropped(at, "expected a metric with a name")
            continue
        template = _metric(led, at, metric, index, interval, namespace, used)
        if template is None:
            continue
        template["interval"] = format_duration(interval)
        if limit != 1:
            template["failureLimit"] = limit
        templates[metric["name"]] = template
        names.append(metric["name"])
        led.mapped((*at, "name"))
        window = _interval(led, (*at, "interval"))
        if window is not None and window != interval:
            led.caveat((*at, "interval"), f"Flagger's query window; stagewise judges the counts of each "
                                          f"analysis interval ({format_duration(interval)})")
    return names


def _metric(led: Ledger, at: Path, metric: dict[str, Any], index: Index, interval: float, namespace: str,
            used: list[Source]) -> dict[str, Any] | None:
    bound = as_dict(metric.get("thresholdRange"))
    low, high = bound.get("min"), bound.get("max")
    name = metric["name"]
    if "templateRef" not in metric and name == "request-success-rate" and is_number(low):
        led.mapped((*at, "thresholdRange", "min"))
        led.caveat(at, "measured by stagewise's router (a success rate in percent becomes an error-rate maximum)")
        return {"metric": "error-rate", "judge": "threshold", "thresholdRange": {"max": round((100 - low) / 100, 9)}}
    if "templateRef" not in metric and name == "request-duration" and is_number(high):
        led.mapped((*at, "thresholdRange", "max"))
        led.caveat(at, "measured by stagewise's router: the 99th percentile of latency in ms, as Flagger's")
        return {"metric": "latency", "judge": "threshold", "thresholdRange": {"max": high}, "quantile": 0.99}
    ref = metric.get("templateRef")
    if not isinstance(ref, dict):
        led.dropped(at, f"not a builtin metric Flagger and stagewise share ({name}) and no templateRef")
        return None
    source = next((s for s in index.of(FLAGGER_GROUP, "MetricTemplate") if s.name == ref.get("name")), None)
    if source is None:
        led.dropped(at, f"MetricTemplate {ref.get('name')!r} is not in the input: give its file to convert it")
        return None
    led.mapped((*at, "templateRef"))
    source.used = True
    used.append(source)
    template = _metric_template(source, metric, namespace, interval, led.get(("spec", "targetRef", "name")))
    if template is None:
        led.dropped(at, f"MetricTemplate {ref.get('name')!r} has no provider stagewise has (prometheus)")
        return None
    limits = {k: v for k, v in (("min", low), ("max", high)) if is_number(v)}
    if limits:
        template["thresholdRange"] = limits
        led.mapped((*at, "thresholdRange"))
    if metric.get("templateVariables") is not None:
        led.mapped((*at, "templateVariables"))
    return template


def _metric_template(source: Source, metric: dict[str, Any], namespace: str, interval: float,
                     target: Any) -> dict[str, Any] | None:
    mled = source.ledger
    mled.mapped(("apiVersion",), ("kind",), ("metadata",))
    if mled.get(("spec", "provider", "type")) != "prometheus" or not isinstance(mled.get(("spec", "query")), str):
        mled.dropped(("spec",), "stagewise's analysis reads Prometheus (or its router) only")
        return None
    variables = as_dict(metric.get("templateVariables"))

    def fill(match: re.Match[str]) -> str:
        word = match[1]
        if word == "interval":
            return "{{window}}"
        if word == "target":
            return str(target)
        if word == "namespace":
            return namespace
        return str(variables.get(match[2], match[0]))

    query = _FLAGGER_VARIABLE.sub(fill, str(mled.get(("spec", "query"))))
    mled.mapped(("spec", "query"), ("spec", "provider", "type"))
    mled.caveat(("spec", "query"), "{{ interval }} is stagewise's {{window}}; {{ target }} and {{ namespace }} "
                                   "are written out: the query still measures Kubernetes pods")
    address = mled.get(("spec", "provider", "address"))
    if isinstance(address, str):
        mled.mapped(("spec", "provider", "address"))
    for key in mled.get(("spec", "provider")) or {}:
        if key not in ("type", "address"):
            mled.dropped(("spec", "provider", key), "stagewise's prometheus provider takes an address only")
    del interval
    return {"provider": "prometheus", "address": address if isinstance(address, str) else "http://127.0.0.1:9090",
            "query": query, "judge": "threshold"}


__all__ = ["convert_canary"]
