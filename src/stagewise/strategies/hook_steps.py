"""The `hook` steps a plan gets when the spec has pre-rollout or post-rollout hooks.

Every strategy shares them, so they are added to the compiled plan here
rather than in each strategy:

- **pre-rollout** hooks run before the candidate takes any request: a first
  step whose world is the one before the delivery, plus the candidate's
  instances of the plan's first step where they can run beside the stable
  release with no traffic (canary, blue-green, cohorts), so a smoke test can
  reach them; where they cannot (full, waves replace instances in place) the
  world is the stable release alone.
- **post-rollout** hooks run once all traffic is on the candidate, before the
  old release is scaled down where the plan does that last (canary, cohorts,
  blue-green), so a failure is still rolled back by a switch back to the warm
  stable release.

A failing check hook counts as a failed analysis check: the delivery rolls
back (core.gates). Pure: a plan in, a plan out.
"""

from __future__ import annotations

from stagewise.core.plan import BackgroundAnalysis, Plan, Step, StepKind, World
from stagewise.core.spec import ReleaseSpec, ServiceSpec


def hook_types(spec: ServiceSpec) -> set[str]:
    return {hook.type for hook in spec.spec.hooks}


def with_hook_steps(plan: Plan, spec: ServiceSpec, stable: ReleaseSpec | None) -> Plan:
    """`plan` with a pre-rollout step first and a post-rollout step before the end, as the hooks ask."""
    types = hook_types(spec)
    if not types & {"pre-rollout", "post-rollout"}:
        return plan
    steps = list(plan.steps)
    promote_from = plan.promote_from
    background = plan.background
    if "pre-rollout" in types:
        world = _before(steps[0].world, stable, spec.spec.release.version)
        steps.insert(0, Step(kind=StepKind.HOOK, title="pre-rollout hooks: " + _names(spec, "pre-rollout"),
                             world=world, hook_point="pre-rollout", promoting=steps[0].promoting))
        promote_from += 1
        if background is not None:
            background = BackgroundAnalysis(gate=background.gate, starting_step=background.starting_step + 1)
    if "post-rollout" in types:
        at = len(steps) - 1 if steps[-1].kind is StepKind.SCALE_DOWN and len(steps) > 1 else len(steps)
        before = steps[at - 1]
        steps.insert(at, Step(kind=StepKind.HOOK, title="post-rollout hooks: " + _names(spec, "post-rollout"),
                              world=before.world, hook_point="post-rollout", promoting=True))
    return plan.model_copy(update={"steps": tuple(steps), "promote_from": promote_from, "background": background})


def _names(spec: ServiceSpec, point: str) -> str:
    return ", ".join(h.name for h in spec.spec.hooks if h.type == point)


def _before(first: World, stable: ReleaseSpec | None, candidate: str) -> World:
    """The world a pre-rollout hook runs in: as before the delivery, plus idle candidates where they fit."""
    if stable is None:
        return World(instances={}, stable=candidate)
    s = stable.version
    replicas = first.instances.get(s, 0)
    beside = first.weights is not None and replicas > 0 and first.instances.get(candidate, 0) > 0
    if not beside:
        total = sum(first.instances.values())
        return World(instances={s: total}, stable=s)
    return World(instances=dict(first.instances), stable=s, weights={s: 100, candidate: 0})
