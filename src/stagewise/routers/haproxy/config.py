"""What stagewise wants from HAProxy for one route table, and the configuration file that says it.

HAProxy changes servers, weights and map entries at run time, but not
frontends, rules or backends. So a route table splits into two parts:

- the `Layout`: listeners (traffic, preview, and the Prometheus exporter's
  `metrics_listen`), the header names and cohort key the rules look at, and how
  many release slots exist — changing it means a new configuration and a reload;
- the `Desired` state: servers with weights, and map entries — changed through
  the Runtime API with no reload, and also written into the configuration and
  map files so a reload or restart comes back with the same routes.

How requests pick a release (the rules of `stagewise.core.routes`):

    backend all       every endpoint, weighted so releases get their share of requests
    backend slotN     the endpoints of one release (releases take free slots, kept while present)
    backend none      no server: the preview of a release with no endpoint answers 503

    frontend main: header maps (h<i>.map: value → backend), then the cohort
    (vars.map: threshold, cohort and stable backends), else `all`.
    frontend metrics (with `metrics_listen`): HAProxy's own Prometheus exporter
    at /metrics — per server `haproxy_server_http_responses_total{proxy,server,code}`,
    servers named `<release>:<endpoint id>` — and 404 for any other path.

Cohort buckets: HAProxy cannot compute the builtin router's blake2b bucket, so
here a key's bucket is `crc32(key) mod 10000` (`cohort_bucket_crc32`), fixed
per key like the builtin's: a user in the cohort at 5% stays in at 10% within
one router kind, though not necessarily the same users as with builtin.

Header names and the cohort key stay in the layout once seen (their maps are
just emptied), so a delivery's steps cause no reload after the first.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stagewise.core.routes import BUCKETS, RouteTable
from stagewise.errors import RouterConfigError
from stagewise.routers.common.shares import endpoint_weights

MAX_WEIGHT = 256
"""HAProxy's largest server weight."""
MIN_SLOTS = 4
ALL, NONE = "all", "none"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MAP_VALUE = re.compile(r"[!-~]+")  # visible ASCII: one word on the Runtime API's command line
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def cohort_bucket_crc32(key: bytes) -> int:
    """The bucket (0..9999) HAProxy computes for a cohort key: `crc32,mod(10000)`."""
    return zlib.crc32(key) % BUCKETS


@dataclass(frozen=True)
class Layout:
    """The part of the configuration that only a reload can change."""

    listen: str
    preview_listen: str | None = None
    header_names: tuple[str, ...] = ()
    cohort_header: str | None = None
    cohort_cookie: str | None = None
    slots: int = MIN_SLOTS
    metrics_listen: str | None = None
    """Where HAProxy's Prometheus exporter serves /metrics; none: no exporter."""

    def maps(self) -> list[str]:
        """The map files the configuration reads (HAProxy knows no other)."""
        names = [f"h{i}.map" for i in range(len(self.header_names))]
        if self.cohort_header or self.cohort_cookie or self.preview_listen:
            names.append("vars.map")
        return names

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Layout:
        data = json.loads(text)
        data["header_names"] = tuple(data.get("header_names", ()))
        return cls(**data)


@dataclass(frozen=True)
class Server:
    backend: str
    name: str
    """`<release>:<endpoint id>` — ':' is in no release name, so the release can be read back."""
    address: str
    weight: int


@dataclass
class Desired:
    """Servers and map entries for one table under one layout."""

    servers: dict[tuple[str, str], Server] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    """Map file name → entries."""
    slots: dict[str, int] = field(default_factory=dict)
    """Release → slot number."""


def server_name(release: str, endpoint_id: str) -> str:
    return f"{release}:{endpoint_id}"


def release_of(name: str) -> str:
    return name.split(":", 1)[0]


def endpoint_of(name: str) -> str:
    return name.split(":", 1)[1] if ":" in name else name


def layout_for(table: RouteTable, previous: Layout | None, slots: dict[str, int]) -> Layout:
    """The layout `table` needs; header names and the cohort key of `previous` are kept."""
    names = list(previous.header_names) if previous else []
    for route in table.header_routes:
        name = route.header.lower()
        if not _TOKEN.fullmatch(name):
            raise RouterConfigError(f"header name {route.header!r} cannot be routed on by HAProxy")
        if name not in names:
            names.append(name)
    cohort_header = previous.cohort_header if previous else None
    cohort_cookie = previous.cohort_cookie if previous else None
    if table.cohort is not None:
        cohort_header = table.cohort.header.lower() if table.cohort.header else None
        cohort_cookie = table.cohort.cookie
        for key in (cohort_header, cohort_cookie):
            if key is not None and not _TOKEN.fullmatch(key):
                raise RouterConfigError(f"cohort key {key!r} cannot be read by HAProxy")
    needed = max(slots.values(), default=-1) + 1
    size = max(previous.slots if previous else MIN_SLOTS, MIN_SLOTS)
    while size < needed:
        size *= 2
    return Layout(listen=table.listen, preview_listen=table.preview_listen, header_names=tuple(names),
                  cohort_header=cohort_header, cohort_cookie=cohort_cookie, slots=size,
                  metrics_listen=table.metrics_listen)


def assign_slots(table: RouteTable, previous: dict[str, int]) -> dict[str, int]:
    """Release → slot: a release keeps its slot while it has endpoints; new ones take the lowest free."""
    present = sorted(table.releases())
    slots = {r: s for r, s in previous.items() if r in present}
    taken = set(slots.values())
    for release in present:
        if release not in slots:
            free = next(i for i in range(len(taken) + 1) if i not in taken)
            slots[release] = free
            taken.add(free)
    return slots


def desired_for(table: RouteTable, layout: Layout, slots: dict[str, int]) -> Desired:
    """Servers and maps that make HAProxy route as `table` says."""
    desired = Desired(slots=dict(slots))
    weights = endpoint_weights(table, MAX_WEIGHT)
    for e in table.endpoints:
        if not _NAME.fullmatch(e.id):
            raise RouterConfigError(f"endpoint id {e.id!r} cannot name an HAProxy server")
        name = server_name(e.release, e.id)
        for backend, weight in ((ALL, weights[e.release, e.id]), (slot_backend(slots[e.release]), 1)):
            desired.servers[backend, name] = Server(backend, name, e.address, weight)

    def backend_of(release: str | None, fallback: str = ALL) -> str:
        return slot_backend(slots[release]) if release in slots else fallback

    cohort = table.cohort
    if cohort is not None:
        variables = {"threshold": str(round(cohort.percent * BUCKETS / 100)),
                     "cohort": backend_of(cohort.release), "stable": backend_of(table.stable)}
    else:
        variables = {"threshold": "0", "cohort": ALL, "stable": ALL}
    variables["preview"] = backend_of(table.preview_release or table.stable, NONE)
    desired.maps["vars.map"] = variables
    for i, name in enumerate(layout.header_names):
        entries: dict[str, str] = {}
        for route in table.header_routes:
            if route.header.lower() == name and route.value not in entries:
                if not _MAP_VALUE.fullmatch(route.value) or ";" in route.value or "\\" in route.value:
                    raise RouterConfigError(f"header value {route.value!r} cannot be routed on by HAProxy")
                entries[route.value] = backend_of(route.release)
        desired.maps[f"h{i}.map"] = entries
    return desired


def slot_backend(slot: int) -> str:
    return f"slot{slot}"


class Paths:
    """Where one managed HAProxy keeps its files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = folder / "haproxy.cfg"
        self.admin = folder / "admin.sock"
        """The worker's Runtime API (level admin)."""
        self.master = folder / "master.sock"
        """The master CLI: reload, show proc."""
        self.log = folder / "log.sock"
        """Where an HAProxy not started with the pipe sends one log line per request; the driver listens."""
        self.pipe = folder / "log.pipe"
        """The named pipe a managed HAProxy writes one log line per request to; the driver reads it."""
        self.log_fd = folder / "log.fd"
        """The descriptor of the pipe in the running HAProxy (`log fd@<n>`), kept for its reloads."""
        self.state = folder / "server-state"
        self.pid = folder / "haproxy.pid"
        self.layout = folder / "layout.json"
        """The layout the running HAProxy was started or reloaded with."""
        self.slots = folder / "slots.json"
        self.output = folder / "haproxy.log"
        self.retired = folder / "retired.json"

    def map(self, name: str) -> Path:
        return self.folder / name


_LOG_FORMAT = 'log-format "swlog %pid %s %ST %[var(txn.sw_t0)] %[date(0,us)] %b %tsc"'
"""One line per request for the driver's log receiver: worker pid, server, status, start and end in µs."""
_UNSET = "!{ var(txn.sw_be) -m found }"
"""No earlier rule has picked the request's backend."""


def render(layout: Layout, desired: Desired, paths: Paths, *, threads: int = 1, log_fd: int | None = None) -> str:
    """The whole configuration file of a managed HAProxy; its log lines go to descriptor `log_fd` (the pipe
    it was started with), else to the datagram socket."""
    for path in (paths.folder,):
        if any(c.isspace() for c in str(path)):
            raise RouterConfigError(f"HAProxy cannot use a state directory with spaces: {path}")
    lines = _global_and_defaults(paths, threads, log_fd)
    lines += _main_frontend(layout, paths)
    lines += _side_frontends(layout, paths)
    for backend in [ALL, *(slot_backend(i) for i in range(layout.slots))]:
        lines += [f"backend {backend}", "    balance roundrobin"]
        lines += [
            f"    server {s.name} {s.address} weight {s.weight}"
            for (b, _), s in sorted(desired.servers.items()) if b == backend
        ]
    lines += [f"backend {NONE}", ""]
    return "\n".join(lines)


def _global_and_defaults(paths: Paths, threads: int, log_fd: int | None) -> list[str]:
    target = paths.log if log_fd is None else f"fd@{log_fd}"
    return [
        "# written by stagewise: changes made here are overwritten",
        "global",
        "    master-worker",
        f"    nbthread {threads}",
        f"    stats socket {paths.admin} mode 600 level admin expose-fd listeners",
        f"    server-state-file {paths.state}",
        f"    log {target} len 1024 format raw local0 info",
        "defaults",
        "    mode http",
        "    log global",
        "    option forwardfor",
        "    option redispatch 1",
        "    retries 2",
        "    timeout connect 2s",
        "    timeout client 65s",
        "    timeout server 65s",
        "    timeout http-request 15s",
        "    timeout http-keep-alive 60s",
        "    load-server-state-from-file global",
    ]


def _main_frontend(layout: Layout, paths: Paths) -> list[str]:
    """The service's listener: header routes first, then the cohort, else every server weighted."""
    lines = [
        "frontend main",
        f"    bind {layout.listen}",
        f"    {_LOG_FORMAT}",
        "    http-request set-var(txn.sw_t0) date(0,us)",
    ]
    for i, name in enumerate(layout.header_names):
        lines.append(f"    http-request set-var(txn.sw_be) req.fhdr({name}),map({paths.map(f'h{i}.map')}) if {_UNSET}")
    if layout.cohort_header or layout.cohort_cookie:
        lines += _cohort_rules(layout, paths.map("vars.map"))
    lines += ["    use_backend %[var(txn.sw_be)] if { var(txn.sw_be) -m found }", f"    default_backend {ALL}"]
    return lines


def _cohort_rules(layout: Layout, vars_map: Path) -> list[str]:
    """A request's cohort from its key's bucket (crc32) against the threshold in vars.map."""
    has_key = "{ var(txn.sw_key) -m len gt 0 }"
    lines = []
    if layout.cohort_header:
        lines.append(f"    http-request set-var(txn.sw_key) req.fhdr({layout.cohort_header}) if {_UNSET}")
    if layout.cohort_cookie:
        lines.append(f"    http-request set-var(txn.sw_key) req.cook({layout.cohort_cookie}) if {_UNSET} !{has_key}")
    return [
        *lines,
        f"    http-request set-var(txn.sw_thr) str(threshold),map({vars_map},0)",
        f"    http-request set-var(txn.sw_in) var(txn.sw_key),crc32,mod({BUCKETS}),sub(txn.sw_thr) if {_UNSET} "
        f"{has_key}",
        f"    http-request set-var(txn.sw_be) str(cohort),map({vars_map}) if {_UNSET} "
        "{ var(txn.sw_in) -m int lt 0 }",
        f"    http-request set-var(txn.sw_be) str(stable),map({vars_map}) if {_UNSET}",
    ]


def _side_frontends(layout: Layout, paths: Paths) -> list[str]:
    """The blue-green preview listener and HAProxy's own Prometheus exporter, when the layout has them."""
    lines = []
    if layout.preview_listen:
        lines += [
            "frontend preview",
            f"    bind {layout.preview_listen}",
            f"    {_LOG_FORMAT}",
            "    http-request set-var(txn.sw_t0) date(0,us)",
            f"    use_backend %[str(preview),map({paths.map('vars.map')},{NONE})]",
        ]
    if layout.metrics_listen:
        lines += [
            "frontend metrics",
            f"    bind {layout.metrics_listen}",
            "    no log",  # scrapes are no request of the service: keep them out of the latency log
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    http-request return status 404",
        ]
    return lines


def render_map(entries: dict[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in entries.items())
