"""A route table compiled for the request path, and how a request picks an endpoint.

`RouteTable` is a pydantic model: right for validating what the controller
sends, too slow to consult on every request. `RoutePlan` turns it, once per
apply, into tuples and dicts of bytes, and implements the selection rules of
`stagewise.core.routes` exactly:

1. header routes; 2. the cohort split (a request without the key goes to
`stable`); 3. release weights by smooth weighted round-robin (deterministic:
20/80 gives exactly 1 in 5), or with no weights every endpoint alike;
4. endpoints of a release take turns. A release chosen by 1–2 without an
endpoint falls through to 3. A release of weight 0 gets nothing while a
release of weight > 0 has endpoints; when none has, every endpoint serves
alike rather than none.

A plan is immutable once built except for its round-robin cursors, so the
proxy swaps tables by assigning one reference. `Endpoint` objects, which carry
the connection pool and in-flight count, outlive plans: an endpoint kept by a
new table keeps its warm connections.
"""

from __future__ import annotations

from stagewise.basics.ports import split_host_port
from stagewise.core.routes import RouteTable, in_cohort
from stagewise.routers.builtin.pool import EndpointPool


class Endpoint:
    """One instance the proxy forwards to, with its connection pool and in-flight count."""

    __slots__ = ("address", "id", "inflight", "pool", "release")

    def __init__(self, id: str, release: str, address: str) -> None:
        self.id = id
        self.release = release
        self.address = address
        host, port = split_host_port(address)
        self.pool = EndpointPool(host or "127.0.0.1", port)
        self.inflight = 0


Choice = tuple[str, tuple[Endpoint, ...], int]
"""The release counted for a request, the endpoints to try in turn, and where to start."""


class RoutePlan:
    """The selection rules of one route table, over plain data."""

    def __init__(self, table: RouteTable, known: dict[tuple[str, str, str], Endpoint]) -> None:
        """Compile `table`, reusing `known` endpoints keyed by (id, release, address)."""
        self.table = table
        self.service = table.service
        self.stable = table.stable
        self.preview_release = table.preview_release
        self.endpoints: dict[tuple[str, str, str], Endpoint] = {}
        groups: dict[str, list[Endpoint]] = {}
        for e in table.endpoints:
            key = (e.id, e.release, e.address)
            ep = known.get(key) or self.endpoints.get(key) or Endpoint(e.id, e.release, e.address)
            self.endpoints[key] = ep
            groups.setdefault(e.release, []).append(ep)
        self.groups = {r: tuple(eps) for r, eps in groups.items()}
        self.everyone = tuple(self.endpoints.values())
        self.header_routes = tuple(
            (h.header.lower().encode("latin-1"), h.value.encode("utf-8"), h.release) for h in table.header_routes
        )
        cohort = table.cohort
        self.cohort = cohort.release if cohort else None
        self.cohort_percent = cohort.percent if cohort else 0.0
        self.cohort_header = cohort.header.lower().encode("latin-1") if cohort and cohort.header else None
        self.cohort_cookie = cohort.cookie.encode("latin-1") if cohort and cohort.cookie else None
        weighted = sorted((r, w) for r, w in (table.weights or {}).items() if w > 0 and r in self.groups)
        self.weighted = tuple(weighted)
        self._total_weight = sum(w for _, w in weighted)
        self._current = [0] * len(weighted)
        self._turn = dict.fromkeys(self.groups, 0)
        self._turn_all = 0

    def choose(self, index: dict[bytes, bytes]) -> Choice:
        """Where a request on the main listener goes, given its lower-cased headers."""
        for header, value, release in self.header_routes:
            if index.get(header) == value:
                if release in self.groups:
                    return self._in_release(release)
                return self._by_weight()
        if self.cohort is not None:
            key = self._cohort_key(index)
            if key is None:
                release = self.stable
            else:
                release = self.cohort if in_cohort(key, self.cohort_percent) else self.stable
            if release in self.groups:
                return self._in_release(release)
        return self._by_weight()

    def choose_preview(self) -> Choice:
        """Everything on the preview listener goes to the preview release, or nowhere."""
        release = self.preview_release or self.stable
        if release in self.groups:
            return self._in_release(release)
        return release, (), 0

    def _cohort_key(self, index: dict[bytes, bytes]) -> str | None:
        raw: bytes | None = None
        if self.cohort_header is not None:
            raw = index.get(self.cohort_header)
        if raw is None and self.cohort_cookie is not None:
            raw = _cookie(index.get(b"cookie"), self.cohort_cookie)
        # surrogateescape: the key hashes to the same bucket as the bytes the client sent
        return raw.decode("utf-8", "surrogateescape") if raw else None

    def _in_release(self, release: str) -> Choice:
        turn = self._turn[release]
        self._turn[release] = turn + 1
        return release, self.groups[release], turn

    def _by_weight(self) -> Choice:
        weighted = self.weighted
        if weighted:
            # smooth weighted round-robin (as in nginx): deterministic and evenly interleaved
            current = self._current
            best = 0
            for i, (_, weight) in enumerate(weighted):
                current[i] += weight
                if current[i] > current[best]:
                    best = i
            current[best] -= self._total_weight
            return self._in_release(weighted[best][0])
        everyone = self.everyone
        if not everyone:
            return self.stable, (), 0
        turn = self._turn_all
        self._turn_all = turn + 1
        return everyone[turn % len(everyone)].release, everyone, turn


def _cookie(header: bytes | None, name: bytes) -> bytes | None:
    """The value of cookie `name` in a Cookie header, or None."""
    if not header:
        return None
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip(b'"')
    return None
