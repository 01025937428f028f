"""Argo AnalysisTemplate metrics → stagewise analysis templates, and analysis references → `{templates, duration}`.

An Argo metric is a provider, a schedule (`interval`, `count`) and a verdict
rule (`successCondition`, `failureCondition`, `failureLimit`). stagewise keeps
the provider and the rule in a template (`judge: threshold`, `thresholdRange`,
`failureLimit` one higher: Argo fails *past* its limit, stagewise *at* it) and
the schedule's length in the reference (`duration` = count × interval).

Providers: `prometheus` → prometheus (with the query's `{{args.NAME}}` filled
in from the reference's and the template's args), `job` → command (the
container's command and args, run on this host), `web` → http. Others have no
stagewise provider and are reported where they are written.

Pure: reads the documents it is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from stagewise.convert import carry, conditions
from stagewise.convert.kube import go_duration, parse_go_duration
from stagewise.convert.ledger import Ledger, as_dict, as_list
from stagewise.convert.sources import ARGO_GROUP, Index, Source
from stagewise.core.durations import format_duration
from stagewise.spec.yamltree import Path

SEQUENTIAL_NOTE = ("mapped to judge: threshold as Argo judges; stagewise's judge: sequential compares the candidate "
                   "with the stable release serving at the same time and may look after every request without "
                   "more false alarms (provider: router, or prometheus without a query)")
_ARG = re.compile(r"\{\{\s*args\.([^}\s]+)\s*\}\}")
HASH_PLACEHOLDERS = {"Latest": "{{release}}", "Stable": "{{baseline}}"}


@dataclass(frozen=True)
class Timing:
    """How long a metric runs in Argo: `seconds` = count × interval, None when it runs until the rollout ends."""

    seconds: float | None
    open_ended: bool


@dataclass
class TemplateBook:
    """The stagewise templates one spec defines, named after Argo's, one per distinct content."""

    templates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, template: dict[str, Any]) -> str:
        for existing, content in self.templates.items():
            if content == template and (existing == name or existing.startswith(f"{name}-")):
                return existing
        final, n = name, 1
        while final in self.templates:
            n += 1
            final = f"{name}-{n}"
        self.templates[final] = template
        return final


@dataclass
class Reference:
    """An analysis reference converted: the stagewise `{templates, duration}`, or None when nothing maps."""

    value: dict[str, Any] | None
    open_ended: bool = False


def convert_reference(ledger: Ledger, path: Path, ref: Any, index: Index, book: TemplateBook,
                      rollout: str) -> Reference:
    """An Argo analysis reference (step, background, pre-/post-promotion) at `path` of the Rollout."""
    if not isinstance(ref, dict):
        ledger.dropped(path, "expected a mapping with templates")
        return Reference(None)
    _account_for_reference_fields(ledger, path, ref)
    refs = ref.get("templates")
    if refs is None and "templateName" in ref:  # the single-template form of older Rollouts
        refs, listed = [{"templateName": ref["templateName"]}], False
    else:
        listed = True
    if not isinstance(refs, list):
        ledger.dropped(path, "expected templates: a list of {templateName}")
        return Reference(None)
    args = as_list(ref.get("args"))
    names: list[str] = []
    seconds: list[float] = []
    open_ended = False
    for i, item in enumerate(refs):
        source = _referenced(ledger, (*path, "templates", i) if listed else (*path, "templateName"), item, index)
        if source is None:
            continue
        for metric_name, template, timing in convert_template(source, args, rollout):
            names.append(book.add(metric_name, template))
            if timing.seconds is not None:
                seconds.append(timing.seconds)
            open_ended = open_ended or timing.open_ended
    if not names:
        return Reference(None)
    value: dict[str, Any] = {"templates": names}
    if seconds and not open_ended:
        value["duration"] = format_duration(max(seconds))
    return Reference(value, open_ended)


def _account_for_reference_fields(ledger: Ledger, path: Path, ref: dict[str, Any]) -> None:
    """The reference's fields that map, and those that do not, with why."""
    for key in ("templates", "templateName", "args"):
        if key in ref:
            ledger.mapped((*path, key))
    for key, why in (("dryRun", "stagewise has no dry-run metrics: every template it runs decides"),
                     ("measurementRetention", "stagewise keeps every measurement of a delivery"),
                     ("name", "Argo's name of the AnalysisRun; stagewise names an analysis by its step"),
                     ("analysisRunMetadata", "Kubernetes-only: labels of the AnalysisRun object")):
        if key in ref:
            ledger.dropped((*path, key), why)


def _referenced(ledger: Ledger, at: Path, item: Any, index: Index) -> Source | None:
    """The (Cluster)AnalysisTemplate a reference names, marked used; None (and why) when it is not in the input."""
    name = item.get("templateName") if isinstance(item, dict) else None
    cluster = bool(item.get("clusterScope")) if isinstance(item, dict) else False
    kind = "ClusterAnalysisTemplate" if cluster else "AnalysisTemplate"
    source = index.named(ARGO_GROUP, kind, str(name))
    if source is None:
        ledger.dropped(at, f"{kind} {name!r} is not in the input, so this analysis does not run it: "
                           "give its file on the same command line")
        return None
    source.used = True
    return source


def convert_template(source: Source, ref_args: list[Any], rollout: str) -> list[tuple[str, dict[str, Any], Timing]]:
    """Each metric of an (Cluster)AnalysisTemplate as a stagewise template, named after the template
    (or template-metric when it has several)."""
    led = source.ledger
    led.mapped(("apiVersion",), ("kind",), ("metadata", "name"))
    spec = source.data.get("spec")
    metrics = spec.get("metrics") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(metrics, list):
        led.dropped(("spec",), "expected spec.metrics: a list of metrics")
        return []
    for key in ("dryRun", "measurementRetention"):
        if key in spec:
            led.dropped(("spec", key), "stagewise has no dry-run metrics and keeps every measurement")
    template_args = as_list(spec.get("args"))
    values = resolve_args(led, template_args, ref_args, rollout)
    if led.get(("metadata", "annotations", carry.SERVICE)) is not None:
        led.mapped(("metadata", "annotations", carry.SERVICE))
    own_name = led.get(("metadata", "annotations", carry.NAME))
    name_of = own_name if isinstance(own_name, str) and own_name else source.name
    if own_name is not None:
        led.mapped(("metadata", "annotations", carry.NAME))
    carried = carry.load(led.get(("metadata", "annotations", carry.TEMPLATE)))
    if isinstance(carried, dict) and len(metrics) == 1 and isinstance(metrics[0], dict):
        # written by `--to argo` from a stagewise template that Argo's fields cannot say: it wins
        led.mapped(("metadata",), ("spec",))
        interval = go_seconds(led, ("spec", "metrics", 0, "interval"), metrics[0].get("interval"))
        return [(name_of, carried, _timing(led, ("spec", "metrics", 0), metrics[0], interval))]
    if led.get(("metadata", "labels")) == carry.MANAGED_BY:
        led.mapped(("metadata", "labels"))
    out = []
    for i, metric in enumerate(metrics):
        path: Path = ("spec", "metrics", i)
        if not isinstance(metric, dict):
            led.dropped(path, "expected a metric: a mapping with name and provider")
            continue
        converted = convert_metric(led, path, metric, values)
        if converted is None:
            continue
        name = name_of if len(metrics) == 1 else f"{source.name}-{metric.get('name', i)}"
        out.append((name, *converted))
    return out


def resolve_args(led: Ledger, template_args: list[Any], ref_args: list[Any], rollout: str) -> dict[str, str | None]:
    """Argo's args by name: the reference's value over the template's default; hashes of pods become the
    release placeholders stagewise fills in; None where no value can be known here (a secret)."""
    values: dict[str, str | None] = {}
    for i, arg in enumerate(template_args):
        if isinstance(arg, dict) and isinstance(arg.get("name"), str):
            led.mapped(("spec", "args", i))  # a declaration: its value is written where the template uses it
            values[arg["name"]] = _arg_value(led, ("spec", "args", i), arg, rollout)
    for arg in ref_args:
        if isinstance(arg, dict) and isinstance(arg.get("name"), str):
            values[arg["name"]] = _arg_value(None, (), arg, rollout)
    return values


def _arg_value(led: Ledger | None, path: Path, arg: dict[str, Any], rollout: str) -> str | None:
    name = arg["name"]
    if "value" in arg:
        value = str(arg["value"])
        return "{{service}}" if name == "service" and value == rollout else value
    source = arg.get("valueFrom")
    if isinstance(source, dict):
        if source.get("podTemplateHashValue") in HASH_PLACEHOLDERS:
            kind = source["podTemplateHashValue"]
            return "{{candidate}}" if name == "candidate" and kind == "Latest" else HASH_PLACEHOLDERS[kind]
        field_ref = source.get("fieldRef")
        if isinstance(field_ref, dict) and field_ref.get("fieldPath") == "metadata.name":
            return rollout
        if led is not None:
            led.dropped((*path, "valueFrom"), "a value from Kubernetes (a secret, a field) is not known outside "
                                              "the cluster: write the value into the template")
    return None


def _substitute(led: Ledger, path: Path, text: str, values: dict[str, str | None], interval: float | None) -> str:
    """`{{args.NAME}}` in a query or argv, filled in; an unknown one is kept and reported."""

    def one(match: re.Match[str]) -> str:
        name = match[1]
        value = values.get(name)
        if name == "window" and interval is not None and value == go_duration(interval):
            return "{{window}}"
        if value is None:
            led.caveat(path, f"{{{{args.{name}}}}} has no value here and is kept as written: replace it")
            return match[0]
        return value

    return _ARG.sub(one, text)


def convert_metric(led: Ledger, path: Path, metric: dict[str, Any],
                   values: dict[str, str | None]) -> tuple[dict[str, Any], Timing] | None:
    provider = as_dict(metric.get("provider"))
    kinds = list(provider)
    if len(kinds) != 1:
        led.dropped(path, "expected provider: a mapping with exactly one provider")
        return None
    kind = kinds[0]
    at: Path = (*path, "provider", kind)
    interval = go_seconds(led, (*path, "interval"), metric.get("interval"))
    template: dict[str, Any]
    if kind == "prometheus":
        template = _prometheus(led, at, provider[kind], values, interval)
    elif kind == "job":
        template = _job(led, at, provider[kind], values, interval)
    elif kind == "web":
        template = _web(led, at, provider[kind], values, interval)
    else:
        led.dropped(path, f"stagewise has no {kind} provider (it has router, prometheus, http and command): "
                          "this metric does not run")
        return None
    led.mapped((*path, "name"), (*path, "provider"))
    _verdict_rule(led, path, metric, template, kind)
    if interval is not None:
        template["interval"] = format_duration(interval)
    timing = _timing(led, path, metric, interval)
    for key, why in (("consecutiveErrorLimit", "stagewise retries a provider's errors until the deadline"),
                     ("inconclusiveLimit", "stagewise's threshold judge is never inconclusive"),
                     ("initialDelay", "stagewise starts measuring when the step starts"),
                     ("consecutiveSuccessLimit", "stagewise's threshold judge passes at the end of the run")):
        if key in metric:
            led.dropped((*path, key), why)
    return template, timing


def go_seconds(led: Ledger, path: Path, value: Any) -> float | None:
    """Seconds of the Go duration at `path` (marked mapped), or None when absent or not one (reported)."""
    if value is None:
        return None
    try:
        seconds = parse_go_duration(str(value))
    except ValueError as exc:
        led.dropped(path, str(exc))
        return None
    led.mapped(path)
    return seconds


def _timing(led: Ledger, path: Path, metric: dict[str, Any], interval: float | None) -> Timing:
    count = metric.get("count")
    if count is None:
        return Timing(None, open_ended=interval is not None)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        led.dropped((*path, "count"), f"expected a whole number of measurements, got {count!r}")
        return Timing(None, open_ended=interval is not None)
    led.mapped((*path, "count"))
    if interval is None:
        return Timing(None, open_ended=False)
    return Timing(count * interval, open_ended=False)


def _verdict_rule(led: Ledger, path: Path, metric: dict[str, Any], template: dict[str, Any], kind: str) -> None:
    limit_key = "failureLimit" if "failureLimit" in metric else "maxFailures" if "maxFailures" in metric else None
    if limit_key is not None:
        limit = metric[limit_key]
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            led.mapped((*path, limit_key))
            if limit + 1 != 1:
                template["failureLimit"] = limit + 1
        else:
            led.dropped((*path, limit_key), f"expected a whole number of failures, got {limit!r}")
    bound = conditions.Range()
    written = False
    for key, parse in (("successCondition", conditions.success_range), ("failureCondition", conditions.failure_range)):
        text = metric.get(key)
        if text is None:
            continue
        found = parse(str(text)) if kind == "prometheus" else None
        if found is None:
            led.dropped((*path, key), "not a comparison of the value with a number (such as result[0] >= 0.95), "
                                      "so no thresholdRange can say it" if kind == "prometheus" else
                                      f"the {template['provider']} provider passes or fails by itself")
            continue
        led.mapped((*path, key))
        if found.strict:
            led.caveat((*path, key), "a strict < or > is read as <= or >= (thresholdRange is closed)")
        bound, written = bound.meet(found), True
    if written:
        template["thresholdRange"] = {k: v for k, v in (("min", bound.min), ("max", bound.max)) if v is not None}


def _prometheus(led: Ledger, at: Path, cfg: Any, values: dict[str, str | None],
                interval: float | None) -> dict[str, Any]:
    template: dict[str, Any] = {"provider": "prometheus"}
    if not isinstance(cfg, dict):
        cfg = {}
    address = cfg.get("address")
    template["address"] = str(address) if address else "http://127.0.0.1:9090"
    if address:
        led.mapped((*at, "address"))
    else:
        led.caveat(at, "no address: Argo uses its controller's default; this spec asks http://127.0.0.1:9090")
    query = cfg.get("query")
    template["query"] = _substitute(led, (*at, "query"), str(query), values, interval) if query else "vector(0)"
    if query:
        led.mapped((*at, "query"))
    else:
        led.caveat(at, "no query: the spec asks vector(0), which always passes: write the query")
    template["judge"] = "threshold"
    led.caveat(at, SEQUENTIAL_NOTE)
    for key in cfg:
        if key not in ("address", "query"):
            led.dropped((*at, key), "stagewise's prometheus provider takes address and query only")
    return template


def _job(led: Ledger, at: Path, cfg: Any, values: dict[str, str | None], interval: float | None) -> dict[str, Any]:
    pod: Path = (*at, "spec", "template", "spec")
    containers = led.get((*pod, "containers"))
    argv: list[str] = []
    if isinstance(containers, list) and containers and isinstance(containers[0], dict):
        first = containers[0]
        c: Path = (*pod, "containers", 0)
        for key in ("command", "args"):
            part = first.get(key)
            if isinstance(part, list):
                argv += [_substitute(led, (*c, key), str(a), values, interval) for a in part]
                led.mapped((*c, key))
        led.mapped((*c, "name"))
        if "image" in first:
            led.dropped((*c, "image"), f"the check runs on this host, not in image {first['image']}: "
                                       "the programs it calls must be installed here")
        for j in range(1, len(containers)):
            led.dropped((*pod, "containers", j), "a Job's further containers do not run: the check is one program")
    if not argv:
        led.dropped(at, "a job without a command: no program to run")
        argv = ["false"]
    deadline = led.get((*at, "spec", "activeDeadlineSeconds"))
    template: dict[str, Any] = {"provider": "command", "args": argv, "judge": "threshold"}
    if isinstance(deadline, int) and not isinstance(deadline, bool) and deadline > 0:
        template["latencyLimit"] = format_duration(deadline)
        led.mapped((*at, "spec", "activeDeadlineSeconds"))
    for key in ("backoffLimit", "ttlSecondsAfterFinished"):
        if led.get((*at, "spec", key)) is not None:
            led.dropped((*at, "spec", key), "Kubernetes-only: a check is run once per measurement, never retried")
    if led.get((*pod, "restartPolicy")) is not None:
        led.dropped((*pod, "restartPolicy"), "Kubernetes-only: a check is run once per measurement")
    return template


def _web(led: Ledger, at: Path, cfg: Any, values: dict[str, str | None], interval: float | None) -> dict[str, Any]:
    if not isinstance(cfg, dict):
        cfg = {}
    template: dict[str, Any] = {"provider": "http",
                                "url": _substitute(led, (*at, "url"), str(cfg.get("url", "")), values, interval)}
    led.mapped((*at, "url"))
    method = cfg.get("method")
    if method in ("GET", "HEAD", "POST"):
        template["method"] = method
        led.mapped((*at, "method"))
    elif method is not None:
        led.dropped((*at, "method"), f"stagewise's http probe sends GET, HEAD or POST, not {method}")
    timeout = cfg.get("timeoutSeconds")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
        template["latencyLimit"] = format_duration(timeout)
        led.mapped((*at, "timeoutSeconds"))
    for key in cfg:
        if key not in ("url", "method", "timeoutSeconds"):
            led.dropped((*at, key), "stagewise's http probe passes on the response status (expectedStatus), "
                                    "it reads no body or headers")
    template["judge"] = "threshold"
    return template


__all__ = ["Reference", "TemplateBook", "Timing", "convert_reference", "convert_template", "go_seconds",
           "resolve_args"]
