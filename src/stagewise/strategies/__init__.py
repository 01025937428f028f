"""Strategies: pure functions from a spec to a plan, and the plan that rolls it back.

Each strategy is a plain function of the spec, its own configuration (the
member of the spec's strategy union: a `CanarySpec` for canary, ...), the
stable and the candidate release, returning a `Plan`, in its own module;
`compile_plan` picks it by the spec's strategy and adds the rollback plan
when the delivery is aborting, and the `hook` steps of pre-rollout and
post-rollout hooks (`hook_steps`). Nothing here reads a clock or touches the
world.
"""

from __future__ import annotations

from stagewise.core.plan import Plan, Step, StepKind, World
from stagewise.core.spec import (
    BlueGreenStrategy,
    CanaryStrategy,
    FullStrategy,
    PhasedStrategy,
    ReleaseSpec,
    ServiceSpec,
)
from stagewise.strategies._shared import rollback_steps
from stagewise.strategies.bluegreen import blue_green
from stagewise.strategies.canary import canary
from stagewise.strategies.full import full
from stagewise.strategies.hook_steps import with_hook_steps
from stagewise.strategies.phased import phased


def compile_plan(spec: ServiceSpec, stable: ReleaseSpec | None, *, abort_world: World | None = None) -> Plan:
    """The plan that delivers `spec`'s release over `stable` (and its rollback, when aborting)."""
    candidate = spec.spec.release
    plan = first_delivery(spec) if stable is None else strategy_plan(spec, stable, candidate)
    plan = with_hook_steps(plan, spec, stable)
    if abort_world is not None and stable is not None:
        plan = plan.model_copy(update={"rollback": rollback_steps(spec, stable, candidate, abort_world)})
    return plan


def strategy_plan(spec: ServiceSpec, stable: ReleaseSpec, candidate: ReleaseSpec) -> Plan:
    """The plan of the spec's strategy, from `stable` to `candidate`."""
    match spec.spec.strategy:
        case FullStrategy():
            return full(spec, stable, candidate)
        case PhasedStrategy(phased=config):
            return phased(spec, config, stable, candidate)
        case CanaryStrategy(canary=config):
            return canary(spec, config, stable, candidate)
        case BlueGreenStrategy(blue_green=config):
            return blue_green(spec, config, stable, candidate)


def first_delivery(spec: ServiceSpec) -> Plan:
    """A service's first release has nothing to protect: start it, wait until ready."""
    version = spec.spec.release.version
    world = World(instances={version: spec.spec.replicas}, stable=version)
    step = Step(kind=StepKind.DEPLOY, title=f"deploy {version} on {spec.spec.replicas} instance(s)",
                world=world, promoting=True)
    return Plan(strategy="full", steps=(step,), promote_from=0)
