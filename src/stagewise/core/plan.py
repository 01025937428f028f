"""Plans: the ordered steps a strategy compiles a delivery into.

Every step carries the *whole* desired world while the delivery stands at it —
how many instances of each release, the traffic split, the routes — not a
change to make. The controller makes the world match the current step's world
on every tick, so applying a step twice, or again after a crash, does no harm.
A step then has a gate: wait for readiness, run an analysis, wait out a pause,
wait for a person to promote or to approve, or for check hooks to pass.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from stagewise.core.routes import CohortRoute, HeaderRoute


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepKind(StrEnum):
    DEPLOY = "deploy"
    SCALE = "scale"
    SET_WEIGHT = "setWeight"
    SET_COHORT = "setCohort"
    SET_HEADER_ROUTE = "setHeaderRoute"
    WAVE = "wave"
    DRAIN = "drain"
    PAUSE = "pause"
    ANALYSIS = "analysis"
    APPROVE = "approve"
    SWITCH = "switch"
    PROMOTE = "promote"
    SCALE_DOWN = "scaleDown"
    HOOK = "hook"


class World(Frozen):
    """The desired state of a service's instances and routes."""

    instances: dict[str, int]
    """Release version → how many instances."""
    stable: str
    """The release that takes requests no other rule claims."""
    weights: dict[str, int] | None = None
    """Share of requests per release (sums to 100); none: spread over ready instances."""
    cohort: CohortRoute | None = None
    header_routes: tuple[HeaderRoute, ...] = ()
    preview: str | None = None
    """Release reachable on the preview route (header or listen address of the spec)."""

    def receives_traffic(self, release: str) -> bool:
        if self.instances.get(release, 0) == 0:
            return False
        if self.weights is None:
            return True
        return (
            self.weights.get(release, 0) > 0
            or release == self.stable
            or (self.cohort is not None and self.cohort.release == release and self.cohort.percent > 0)
            or any(h.release == release for h in self.header_routes)
            or self.preview == release
        )


class AnalysisGate(Frozen):
    templates: tuple[str, ...]
    duration: float | None
    """How long the analysis runs before it can pass; none: while its steps last."""


class ApprovalGate(Frozen):
    approvers: tuple[str, ...]
    """Token names whose holders may approve; empty: any operator or admin."""
    count: int
    """Distinct approvers needed."""


class Step(Frozen):
    kind: StepKind
    title: str
    """What a person sees in the plan: "setWeight 25", "wave 2/3: 2 instances"."""
    world: World
    wait_ready: bool = True
    """Gate 1: every instance of the world ready (and no extra ones left)."""
    analysis: AnalysisGate | None = None
    """Gate 2: an analysis run that must end Successful."""
    pause: float | None = None
    """Gate 3: seconds to wait once ready (bake, timed pause, scale-down delay)."""
    manual: bool = False
    """Gate 3': wait for `promote`."""
    promoting: bool = False
    """This step makes the candidate the stable release (phase Promoting)."""
    max_failures: int | None = None
    """Candidate instances that may fail during this step before the delivery aborts."""
    approval: ApprovalGate | None = None
    """Gate 3'': wait until enough people approve."""
    hook_point: str | None = None
    """A `hook` step: the check hooks of this type (pre-rollout, post-rollout) must pass."""


class BackgroundAnalysis(Frozen):
    gate: AnalysisGate
    starting_step: int


class Plan(Frozen):
    strategy: str
    steps: tuple[Step, ...]
    rollback: tuple[Step, ...] = ()
    """Filled when the delivery is aborting: the steps back to the stable release."""
    background: BackgroundAnalysis | None = None
    promote_from: int
    """`promote --full` jumps here: the first step of the promotion."""
