"""Pipelines: environments in order (staging → production) that a release moves through, and its state.

A `kind: Pipeline` spec lists stages, each a Service spec (written in the
stage, or a reference to a service already applied), with how long a
release must soak there (`requiredSoak`), the analysis templates that verify
it while it soaks (`verification`), and people who must approve before the
stage receives it (`approval`). `stagewise release PIPELINE VERSION` starts
a `PipelineRelease`: the first stage gets that release; each next stage gets
exactly that release once the one before Succeeded and soaked (and was
verified), and a failure stops the release where it failed.

A stage's Service spec is a template: the release's version replaces its
`release.version`, and `{version}` in its command and environment is
replaced by the controller when it starts instances (as `{port}` is).

This module states what is valid and what is kept; the pipelines package
decides (pure) and acts (through the controller).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from stagewise.core.gate_state import Approval
from stagewise.core.gates_spec import ApprovalSpec
from stagewise.core.spec import Metadata, ServiceSpec
from stagewise.core.spec_common import AnalysisRef, Duration, Model, undefined_templates

_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class StageSpec(Model):
    name: Annotated[str, Field(pattern=_NAME_PATTERN)]
    """The environment's name: staging, production."""
    service: ServiceSpec | None = None
    """The stage's Service spec (its release.version is replaced by each release's version)."""
    service_ref: Annotated[str, Field(pattern=_NAME_PATTERN)] | None = None
    """Or: the name of a service already applied; its spec is the template."""
    required_soak: Annotated[Duration, Field(ge=0, le=30 * 86400)] = 0.0
    """How long a release must run here after its delivery Succeeded before the next stage gets it."""
    verification: AnalysisRef | None = None
    """Analysis templates of the stage's service that verify the release while it soaks (threshold checks
    of http, command or prometheus templates); its duration defaults to requiredSoak."""
    approval: ApprovalSpec | None = None
    """People who must approve (`stagewise approve PIPELINE`) before this stage receives a release."""

    @model_validator(mode="after")
    def _one_service(self) -> StageSpec:
        if (self.service is None) == (self.service_ref is None):
            raise ValueError("a stage names its service exactly once: service (a Service spec) or serviceRef")
        if self.service is not None and self.verification is not None:
            problem = verification_problem(self.verification, self.service)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def service_name(self) -> str:
        return self.service.name if self.service is not None else str(self.service_ref)


def verification_problem(verification: AnalysisRef, service: ServiceSpec) -> str | None:
    """Why `verification` cannot verify a release of `service` alone; None when it can."""
    templates = service.spec.analysis
    missing = [t for t in verification.templates if t not in templates]
    if missing:
        return undefined_templates(missing, set(templates)).replace("spec.analysis",
                                                                    f"the spec.analysis of {service.name}")
    alone = [t for t in verification.templates if not templates[t].gives_values]
    if alone:
        return (f"verification checks the release alone, with one value per check: {', '.join(alone)} compares "
                "two releases; use http, command or prometheus (with a query) templates")
    return None


class PipelineBody(Model):
    stages: Annotated[list[StageSpec], Field(min_length=1, max_length=20)]
    """In order: a release reaches a stage only after it succeeded and soaked in the one before."""

    @field_validator("stages")
    @classmethod
    def _distinct(cls, value: list[StageSpec]) -> list[StageSpec]:
        for what, names in (("stages", [s.name for s in value]), ("services", [s.service_name for s in value])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what} of a pipeline must differ; {', '.join(twice)} appears twice")
        return value


class PipelineSpec(Model):
    api_version: Literal["stagewise.dev/v1alpha1"]
    kind: Literal["Pipeline"]
    metadata: Metadata
    spec: PipelineBody

    @property
    def name(self) -> str:
        return self.metadata.name


class PipelineRecord(BaseModel):
    name: str
    spec: PipelineSpec
    created_at: float = 0.0
    updated_at: float = 0.0


# --- a release's way through the stages ------------------------------------------------------

StageStatus = Literal["pending", "waiting", "delivering", "soaking", "succeeded", "failed", "stopped"]
ReleasePhase = Literal["Progressing", "Succeeded", "Failed", "Superseded"]
RELEASE_TERMINAL = frozenset({"Succeeded", "Failed", "Superseded"})


class Verification(BaseModel):
    """What a stage's verification saw while the release soaked."""

    checks: int = 0
    failed: int = 0
    last: str = ""
    """The last check in words."""


class StageState(BaseModel):
    name: str
    service: str
    status: StageStatus = "pending"
    """pending (not reached), waiting (for approvals), delivering, soaking, succeeded, failed, or
    stopped (never reached: an earlier stage failed)."""
    delivery: int | None = None
    """The stage service's delivery of this release."""
    started_at: float | None = None
    soak_until: float | None = None
    finished_at: float | None = None
    message: str = ""
    approvals: list[Approval] = []
    verification: Verification | None = None


class PipelineRelease(BaseModel):
    id: int = 0
    pipeline: str
    version: str
    phase: ReleasePhase = "Progressing"
    stages: list[StageState]
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    message: str = ""
    by: str = ""
    """The name of the token that started it."""

    @property
    def terminal(self) -> bool:
        return self.phase in RELEASE_TERMINAL
