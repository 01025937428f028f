"""The nginx configuration for one route table: upstreams, maps and split_clients.

nginx changes nothing at run time (its open-source build has no API), so
every table is a whole configuration, checked with `nginx -t` and loaded by a
graceful reload. How a request picks its upstream (the rules of
`stagewise.core.routes`), as a chain of `map`s evaluated lazily per request:

    $sw_h<i>     header route i: the release's upstream when header i has a routed value, else ""
    $sw_cohort   with a cohort: the cohort release's upstream for keys `split_clients` puts in
                 the first (candidate) bucket, the stable's for other keys and requests without one
    $sw_target   the first non-empty of the above, else `sw_all` (every endpoint, weighted)

`split_clients` hashes the key with MurmurHash2 and gives the first listed
percentage to the candidate, so raising the percentage only adds users: a
cohort is sticky and only grows, like the builtin router's — though nginx's
buckets are its own (not the builtin's blake2b ones, nor HAProxy's crc32).

Every request's release is logged as JSON (the last address of
`$upstream_addr` mapped back to its release), which is how the driver counts
requests, errors and latency (`logs`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from stagewise.core.routes import Endpoint, RouteTable
from stagewise.errors import RouterConfigError
from stagewise.routers.common.shares import endpoint_weights

MAX_WEIGHT = 256
ALL, NONE = "sw_all", "sw_none"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SPECIAL_MAP_KEYS = {"default", "hostnames", "include", "volatile"}
LOG_FORMAT = "sw"


class Paths:
    """Where one nginx keeps its files: its prefix in the state directory, and where its workers write."""

    def __init__(self, folder: Path, runtime: Path | None = None) -> None:
        self.folder = folder
        self.runtime = runtime or folder
        """Where the workers write (their logs, their temporary files): the state folder itself when nginx
        runs as the current user; a folder of their own outside the state directory when they run as
        another user (`runtime`), so that they can reach nothing else of it."""
        self.config = folder / "nginx.conf"
        self.candidate = folder / "nginx.conf.new"
        self.pid = folder / "nginx.pid"
        self.access_log = self.runtime / "access.log"
        """One JSON line per request: release, status, seconds; rotated to `access.log.<n>` as it is read."""
        self.counts = folder / "counts.json"
        """The tallies read from the access log so far, and the number of the last rotated file read."""
        self.counts_lock = folder / "counts.lock"
        self.error_log = self.runtime / "error.log"
        self.kept_error_log = folder / "error.log"
        """The error log, kept in the state folder once nginx stopped (the runtime folder is removed then)."""
        self.output = folder / "nginx.out"
        """What nginx printed when started (before its error log took over)."""
        self.temp = self.runtime / "temp"


def quote(value: str) -> str:
    """A double-quoted nginx string."""
    if any(ord(c) < 32 for c in value):
        raise RouterConfigError(f"{value!r} cannot be written into an nginx configuration")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def map_key(value: str) -> str:
    """A literal map key (never a regular expression, never a keyword)."""
    # a leading backslash, which map strips, keeps "~..." from being a regex and "default" a keyword
    return quote("\\" + value) if value.startswith("~") or value in _SPECIAL_MAP_KEYS else quote(value)


def header_variable(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise RouterConfigError(f"header name {name!r} cannot be routed on by nginx")
    return "$http_" + name.lower().replace("-", "_")


def render(table: RouteTable, paths: Paths, *, workers: int = 1, user: tuple[str, str] | None = None) -> str:
    """The whole configuration of the nginx serving `table`.

    `user`: (user, group) for the workers, when nginx starts as root: they run as that unprivileged user
    and write only in `paths.runtime` (see the driver).
    """
    for folder in (paths.folder, paths.runtime):
        if any(c.isspace() or c in ';{}"' for c in str(folder)):
            raise RouterConfigError(f"nginx cannot use a state directory with spaces: {folder}")
    releases = sorted(table.releases())
    upstream = {r: f"sw_r{i}" for i, r in enumerate(releases)}

    def target(release: str | None, fallback: str = ALL) -> str:
        return upstream.get(release or "", fallback)

    lines = _preamble(paths, workers, user)
    lines += _release_of_upstream(table)
    lines += _upstreams(table, releases, upstream)
    # the chain of maps, from the last rule up to the first
    cohort, below = _cohort_maps(table, target)
    lines += cohort
    headers, below = _header_maps(table, target, below)
    lines += headers
    lines += _server(table.listen, below, paths)
    if table.preview_listen:
        lines += _server(table.preview_listen, target(table.preview_release or table.stable, NONE), paths)
    lines += ["}", ""]
    return "\n".join(lines)


def _preamble(paths: Paths, workers: int, user: tuple[str, str] | None) -> list[str]:
    """The main context and the start of `http`: workers, files, timeouts, the JSON log format."""
    t = paths.temp
    return [
        "# written by stagewise: changes made here are overwritten",
        *([f"user {user[0]} {user[1]};"] if user else []),
        f"worker_processes {workers};",
        f"pid {paths.pid};",
        f"error_log {paths.error_log} warn;",
        "worker_shutdown_timeout 10s;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fastcgi;",
        f"    uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;",
        "    keepalive_requests 100000;",
        "    keepalive_timeout 65s;",
        f"    log_format {LOG_FORMAT} escape=json "
        "'{\"r\":\"$sw_release\",\"s\":$status,\"t\":$request_time,\"a\":\"$upstream_addr\",\"p\":$pid,\"m\":$msec}';",
    ]


def _release_of_upstream(table: RouteTable) -> list[str]:
    """`$sw_release`: the release of the upstream address that answered, for the access log."""
    lines = [
        # a retried request lists every upstream it tried ("a, b"; "a : b" across internal redirects):
        # the last one answered, and its release is the one to count
        '    map $upstream_addr $sw_upstream { "~(?<sw_last>[^ ,]+)$" $sw_last; default ""; }',
        "    map $sw_upstream $sw_release {",
        '        default "";',
    ]
    release_at = {e.address: e.release for e in sorted(table.endpoints, key=_address)}
    lines += [f"        {quote(address)} {quote(release)};" for address, release in release_at.items()]
    lines.append("    }")
    return lines


def _upstreams(table: RouteTable, releases: list[str], upstream: dict[str, str]) -> list[str]:
    """Every endpoint weighted, then one upstream per release, then one that always answers 502."""
    weights = endpoint_weights(table, MAX_WEIGHT)
    all_servers = [(e.address, weights[e.release, e.id]) for e in table.endpoints if weights[e.release, e.id] > 0]
    lines = _upstream(ALL, [f"server {a} weight={w}" for a, w in all_servers])
    for release in releases:
        servers = [f"server {e.address}" for e in table.endpoints if e.release == release]
        lines += [f"    # release {release}", *_upstream(upstream[release], servers)]
    lines += [f"    upstream {NONE} {{ server 127.0.0.1:9 down; }}"]
    return lines


def _cohort_maps(table: RouteTable, target: Callable[[str | None], str]) -> tuple[list[str], str]:
    """The cohort's maps, and the variable (or upstream) a request goes to when no header route takes it."""
    cohort = table.cohort
    if cohort is None:
        return [], ALL
    sources = [header_variable(cohort.header)] if cohort.header else []
    if cohort.cookie:
        if not _TOKEN.fullmatch(cohort.cookie):
            raise RouterConfigError(f"cookie name {cohort.cookie!r} cannot be read by nginx")
        sources.append(f"$cookie_{cohort.cookie}")
    stable = target(table.stable)
    if not sources:
        return [], stable  # no key to read: every request is a request without the key
    lines = []
    key = sources[0]
    if len(sources) == 2:
        key = "$sw_cohort_key"
        lines.append(f"    map {sources[0]} {key} {{ \"\" {sources[1]}; default {sources[0]}; }}")
    split = f"{cohort.percent:.2f}% {target(cohort.release)}; " if cohort.percent > 0 else ""
    lines += [f"    split_clients \"{key}\" $sw_split {{ {split}* {stable}; }}",
              f"    map {key} $sw_cohort {{ \"\" {stable}; default $sw_split; }}"]
    return lines, "$sw_cohort"


def _header_maps(table: RouteTable, target: Callable[[str | None], str], below: str) -> tuple[list[str], str]:
    """One map per routed header name, chained above `below`; the variable at the top of the chain."""
    names: list[str] = []
    for route in table.header_routes:
        if route.header.lower() not in names:
            names.append(route.header.lower())
    lines = []
    for i, name in enumerate(names):
        entries: dict[str, str] = {}
        for route in table.header_routes:
            if route.header.lower() == name and route.value not in entries:
                entries[route.value] = target(route.release)
        body = " ".join(f"{map_key(value)} {up};" for value, up in entries.items())
        lines.append(f"    map {header_variable(name)} $sw_h{i} {{ default \"\"; {body} }}")
    for i in reversed(range(len(names))):
        lines.append(f"    map $sw_h{i} $sw_x{i} {{ \"\" {below}; default $sw_h{i}; }}")
        below = f"$sw_x{i}"
    return lines, below


def _address(endpoint: Endpoint) -> str:
    return endpoint.address


def _upstream(name: str, servers: list[str]) -> list[str]:
    if not servers:
        servers = ["server 127.0.0.1:9 down"]
    return [f"    upstream {name} {{", *(f"        {s};" for s in servers), "        keepalive 64;", "    }"]


def _server(listen: str, target: str, paths: Paths) -> list[str]:
    return [
        "    server {",
        f"        listen {listen} backlog=1024;",
        f"        access_log {paths.access_log} {LOG_FORMAT};",
        "        location / {",
        f"            proxy_pass http://{target};",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        "            proxy_set_header Host $http_host;",
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "            proxy_next_upstream error timeout;",
        "            proxy_next_upstream_tries 3;",
        "            proxy_connect_timeout 2s;",
        "            proxy_read_timeout 65s;",
        "            proxy_buffering off;",
        "            proxy_request_buffering off;",
        "        }",
        "    }",
    ]
