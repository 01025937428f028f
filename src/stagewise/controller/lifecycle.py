"""The end of a service's data plane: what runs of it, stopping it for `delete`, and what the server leaves running.

The data plane outlives the controller by design (docs/architecture.md: a controller
restart never drops a request), so nothing stops it but a person: `delete`
drains the router first — it stops taking requests and lets the ones in
flight finish — and only then stops the instances behind it. What runs is
told in processes and addresses, so a person can check it with `ss -ltnp`:
the instances as the platform knows them, the router as whatever listens on
the service's addresses (the drivers know their daemons by pid files and
sockets; the kernel knows them all the same way).

This module never decides whether a service may be deleted (the controller
does, under the service's lock) and never touches the store.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel

from stagewise.basics import proc
from stagewise.basics.ports import split_host_port
from stagewise.core.delivery import Delivery, Phase
from stagewise.core.spec import BlueGreenStrategy, ReleaseSpec, ServiceSpec
from stagewise.platforms import Platform
from stagewise.routers import Router


class InstanceProcess(BaseModel):
    """One instance of the service."""

    id: str
    release: str
    address: str
    """host:port it serves on."""
    pid: int | None


class RouterProcesses(BaseModel):
    """The service's router."""

    kind: str
    """builtin, haproxy or nginx."""
    external: bool = False
    """An HAProxy someone else runs: stagewise only adds and removes this service's servers in it."""
    addresses: list[str]
    """Where it takes the service's traffic: `listen`, a blue-green preview `listen`, `metricsListen`."""
    pids: list[int]
    """The processes listening there (none for an external HAProxy: it is not ours to report)."""


class DataPlane(BaseModel):
    """The processes that serve one service: its router and its instances."""

    service: str
    router: RouterProcesses
    instances: list[InstanceProcess]

    @property
    def runs(self) -> bool:
        return bool(self.router.pids or self.instances)


class Deletion(DataPlane):
    """What `delete` did: the data plane it stopped, or left running."""

    kept_running: bool
    """True with `keep_running`: the processes above still run, and no controller manages them."""
    ended_delivery: int | None = None
    """The delivery in flight that `force` ended (as Failed), if any."""


def router_addresses(spec: ServiceSpec) -> list[str]:
    """Every address the service's router listens on for it."""
    body = spec.spec
    preview = body.strategy.blue_green.preview if isinstance(body.strategy, BlueGreenStrategy) else None
    found = [body.listen, preview.listen if preview is not None else None, body.router.metrics_listen]
    return list(dict.fromkeys(a for a in found if a))


async def describe(service: str, spec: ServiceSpec, platform: Platform, releases: dict[str, ReleaseSpec],
                   listeners: Listeners) -> tuple[DataPlane, list[str]]:
    """What runs of the service's data plane now; and the platform's news (an instance exited, ...)."""
    view = await platform.observe(service=service, releases=releases)
    addresses = router_addresses(spec)
    external = spec.spec.router.socket is not None
    router = RouterProcesses(kind=spec.spec.router.kind, external=external, addresses=addresses,
                             pids=[] if external else listeners.pids(addresses))
    instances = [InstanceProcess(id=i.id, release=i.release, address=i.address, pid=i.pid) for i in view.instances]
    return DataPlane(service=service, router=router, instances=instances), view.events


async def stop(plane: DataPlane, *, platform: Platform, router: Router) -> None:
    """Drain and stop the router (requests in flight finish, new ones are refused), then the instances."""
    await router.stop(service=plane.service)
    await platform.stop(service=plane.service, ids=[i.id for i in plane.instances])


def in_words(plane: DataPlane) -> str:
    """The data plane in one line: the router with its pids and addresses, the instances with theirs."""
    r = plane.router
    router = (f"router {r.kind} (external) for {', '.join(r.addresses)}" if r.external else
              f"router {r.kind} on {', '.join(r.addresses)}"
              + (f" (pid {', '.join(map(str, r.pids))})" if r.pids else " (not running)"))
    instances = ", ".join(f"{i.id} pid {i.pid} on {i.address}" for i in plane.instances) or "none"
    return f"{router}; instances: {instances}"


def ended_by_deletion(delivery: Delivery, *, now: float, kept_running: bool) -> Delivery:
    """A delivery in flight, ended where it stood because its service was deleted (`force`).

    Failed, not RolledBack: nothing was rolled back — the data plane stopped (or was left as it
    stood) — and the release it was delivering never became the stable one.
    """
    data_plane = "left running as they stood" if kept_running else "stopped where they stood"
    message = (f"the service was deleted (force) while this delivery was {delivery.phase.value} "
               f"at step {delivery.step + 1}; its router and instances were {data_plane}")
    return delivery.model_copy(update={"phase": Phase.FAILED, "paused": False, "finished_at": now,
                                       "updated_at": now, "progress_at": now, "message": message})


# -- who listens where (Linux: /proc) -----------------------------------------------------------------


class Listeners:
    """Who listens where on this machine, read from /proc once: then any number of questions are cheap."""

    def __init__(self) -> None:
        self._sockets = proc.listening_sockets()
        self._holders: dict[str, list[int]] | None = None

    def pids(self, addresses: list[str]) -> list[int]:
        """Pids of the processes holding a listening TCP socket on any of `addresses` (host:port)."""
        wanted = [_parse(a) for a in addresses]
        inodes = [inode for inode, (host, port) in self._sockets.items()
                  if any(port == p and (h is None or host == h or host.is_unspecified) for h, p in wanted)]
        if not inodes:
            return []
        if self._holders is None:
            self._holders = proc.socket_holders(self._sockets)
        return sorted({pid for inode in inodes for pid in self._holders.get(inode, [])})


def _parse(address: str) -> tuple[proc.Address | None, int]:
    """(host, port) of host:port; the host None when it is a name (then any host matches)."""
    host, port = split_host_port(address)
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        return None, port
