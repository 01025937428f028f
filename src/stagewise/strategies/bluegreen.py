"""blue-green: a full-size candidate slot beside the stable one, one switch of all traffic.

The candidate comes up on the idle slot at full size, reachable only on the
preview route; after pre-promotion analysis and approval (automatic after a
delay, or by a person) all traffic switches at once. The old slot stays warm
for `scaleDownDelay`, so until then a rollback is a switch back.
"""

from __future__ import annotations

from stagewise.core.plan import Plan, Step, StepKind, World
from stagewise.core.spec import BlueGreenSpec, ReleaseSpec, ServiceSpec
from stagewise.strategies import _shared

DEFAULT_ANALYSIS_DURATION = 60.0


def blue_green(spec: ServiceSpec, cfg: BlueGreenSpec, stable: ReleaseSpec, candidate: ReleaseSpec) -> Plan:
    s, c, n = stable.version, candidate.version, spec.spec.replicas
    both = {s: n, c: n}
    before = World(instances=both, stable=s, weights={s: 100}, preview=c)
    after = World(instances=both, stable=c, weights={c: 100})
    steps = [Step(kind=StepKind.DEPLOY, title=f"deploy {c} on the preview slot ({n} instance(s))", world=before)]
    if cfg.pre_promotion_analysis is not None:
        pre = _shared.gate(cfg.pre_promotion_analysis, DEFAULT_ANALYSIS_DURATION)
        steps.append(Step(kind=StepKind.ANALYSIS, title=f"pre-promotion analysis {', '.join(pre.templates)}",
                          world=before, analysis=pre))
    if cfg.auto_promotion is not None:
        steps.append(Step(kind=StepKind.APPROVE,
                          title=f"auto-promotion after {_shared.fmt(cfg.auto_promotion.after)}",
                          world=before, pause=cfg.auto_promotion.after or None))
    else:
        steps.append(Step(kind=StepKind.APPROVE, title="wait for promote", world=before, manual=True))
    promote_from = len(steps)
    steps.append(Step(kind=StepKind.SWITCH, title=f"switch all traffic to {c}", world=after,
                      wait_ready=False, promoting=True))
    if cfg.post_promotion_analysis is not None:
        post = _shared.gate(cfg.post_promotion_analysis, DEFAULT_ANALYSIS_DURATION)
        steps.append(Step(kind=StepKind.ANALYSIS, title=f"post-promotion analysis {', '.join(post.templates)}",
                          world=after, analysis=post, promoting=True))
    if cfg.scale_down_delay:
        steps.append(Step(kind=StepKind.PAUSE, title=f"keep {s} warm for {_shared.fmt(cfg.scale_down_delay)}",
                          world=after, pause=cfg.scale_down_delay, promoting=True))
    steps.append(Step(kind=StepKind.SCALE_DOWN, title=f"scale {s} down", promoting=True,
                      world=World(instances={s: 0, c: n}, stable=c)))
    return Plan(strategy="blue-green", steps=tuple(steps), promote_from=promote_from)
