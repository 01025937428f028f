"""The `analysis:` templates of a Service spec, one model per provider (a tagged union on `provider`).

Every template says what is judged and by whom (`metric`, `judge` and the
judge's settings); where the numbers come from is the `provider`, and each
provider has fields of its own: `address` and `query` for prometheus, `url`
for http, `args` for command. So a `PrometheusTemplate` always has its
address and an `HttpTemplate` its URL, and a field given to the wrong
provider is an unknown field, reported with the fields that provider takes.
`provider` may be left out: the router's own counters are the default.

This module only states what is valid.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Tag, TypeAdapter, model_validator

from stagewise.core.spec_common import Duration, Model, by_field

PROVIDERS = ("router", "prometheus", "http", "command")


class ThresholdRange(Model):
    min: float | None = None
    """The lowest acceptable value; none: no lower limit."""
    max: float | None = None
    """The highest acceptable value; none: no upper limit."""


class Bounds(Model):
    min: float
    """The lowest value the metric can take."""
    max: float
    """The highest value the metric can take."""

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if not self.min < self.max:
            raise ValueError(f"min must be below max, got min {self.min:g}, max {self.max:g}")
        return self


class TemplateBase(Model):
    """What every template has, whatever its provider: the metric, the judge and the judge's settings."""

    provider: Literal["router", "prometheus", "http", "command"] = "router"
    """Where the numbers come from (each member narrows it to its own)."""
    metric: Literal["error-rate", "latency", "value"] = "error-rate"
    """error-rate and latency: counts of requests (or a counter and a histogram); value: a gauge's mean."""
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
    direction: Literal["increase", "decrease", "either"] = "increase"
    """metric value: which shift of the candidate's mean fails it."""
    bounds: Bounds | None = None
    """sequential value: the range the metric can take (values outside are clipped into it); the test's scale."""
    min_samples: Annotated[int, Field(ge=1)] = 10
    """sequential value: pairs of samples (one per release) needed before the analysis can pass."""

    @model_validator(mode="after")
    def _value_fits(self) -> TemplateBase:
        if self.metric != "value":
            if self.direction != "increase":
                raise ValueError("direction is for metric: value (error rates and latencies fail on an increase)")
            return self
        if self.judge == "mannwhitney":
            raise ValueError("metric: value is judged by sequential or threshold, not mannwhitney")
        if self.judge == "sequential":
            self._sequential_value_fits()
        return self

    def _sequential_value_fits(self) -> None:
        if self.bounds is None:
            raise ValueError("sequential judging of a value needs bounds: {min: ..., max: ...}, the range the "
                             "metric can take (such as {min: 0, max: 1} for a ratio): no test of means is valid "
                             "without a bound")
        margin = self.margin or 0.0
        if margin > 0 and self.bounds.min < 0:
            raise ValueError("margin is relative to the baseline's mean: it needs bounds.min ≥ 0")
        if margin >= 1 and self.direction != "increase":
            raise ValueError(f"margin {margin:g} allows any decrease: below 1 with direction {self.direction}")

    @property
    def gives_values(self) -> bool:
        """The provider measures one value per release and check, not counts: only `threshold` can judge it."""
        return False

    def _one_value_per_check(self, source: str) -> None:
        if self.judge != "threshold":
            raise ValueError(f"{source} gives one value per check: use judge: threshold with a thresholdRange")


class RouterTemplate(TemplateBase):
    provider: Literal["router"] = "router"
    """router: the router's own per-release counts and latencies (the default)."""

    @model_validator(mode="after")
    def _counts_only(self) -> RouterTemplate:
        if self.metric == "value":
            raise ValueError("the router counts requests: metric value needs provider: prometheus with a query")
        return self


class PrometheusTemplate(TemplateBase):
    provider: Literal["prometheus"]
    address: str
    """prometheus: base URL of the server, such as http://127.0.0.1:9090."""
    query: str | None = None
    """prometheus: a PromQL query per release ({{service}}, {{release}}, {{window}} filled in) — a value for
    threshold and metric value, a counter of bad events with `total` (error-rate), or `_bucket` series by `le`
    (latency); none: the builtin router's exported counters, for any judge."""
    total: str | None = None
    """prometheus, error-rate: the counter of all events beside `query`'s bad ones, per release."""

    @property
    def gives_values(self) -> bool:
        return self.query is not None and (self.judge == "threshold" or self.metric == "value")

    @model_validator(mode="after")
    def _judge_fits(self) -> PrometheusTemplate:
        if self.total is not None and (self.query is None or self.metric != "error-rate"):
            raise ValueError("total is the counter beside query's bad events: it needs query and metric: error-rate")
        if self.metric == "value" and self.query is None:
            raise ValueError("metric: value needs a query giving the metric per release")
        if self.query is not None and self.judge != "threshold" and self.metric == "error-rate" and not self.total:
            raise ValueError(f"judge {self.judge} on a query's error rate needs total: the counter of all events "
                             "beside query's counter of bad ones (or judge: threshold on a ratio)")
        return self


class HttpTemplate(TemplateBase):
    provider: Literal["http"]
    url: str
    """http: the URL probed; {{release}} and the other placeholders are filled in."""
    method: Literal["GET", "HEAD", "POST"] = "GET"
    """http: the probe's method."""
    expected_status: Annotated[list[int], Field(min_length=1)] = Field(default_factory=lambda: [200])
    """http: statuses that pass."""
    latency_limit: Duration | None = None
    """http: a probe slower than this fails (default 5s, the probe's timeout)."""

    @property
    def gives_values(self) -> bool:
        return True

    @model_validator(mode="after")
    def _judge_fits(self) -> HttpTemplate:
        self._one_value_per_check("the http provider")
        return self


class CommandTemplate(TemplateBase):
    provider: Literal["command"]
    args: Annotated[list[str], Field(min_length=1)]
    """command: the argv to run, without a shell; exit status 0 passes."""
    latency_limit: Duration | None = None
    """command: its timeout (default 60s)."""

    @property
    def gives_values(self) -> bool:
        return True

    @model_validator(mode="after")
    def _judge_fits(self) -> CommandTemplate:
        self._one_value_per_check("the command provider")
        return self


AnalysisTemplate = Annotated[
    Annotated[RouterTemplate, Tag("router")]
    | Annotated[PrometheusTemplate, Tag("prometheus")]
    | Annotated[HttpTemplate, Tag("http")]
    | Annotated[CommandTemplate, Tag("command")],
    by_field("provider", PROVIDERS, default="router"),
]
"""An analysis template: the provider's own fields, and the judge's."""

AnyTemplate = RouterTemplate | PrometheusTemplate | HttpTemplate | CommandTemplate
"""The members of `AnalysisTemplate`, for `isinstance` and `match`."""

TEMPLATE_MODELS: dict[str, type[TemplateBase]] = {
    "router": RouterTemplate, "prometheus": PrometheusTemplate, "http": HttpTemplate, "command": CommandTemplate,
}
"""The template model of each provider."""

_TEMPLATE: TypeAdapter[AnyTemplate] = TypeAdapter(AnalysisTemplate)


def parse_template(data: dict[str, Any]) -> AnyTemplate:
    """A template from a mapping of its fields (snake_case or camelCase); `ValidationError` when invalid."""
    return _TEMPLATE.validate_python(data)
