"""An Argo Rollouts `Rollout` → a stagewise Service spec (as the loader's YAML document, a dict).

Argo's canary steps are stagewise's own vocabulary (`setWeight`, `pause`,
`analysis`, `setHeaderRoute`, background `analysis` from `startingStep`), so
they map one to one, with Argo's pause durations read as Argo reads them
(`10` and `"10"` are seconds, `"1h"` is Go's). `blueGreen` maps field by field
(`autoPromotionEnabled`/`autoPromotionSeconds` → `autoPromotion`,
`previewService` → a preview address, `scaleDownDelaySeconds` →
`scaleDownDelay`). What is Kubernetes' alone — selectors, surge, metadata,
anti-affinity, traffic-router plugins — or stagewise has not — experiments,
mirror routes, step plugins — is reported where it is written.

Pure: reads the documents it is given.
"""

from __future__ import annotations

import re
from typing import Any

from stagewise.convert import carry
from stagewise.convert.argo_analysis import TemplateBook, convert_reference, convert_template
from stagewise.convert.kube import argo_pause_seconds, is_port
from stagewise.convert.ledger import Ledger, as_list
from stagewise.convert.sources import ARGO_GROUP, Index, Source
from stagewise.convert.workload import KUBE_ONLY, release_from_pod
from stagewise.core.durations import format_duration
from stagewise.spec.yamltree import Path

STAGEWISE_API = "stagewise.dev/v1alpha1"
DEFAULT_PORT = 8080
_DROPPED_SPEC = {
    "selector": KUBE_ONLY,
    "revisionHistoryLimit": "stagewise keeps every delivery in its history",
    "minReadySeconds": "an instance is ready when its readiness check passes",
    "paused": "a spec starts its delivery when applied; `stagewise pause` holds one",
    "restartAt": "stagewise restarts no instances on a schedule",
    "rollbackWindow": "`stagewise undo` delivers the previous release again, at any time",
    "workloadRef": "the pod template lives in another object that is not converted: write the release by hand",
    "analysis": "stagewise keeps every analysis of a delivery",
}
_DROPPED_CANARY = {
    "trafficRouting": "the cluster's traffic router (a mesh, an ingress, a plugin); stagewise's router is "
                      "spec.router: builtin, haproxy or nginx",
    "maxSurge": "the canary gets the instances its weight needs; the stable release keeps its size",
    "maxUnavailable": "the canary gets the instances its weight needs; the stable release keeps its size",
    "canaryMetadata": KUBE_ONLY, "stableMetadata": KUBE_ONLY, "antiAffinity": KUBE_ONLY,
    "scaleDownDelaySeconds": "a promoted canary's old instances stop once the router has moved off them",
    "scaleDownDelayRevisionLimit": "a promoted canary's old instances stop once the router has moved off them",
    "abortScaleDownDelaySeconds": "an aborted canary's instances stop once its weight is 0",
    "dynamicStableScale": "the stable release keeps its full size until promotion",
    "minPodsPerReplicaSet": "the canary has at least one instance whatever its weight",
    "pingPong": KUBE_ONLY,
}
_DROPPED_BLUE_GREEN = {
    "previewReplicaCount": "the preview slot runs the release at full size",
    "antiAffinity": KUBE_ONLY, "activeMetadata": KUBE_ONLY, "previewMetadata": KUBE_ONLY,
    "abortScaleDownDelaySeconds": "an aborted candidate's instances stop at once; the stable slot never moved",
    "scaleDownDelayRevisionLimit": "one old slot is kept warm, for scaleDownDelay",
    "maxUnavailable": "the slots do not share instances",
}


def service_name(led: Ledger, raw: str) -> str:
    """A DNS label for stagewise (Kubernetes names may hold dots and be longer)."""
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:63].strip("-") or "service"
    led.mapped(("metadata", "name"))
    if name != raw:
        led.caveat(("metadata", "name"), f"stagewise names a service with a DNS label: {name}")
    return name


def metadata(led: Ledger, raw_name: str) -> dict[str, Any]:
    """`metadata` of the spec, and the account of the object's own metadata."""
    out: dict[str, Any] = {"name": service_name(led, raw_name)}
    meta = led.get(("metadata",))
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if isinstance(labels, dict) and labels:
        out["labels"] = {str(k): str(v) for k, v in labels.items()}
        led.mapped(("metadata", "labels"))
    if isinstance(meta, dict) and "namespace" in meta:
        led.dropped(("metadata", "namespace"), "stagewise services have no namespace: a state directory holds them")
    notes = meta.get("annotations") if isinstance(meta, dict) else None
    for key in notes if isinstance(notes, dict) else ():
        at: Path = ("metadata", "annotations", key)
        if key.startswith(carry.PREFIX):
            led.mapped(at)
        elif key.startswith("notifications.argoproj.io/"):
            led.dropped(at, "stagewise has no notifications yet: its event log and `stagewise status` say what "
                            "happened")
        else:
            led.dropped(at, "an annotation for Kubernetes tools: no stagewise field")
    return out


def convert_rollout(source: Source, index: Index) -> tuple[dict[str, Any], list[Source]]:
    """The stagewise spec of one Rollout, and the other documents it read (for their notes)."""
    led = source.ledger
    led.mapped(("apiVersion",), ("kind",))
    name = source.name
    meta = metadata(led, name)
    used: list[Source] = []
    spec_in = led.get(("spec",))
    if not isinstance(spec_in, dict):
        spec_in = {}
        led.dropped(("spec",), "expected a mapping")
    body: dict[str, Any] = {}
    anno = led.get(("metadata", "annotations")) or {}
    canary, blue_green = led.get(("spec", "strategy", "canary")), led.get(("spec", "strategy", "blueGreen"))
    body["listen"] = _listen(led, anno, spec_in, index, used)
    body.update(_carried(anno))
    replicas = spec_in.get("replicas")
    if isinstance(replicas, int) and not isinstance(replicas, bool):
        body["replicas"] = max(1, replicas)
        led.mapped(("spec", "replicas"))
    if not isinstance(spec_in.get("template"), dict):
        led.dropped(("spec",), "no pod template: the release is a placeholder")
    body["release"] = release_from_pod(led, ("spec", "template"))
    book = TemplateBook()
    if isinstance(canary, dict):
        body["strategy"] = {"canary": _canary(led, canary, index, book, source.name)}
    elif isinstance(blue_green, dict):
        body["strategy"] = {"blueGreen": _blue_green(led, blue_green, anno, body["listen"], index, book,
                                                     source.name, used)}
    else:
        led.dropped(("spec", "strategy"), "expected canary or blueGreen: the spec delivers with a canary "
                                          "straight to 100%")
        body["strategy"] = {"canary": {"steps": [{"setWeight": 100}]}}
    _unreferenced_templates(index, book, name)
    if book.templates:
        body["analysis"] = book.templates
    body.update(_progress_deadline(led, spec_in))
    for key, why in _DROPPED_SPEC.items():
        if key in spec_in:
            led.dropped(("spec", key), why)
    used += [s for s in index.sources if s.used and s is not source and s not in used]
    return {"apiVersion": STAGEWISE_API, "kind": "Service", "metadata": meta, "spec": body}, used


def _carried(anno: Any) -> dict[str, Any]:
    """What `--to argo` carried in annotations: the router, the platform, and the gates (hooks,
    notifications, windows)."""
    if not isinstance(anno, dict):
        return {}
    out: dict[str, Any] = {}
    for key, anno_key in (("router", carry.ROUTER), ("platform", carry.PLATFORM)):
        value = carry.load(anno.get(anno_key))
        if isinstance(value, dict):
            out[key] = value
    for key, anno_key in carry.GATES.items():
        value = carry.load(anno.get(anno_key))
        if isinstance(value, list):
            out[key] = value
    return out


def _unreferenced_templates(index: Index, book: TemplateBook, service: str) -> None:
    """Templates written for this service by `--to argo` that no step names (a background analysis's, kept)."""
    for template in index.of(ARGO_GROUP, "AnalysisTemplate"):
        if not template.used and template.ledger.get(("metadata", "annotations", carry.SERVICE)) == service:
            template.used = True  # defined by the spec `--to argo` wrote it from, though no step names it
            for metric_name, converted, _ in convert_template(template, [], service):
                book.add(metric_name, converted)


def _progress_deadline(led: Ledger, spec_in: dict[str, Any]) -> dict[str, Any]:
    """`progressDeadline` from progressDeadlineSeconds; progressDeadlineAbort accounted for."""
    out = {}
    deadline = spec_in.get("progressDeadlineSeconds")
    if isinstance(deadline, int) and not isinstance(deadline, bool) and deadline > 0:
        out["progressDeadline"] = format_duration(deadline)
        led.mapped(("spec", "progressDeadlineSeconds"))
    abort = spec_in.get("progressDeadlineAbort")
    if abort is True:
        led.mapped(("spec", "progressDeadlineAbort"))
    elif abort is False:
        led.dropped(("spec", "progressDeadlineAbort"), "stagewise always rolls back a delivery that made no "
                                                       "progress for progressDeadline")
    return out


def _listen(led: Ledger, anno: Any, spec_in: dict[str, Any], index: Index, used: list[Source]) -> str:
    written = anno.get(carry.LISTEN) if isinstance(anno, dict) else None
    names = [led.get(("spec", "strategy", "canary", "stableService")),
             led.get(("spec", "strategy", "blueGreen", "activeService"))]
    for kind, key in (("canary", "stableService"), ("blueGreen", "activeService")):
        if led.get(("spec", "strategy", kind, key)) is not None:
            led.mapped(("spec", "strategy", kind, key))
    if led.get(("spec", "strategy", "canary", "canaryService")) is not None:
        led.mapped(("spec", "strategy", "canary", "canaryService"))
        led.caveat(("spec", "strategy", "canary", "canaryService"),
                   "the canary is reached through the router's weights and header routes, not an address of its own")
    labels = led.get(("spec", "template", "metadata", "labels"))
    port = service_port(index, [n for n in names if isinstance(n, str)], labels, used)
    canary_service = led.get(("spec", "strategy", "canary", "canaryService"))
    twin = next((s for s in index.sources if s.kind == "Service" and s.name == canary_service), None)
    if twin is not None and not twin.used:
        use_service(twin, used, "the canary Service answers at")
    if isinstance(written, str):
        return written  # what `--to argo` carried: the exact address, host included
    if port is None:
        ports = led.get(("spec", "template", "spec", "containers", 0, "ports"))
        first = ports[0] if isinstance(ports, list) and ports and isinstance(ports[0], dict) else {}
        port = first.get("containerPort") if is_port(first.get("containerPort")) else DEFAULT_PORT
        led.caveat(("spec",), f"listen is 127.0.0.1:{port} (no Service in the input says the port users call)")
    return f"127.0.0.1:{port}"


def service_port(index: Index, names: list[str], labels: Any, used: list[Source]) -> int | None:
    """The port of the Service users call: one named by the strategy, else one selecting the pods."""
    services = [s for s in index.sources if s.kind == "Service" and s.api_version == "v1"]
    chosen = next((s for n in names for s in services if s.name == n), None)
    if chosen is None and isinstance(labels, dict):
        chosen = next((s for s in services if _selects(s, labels)), None)
    if chosen is None:
        return None
    return use_service(chosen, used)


def use_service(service: Source, used: list[Source], role: str = "users call") -> int | None:
    """Read a Service's first port (the address users call becomes a loopback port); the rest is Kubernetes'."""
    led = service.ledger
    service.used = True
    used.append(service)
    led.mapped(("apiVersion",), ("kind",), ("metadata", "name"))
    port = led.get(("spec", "ports", 0, "port"))
    if is_port(port):
        led.mapped(("spec", "ports", 0, "port"))
        led.caveat(("spec", "ports", 0, "port"), f"{role} 127.0.0.1:{port}: change the host to serve others")
    spec = led.get(("spec",))
    for key in spec if isinstance(spec, dict) else ():
        if key != "ports":
            led.dropped(("spec", key), KUBE_ONLY)
    ports = led.get(("spec", "ports"))
    for i, item in enumerate(ports if isinstance(ports, list) else []):
        for key in item if isinstance(item, dict) else ():
            if (i, key) != (0, "port"):
                led.dropped(("spec", "ports", i, key), "stagewise gives each instance its own port, {port}")
    return port if isinstance(port, int) and is_port(port) else None


def _selects(service: Source, labels: dict[str, Any]) -> bool:
    selector = service.ledger.get(("spec", "selector"))
    return isinstance(selector, dict) and bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _canary(led: Ledger, canary: dict[str, Any], index: Index, book: TemplateBook, rollout: str) -> dict[str, Any]:
    base: Path = ("spec", "strategy", "canary")
    steps_in = as_list(canary.get("steps"))
    steps: list[dict[str, Any]] = []
    first_out: dict[int, int] = {}
    for i, step in enumerate(steps_in):
        first_out[i] = len(steps)
        converted = _step(led, (*base, "steps", i), step, index, book, rollout)
        if converted is not None:
            steps.append(converted)
    out: dict[str, Any] = {}
    if not steps:
        steps = [{"setWeight": 100}]
        led.caveat(base, "no step maps: the canary goes to setWeight 100, then promotion (Argo: a rolling update)")
    out["steps"] = steps
    background = canary.get("analysis")
    if background is not None:
        ref = convert_reference(led, (*base, "analysis"), background, index, book, rollout)
        if ref.value is not None:
            ref.value.pop("duration", None)  # a background analysis runs until promotion
            start = background.get("startingStep", 0) if isinstance(background, dict) else 0
            if isinstance(background, dict) and "startingStep" in background:
                led.mapped((*base, "analysis", "startingStep"))
            if isinstance(start, int) and not isinstance(start, bool) and start > 0:
                index_out = first_out.get(start, len(steps))
                if index_out >= len(steps):
                    index_out = len(steps) - 1
                    led.caveat((*base, "analysis", "startingStep"), "past the last step that maps: it starts at "
                                                                    "the last step")
                if index_out:
                    ref.value["startingStep"] = index_out
            out["analysis"] = ref.value
    for key, why in _DROPPED_CANARY.items():
        if key in canary:
            led.dropped((*base, key), why)
    return out


def _step(led: Ledger, at: Path, step: Any, index: Index, book: TemplateBook, rollout: str) -> dict[str, Any] | None:
    if not isinstance(step, dict) or len(step) != 1:
        led.dropped(at, "a step has exactly one of setWeight, pause, analysis, setHeaderRoute, ...")
        return None
    kind, value = next(iter(step.items()))
    where: Path = (*at, kind)
    if kind == "setWeight":
        return _set_weight(led, where, value)
    if kind == "pause":
        return _pause(led, where, value)
    if kind == "analysis":
        return _analysis_step(led, where, value, index, book, rollout)
    if kind == "setHeaderRoute":
        return _header_route(led, where, value)
    if kind == "setCanaryScale":
        if isinstance(value, dict) and value == {"matchTrafficWeight": True}:
            led.mapped(where)
            led.caveat(where, "stagewise always scales the canary to its weight: no step is needed")
        else:
            led.dropped(where, "stagewise sizes the canary by its weight (at least one instance), not by a count")
        return None
    led.dropped(at, _UNMAPPED_STEPS.get(kind, f"not a canary step stagewise knows ({kind})"))
    return None


_UNMAPPED_STEPS = {
    "setMirrorRoute": "stagewise's routers do not mirror requests",
    "experiment": "stagewise has no experiments: a canary step with analysis compares the release with the "
                  "stable one serving at the same time",
    "plugin": "stagewise has no step plugins",
}


def _set_weight(led: Ledger, where: Path, value: Any) -> dict[str, Any] | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
        led.mapped(where)
        return {"setWeight": value}
    led.dropped(where, f"expected a weight from 0 to 100, got {value!r}")
    return None


def _pause(led: Ledger, where: Path, value: Any) -> dict[str, Any] | None:
    duration = value.get("duration") if isinstance(value, dict) else None
    if duration is None:
        led.mapped(where)
        return {"pause": {}}
    try:
        seconds = argo_pause_seconds(duration)
    except ValueError as exc:
        led.dropped(where, str(exc))
        return None
    led.mapped(where)
    return {"pause": {"duration": format_duration(seconds)}}


def _analysis_step(led: Ledger, where: Path, value: Any, index: Index, book: TemplateBook,
                   rollout: str) -> dict[str, Any] | None:
    ref = convert_reference(led, where, value, index, book, rollout)
    if ref.value is None:
        return None
    if ref.open_ended:
        led.caveat(where, "a metric with an interval and no count runs in Argo until it fails or the rollout "
                          "ends; stagewise ends a step's analysis after its duration (default 1m)")
    return {"analysis": ref.value}


def _header_route(led: Ledger, at: Path, value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        led.dropped(at, "expected {name, match}")
        return None
    route: dict[str, Any] = {}
    if isinstance(value.get("name"), str):
        route["name"] = value["name"]
        led.mapped((*at, "name"))
    matches_in = as_list(value.get("match"))
    matches = []
    for j, m in enumerate(matches_in):
        header_value = m.get("headerValue") if isinstance(m, dict) else None
        if isinstance(header_value, dict) and list(header_value) == ["exact"] and "headerName" in m:
            matches.append({"headerName": str(m["headerName"]), "headerValue": {"exact": str(header_value["exact"])}})
            led.mapped((*at, "match", j))
        else:
            led.dropped((*at, "match", j), "stagewise's header routes match a header's exact value, not a regex "
                                           "or a prefix")
    if matches_in and not matches:
        led.dropped(at, "no match of this route can be said exactly, and an empty match would remove the route")
        return None
    if "match" in value:
        led.mapped((*at, "match"))
    route["match"] = matches
    return {"setHeaderRoute": route}


def _blue_green(led: Ledger, cfg: dict[str, Any], anno: Any, listen: str, index: Index, book: TemplateBook,
                rollout: str, used: list[Source]) -> dict[str, Any]:
    base: Path = ("spec", "strategy", "blueGreen")
    out: dict[str, Any] = _auto_promotion(led, base, cfg)
    preview = carry.load(anno.get(carry.PREVIEW)) if isinstance(anno, dict) else None
    if isinstance(preview, dict):
        out["preview"] = preview
        if "previewService" in cfg:
            led.mapped((*base, "previewService"))
    elif isinstance(cfg.get("previewService"), str):
        led.mapped((*base, "previewService"))
        out["preview"] = {"listen": _preview_listen(led, base, cfg["previewService"], listen, index, used)}
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if key in cfg:
            ref = convert_reference(led, (*base, key), cfg[key], index, book, rollout)
            if ref.value is not None:
                out[key] = ref.value
                if ref.open_ended:
                    led.caveat((*base, key), "a metric without count runs in Argo until it fails; stagewise ends "
                                             "this analysis after its duration (default 1m)")
    delay = cfg.get("scaleDownDelaySeconds")
    if isinstance(delay, int) and not isinstance(delay, bool) and delay >= 0:
        out["scaleDownDelay"] = format_duration(delay)
        led.mapped((*base, "scaleDownDelaySeconds"))
    for key, why in _DROPPED_BLUE_GREEN.items():
        if key in cfg:
            led.dropped((*base, key), why)
    return out


def _auto_promotion(led: Ledger, base: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """`autoPromotion` from autoPromotionEnabled and autoPromotionSeconds (Argo's default: at once)."""
    enabled = cfg.get("autoPromotionEnabled", True)
    seconds = cfg.get("autoPromotionSeconds")
    for key in ("autoPromotionEnabled", "autoPromotionSeconds"):
        if key in cfg:
            led.mapped((*base, key))
    if enabled is False:
        if seconds is not None:
            led.dropped((*base, "autoPromotionSeconds"), "ignored by Argo when autoPromotionEnabled is false")
        return {}
    after = seconds if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0 else 0
    return {"autoPromotion": {"after": format_duration(after)}}


def _preview_listen(led: Ledger, base: Path, name: str, listen: str, index: Index, used: list[Source]) -> str:
    host, _, port_text = listen.rpartition(":")
    service = next((s for s in index.sources if s.kind == "Service" and s.name == name), None)
    port = use_service(service, used, "testers reach the preview at") if service is not None else None
    if port is None or str(port) == port_text:
        port = int(port_text) + 1 if int(port_text) < 65535 else int(port_text) - 1
        led.caveat((*base, "previewService"), f"the preview Service becomes a second address, {host}:{port} "
                                              "(a Service's own port is taken by the active one on a host)")
    return f"{host}:{port}"


__all__ = ["STAGEWISE_API", "convert_rollout", "metadata", "service_name", "service_port", "use_service"]
