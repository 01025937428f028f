"""stagewise Service specs → Argo Rollouts: a `Rollout`, its `AnalysisTemplate`s and the two `Service`s it names.

For a team moving to Kubernetes. The release becomes a container (image
`<service>:<version>`, a placeholder to build; `run.command` as its command,
`{port}` as `$(VAR)` of a variable holding the container's port, `$` escaped
as Kubernetes reads it), readiness becomes a readiness probe and a startup
probe whose patience is `readiness.timeout`. canary and blueGreen map field
for field; a template maps to a metric when Argo's fields can say it
(prometheus with a query, command as a Job, http as a web metric, judged by a
threshold) — whether they can is decided by converting the metric back and
comparing, so the round trip to Argo and back is exact for every spec in that
subset. What Argo cannot say (the address users call on a host, the router,
the platform, a header preview, a sequential judge) travels in `stagewise.dev/*`
annotations.

Pure: text in, text out.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import TYPE_CHECKING, Any

from stagewise.convert import carry
from stagewise.convert.argo_analysis import convert_metric
from stagewise.convert.kube import escape, go_duration
from stagewise.convert.ledger import Ledger, Note, Tally
from stagewise.convert.render import dump_documents, header
from stagewise.convert.sources import STAGEWISE_API, Index, Source, read_sources
from stagewise.convert.workload import PORT_VARIABLE
from stagewise.core.durations import parse_duration
from stagewise.errors import Problem, SpecError
from stagewise.spec import load_spec_text
from stagewise.spec.yamltree import Document, Position

if TYPE_CHECKING:
    from stagewise.convert import Conversion

ARGO_API = "argoproj.io/v1alpha1"
CONTAINER_PORT = 8080
DEFAULT_STEP_ANALYSIS = 60.0
"""stagewise's duration of a step's analysis when the spec names none (strategies.canary)."""
PLACEHOLDER_QUERY = {
    "error-rate": "REPLACE-ME: PromQL giving the canary's error rate as a fraction",
    "latency": "REPLACE-ME: PromQL giving the canary's 99th percentile latency in ms",
}
DEFAULT_LIMIT = {"error-rate": 0.01, "latency": 500.0}
"""What stagewise's threshold judge holds a metric to when no range is given (Flagger's defaults)."""


def convert_to_argo(inputs: list[tuple[str, str]]) -> Conversion:
    """Conversion of every stagewise Service in `inputs`."""
    from stagewise.convert import Conversion, Output, close

    index = read_sources(inputs)
    services = index.of(STAGEWISE_API, "Service")
    if not services:
        raise SpecError(_not_stagewise(index))
    built = []
    for source in services:
        source.used = True
        normal = _normalized(source, index, inputs)
        built.append((source, _rollout_documents(source.ledger, normal)))
    closed = close(index)
    outputs = []
    for source, documents in built:
        tally, notes = closed[id(source)]
        tallies = {source.filename: tally}
        title = (f"Converted by `stagewise convert --to argo` from the stagewise Service {source.name!r} in "
                 f"{source.filename}.")
        outputs.append(Output(source.name, header(title, tallies, notes) + dump_documents(documents), notes,
                              tallies))
    all_notes: list[Note] = [n for s in index.sources for n in closed[id(s)][1]]
    totals: dict[str, Tally] = {}
    for s in index.sources:
        t, before = closed[id(s)][0], totals.get(s.filename, Tally(0, 0))
        totals[s.filename] = Tally(before.mapped + t.mapped, before.not_mapped + t.not_mapped)
    return Conversion(outputs, all_notes, totals)


def _not_stagewise(index: Index) -> list[Problem]:
    problems = []
    for filename in index.files:
        first = next(s for s in index.sources if s.filename == filename)
        start = first.ledger.doc.start
        problems.append(Problem(filename, start.line, start.column, "",
                                f"expected a stagewise Service (apiVersion {STAGEWISE_API}, kind Service), found "
                                f"{first.kind} ({first.api_version}); to convert from Argo Rollouts or Flagger use "
                                "--to stagewise"))
    return problems


def _normalized(source: Source, index: Index, inputs: list[tuple[str, str]]) -> dict[str, Any]:
    """The spec as the loader reads it, every default filled in (the loader's own JSON form). The loader reads
    the document's own lines, so what it refuses is reported at the line of the file."""
    text = next(t for f, t in inputs if f == source.filename)
    siblings = [s for s in index.sources if s.filename == source.filename]
    first = source.ledger.doc.start.line
    later = [s.ledger.doc.start.line for s in siblings if s.ledger.doc.start.line > first]
    lines = text.splitlines(keepends=True)[first - 1:(min(later) - 1) if later else None]
    while lines and lines[-1].strip() in ("---", "...", ""):
        lines.pop()
    try:
        spec = load_spec_text("".join(lines), source.filename)
    except SpecError as exc:
        raise SpecError([Problem(p.file, p.line + first - 1, p.column, p.field, p.message)
                         for p in exc.problems]) from exc
    normal: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return normal


def _rollout_documents(led: Ledger, normal: dict[str, Any]) -> list[dict[str, Any]]:
    led.mapped(("apiVersion",), ("kind",), ("metadata",))
    meta, body = normal["metadata"], normal["spec"]
    name = meta["name"]
    anno: dict[str, str] = {carry.LISTEN: body["listen"]}
    led.mapped(("spec", "listen"))
    entry = f"{name}-active" if "blueGreen" in body["strategy"] else f"{name}-stable"
    led.caveat(("spec", "listen"), "carried in the Rollout's stagewise.dev/listen annotation; on Kubernetes "
                                   f"users call the Service {entry}")
    for key, anno_key, default in (("router", carry.ROUTER, {"kind": "builtin"}),
                                   ("platform", carry.PLATFORM, {"kind": "local", "hosts": []})):
        if led.get(("spec", key)) is not None:
            led.mapped(("spec", key))
            led.caveat(("spec", key), f"carried in the {anno_key} annotation: on Kubernetes, the cluster takes "
                                      "its place")
        if body[key] != default:
            anno[anno_key] = carry.dump(body[key])
    rollout_meta: dict[str, Any] = {"name": name}
    if meta.get("labels"):
        rollout_meta["labels"] = dict(meta["labels"])
    for key, anno_key in carry.GATES.items():
        if body.get(key):
            anno[anno_key] = carry.dump(body[key])
            led.mapped(("spec", key))
            led.caveat(("spec", key), f"carried in the {anno_key} annotation: Argo Rollouts has no {key} of this "
                                      "kind (its analysis runs and notification engine take their place)")
    rollout_meta["annotations"] = anno
    templates = _analysis_templates(led, body, name)
    strategy, services, preview_anno = _strategy(led, body, name)
    if preview_anno is not None:
        anno[carry.PREVIEW] = preview_anno
    led.mapped(("spec", "replicas"), ("spec", "progressDeadline"))
    rollout = {
        "apiVersion": ARGO_API, "kind": "Rollout", "metadata": rollout_meta,
        "spec": {
            "replicas": body["replicas"],
            "progressDeadlineSeconds": math.ceil(body_seconds(body["progressDeadline"])),
            "progressDeadlineAbort": True,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [_container(led, name, body["release"])]}},
            "strategy": strategy,
        },
    }
    return [rollout, *templates, *services]


def body_seconds(value: Any) -> float:
    return parse_duration(value)


def _container(led: Ledger, name: str, release: dict[str, Any]) -> dict[str, Any]:
    led.mapped(("spec", "release"))
    run = release["run"]
    env_in: dict[str, str] = run.get("env", {})
    holder = next((k for k, v in env_in.items() if v == "{port}"), PORT_VARIABLE)
    reference = f"$({holder})"
    env: list[dict[str, str]] = [{"name": holder, "value": str(CONTAINER_PORT)}]
    for key, value in env_in.items():
        if key != holder:
            env.append({"name": key, "value": escape(value).replace("{port}", reference)})
    uses_port = any("{port}" in a for a in run["command"]) or any("{port}" in v for v in env_in.values())
    if not uses_port and holder == PORT_VARIABLE:
        env = env[1:]
    container: dict[str, Any] = {
        "name": name,
        "image": f"{name}:{release['version']}",
        "command": [escape(a).replace("{port}", reference) for a in run["command"]],
    }
    if env:
        container["env"] = env
    container["ports"] = [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}]
    led.caveat(("spec", "release", "version"), f"the image {name}:{release['version']} is a placeholder: build "
                                               "and push an image that runs run.command")
    readiness = release.get("readiness", {})
    handler: dict[str, Any] | None = None
    if readiness.get("http"):
        handler = {"httpGet": {"path": readiness["http"], "port": "http"}}
    elif readiness.get("tcp"):
        handler = {"tcpSocket": {"port": "http"}}
    if handler is not None:
        container["readinessProbe"] = dict(handler)
        timeout = math.ceil(body_seconds(readiness.get("timeout", "30s")))
        container["startupProbe"] = {**handler, "periodSeconds": 1, "failureThreshold": max(1, timeout)}
    return container


def _analysis_templates(led: Ledger, body: dict[str, Any], rollout: str) -> list[dict[str, Any]]:
    """AnalysisTemplates, each metric's count × interval as long as the references' durations ask."""
    durations = _durations(body["strategy"])
    background = body["strategy"].get("canary", {}).get("analysis", {}).get("templates", [])
    out = []
    for name, template in body.get("analysis", {}).items():
        led.mapped(("spec", "analysis", name))
        wanted = durations.get(name, set())
        duration = max(wanted) if wanted else None
        if len(wanted) > 1:
            longest = go_duration(duration or 0)
            led.caveat(("spec", "analysis", name), "referenced with different durations; Argo counts a metric's "
                                                   f"measurements in the template: every reference runs {longest}")
        if duration is not None and name in background:
            led.caveat(("spec", "analysis", name), "also a background analysis, which Argo ends after the "
                                                   "template's count of measurements")
        out.append(_analysis_template(led, name, template, duration, rollout))
    return out


def _durations(strategy: dict[str, Any]) -> dict[str, set[float]]:
    refs: list[dict[str, Any]] = []
    if "canary" in strategy:
        refs += [s["analysis"] for s in strategy["canary"]["steps"] if "analysis" in s]
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if key in strategy.get("blueGreen", {}):
            refs.append(strategy["blueGreen"][key])
    if "phased" in strategy and "analysis" in strategy["phased"]:
        refs.append(strategy["phased"]["analysis"])
    out: dict[str, set[float]] = {}
    for ref in refs:
        seconds = body_seconds(ref["duration"]) if "duration" in ref else DEFAULT_STEP_ANALYSIS
        for name in ref["templates"]:
            out.setdefault(name, set()).add(seconds)
    return out


def _analysis_template(led: Ledger, name: str, template: dict[str, Any], duration: float | None,
                       rollout: str) -> dict[str, Any]:
    interval = body_seconds(template["interval"]) if "interval" in template else 60.0
    metric: dict[str, Any] = {"name": kube_name(name), "interval": go_duration(interval)}
    if duration is not None:
        metric["count"] = max(1, math.ceil(duration / interval))
    if template["failureLimit"] != 1:
        metric["failureLimit"] = template["failureLimit"] - 1
    args: list[dict[str, Any]] = []
    provider = template["provider"]
    if provider == "prometheus" and template.get("query"):
        low_high = template.get("thresholdRange", {})
        metric["successCondition"] = _condition(low_high.get("min"), low_high.get("max"))
        metric["provider"] = {"prometheus": {"address": template["address"],
                                             "query": _to_args(template["query"], args, rollout, interval)}}
    elif provider == "command":
        job: dict[str, Any] = {"spec": {
            "template": {"spec": {"containers": [{
                "name": "check", "image": f"{rollout}-checks:latest",
                "command": [_to_args(a, args, rollout, interval) for a in template["args"]]}],
                "restartPolicy": "Never"}},
            "backoffLimit": 0}}
        if "latencyLimit" in template:
            job["spec"]["activeDeadlineSeconds"] = math.ceil(body_seconds(template["latencyLimit"]))
        metric["provider"] = {"job": job}
    elif provider == "http":
        web: dict[str, Any] = {"url": _to_args(template["url"], args, rollout, interval)}
        if template.get("method", "GET") != "GET":
            web["method"] = template["method"]
        if "latencyLimit" in template:
            web["timeoutSeconds"] = math.ceil(body_seconds(template["latencyLimit"]))
        metric["provider"] = {"web": web}
    else:
        limit = template.get("thresholdRange", {}).get("max", DEFAULT_LIMIT[template["metric"]])
        metric["successCondition"] = _condition(template.get("thresholdRange", {}).get("min"), limit)
        metric["provider"] = {"prometheus": {"address": "http://prometheus.REPLACE-ME:9090",
                                             "query": PLACEHOLDER_QUERY[template["metric"]]}}
    document: dict[str, Any] = {"apiVersion": ARGO_API, "kind": "AnalysisTemplate",
                                "metadata": {"name": kube_name(name), "labels": dict(carry.MANAGED_BY),
                                             "annotations": {carry.SERVICE: rollout}},
                                "spec": {"metrics": [metric]}}
    if args:
        document["spec"] = {"args": args, "metrics": [metric]}
    if kube_name(name) != name:
        document["metadata"]["annotations"][carry.NAME] = name
    if not _reads_back(metric, args, template, rollout):
        document["metadata"]["annotations"][carry.TEMPLATE] = carry.dump(_sparse(template))
        led.caveat(("spec", "analysis", name), f"Argo has no field for this template ({_why(template)}): its "
                                               f"metric is a placeholder to complete, and the stagewise template "
                                               f"is kept in the {carry.TEMPLATE} annotation")
    return document


def _condition(low: float | None, high: float | None) -> str:
    from stagewise.convert.conditions import success_condition

    return success_condition(low, high)


_PLACEHOLDER_ARGS = {
    "{{service}}": ("service", None), "{{release}}": ("release", "Latest"), "{{candidate}}": ("candidate", "Latest"),
    "{{baseline}}": ("baseline", "Stable"), "{{window}}": ("window", None),
}


def _to_args(text: str, args: list[dict[str, Any]], rollout: str, interval: float) -> str:
    """stagewise's placeholders as Argo args: pod hashes for releases, values for the service and window."""
    for placeholder, (name, hash_of) in _PLACEHOLDER_ARGS.items():
        if placeholder not in text:
            continue
        text = text.replace(placeholder, f"{{{{args.{name}}}}}")
        if any(a["name"] == name for a in args):
            continue
        if hash_of is not None:
            args.append({"name": name, "valueFrom": {"podTemplateHashValue": hash_of}})
        else:
            args.append({"name": name, "value": rollout if name == "service" else go_duration(interval)})
    return text


def _sparse(template: dict[str, Any]) -> dict[str, Any]:
    """The template without the fields that equal stagewise's defaults."""
    defaults = _template_defaults()
    return {k: v for k, v in template.items() if defaults.get(k) != v}


def _template_defaults() -> dict[str, Any]:
    spec = load_spec_text("apiVersion: stagewise.dev/v1alpha1\nkind: Service\nmetadata: {name: x}\n"
                          "spec: {listen: '127.0.0.1:1', release: {version: v, run: {command: [x]}}, "
                          "analysis: {t: {}}}\n", "<defaults>")
    dumped: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dict(dumped["spec"]["analysis"]["t"])


def _reads_back(metric: dict[str, Any], args: list[dict[str, Any]], template: dict[str, Any], rollout: str) -> bool:
    """Whether converting the metric back gives this very template (so no annotation is needed)."""
    from stagewise.convert.argo_analysis import resolve_args

    scratch = Ledger("<out>", Document({"spec": {"metrics": [metric]}}, {}, Position(1, 1)))
    values = resolve_args(scratch, args, [], rollout)
    converted = convert_metric(scratch, ("spec", "metrics", 0), metric, values)
    # a template without interval measures every 60s, which the metric says explicitly
    return converted is not None and _sparse(converted[0]) == _sparse({"interval": "1m", **template})


def _why(template: dict[str, Any]) -> str:
    if template["provider"] == "router":
        return "it reads stagewise's router"
    if template["judge"] != "threshold":
        return f"judge: {template['judge']}"
    return "a field Argo's metric does not carry"


def kube_name(name: str) -> str:
    """A template's name as a Kubernetes object's: itself when it is one, else cleaned and told apart by a hash."""
    clean = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50].strip("-")
    if clean == name:
        return name
    return f"{clean or 'template'}-{hashlib.blake2s(name.encode(), digest_size=3).hexdigest()}"


def _ref(ref: dict[str, Any], templates: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"templates": [{"templateName": kube_name(t)} for t in ref["templates"]]}
    args = {a["name"]: a for t in ref["templates"] for a in templates.get(t, []) if "valueFrom" in a}
    if args:
        out["args"] = list(args.values())
    return out


def _strategy(led: Ledger, body: dict[str, Any], name: str) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """The Rollout's strategy, the Services it names, and the preview annotation (when the preview needs one)."""
    strategy = body["strategy"]
    listen_port = int(body["listen"].rpartition(":")[2])
    ref_args = _template_args(body, name)
    led.mapped(("spec", "strategy"))
    if "blueGreen" in strategy:
        return _blue_green(led, body, strategy["blueGreen"], name, ref_args)
    out: dict[str, Any] = {"stableService": f"{name}-stable", "canaryService": f"{name}-canary"}
    if "canary" in strategy:
        out.update(_canary(led, strategy["canary"], ref_args))
    elif "phased" in strategy:
        out["steps"] = _phased_steps(strategy["phased"], body["replicas"], ref_args)
        led.dropped(("spec", "strategy", "phased"), "Argo Rollouts has no phased delivery: the Rollout is a canary "
                                                    "through the same shares, judged at each (no drain, no cohorts "
                                                    "kept per user)")
    else:
        led.dropped(("spec", "strategy", "full"), "Argo Rollouts has no recreate: the Rollout is a canary without "
                                                  "steps, which replaces the pods gradually")
    return {"canary": out}, [_service(f"{name}-stable", name, listen_port),
                             _service(f"{name}-canary", name, listen_port)], None


def _blue_green(led: Ledger, body: dict[str, Any], cfg: dict[str, Any], name: str,
                ref_args: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    listen_port = int(body["listen"].rpartition(":")[2])
    out: dict[str, Any] = {"activeService": f"{name}-active", "previewService": f"{name}-preview"}
    auto = cfg.get("autoPromotion")
    if auto is None:
        out["autoPromotionEnabled"] = False
    elif body_seconds(auto["after"]) > 0:
        out["autoPromotionSeconds"] = math.ceil(body_seconds(auto["after"]))
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if key in cfg:
            out[key] = _ref(cfg[key], ref_args)
    out["scaleDownDelaySeconds"] = math.ceil(body_seconds(cfg["scaleDownDelay"]))
    preview, preview_port = cfg["preview"], listen_port
    host = body["listen"].rpartition(":")[0]
    preview_anno: str | None = None
    if set(preview) == {"listen"} and preview["listen"].rpartition(":")[0] == host \
            and preview["listen"] != body["listen"]:
        preview_port = int(preview["listen"].rpartition(":")[2])
    else:
        preview_anno = carry.dump(preview)
        led.caveat(("spec", "strategy", "blueGreen"), "the preview route is carried in the stagewise.dev/preview "
                                                      f"annotation; on Kubernetes the Service {name}-preview "
                                                      "reaches the preview")
    return ({"blueGreen": out}, [_service(f"{name}-active", name, listen_port),
                                 _service(f"{name}-preview", name, preview_port)], preview_anno)


def _canary(led: Ledger, cfg: dict[str, Any], ref_args: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    steps, routes = [], []
    for index, step in enumerate(cfg["steps"]):
        if "approval" in step:
            led.caveat(("spec", "strategy", "canary", "steps", index),
                       "an approval becomes a pause until promoted: Argo Rollouts names no approvers")
        steps.append(_step(step, ref_args))
        if "setHeaderRoute" in step:
            routes.append(step["setHeaderRoute"]["name"])
    out["steps"] = steps
    if routes:
        out["trafficRouting"] = {"managedRoutes": [{"name": r} for r in dict.fromkeys(routes)]}
        led.caveat(("spec", "strategy", "canary"), "setHeaderRoute needs a traffic router in Argo (Istio, or a "
                                                   "plugin): add it under trafficRouting")
    if "analysis" in cfg:
        background = _ref(cfg["analysis"], ref_args)
        if cfg["analysis"].get("startingStep"):
            background["startingStep"] = cfg["analysis"]["startingStep"]
        out["analysis"] = background
    return out


def _template_args(body: dict[str, Any], rollout: str) -> dict[str, list[dict[str, Any]]]:
    """Per template, the args its Argo metric declares (for the references to pass the hash-valued ones)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, template in body.get("analysis", {}).items():
        args: list[dict[str, Any]] = []
        for key in ("query", "url"):
            if isinstance(template.get(key), str):
                _to_args(template[key], args, rollout, 60.0)
        for arg in template.get("args", []):
            _to_args(arg, args, rollout, 60.0)
        out[name] = args
    return out


def _step(step: dict[str, Any], ref_args: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    if "setWeight" in step:
        return {"setWeight": step["setWeight"]}
    if "pause" in step:
        if "duration" not in step["pause"]:
            return {"pause": {}}
        return {"pause": {"duration": go_duration(math.ceil(body_seconds(step["pause"]["duration"])))}}
    if "analysis" in step:
        return {"analysis": _ref(step["analysis"], ref_args)}
    if "approval" in step:
        return {"pause": {}}
    route = step["setHeaderRoute"]
    return {"setHeaderRoute": {"name": route["name"], "match": route["match"]}}


def _phased_steps(cfg: dict[str, Any], replicas: int, ref_args: dict[str, list[dict[str, Any]]]) -> list[Any]:
    shares: list[int] = []
    if "cohorts" in cfg:
        shares = [min(100, math.ceil(s)) for s in cfg["cohorts"]["steps"]]
    else:
        done = 0
        waves = cfg["waves"]
        i = 0
        while done < replicas:
            wave = waves[min(i, len(waves) - 1)]
            size = math.ceil(replicas * float(str(wave).rstrip("%")) / 100) if str(wave).endswith("%") else int(wave)
            done = min(replicas, done + max(1, size))
            shares.append(math.ceil(100 * done / replicas))
            i += 1
    steps: list[Any] = []
    for share in shares:
        steps.append({"setWeight": share})
        if cfg.get("bake") and body_seconds(cfg["bake"]) > 0:
            steps.append({"pause": {"duration": go_duration(math.ceil(body_seconds(cfg["bake"])))}})
        if "analysis" in cfg:
            steps.append({"analysis": _ref(cfg["analysis"], ref_args)})
    return steps


def _service(name: str, app: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}}


__all__ = ["ARGO_API", "convert_to_argo"]
