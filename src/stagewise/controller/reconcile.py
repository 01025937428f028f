"""Make the world match a desired World: instances on the platform, routes on the router.

Every action here is idempotent — "keep 3 instances of v2", "serve this
table" — so running it again after a crash, or on every tick, does no harm.
Order matters for safety and is always the same:

1. instances to remove leave the route table first (drained), and are
   stopped only when the router reports no request in flight on them;
2. the table is applied with every ready instance that stays;
3. missing instances are started; they join the table once ready, on a later tick.

Removing before adding is what makes `full` a recreate and a phased wave a
rolling update with no surge; canary and blue-green only add, then remove.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewise.basics import waiting
from stagewise.core.plan import World
from stagewise.core.routes import Endpoint, HeaderRoute, RouteTable
from stagewise.core.spec import BlueGreenStrategy, ReleaseSpec, ServiceSpec
from stagewise.platforms import Instance, InstanceState, Platform, PlatformView
from stagewise.routers import Router

READY = InstanceState.READY
"""As a global: looked up on its Enum class, for every instance of every service on every tick, it cost 4×."""
DRAIN_TIMEOUT = 5.0
"""Longest wait for requests in flight on a removed instance before it is stopped anyway."""


@dataclass
class Applied:
    """What the controller last applied to a router, so an unchanged table is not re-sent (nor even built)."""

    tables: dict[str, str] = field(default_factory=dict)
    boots: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    """What each service's last table was built from: the same again builds the same table."""

    def forget(self, service: str) -> None:
        """The router serves nothing known of `service` any more (it restarted, or the service is gone)."""
        self.tables.pop(service, None)
        self.sources.pop(service, None)


Source = tuple[ServiceSpec, World, tuple[tuple[str, int, str, str], ...]]
"""What a table is built from: the spec, the world, and (id, seq, release, address) of the instances it serves."""


def choose_victims(instances: list[Instance], want: int, *, load: dict[str, int] | None = None,
                   host_order: dict[str, int] | None = None) -> list[Instance]:
    """Which instances to stop to get down to `want`: not-ready ones first, then the newest.

    On hosts (ssh), ready instances go from the most loaded host first — so a host that took
    another's instances while it was unreachable gives them back — and, among equally loaded
    hosts, from the first in the spec's order: a phased wave updates hosts in order, whole,
    each instance replaced on its own host (the platform starts the new one where room is).
    """
    if len(instances) <= want:
        return []
    load, host_order = load or {}, host_order or {}

    def rank(i: Instance) -> tuple[int, int, int]:
        if i.host is None:
            return 0, 0, -i.seq
        return -load.get(i.host, 0), host_order.get(i.host, 0), -i.seq

    ordered = sorted(instances, key=rank)
    not_ready = [i for i in ordered if i.state is not READY]
    ready = [i for i in ordered if i.state is READY]
    return (not_ready + ready)[: len(instances) - want]


def build_table(spec: ServiceSpec, world: World, endpoints: list[Instance]) -> RouteTable:
    weights = None
    present = {i.release for i in endpoints}
    if world.weights is not None:
        weights = {r: world.weights.get(r, 0) for r in present | set(world.weights)}
        if sum(weights.values()) != 100:
            weights = None
    header_routes = list(world.header_routes)
    preview_listen = None
    preview_release = None
    strategy = spec.spec.strategy
    if world.preview is not None:
        preview = strategy.blue_green.preview if isinstance(strategy, BlueGreenStrategy) else None
        if preview is not None and preview.header:
            (name, value), = preview.header.items()
            header_routes.append(HeaderRoute(header=name, value=value, release=world.preview))
        if preview is not None and preview.listen:
            preview_listen, preview_release = preview.listen, world.preview
    return RouteTable(
        service=spec.name,
        listen=spec.spec.listen,
        stable=world.stable,
        endpoints=tuple(
            Endpoint(id=i.id, release=i.release, address=i.address)
            for i in sorted(endpoints, key=lambda i: i.seq)
        ),
        weights=weights,
        cohort=world.cohort,
        header_routes=tuple(header_routes),
        preview_listen=preview_listen,
        preview_release=preview_release,
        metrics_listen=spec.spec.router.metrics_listen,
    )


Victims = tuple[dict[str, list[Instance]], list[Instance]]
"""The observed instances per release, and those a world has no place for."""


def _victims(world: World, view: PlatformView) -> Victims:
    """The observed instances per release, and those `world` has no place for."""
    by_release: dict[str, list[Instance]] = {}
    load: dict[str, int] = {}
    for inst in view.instances:
        by_release.setdefault(inst.release, []).append(inst)
        if inst.host is not None:
            load[inst.host] = load.get(inst.host, 0) + 1
    order = view_host_order(view)
    victims: list[Instance] = []
    for release, instances in by_release.items():
        victims += choose_victims(instances, world.instances.get(release, 0), load=load, host_order=order)
    return by_release, victims


def view_host_order(view: PlatformView) -> dict[str, int]:
    """The hosts' places in the spec's order, as the platform reports them."""
    return {host: i for i, host in enumerate(view.hosts)}


def _serving(world: World, view: PlatformView, victims: list[Instance]) -> list[Instance]:
    """Every ready instance that stays, of a release `world` runs."""
    gone = {v.id for v in victims}
    return [
        i for i in view.instances
        if i.state is READY and i.id not in gone and world.instances.get(i.release, 0) > 0
    ]


async def _serve(router: Router, spec: ServiceSpec, world: World, serving: list[Instance],
                 applied: Applied) -> None:
    """Apply the table of `world` over `serving`, unless the router serves the table of the same already.

    Building and comparing a table costs more than the rest of an idle service's
    reconcile; its sources compare cheaply (the spec by identity, mostly).
    """
    source: Source = (spec, world, tuple((i.id, i.seq, i.release, i.address) for i in serving))
    if applied.sources.get(spec.name) == source and spec.name in applied.tables:
        return
    await apply_table(router, build_table(spec, world, serving), applied)
    applied.sources[spec.name] = source


async def serve_ready(*, spec: ServiceSpec, world: World, view: PlatformView, router: Router,
                      applied: Applied) -> Victims:
    """Route to the instances ready now, in `world` as committed; start and stop nothing.

    The controller calls this before it judges a step by those instances: a
    step that is done "once they are ready" is then done only when traffic
    already reaches them, so no one sees Succeeded (or the next step) while
    the router still serves the table of a moment before. Returns the instances
    sorted for `world`: `make_world` on the same world and view need not sort them again.
    """
    victims = _victims(world, view)
    await _serve(router, spec, world, _serving(world, view, victims[1]), applied)
    return victims


async def make_world(
    *,
    spec: ServiceSpec,
    world: World,
    releases: dict[str, ReleaseSpec],
    view: PlatformView,
    platform: Platform,
    router: Router,
    applied: Applied,
    sorted_for: Victims | None = None,
) -> bool:
    """One idempotent pass towards `world` for the service of `spec`; whether the world was found settled.

    Settled: nothing to stop, nothing to start, no instance still starting and no host out of
    reach — another pass would do nothing until something changes. `sorted_for`: what `serve_ready`
    returned for the same world and view, if it did (it routed them then: they are not routed again).
    """
    service = spec.name
    by_release, victims = sorted_for if sorted_for is not None else _victims(world, view)
    gone = {v.id for v in victims}
    if sorted_for is None:  # otherwise `serve_ready` served this world over this view already
        await _serve(router, spec, world, _serving(world, view, victims), applied)
    if victims:
        await _drain(router, service, gone)
        await platform.stop(service=service, ids=sorted(gone))
    started = False
    for release, want in world.instances.items():
        have = len(by_release.get(release, [])) - sum(1 for v in victims if v.release == release)
        if want > have and release in releases:
            await platform.start(service=service, release=releases[release], count=want - have)
            started = True
    starting = any(i.state is not READY for i in view.instances)
    return not (victims or started or starting or view.unreachable)


async def apply_table(router: Router, table: RouteTable, applied: Applied) -> None:
    """Send `table` unless the router already serves it (and has not restarted since)."""
    text = table.model_dump_json()
    if applied.tables.get(table.service) == text:
        return
    await router.apply(table=table)
    applied.tables[table.service] = text


def note_boot(applied: Applied, service: str, boot: str) -> None:
    """Forget what was applied when the router restarted: its table must be sent again."""
    if applied.boots.get(service) not in (None, boot):
        applied.forget(service)
    applied.boots[service] = boot


async def _drain(router: Router, service: str, ids: set[str]) -> None:
    """Until no request is in flight on the endpoints `ids`, or DRAIN_TIMEOUT passes (then they stop regardless)."""

    async def drained() -> bool:
        stats = await router.stats(service=service)
        return not any(stats.inflight.get(i, 0) for i in ids)

    await waiting.until_awaited(drained, timeout=DRAIN_TIMEOUT, interval=0.02)
