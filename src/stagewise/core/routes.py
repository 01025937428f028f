"""The route table: everything a router needs to split one service's traffic.

A router applies a whole table at once (never a diff), so a table is the
complete desired state of the data plane for a service. How a request picks a
release, in order:

1. a header route whose header matches sends it to that route's release;
2. with a cohort split, a request carrying the key goes to the cohort release
   when the key's bucket is below the cohort percentage, else to `stable`;
   a request without the key goes to `stable`;
3. otherwise the release weights decide (or, with no weights, every endpoint
   counts the same);
4. within a release, endpoints take turns.

A release chosen by 1–2 that has no endpoint falls through to 3. The preview
listener, when set, sends everything to the preview release.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, model_validator

BUCKETS = 10_000
"""Cohort buckets: a key's bucket is fixed, so raising the percentage only adds users."""


def cohort_bucket(key: str) -> int:
    """The fixed bucket (0..9999) of a cohort key; the same in every process and run."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_cohort(key: str, percent: float) -> bool:
    """Whether the user with `key` is on the candidate when `percent` of users are."""
    return cohort_bucket(key) < round(percent * BUCKETS / 100)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Endpoint(Frozen):
    id: str
    """The instance's id, unique within the service."""
    release: str
    address: str
    """host:port of the instance."""


class CohortRoute(Frozen):
    release: str
    percent: float = Field(ge=0, le=100)
    header: str | None = None
    cookie: str | None = None


class HeaderRoute(Frozen):
    header: str
    value: str
    release: str


class RouteTable(Frozen):
    service: str
    listen: str
    stable: str
    """The release that takes requests no other rule claims."""
    endpoints: tuple[Endpoint, ...] = ()
    weights: dict[str, int] | None = None
    """Share of requests per release, summing to 100; none: all endpoints alike."""
    cohort: CohortRoute | None = None
    header_routes: tuple[HeaderRoute, ...] = ()
    preview_listen: str | None = None
    preview_release: str | None = None
    metrics_listen: str | None = None
    """Where the data plane also serves its /metrics over TCP (builtin: when it starts); none: not at all."""

    @model_validator(mode="after")
    def _weights_sum(self) -> RouteTable:
        if self.weights is not None:
            if any(w < 0 for w in self.weights.values()):
                raise ValueError(f"weights must not be negative: {self.weights}")
            if self.weights and sum(self.weights.values()) != 100:
                raise ValueError(f"weights must sum to 100: {self.weights}")
        return self

    def releases(self) -> set[str]:
        return {e.release for e in self.endpoints}

    def receiving(self) -> set[str]:
        """Releases that can get requests through this table."""
        present = self.releases()
        out: set[str] = set()
        if self.weights is None:
            out |= present
        else:
            out |= {r for r, w in self.weights.items() if w > 0 and r in present}
        if self.cohort and self.cohort.percent > 0 and self.cohort.release in present:
            out.add(self.cohort.release)
        out |= {h.release for h in self.header_routes if h.release in present}
        if self.preview_release in present and self.preview_listen:
            out.add(self.preview_release)
        if self.stable in present:
            out.add(self.stable)
        return out


def split_weights(counts: dict[str, int]) -> dict[str, int]:
    """Weights proportional to instance counts, summing to 100 (largest remainder)."""
    total = sum(counts.values())
    if total == 0:
        return {}
    exact = {r: 100 * n / total for r, n in counts.items()}
    out = {r: int(v) for r, v in exact.items()}
    for r in sorted(exact, key=lambda r: exact[r] - out[r], reverse=True)[: 100 - sum(out.values())]:
        out[r] += 1
    return out
