"""canary: a growing share of requests, judged against the stable release.

Steps in Argo Rollouts' vocabulary. The canary gets as many instances as its
weight needs (at least one), the stable release keeps its full size, so an
abort only has to move the weight back to 0 — at once.
"""

from __future__ import annotations

from stagewise.core.plan import ApprovalGate, BackgroundAnalysis, Plan, Step, StepKind, World
from stagewise.core.routes import HeaderRoute
from stagewise.core.spec import (
    AnalysisStep,
    ApprovalStep,
    CanarySpec,
    CanaryStep,
    PauseStep,
    ReleaseSpec,
    ServiceSpec,
    SetHeaderRouteStep,
    SetWeightStep,
)
from stagewise.strategies import _shared

DEFAULT_ANALYSIS_DURATION = 60.0


def canary(spec: ServiceSpec, cfg: CanarySpec, stable: ReleaseSpec, candidate: ReleaseSpec) -> Plan:
    s, c, n = stable.version, candidate.version, spec.spec.replicas
    weight = 0
    routes: tuple[HeaderRoute, ...] = ()
    steps: list[Step] = []
    for raw in cfg.steps:
        if isinstance(raw, SetWeightStep):
            weight = raw.set_weight
        elif isinstance(raw, SetHeaderRouteStep):
            routes = tuple(
                HeaderRoute(header=m.header_name, value=m.header_value.exact, release=c)
                for m in raw.set_header_route.match
            )
        world = World(
            instances={s: n, c: _shared.canary_instances(n, weight)},
            stable=s,
            weights={s: 100 - weight, c: weight},
            header_routes=routes,
        )
        steps.append(_step(raw, world, weight, routes))
    promote_from = len(steps)
    steps += _shared.promotion_steps(s, c, n, last_weight=weight)
    background = None
    if cfg.analysis is not None:
        background = BackgroundAnalysis(gate=_shared.gate(cfg.analysis), starting_step=cfg.analysis.starting_step)
    return Plan(strategy="canary", steps=tuple(steps), background=background, promote_from=promote_from)


def _step(raw: CanaryStep, world: World, weight: int, routes: tuple[HeaderRoute, ...]) -> Step:
    """The plan's step for one canary step of the spec, standing in `world`."""
    match raw:
        case SetWeightStep():
            return Step(kind=StepKind.SET_WEIGHT, title=f"setWeight {weight}", world=world)
        case SetHeaderRouteStep():
            names = ", ".join(f"{r.header}: {r.value}" for r in routes) or "none"
            return Step(kind=StepKind.SET_HEADER_ROUTE, title=f"setHeaderRoute {names}", world=world)
        case PauseStep(pause=pause):
            timed = pause.duration is not None
            title = f"pause {_shared.fmt(pause.duration)}" if timed else "pause until promoted"
            return Step(kind=StepKind.PAUSE, title=title, world=world, pause=pause.duration, manual=not timed)
        case ApprovalStep(approval=approval):
            who = ", ".join(approval.approvers) if approval.approvers else "an operator"
            return Step(kind=StepKind.APPROVE, title=f"approval: {approval.count} of {who}", world=world,
                        approval=ApprovalGate(approvers=tuple(approval.approvers), count=approval.count))
        case AnalysisStep(analysis=ref):
            gate = _shared.gate(ref, DEFAULT_ANALYSIS_DURATION)
            return Step(kind=StepKind.ANALYSIS, title=f"analysis {', '.join(gate.templates)}", world=world,
                        analysis=gate)
