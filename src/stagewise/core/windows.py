"""Freeze windows in time: whether a delivery may start or add traffic at an instant, and until when not.

A deny window holds deliveries while it is open; with any allow window, they
may only start or add traffic while one is open (Spinnaker's restricted
execution windows). Deny wins over allow. A delivery held by a window waits,
and is told when it may go on: the end of the deny windows open then (or of
a chain of them, one opening as another ends), or the next opening of an
allow window. Rollback and abort are never asked: only the state machine's
forward moves consult this module.

Time is wall-clock time in each rule's IANA zone, with `zoneinfo`: a cron
occurrence opens at its local time (a local time that a spring-forward
skips opens at the jump, as cron runs such a job; of a time that a
fall-back repeats, the first one counts), and lasts `duration` of
wall-clock time, so `0 18 * * 5` for 64h ends Monday 10:00 local however
the clocks changed over the weekend.

Pure: `now` is an argument (Unix seconds); the zone database is read-only
data. It must never read a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from stagewise.core.cron import Cron, parse_cron
from stagewise.core.gates_spec import WindowRule, WindowSpec

LOOKAHEAD_DAYS = 366 * 8 + 2
"""How far an allow window's next opening is searched (a leap day's cron opens once in up to eight years)."""
MAX_CHAIN = 200
"""Windows chained one after another that `freeze_at` follows before it stops and reports the last end."""


@dataclass(frozen=True)
class Freeze:
    """Why a delivery may not start or add traffic now, and when it may."""

    reason: str
    """The window in words: "deny window weekend (cron '0 18 * * 5' for 64h (Europe/Berlin))"."""
    until: float | None
    """Unix seconds when it may go on; None: no allow window opens within the lookahead."""


@lru_cache(maxsize=256)
def _cron(text: str) -> Cron:
    return parse_cron(text)


def _epoch(local: datetime, zone: ZoneInfo) -> float:
    """The instant a wall-clock time means in `zone`: its first occurrence, or, for a time the clocks skip,
    the instant they jump past it (as cron runs a job of the skipped hour right after the change)."""
    first = local.replace(tzinfo=zone, fold=0)
    if datetime.fromtimestamp(first.timestamp(), zone).replace(tzinfo=None) == local:
        return first.timestamp()
    low, high = sorted((int(local.replace(tzinfo=zone, fold=1).timestamp()), int(first.timestamp())))
    while high - low > 1:  # the first second whose wall-clock time is at or past `local`: the jump
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= local:
            high = middle
        else:
            low = middle
    return float(high)


def _moment(text: str, zone: ZoneInfo) -> float:
    parsed = datetime.fromisoformat(text)
    return parsed.timestamp() if parsed.tzinfo is not None else _epoch(parsed, zone)


def _occurrence(rule: WindowRule, day: date, hour: int, minute: int) -> tuple[float, float]:
    zone = ZoneInfo(rule.time_zone)
    start = datetime(day.year, day.month, day.day, hour, minute)
    return _epoch(start, zone), _epoch(start + timedelta(seconds=rule.duration or 0), zone)


def covering(rule: WindowRule, at: float) -> float | None:
    """The end of the occurrence of `rule` open at `at` (the latest end if several are), or None."""
    zone = ZoneInfo(rule.time_zone)
    if rule.cron is None:
        start, end = _moment(rule.start or "", zone), _moment(rule.end or "", zone)
        return end if start <= at < end else None
    cron = _cron(rule.cron)
    today = datetime.fromtimestamp(at, zone).date()
    # An occurrence that opened more than `duration` ago (plus a day for the zone's offsets) is over.
    back = int((rule.duration or 0) // 86400) + 2
    for days_ago in range(back + 1):
        day = today - timedelta(days=days_ago)
        if not cron.matches_day(day):
            continue
        for hour, minute in reversed(cron.times()):
            start, end = _occurrence(rule, day, hour, minute)
            if start <= at:
                # The latest start at or before `at` has the latest end: every occurrence lasts as long.
                return end if end > at else None
    return None


def next_opening(rule: WindowRule, after: float) -> float | None:
    """When `rule` next opens at or after `after`; None if not within the lookahead."""
    zone = ZoneInfo(rule.time_zone)
    if rule.cron is None:
        start = _moment(rule.start or "", zone)
        return start if start >= after else None
    cron = _cron(rule.cron)
    first = datetime.fromtimestamp(after, zone).date() - timedelta(days=1)
    for ahead in range(LOOKAHEAD_DAYS):
        day = first + timedelta(days=ahead)
        if not cron.matches_day(day):
            continue
        for hour, minute in cron.times():
            start, _ = _occurrence(rule, day, hour, minute)
            if start >= after:
                return start
    return None


def freeze_at(windows: Sequence[WindowSpec], now: float) -> Freeze | None:
    """Whether deliveries are held at `now`, and until when; None when they may go on."""
    denies = [w for w in windows if w.deny is not None]
    allows = [w for w in windows if w.allow is not None]
    reason: str | None = None
    at = now
    for _ in range(MAX_CHAIN):
        open_denies = [(end, w) for w in denies if (end := covering(w.rule, at)) is not None]
        if open_denies:
            end, window = max(open_denies, key=lambda pair: pair[0])
            reason = reason or window.words()
            at = end
            continue
        if allows and not any(covering(w.rule, at) is not None for w in allows):
            openings = [(start, w) for w in allows if (start := next_opening(w.rule, at)) is not None]
            reason = reason or "outside every allow window (" + "; ".join(w.rule.words() for w in allows) + ")"
            if not openings:
                return Freeze(reason=reason, until=None)
            at = min(openings, key=lambda pair: pair[0])[0]
            continue
        break
    return None if reason is None else Freeze(reason=reason, until=at)
