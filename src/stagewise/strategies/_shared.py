"""Pieces the strategies share: sizes, gates, promotion and rollback steps."""

from __future__ import annotations

import math

from stagewise.core.durations import format_duration
from stagewise.core.plan import AnalysisGate, Step, StepKind, World
from stagewise.core.routes import CohortRoute
from stagewise.core.spec import AnalysisRef, PhasedStrategy, PhasedWaves, ReleaseSpec, ServiceSpec


def fmt(seconds: float | None) -> str:
    return format_duration(seconds) if seconds is not None else "-"


def rollback_steps(spec: ServiceSpec, stable: ReleaseSpec, candidate: ReleaseSpec, at: World) -> tuple[Step, ...]:
    """Back to `stable` from the world `at`: traffic first, then instances.

    Canary, cohorts and blue-green keep the stable release at full size, so
    all traffic moves back to it at once (fast, or instant for a warm slot);
    then the candidate's instances go. Phased waves replace instances in
    place: the stable release is redeployed on the updated instances, newest
    first, `maxUnavailable` at a time, each instance leaving the router before
    it is replaced (sending all traffic to the few instances not yet updated
    could overload them). A full delivery redeploys the stable release.
    """
    s, c = stable.version, candidate.version
    n = spec.spec.replicas
    have_stable = at.instances.get(s, 0)
    have_cand = at.instances.get(c, 0)
    strategy = spec.spec.strategy
    phased = strategy.phased if isinstance(strategy, PhasedStrategy) else None
    waves = phased if isinstance(phased, PhasedWaves) else None
    steps: list[Step] = []
    if have_stable > 0 and waves is None:
        steps.append(Step(
            kind=StepKind.SWITCH, title=f"all traffic back to {s}",
            world=World(instances=dict(at.instances), stable=s, weights={s: 100}),
            wait_ready=False,
        ))
    batch = resolve_size(waves.max_unavailable, n) if waves is not None else max(1, have_cand)
    while have_cand > 0 or have_stable < n:
        move = min(batch, have_cand) if have_cand else n - have_stable
        have_cand -= min(move, have_cand)
        have_stable = min(n, have_stable + move) if have_cand else n
        steps.append(Step(
            kind=StepKind.SCALE,
            title=f"{s} on {have_stable} instance(s), {c} on {have_cand}",
            world=World(instances={s: have_stable, c: have_cand}, stable=s,
                        weights=None if waves is not None and have_cand else {s: 100}),
        ))
    if not steps:  # aborted before the first step: nothing of the candidate runs, the stable world stays
        steps.append(Step(kind=StepKind.SCALE, title=f"{s} on {n} instance(s)",
                          world=World(instances={s: n}, stable=s, weights={s: 100})))
    return tuple(steps)


def resolve_size(size: int | str, total: int) -> int:
    """A count or a percentage of `total` (Ansible `serial`): at least 1, at most `total`."""
    count = math.floor(total * float(size.rstrip("%").strip()) / 100) if isinstance(size, str) else size
    return max(1, min(total, count))


def gate(ref: AnalysisRef, default_duration: float | None = None) -> AnalysisGate:
    duration = ref.duration if ref.duration is not None else default_duration
    return AnalysisGate(templates=tuple(ref.templates), duration=duration)


def canary_instances(replicas: int, weight: float) -> int:
    """Instances the candidate needs to take `weight`% of traffic: at least one."""
    return max(1, min(replicas, math.ceil(replicas * weight / 100)))


def promotion_steps(
    stable: str, candidate: str, replicas: int, *, last_weight: int, cohort: CohortRoute | None = None
) -> list[Step]:
    """Candidate to full size, then all traffic to it, then the old release gone."""
    both = {stable: replicas, candidate: replicas}
    return [
        Step(kind=StepKind.SCALE, title=f"scale {candidate} to {replicas}", promoting=True,
             world=World(instances=both, stable=stable,
                         weights={stable: 100 - last_weight, candidate: last_weight}, cohort=cohort)),
        Step(kind=StepKind.PROMOTE, title=f"all traffic to {candidate}", promoting=True,
             world=World(instances=both, stable=candidate, weights={candidate: 100})),
        Step(kind=StepKind.SCALE_DOWN, title=f"scale {stable} down", promoting=True,
             world=World(instances={stable: 0, candidate: replicas}, stable=candidate)),
    ]
