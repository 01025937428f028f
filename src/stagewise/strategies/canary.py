"""canary: a growing share of requests, judged against the stable release.

Steps in Argo Rollouts' vocabulary. The canary gets as many instances as its
weight needs (at least one), the stable release keeps its full size, so an
abort only has to move the weight back to 0 — at once.
"""

from __future__ import annotations

from stagewise.core.plan import BackgroundAnalysis, Plan, Step, StepKind, World
from stagewise.core.routes import HeaderRoute
from stagewise.core.spec import ReleaseSpec, ServiceSpec
from stagewise.strategies import _shared

DEFAULT_ANALYSIS_DURATION = 60.0


def canary(spec: ServiceSpec, stable: ReleaseSpec, candidate: ReleaseSpec) -> Plan:
    body = spec.spec
    assert body.strategy.canary is not None
    s, c, n = stable.version, candidate.version, body.replicas
    weight = 0
    routes: tuple[HeaderRoute, ...] = ()
    steps: list[Step] = []
    for i, raw in enumerate(body.strategy.canary.steps):
        if raw.set_weight is not None:
            weight = raw.set_weight
        if raw.set_header_route is not None:
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
        if raw.set_weight is not None:
            steps.append(Step(kind=StepKind.SET_WEIGHT, title=f"setWeight {weight}", world=world))
        elif raw.set_header_route is not None:
            names = ", ".join(f"{r.header}: {r.value}" for r in routes) or "none"
            steps.append(Step(kind=StepKind.SET_HEADER_ROUTE, title=f"setHeaderRoute {names}", world=world))
        elif raw.pause is not None:
            timed = raw.pause.duration is not None
            title = f"pause {_shared.fmt(raw.pause.duration)}" if timed else "pause until promoted"
            steps.append(Step(kind=StepKind.PAUSE, title=title, world=world,
                              pause=raw.pause.duration, manual=not timed))
        else:
            assert raw.analysis is not None
            g = _shared.gate(raw.analysis, DEFAULT_ANALYSIS_DURATION)
            assert g is not None
            steps.append(Step(kind=StepKind.ANALYSIS, title=f"analysis {', '.join(g.templates)}",
                              world=world, analysis=g))
        del i
    promote_from = len(steps)
    steps += _shared.promotion_steps(s, c, n, last_weight=weight)
    bg = body.strategy.canary.analysis
    background = None
    if bg is not None:
        g = _shared.gate(bg)
        assert g is not None
        background = BackgroundAnalysis(gate=g, starting_step=bg.starting_step)
    return Plan(strategy="canary", steps=tuple(steps), background=background, promote_from=promote_from)
