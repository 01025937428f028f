"""The HTTP API's bodies as pydantic models: what `/openapi.json` promises, and what the server checks.

Why they exist. The views (`views.py`) build plain dictionaries, which the
dashboard's templates read too; declaring each route's response model makes
FastAPI check every answer against the document it publishes, so the
document cannot drift from the server. The parameter bounds live here as
well, next to the error bodies that report a value outside them.

What they must never do: compute anything. They describe; the views and the
controller decide.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stagewise.core.delivery import Phase
from stagewise.core.plan import StepKind
from stagewise.core.spec import StrategyName
from stagewise.core.verdict import Outcome

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""A service name as the spec allows it: a DNS label (the spec's `metadata.name` rule)."""
NAME_RULE = "a service name is a DNS label: lower-case letters, digits and '-', at most 63 characters"
ROW_ID_MAX = 2**63 - 1
"""The largest id the store can hold (SQLite's INTEGER is a signed 64-bit number)."""
PAGE_MAX = 1000
"""The most rows one request returns; `after` pages through the rest."""
SPEC_MAX = 1_000_000
"""Characters of spec text one apply takes: far above any real spec, far below what would hurt the server."""


# --- errors --------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """What every refusal answers: a sentence saying what was wrong and what would be right."""

    detail: str


class SpecProblem(BaseModel):
    """One thing wrong with an applied spec, where it is, and what would be right."""

    file: str
    line: int
    column: int
    field: str
    message: str


class BadSpecBody(ErrorBody):
    """A spec that could not be applied; `problems` holds each thing wrong (empty when there is no position)."""

    problems: list[SpecProblem] = []


class InvalidInput(BaseModel):
    """One parameter or body field outside what the route takes."""

    where: str
    """`path.name`, `query.limit`, `body.spec`, or `body` for the whole body."""
    message: str


class InvalidRequestBody(ErrorBody):
    """A request whose parameters or body do not fit the route (422)."""

    errors: list[InvalidInput]


# --- request bodies ------------------------------------------------------------------------


class ApplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    spec: Annotated[str, Field(min_length=1, max_length=SPEC_MAX)]
    """The spec's YAML (or JSON) text."""
    filename: Annotated[str, Field(min_length=1, max_length=4096)] = "<request>"
    """Named in error messages."""
    override_freeze: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    """Let the delivery through the freeze windows, for this reason (recorded in the event log)."""




# --- responses -----------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class ApplyResult(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    service: str
    """The name of the service (or pipeline) applied."""
    kind: Literal["Service", "Pipeline"] = "Service"
    result: str
    """What the apply did: started a delivery, changed the configuration only, or nothing."""
    delivery: int | None
    """The id of the delivery it started (or that already delivers this release); none if none."""


class PlanStep(BaseModel):
    index: int
    kind: StepKind
    title: str
    state: Literal["done", "current", "pending"]


class ForwardStep(BaseModel):
    index: int
    kind: StepKind
    title: str


class AnalysisRunView(BaseModel):
    run: str
    templates: list[str]
    background: bool
    outcome: Outcome
    message: str
    evidence: dict[str, Any]
    history: list[dict[str, Any]]


class HoldView(BaseModel):
    kind: Literal["hook", "approval", "window"]
    point: str
    name: str
    message: str
    """In words, with a hook's last answer, the approvals so far, or until when a window holds."""
    until: float | None


class WaitingView(BaseModel):
    since: float
    holds: list[HoldView]


class ApprovalView(BaseModel):
    at: float
    by: str
    gate: str
    comment: str


class DeliveryView(BaseModel):
    model_config = ConfigDict(populate_by_name=True, use_attribute_docstrings=True)

    id: int
    service: str
    phase: Phase
    strategy: StrategyName
    from_: str | None = Field(alias="from")
    """The stable release the delivery started from; none for a service's first delivery."""
    to: str
    """The candidate release."""
    undo: bool
    attempt: int
    step: int
    """The current step, counting from 1 (the last one once the delivery has ended)."""
    steps: int
    step_title: str
    rolling_back: bool
    plan: list[PlanStep]
    """The steps being run: the rollback plan's while rolling back."""
    forward_plan: list[ForwardStep]
    weights: dict[str, int]
    """Each release's share of requests, in percent."""
    paused: bool
    message: str
    abort_reason: str | None
    analysis: list[AnalysisRunView]
    created_at: float
    updated_at: float
    finished_at: float | None
    waiting: WaitingView | None = None
    """What holds the delivery (phase Waiting): confirm hooks, approvals, a freeze window."""
    approvals: list[ApprovalView] = []
    freeze_override: str | None = None
    """Why a person let this delivery through the freeze windows."""


class EventView(BaseModel):
    """One entry of a service's event log.

    The same fields as the store's `StoredEvent`, on purpose: the published contract must not
    change when the store's row does."""

    id: int
    delivery_id: int | None
    service: str
    at: float
    kind: str
    message: str


class ServiceView(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    service: str
    holder: str | None = None
    """The server (controller) holding the service's lease, with several on one PostgreSQL store; none else."""
    epoch: int | None = None
    """The lease's epoch: it moves on each time the service changes hands (or another server writes a verb)."""
    listen: str
    router: str
    platform: str
    replicas: int
    strategy: StrategyName
    stable: str | None
    previous: str | None
    phase: Phase | None
    """The latest delivery's phase; none when the service never had one."""
    delivery: DeliveryView | None
    events: list[EventView]
    """The newest events, oldest first (none in the list of all services)."""
    sinks: list[SinkView] = []
    """How each notification sink fares (none in the list of all services)."""


class SinkView(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    sink: str
    kind: str
    pending: int
    """Notifications not sent yet."""
    given_up: int
    attempts: int
    """Tries of its most tried pending notification."""
    failing: bool
    """It keeps failing: a pending notification was tried several times, or one was given up."""
    last_sent_at: float | None
    last_error: str


# --- people ----------------------------------------------------------------------------------

RoleName = Literal["viewer", "operator", "admin"]


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
    """Who holds it: the name the audit log and approvals show (lower-case letters, digits, '-')."""
    role: RoleName
    """viewer (read), operator (promote, pause, resume, approve) or admin (everything)."""


class TokenView(BaseModel):
    name: str
    role: RoleName
    created_at: float
    created_by: str


class NewToken(BaseModel):
    name: str
    role: RoleName
    token: str
    """Shown this once; only its hash is kept."""


class WhoAmI(BaseModel):
    name: str
    role: RoleName


class AuditView(BaseModel):
    id: int
    at: float
    actor: str
    role: str
    method: str
    path: str
    status: int
    detail: str


# --- pipelines -------------------------------------------------------------------------------

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""A release version as the spec allows it."""


class ReleaseBody(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    version: Annotated[str, Field(min_length=1, max_length=63, pattern=VERSION_PATTERN)]
    """The release each stage's service gets (its `release.version`; `{version}` in its command)."""


class StageApprovalView(BaseModel):
    at: float
    by: str
    comment: str


class VerificationView(BaseModel):
    checks: int
    failed: int
    last: str


class StageView(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    name: str
    service: str
    status: Literal["pending", "waiting", "delivering", "soaking", "succeeded", "failed", "stopped"]
    delivery: int | None
    """The stage service's delivery of this release."""
    started_at: float | None
    soak_until: float | None
    finished_at: float | None
    message: str
    approvals: list[StageApprovalView]
    verification: VerificationView | None


class PipelineReleaseView(BaseModel):
    id: int
    pipeline: str
    version: str
    phase: Literal["Progressing", "Succeeded", "Failed", "Superseded"]
    stages: list[StageView]
    created_at: float
    updated_at: float
    finished_at: float | None
    message: str
    by: str


class PipelineStageSpecView(BaseModel):
    name: str
    service: str
    required_soak: float
    verification: list[str]
    approval: bool


class PipelineView(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    name: str
    stages: list[PipelineStageSpecView]
    releases: list[PipelineReleaseView]
    """Newest first (only the latest in the list of all pipelines)."""
