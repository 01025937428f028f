"""The Service spec as validated models (the YAML shape of docs/architecture.md and the README).

Field names are snake_case in Python and camelCase in YAML, like Kubernetes.
`stagewise.spec` turns YAML into these models and maps validation errors back
to file:line:column; this module only states what is valid.

The service, its router, platform and release are here; the strategy is in
`strategy_spec`, the analysis templates in `analysis_spec` (both tagged
unions), what they share in `spec_common`. Every name is importable from
here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from stagewise.core.analysis_spec import (
    PROVIDERS,
    TEMPLATE_MODELS,
    AnalysisTemplate,
    AnyTemplate,
    CommandTemplate,
    HttpTemplate,
    PrometheusTemplate,
    RouterTemplate,
    TemplateBase,
    ThresholdRange,
    parse_template,
)
from stagewise.core.gates_spec import (
    ApprovalSpec,
    HookSpec,
    NotificationSpec,
    WindowSpec,
    unique_names,
)
from stagewise.core.platform_spec import HostSpec, PlatformSpec, SshSpec
from stagewise.core.spec_common import (
    TEMPLATES_CONTEXT,
    AnalysisRef,
    BackgroundAnalysis,
    Duration,
    Listen,
    Model,
    check_listen,
    undefined_templates,
)
from stagewise.core.strategy_spec import (
    STRATEGY_KEYS,
    AnalysisStep,
    AnyStrategy,
    ApprovalStep,
    AutoPromotion,
    BlueGreenSpec,
    BlueGreenStrategy,
    CanarySpec,
    CanaryStep,
    CanaryStrategy,
    CohortKey,
    CohortsSpec,
    FullSpec,
    FullStrategy,
    HeaderMatch,
    HeaderRouteSpec,
    HeaderValueMatch,
    PauseSpec,
    PauseStep,
    PhasedCohorts,
    PhasedSpec,
    PhasedStrategy,
    PhasedWaves,
    SetHeaderRouteStep,
    SetWeightStep,
    StrategyName,
    StrategySpec,
    WaveSize,
    analysis_refs,
    strategy_key,
)

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class Metadata(Model):
    name: str
    """The service's name: lower-case letters, digits and dashes (a DNS label)."""
    labels: dict[str, str] = Field(default_factory=dict)

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


class RunSpec(Model):
    command: Annotated[list[str], Field(min_length=1)]
    """argv of one instance; `{port}` and `{host}` are replaced by the instance's port and address. Never a
    shell."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment; `{port}` and `{host}` are replaced here too."""

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
    artifact: str | None = None
    """ssh: the release's files, a directory or a .tar.gz on the controller's machine; copied once to each
    host and unpacked in `<root>/<service>/releases/<version>/`, where `run.command` runs."""


class ServiceBody(Model):
    listen: Listen
    """The address users call (the router's frontend)."""
    router: RouterSpec = RouterSpec()
    platform: PlatformSpec = PlatformSpec()
    replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    release: ReleaseSpec
    strategy: StrategySpec = FullStrategy()
    analysis: dict[str, AnalysisTemplate] = Field(default_factory=dict)
    progress_deadline: Duration = 600.0
    """A delivery that makes no progress for this long is aborted."""
    hooks: list[HookSpec] = Field(default_factory=list)
    """Calls at named points of a delivery (confirm-rollout, pre-rollout, rollout, ...): HTTP or a command."""
    notifications: list[NotificationSpec] = Field(default_factory=list)
    """Where the delivery's events are sent: signed webhooks, Slack-compatible webhooks, commands."""
    windows: list[WindowSpec] = Field(default_factory=list)
    """Deny and allow windows: a delivery starts and adds traffic only when they let it."""

    @model_validator(mode="after")
    def _per_host(self) -> ServiceBody:
        per_host = self.platform.per_host
        if per_host is None:
            return self
        replicas = per_host * len(self.platform.hosts)
        if "replicas" in self.model_fields_set and self.replicas != replicas:
            raise ValueError(f"replicas {self.replicas} contradicts platform.perHost {per_host} on "
                             f"{len(self.platform.hosts)} host(s) ({replicas}); give one of them")
        object.__setattr__(self, "replicas", replicas)  # frozen model: set once, while it is validated
        return self

    @model_validator(mode="after")
    def _templates_exist(self) -> ServiceBody:
        unique_names(self.hooks, "hooks")
        unique_names(self.notifications, "notifications")
        known = set(self.analysis)
        for ref in analysis_refs(self.strategy):
            missing = [t for t in ref.templates if t not in known]
            if missing:
                raise ValueError(undefined_templates(missing, known))
        return self


class ServiceSpec(Model):
    api_version: Literal["stagewise.dev/v1alpha1"]
    kind: Literal["Service"]
    metadata: Metadata
    spec: ServiceBody

    @property
    def name(self) -> str:
        return self.metadata.name


__all__ = [
    "PROVIDERS",
    "STRATEGY_KEYS",
    "TEMPLATES_CONTEXT",
    "TEMPLATE_MODELS",
    "AnalysisRef",
    "AnalysisStep",
    "AnalysisTemplate",
    "AnyStrategy",
    "AnyTemplate",
    "ApprovalSpec",
    "ApprovalStep",
    "AutoPromotion",
    "BackgroundAnalysis",
    "BlueGreenSpec",
    "BlueGreenStrategy",
    "CanarySpec",
    "CanaryStep",
    "CanaryStrategy",
    "CohortKey",
    "CohortsSpec",
    "CommandTemplate",
    "Duration",
    "FullSpec",
    "FullStrategy",
    "HeaderMatch",
    "HeaderRouteSpec",
    "HeaderValueMatch",
    "HookSpec",
    "HostSpec",
    "HttpTemplate",
    "Listen",
    "Metadata",
    "Model",
    "NotificationSpec",
    "PauseSpec",
    "PauseStep",
    "PhasedCohorts",
    "PhasedSpec",
    "PhasedStrategy",
    "PhasedWaves",
    "PlatformSpec",
    "PrometheusTemplate",
    "ReadinessSpec",
    "ReleaseSpec",
    "RouterSpec",
    "RouterTemplate",
    "RunSpec",
    "ServiceBody",
    "ServiceSpec",
    "SetHeaderRouteStep",
    "SetWeightStep",
    "SshSpec",
    "StrategyName",
    "StrategySpec",
    "TemplateBase",
    "ThresholdRange",
    "WaveSize",
    "WindowSpec",
    "analysis_refs",
    "check_listen",
    "parse_template",
    "strategy_key",
]
