"""phased: waves of instances, or growing cohorts of users.

Waves follow Ansible's `serial`: each value is a count or a percentage of the
fleet, the last value repeats until every instance is updated, and a wave
holds at least one instance. On the ssh platform the fleet is the hosts: a
wave is the next hosts in the spec's order with every instance on them
(replicas spread evenly), so `waves: [1, 50%]` updates one host, then half of
the hosts at a time; the platform places and replaces instances host by host
(platforms/ssh.py) and the controller takes a wave's instances from the
first hosts not yet updated (controller/reconcile.py). Within a wave at most `maxUnavailable` instances
are out of service at once: each is drained from the router, replaced, and
checked before the next. Cohorts send a fixed, growing share of *users* (by a
header or cookie key) to the candidate; a user on the candidate stays there.
"""

from __future__ import annotations

from stagewise.core.plan import Plan, Step, StepKind, World
from stagewise.core.platform_spec import host_quotas
from stagewise.core.routes import CohortRoute
from stagewise.core.spec import PhasedCohorts, PhasedSpec, PhasedWaves, ReleaseSpec, ServiceSpec
from stagewise.strategies import _shared

DEFAULT_ANALYSIS_DURATION = 30.0


def wave_sizes(waves: list[int | str], total: int) -> list[int]:
    """Instances per wave for a fleet of `total` (the last value repeats)."""
    sizes: list[int] = []
    done = 0
    i = 0
    while done < total:
        size = min(_shared.resolve_size(waves[min(i, len(waves) - 1)], total), total - done)
        sizes.append(size)
        done += size
        i += 1
    return sizes


def phased(spec: ServiceSpec, cfg: PhasedSpec, stable: ReleaseSpec, candidate: ReleaseSpec) -> Plan:
    if isinstance(cfg, PhasedCohorts):
        return _cohorts(spec, cfg, stable.version, candidate.version)
    return _waves(spec, cfg, stable.version, candidate.version)


def host_wave_sizes(waves: list[int | str], quotas: list[int]) -> list[int]:
    """Instances per wave when waves count hosts: each wave takes the next hosts, in order, whole."""
    sizes = []
    first = 0
    for hosts in wave_sizes(waves, len(quotas)):
        sizes.append(sum(quotas[first:first + hosts]))
        first += hosts
    return [size for size in sizes if size > 0]


def _waves(spec: ServiceSpec, cfg: PhasedWaves, s: str, c: str) -> Plan:
    n = spec.spec.replicas
    platform = spec.spec.platform
    on_hosts = platform.kind == "ssh"
    sizes = host_wave_sizes(cfg.waves, host_quotas(platform, n)) if on_hosts else wave_sizes(cfg.waves, n)
    batch = _shared.resolve_size(cfg.max_unavailable, n)
    host_counts = wave_sizes(cfg.waves, len(platform.hosts)) if on_hosts else []
    steps: list[Step] = []
    updated = 0
    for w, size in enumerate(sizes, start=1):
        hosts = f"{sum(host_counts[:w])}/{len(platform.hosts)} host(s), " if on_hosts else ""
        allowed = int(size * cfg.max_fail_percent // 100)
        left = size
        while left > 0:
            move = min(batch, left)
            left -= move
            updated += move
            last_of_wave = left == 0
            world = World(instances={s: n - updated, c: updated}, stable=s)
            analysis = None
            if last_of_wave and n - updated > 0 and cfg.analysis is not None:
                analysis = _shared.gate(cfg.analysis, DEFAULT_ANALYSIS_DURATION)
            steps.append(Step(
                kind=StepKind.WAVE,
                title=f"wave {w}/{len(sizes)}: {c} on {hosts}{updated}/{n} instance(s)",
                world=world,
                analysis=analysis,
                pause=cfg.bake if last_of_wave and cfg.bake else None,
                max_failures=allowed,
            ))
    promote_from = len(steps)
    steps.append(Step(kind=StepKind.PROMOTE, title=f"{c} is stable", promoting=True,
                      world=World(instances={s: 0, c: n}, stable=c)))
    return Plan(strategy="phased", steps=tuple(steps), promote_from=promote_from)


def _cohorts(spec: ServiceSpec, cfg: PhasedCohorts, s: str, c: str) -> Plan:
    n = spec.spec.replicas
    key = cfg.cohorts.key
    steps: list[Step] = []
    cohort: CohortRoute | None = None
    gate = _shared.gate(cfg.analysis, DEFAULT_ANALYSIS_DURATION) if cfg.analysis is not None else None
    for pct in cfg.cohorts.steps:
        cohort = CohortRoute(release=c, percent=pct, header=key.header, cookie=key.cookie)
        world = World(
            instances={s: n, c: _shared.canary_instances(n, pct)},
            stable=s,
            weights={s: 100},
            cohort=cohort,
        )
        steps.append(Step(
            kind=StepKind.SET_COHORT,
            title=f"setCohort {pct:g}% of users by {'header' if key.header else 'cookie'} "
                  f"{key.header or key.cookie}",
            world=world,
            # with every keyed user on the candidate there is no concurrent baseline to judge against
            analysis=gate if pct < 100 else None,
            pause=cfg.bake or None,
        ))
    promote_from = len(steps)
    steps += _shared.promotion_steps(s, c, n, last_weight=0, cohort=cohort)
    return Plan(strategy="phased", steps=tuple(steps), promote_from=promote_from)
