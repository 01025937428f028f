"""A service as stored: its last applied spec, its stable release, and the one before."""

from __future__ import annotations

from pydantic import BaseModel

from stagewise.core.spec import ReleaseSpec, ServiceSpec


class ServiceRecord(BaseModel):
    name: str
    spec: ServiceSpec
    """The spec last applied (its release is the stable one, or the one being delivered)."""
    stable: ReleaseSpec | None = None
    """The release serving users; none until the first delivery succeeds."""
    previous: ReleaseSpec | None = None
    """The stable release before this one, kept for `undo`."""
    created_at: float = 0.0
    updated_at: float = 0.0
