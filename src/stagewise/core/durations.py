"""Durations as people write them in specs: `500ms`, `30s`, `5m`, `1h`, `1m30s`."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")

DURATION_HINT = "a duration such as 500ms, 30s, 5m, 1h or 1m30s"


def parse_duration(value: object) -> float:
    """Seconds in `value`; raises ValueError naming the expected form."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"expected {DURATION_HINT}, got a negative number {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HINT}, got {type(value).__name__}")
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest spec-style spelling of `seconds` (`90` → `1m30s`)."""
    millis = round(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out + (f"{ms}ms" if ms else "") if (out or ms) else "0s"
