"""The Service spec as validated models (the YAML shape of DESIGN.md).

Field names are snake_case in Python and camelCase in YAML, like Kubernetes.
`stagewise.spec` turns YAML into these models and maps validation errors back
to file:line:column; this module only states what is valid.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from stagewise.core.durations import format_duration, parse_duration

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Seconds; written in specs as `30s`, `5m`, `1h`."""

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_HOSTPORT = re.compile(r"(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})")


class Model(BaseModel):
    """Base of spec models: camelCase in YAML, unknown fields rejected, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True,
        use_attribute_docstrings=True,
    )


def check_listen(value: str) -> str:
    match = _HOSTPORT.fullmatch(value)
    if not match or not 0 <= int(match["port"]) <= 65535:
        raise ValueError(f"expected host:port such as 127.0.0.1:8080, got {value!r}")
    return value


Listen = Annotated[str, BeforeValidator(lambda v: check_listen(v) if isinstance(v, str) else v)]


class Metadata(Model):
    name: str
    """The service's name: lower-case letters, digits and dashes (a DNS label)."""
    labels: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"expected a DNS label (lower-case letters, digits, '-', at most 63), got {value!r}"
            )
        return value


class RouterSpec(Model):
    kind: Literal["builtin", "haproxy", "nginx"] = "builtin"
    """Which data plane splits the traffic."""
    socket: str | None = None
    """haproxy, external mode: the admin socket (level admin) of an HAProxy you run; with `backend`.
    Without both, stagewise runs an HAProxy of its own for the service (managed mode)."""
    backend: str | None = None
    """haproxy, external mode: the backend whose servers and weights stagewise manages (weights only:
    header routes, cohorts and a preview listener need managed mode)."""
    metrics_listen: Listen | None = None
    """builtin: also serve the router's /metrics over TCP at this host:port, for Prometheus to scrape;
    haproxy (managed): HAProxy's own Prometheus exporter at this host:port, path /metrics."""

    @model_validator(mode="after")
    def _external_haproxy(self) -> RouterSpec:
        if (self.socket is None) != (self.backend is None):
            raise ValueError("socket and backend go together: they attach to an HAProxy you run")
        if self.socket is not None and self.kind != "haproxy":
            raise ValueError(f"socket and backend are for kind: haproxy, not {self.kind}")
        if self.metrics_listen is not None and self.kind == "nginx":
            raise ValueError("metricsListen is for kind: builtin or haproxy; nginx has no Prometheus exporter "
                             "of its own (its JSON access log feeds the router provider)")
        if self.metrics_listen is not None and self.socket is not None:
            raise ValueError("metricsListen is for a managed HAProxy; the exporter of an HAProxy you run "
                             "(socket, backend) is configured by you")
        return self


class PlatformSpec(Model):
    kind: Literal["local", "ssh"] = "local"
    """What starts and stops instances."""
    hosts: list[str] = []
    """ssh: the hosts instances run on."""


class RunSpec(Model):
    command: Annotated[list[str], Field(min_length=1)]
    """argv of one instance; `{port}` is replaced by the instance's port. Never a shell."""
    env: dict[str, str] = {}
    """Extra environment; `{port}` is replaced here too."""

    @field_validator("command")
    @classmethod
    def _non_empty_program(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("the first element of command must name a program")
        return value


class ReadinessSpec(Model):
    http: str | None = None
    """Ready when GET on this path answers 2xx or 3xx."""
    tcp: bool = False
    """Ready when the port accepts a connection (when no http path is given)."""
    timeout: Duration = 30.0
    """An instance not ready by then has failed."""

    @field_validator("http")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"expected a path starting with '/', got {value!r}")
        return value


class ReleaseSpec(Model):
    version: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    """The release's name, unique within the service (v2, 2024.06.1, a git sha)."""
    run: RunSpec
    readiness: ReadinessSpec = ReadinessSpec()


class AnalysisRef(Model):
    templates: Annotated[list[str], Field(min_length=1)]
    """Names of entries in `spec.analysis`."""
    duration: Duration | None = None
    """How long the analysis runs before it can pass; none: until the step or delivery ends."""

    @field_validator("templates")
    @classmethod
    def _defined(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # The spec loader passes the names spec.analysis defines, so that an unknown one is reported
        # here, at the reference; without them ServiceBody checks the same at the end.
        known = (info.context or {}).get(TEMPLATES_CONTEXT)
        if isinstance(known, frozenset):
            missing = [t for t in value if t not in known]
            if missing:
                raise ValueError(_undefined(missing, known))
        return value


class BackgroundAnalysis(AnalysisRef):
    starting_step: Annotated[int, Field(ge=0)] = 0
    """Index of the canary step from which the background analysis runs."""


class PauseSpec(Model):
    duration: Duration | None = None
    """Resume by itself after this long; none: wait for `promote`."""


class HeaderValueMatch(Model):
    exact: str


class HeaderMatch(Model):
    header_name: str
    header_value: HeaderValueMatch


class HeaderRouteSpec(Model):
    name: str = "header-route"
    match: list[HeaderMatch] = []
    """Requests with any of these headers go to the canary; empty: remove the route."""


class CanaryStep(Model):
    set_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    pause: PauseSpec | None = None
    analysis: AnalysisRef | None = None
    set_header_route: HeaderRouteSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_pause(cls, data: Any) -> Any:
        # `- pause:` with nothing after it reads as null; it means "wait for promote", as `pause: {}` does
        if isinstance(data, dict) and "pause" in data and data["pause"] is None:
            others = [v for k, v in data.items() if k != "pause" and v is not None]
            if not others:
                return {**data, "pause": {}}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        given = [k for k in ("set_weight", "pause", "analysis", "set_header_route") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a canary step has exactly one of setWeight, pause, analysis, setHeaderRoute"
                + (f"; got {', '.join(to_camel(k) for k in given)}" if given else "")
            )
        return self


class CanarySpec(Model):
    steps: Annotated[list[CanaryStep], Field(min_length=1)]
    analysis: BackgroundAnalysis | None = None
    """Background analysis, from `startingStep` until promotion."""

    @model_validator(mode="after")
    def _starting_step_in_range(self) -> CanarySpec:
        if self.analysis and self.analysis.starting_step >= len(self.steps):
            raise ValueError(
                f"analysis.startingStep {self.analysis.starting_step} is past the last step "
                f"(steps are numbered 0 to {len(self.steps) - 1})"
            )
        return self


def _wave_value(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a count such as 2 or a percentage such as '25%', got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a wave holds at least one instance, got {value}")
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if match:
            pct = float(match[1])
            if not 0 < pct <= 100:
                raise ValueError(f"a wave percentage is above 0% and at most 100%, got {value!r}")
            return value.strip()
        if value.strip().isdigit():
            return _wave_value(int(value))
    raise ValueError(f"expected a count such as 2 or a percentage such as '25%', got {value!r}")


WaveSize = Annotated[int | str, BeforeValidator(_wave_value)]


class CohortKey(Model):
    header: str | None = None
    cookie: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> CohortKey:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("a cohort key is exactly one of header or cookie")
        return self


class CohortsSpec(Model):
    key: CohortKey
    steps: Annotated[list[Annotated[float, Field(gt=0, le=100)]], Field(min_length=1)]
    """Percentages of users on the candidate, growing (1, 5, 20, 100)."""

    @field_validator("steps")
    @classmethod
    def _growing(cls, value: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"cohort steps must grow strictly, got {value}")
        return value


class PhasedSpec(Model):
    waves: Annotated[list[WaveSize], Field(min_length=1)] | None = None
    """Ansible `serial`: counts or percentages of instances; the last one repeats."""
    cohorts: CohortsSpec | None = None
    bake: Duration = 0.0
    """Time to wait after each wave or cohort step before the next."""
    max_unavailable: WaveSize = 1
    """At most this many instances out of service at once within a wave."""
    max_fail_percent: Annotated[float, Field(ge=0, le=100)] = 0
    """Stop when the failed share of a wave exceeds this."""
    analysis: AnalysisRef | None = None
    """Gate after each wave or cohort step."""

    @model_validator(mode="after")
    def _one_form(self) -> PhasedSpec:
        if (self.waves is None) == (self.cohorts is None):
            raise ValueError("phased takes exactly one of waves or cohorts")
        return self


class FullSpec(Model):
    pass


class AutoPromotion(Model):
    after: Duration = 0.0


class PreviewSpec(Model):
    header: dict[str, str] | None = None
    """Requests carrying this header reach the preview slot."""
    listen: Listen | None = None
    """A second address that reaches the preview slot."""

    @model_validator(mode="after")
    def _something(self) -> PreviewSpec:
        if self.header is not None and len(self.header) != 1:
            raise ValueError("preview.header holds exactly one header name and value")
        return self


class BlueGreenSpec(Model):
    auto_promotion: AutoPromotion | None = None
    """Switch by itself after a delay; none: wait for `promote`."""
    preview: PreviewSpec = PreviewSpec(header={"X-Preview": "1"})
    pre_promotion_analysis: AnalysisRef | None = None
    post_promotion_analysis: AnalysisRef | None = None
    scale_down_delay: Duration = 30.0
    """How long the old slot stays warm after the switch."""


class StrategySpec(Model):
    full: FullSpec | None = None
    phased: PhasedSpec | None = None
    canary: CanarySpec | None = None
    blue_green: BlueGreenSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StrategySpec:
        given = [k for k in ("full", "phased", "canary", "blue_green") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "strategy takes exactly one of full, phased, canary, blueGreen"
                + (f"; got {' and '.join(to_camel(k) for k in given)}" if given else "")
            )
        return self

    @property
    def name(self) -> StrategyName:
        if self.full is not None:
            return "full"
        if self.phased is not None:
            return "phased"
        if self.canary is not None:
            return "canary"
        return "blue-green"


StrategyName = Literal["full", "phased", "canary", "blue-green"]


class ThresholdRange(Model):
    min: float | None = None
    """The lowest acceptable value; none: no lower limit."""
    max: float | None = None
    """The highest acceptable value; none: no upper limit."""


class AnalysisTemplate(Model):
    provider: Literal["router", "prometheus", "http", "command"] = "router"
    metric: Literal["error-rate", "latency"] = "error-rate"
    judge: Literal["sequential", "threshold", "mannwhitney"] = "sequential"
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """False-alarm rate the judge keeps, however often it looks."""
    margin: Annotated[float, Field(ge=0)] | None = None
    """Allowed relative increase before the candidate counts as worse (0.5 = 50%): of the error rate, or
    (sequential latency) of the odds of a request slower than a threshold. Default 0 for errors, 0.5 for latency."""
    min_requests: Annotated[int, Field(ge=1)] = 50
    """Requests each release needs before the analysis can pass."""
    no_data: Literal["wait", "fail", "pass"] = "wait"
    """What too little traffic means: wait until the deadline, fail, or pass."""
    query: str | None = None
    """prometheus: a PromQL query giving one value per release ({{service}}, {{release}}, {{window}} filled in)."""
    args: list[str] = []
    """command: argv."""
    url: str | None = None
    """http: the URL probed."""
    interval: Duration | None = None
    """How often threshold and mannwhitney judge, and prometheus, http and command measure (default 60s)."""
    failure_limit: Annotated[int, Field(ge=1)] = 1
    """threshold, mannwhitney: failed checks that fail the run (Flagger's threshold, Argo's failureLimit + 1)."""
    threshold_range: ThresholdRange | None = None
    """threshold: the range the value stays in (error rate as a fraction, latency in ms; http, command: {max: 0})."""
    quantile: Annotated[float, Field(gt=0, lt=1)] = 0.99
    """threshold, latency from counts: which latency quantile is held to thresholdRange."""
    allowed_increase: Annotated[float, Field(ge=1)] = 1.0
    """mannwhitney: Kayenta's effect size a significant increase must exceed (candidate/baseline mean)."""
    critical: bool = False
    """mannwhitney: one worse interval fails at once, and no data at the end fails (Kayenta's critical metric)."""
    floor: Duration | None = None
    """sequential latency: latencies below this are never judged (default 5ms)."""
    address: str | None = None
    """prometheus: base URL of the server, such as http://127.0.0.1:9090."""
    method: Literal["GET", "HEAD", "POST"] = "GET"
    """http: the probe's method."""
    expected_status: Annotated[list[int], Field(min_length=1)] = [200]
    """http: statuses that pass."""
    latency_limit: Duration | None = None
    """http: a probe slower than this fails (default 5s, the probe's timeout); command: its timeout (default 60s)."""

    @model_validator(mode="after")
    def _provider_fits(self) -> AnalysisTemplate:
        if (self.provider in ("http", "command") or self.query) and self.judge != "threshold":
            source = "a PromQL query" if self.query else f"the {self.provider} provider"
            raise ValueError(f"{source} gives one value per check: use judge: threshold with a thresholdRange")
        if self.provider == "http" and not self.url:
            raise ValueError("provider http needs url")
        if self.provider == "command" and not self.args:
            raise ValueError("provider command needs args: the argv to run")
        if self.provider == "prometheus" and not self.address:
            raise ValueError("provider prometheus needs address, such as http://127.0.0.1:9090")
        return self


class ServiceBody(Model):
    listen: Listen
    """The address users call (the router's frontend)."""
    router: RouterSpec = RouterSpec()
    platform: PlatformSpec = PlatformSpec()
    replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    release: ReleaseSpec
    strategy: StrategySpec = StrategySpec(full=FullSpec())
    analysis: dict[str, AnalysisTemplate] = {}
    progress_deadline: Duration = 600.0
    """A delivery that makes no progress for this long is aborted."""

    @model_validator(mode="after")
    def _templates_exist(self) -> ServiceBody:
        known = set(self.analysis)
        for ref in _analysis_refs(self.strategy):
            missing = [t for t in ref.templates if t not in known]
            if missing:
                raise ValueError(_undefined(missing, known))
        return self


TEMPLATES_CONTEXT = "analysis_templates"
"""Validation-context key: the template names spec.analysis defines (a frozenset)."""


def _undefined(missing: list[str], known: set[str] | frozenset[str]) -> str:
    return (f"analysis template {', '.join(map(repr, missing))} is not defined in spec.analysis"
            + (f" (defined: {', '.join(sorted(known))})" if known else " (none defined)"))


def _analysis_refs(strategy: StrategySpec) -> list[AnalysisRef]:
    refs: list[AnalysisRef | None] = []
    if strategy.canary:
        refs += [s.analysis for s in strategy.canary.steps] + [strategy.canary.analysis]
    if strategy.phased:
        refs.append(strategy.phased.analysis)
    if strategy.blue_green:
        refs += [strategy.blue_green.pre_promotion_analysis, strategy.blue_green.post_promotion_analysis]
    return [r for r in refs if r is not None]


class ServiceSpec(Model):
    api_version: Literal["stagewise.dev/v1alpha1"]
    kind: Literal["Service"]
    metadata: Metadata
    spec: ServiceBody

    @property
    def name(self) -> str:
        return self.metadata.name
