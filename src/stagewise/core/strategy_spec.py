"""The `strategy:` of a Service spec, as tagged unions.

The YAML names a choice by its key — `strategy: {canary: {...}}`, a canary
step `- setWeight: 10`, `phased: {waves: [...]}` or `phased: {cohorts:
{...}}` — and each choice is a model of its own here, so that code holding a
`CanaryStrategy` has its `canary` (never None), a `SetWeightStep` its weight,
`PhasedWaves` its waves. A mapping that names no choice, or several, is an
error that lists the choices (words in `stagewise.spec.messages`).

This module only states what is valid; it reads nothing and decides nothing
about plans (that is `stagewise.strategies`).
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, Tag, field_validator, model_validator
from pydantic.alias_generators import to_camel

from stagewise.core.gates_spec import ApprovalSpec
from stagewise.core.spec_common import (
    AnalysisRef,
    BackgroundAnalysis,
    Duration,
    Listen,
    Model,
    by_key,
    without_null_keys,
)

StrategyName = Literal["full", "phased", "canary", "blue-green"]


# --- canary ---------------------------------------------------------------------------------


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
    match: list[HeaderMatch] = Field(default_factory=list)
    """Requests with any of these headers go to the canary; empty: remove the route."""


class SetWeightStep(Model):
    TAG: ClassVar[str] = "setWeight"
    set_weight: Annotated[int, Field(ge=0, le=100)]
    """Share of requests (percent) the canary takes from this step on."""


class PauseStep(Model):
    TAG: ClassVar[str] = "pause"
    pause: PauseSpec
    """Wait: for a duration, or (`pause: {}`) until a person promotes."""


class AnalysisStep(Model):
    TAG: ClassVar[str] = "analysis"
    analysis: AnalysisRef
    """Judge the canary against the stable release before going on."""


class SetHeaderRouteStep(Model):
    TAG: ClassVar[str] = "setHeaderRoute"
    set_header_route: HeaderRouteSpec
    """Send requests carrying a header to the canary (testers), whatever the weight."""


class ApprovalStep(Model):
    TAG: ClassVar[str] = "approval"
    approval: ApprovalSpec
    """Wait until enough people approve (`stagewise approve`, or the dashboard's Approve button)."""


CANARY_STEP_KEYS = ("setWeight", "pause", "analysis", "setHeaderRoute", "approval")


def _bare_pause(value: Any) -> Any:
    # `- pause:` with nothing after it reads as null; it means "wait for promote", as `pause: {}` does
    alone = isinstance(value, dict) and not any(v is not None for k, v in value.items() if k != "pause")
    if alone and "pause" in value and value["pause"] is None:
        return {**value, "pause": {}}
    return value


CanaryStep = Annotated[
    Annotated[SetWeightStep, Tag("setWeight")]
    | Annotated[PauseStep, Tag("pause")]
    | Annotated[AnalysisStep, Tag("analysis")]
    | Annotated[SetHeaderRouteStep, Tag("setHeaderRoute")]
    | Annotated[ApprovalStep, Tag("approval")],
    by_key(CANARY_STEP_KEYS, subject="a canary step has"),
    without_null_keys(CANARY_STEP_KEYS),
    BeforeValidator(_bare_pause),
]
"""One canary step: exactly one of setWeight, pause, analysis, setHeaderRoute, approval."""


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


# --- phased ---------------------------------------------------------------------------------


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


class PhasedWaves(Model):
    TAG: ClassVar[str] = "waves"
    waves: Annotated[list[WaveSize], Field(min_length=1)]
    """Ansible `serial`: counts or percentages of instances; the last one repeats."""
    bake: Duration = 0.0
    """Time to wait after each wave before the next."""
    max_unavailable: WaveSize = 1
    """At most this many instances out of service at once within a wave."""
    max_fail_percent: Annotated[float, Field(ge=0, le=100)] = 0
    """Stop when the failed share of a wave exceeds this."""
    analysis: AnalysisRef | None = None
    """Gate after each wave."""


class PhasedCohorts(Model):
    TAG: ClassVar[str] = "cohorts"
    cohorts: CohortsSpec
    """Growing shares of users, each keeping the release it got."""
    bake: Duration = 0.0
    """Time to wait after each cohort step before the next."""
    max_unavailable: WaveSize = 1
    """Accepted for waves' sake; cohorts replace no instance in place."""
    max_fail_percent: Annotated[float, Field(ge=0, le=100)] = 0
    """Accepted for waves' sake; cohorts count no failed wave."""
    analysis: AnalysisRef | None = None
    """Gate after each cohort step."""


PHASED_KEYS = ("waves", "cohorts")
PhasedSpec = Annotated[
    Annotated[PhasedWaves, Tag("waves")] | Annotated[PhasedCohorts, Tag("cohorts")],
    by_key(PHASED_KEYS, subject="phased takes"),
    without_null_keys(PHASED_KEYS),
]
"""phased: exactly one of waves or cohorts."""


# --- blue-green and full ------------------------------------------------------------------


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


# --- the strategy -------------------------------------------------------------------------


class FullStrategy(Model):
    TAG: ClassVar[str] = "full"
    name: ClassVar[StrategyName] = "full"
    full: FullSpec = FullSpec()
    """Recreate: stop the stable release everywhere, start the candidate everywhere."""


class PhasedStrategy(Model):
    TAG: ClassVar[str] = "phased"
    name: ClassVar[StrategyName] = "phased"
    phased: PhasedSpec
    """Waves of instances, or growing cohorts of users."""


class CanaryStrategy(Model):
    TAG: ClassVar[str] = "canary"
    name: ClassVar[StrategyName] = "canary"
    canary: CanarySpec
    """A growing share of requests, judged against the stable release."""


class BlueGreenStrategy(Model):
    TAG: ClassVar[str] = "blueGreen"
    name: ClassVar[StrategyName] = "blue-green"
    blue_green: BlueGreenSpec
    """A full-size candidate slot beside the stable one; one switch of all traffic."""


STRATEGY_KEYS = ("full", "phased", "canary", "blueGreen")
StrategySpec = Annotated[
    Annotated[FullStrategy, Tag("full")]
    | Annotated[PhasedStrategy, Tag("phased")]
    | Annotated[CanaryStrategy, Tag("canary")]
    | Annotated[BlueGreenStrategy, Tag("blueGreen")],
    by_key(STRATEGY_KEYS, subject="strategy takes"),
    without_null_keys(STRATEGY_KEYS),
]
"""The strategy: exactly one of full, phased, canary, blueGreen."""

AnyStrategy = FullStrategy | PhasedStrategy | CanaryStrategy | BlueGreenStrategy
"""The members of `StrategySpec`, for `isinstance` and `match`."""


def strategy_key(name: StrategyName) -> str:
    """The YAML key of a strategy: `blue-green` is written `blueGreen`."""
    return to_camel(name.replace("-", "_"))


def analysis_refs(strategy: AnyStrategy) -> list[AnalysisRef]:
    """Every analysis the strategy refers to, in the order of the spec."""
    refs: list[AnalysisRef | None] = []
    match strategy:
        case CanaryStrategy(canary=canary):
            refs += [s.analysis for s in canary.steps if isinstance(s, AnalysisStep)] + [canary.analysis]
        case PhasedStrategy(phased=phased):
            refs.append(phased.analysis)
        case BlueGreenStrategy(blue_green=bg):
            refs += [bg.pre_promotion_analysis, bg.post_promotion_analysis]
        case FullStrategy():
            pass
    return [r for r in refs if r is not None]
