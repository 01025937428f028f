"""The signature of a webhook's body: `X-Stagewise-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.

The HMAC is of `"<t>.<raw body>"` under the sink's secret, as Stripe signs its
webhooks: the timestamp inside the signed text lets a receiver refuse a
replayed request (older than a few minutes), and the raw body — the bytes as
they arrived, before any JSON parsing — is what is signed. `verify` is what a
receiver runs (the README shows it in a dozen lines); it compares in
constant time.

Pure functions over bytes: no clock (`now` is an argument), no I/O.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Stagewise-Signature"
TOLERANCE = 300
"""Seconds a signature's timestamp may be off from the receiver's clock (a replay older than that is refused)."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header's value: `t=<timestamp>,v1=<signature>`."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance: float = TOLERANCE) -> bool:
    """Whether `header` signs `body` under `secret`, at a time within `tolerance` seconds of `now`."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(parts.get("v1", ""), signature(secret, timestamp, body))
