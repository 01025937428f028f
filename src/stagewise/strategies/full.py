"""full: stop the stable release everywhere, start the candidate everywhere.

Simple and cheap — no extra capacity — but users see downtime between the two
and the rollback is a redeploy.
"""

from __future__ import annotations

from stagewise.core.plan import Plan, Step, StepKind, World
from stagewise.core.spec import ReleaseSpec, ServiceSpec


def full(spec: ServiceSpec, stable: ReleaseSpec, candidate: ReleaseSpec) -> Plan:
    n = spec.spec.replicas
    s, c = stable.version, candidate.version
    return Plan(
        strategy="full",
        steps=(
            Step(kind=StepKind.DEPLOY, title=f"recreate: {s} → {c} on all {n} instance(s)",
                 world=World(instances={s: 0, c: n}, stable=c)),
            Step(kind=StepKind.PROMOTE, title=f"{c} is stable", promoting=True,
                 world=World(instances={s: 0, c: n}, stable=c)),
        ),
        promote_from=1,
    )
