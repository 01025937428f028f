"""Five-field cron expressions, as freeze windows write them: `0 18 * * 5` is every Friday at 18:00.

Why our own parser. A window needs three questions answered — does a day
match, at which minutes of it, and where is the latest or next start around
an instant — and the answers must be pure (no clock) and exact across
daylight-saving changes, which the window module does with `zoneinfo` on the
wall-clock times this module yields. That is about a hundred lines; a
dependency for it would bring its own DST rules and its own idea of "now".

The syntax is Vixie cron's: fields minute (0–59), hour (0–23), day of month
(1–31), month (1–12 or jan–dec) and day of week (0–7 or sun–sat, 0 and 7
both Sunday); each a `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`,
or a comma-separated list of those. When both day fields are restricted a
day matches if *either* does (so `0 0 13 * 5` is every 13th and every
Friday), as in Vixie cron. Macros: `@yearly`, `@annually`, `@monthly`,
`@weekly`, `@daily`, `@midnight`, `@hourly`.

Pure: no clock, no I/O; errors are `ValueError`s whose words say which field
is wrong and what would be right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    """Names for the values from `low` on (jan = 1, sun = 0)."""


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTHS),
    _Field("day of week", 0, 7, WEEKDAYS),
)
_PART = re.compile(r"(?P<range>\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?")


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the values each field allows."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 = Sunday … 6 = Saturday (7 is folded into 0)."""
    any_day: bool
    """The day-of-month field is unrestricted (starts with `*`)."""
    any_weekday: bool
    """The day-of-week field is unrestricted (starts with `*`)."""

    def matches_day(self, day: date) -> bool:
        """Whether some minute of `day` matches."""
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            # One side unrestricted: the other decides (both unrestricted: every day).
            return by_day and by_weekday
        return by_day or by_weekday

    def times(self) -> list[tuple[int, int]]:
        """The (hour, minute) pairs of a matching day, earliest first."""
        return [(h, m) for h in self.hours for m in self.minutes]


def parse_cron(text: str) -> Cron:
    """`text` parsed; `ValueError` naming the field that is wrong and what it takes."""
    expression = MACROS.get(text.strip().lower(), text)
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron expression has 5 fields (minute hour day-of-month month day-of-week) or is one "
                         f"of {', '.join(MACROS)}; {text!r} has {len(fields)}")
    values = [_parse_field(raw.lower(), spec) for raw, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(v % 7 for v in values[4])
    return Cron(text=text.strip(), minutes=tuple(sorted(values[0])), hours=tuple(sorted(values[1])),
                days=frozenset(values[2]), months=frozenset(values[3]), weekdays=weekdays,
                any_day=fields[2].startswith("*"), any_weekday=fields[4].startswith("*"))


def _parse_field(raw: str, spec: _Field) -> set[int]:
    allowed: set[int] = set()
    for part in raw.split(","):
        match = _PART.fullmatch(part)
        if match is None:
            raise ValueError(f"cron {spec.name} field {raw!r}: {part!r} is not a value, a range a-b, "
                             f"* or a step such as */5")
        step = int(match["step"]) if match["step"] is not None else 1
        if step < 1:
            raise ValueError(f"cron {spec.name} field {raw!r}: a step is at least 1")
        if match["range"] == "*":
            low, high = spec.low, spec.high
        else:
            ends = match["range"].split("-")
            low = _value(ends[0], spec, raw)
            high = _value(ends[1], spec, raw) if len(ends) == 2 else (spec.high if match["step"] else low)
            if low > high:
                raise ValueError(f"cron {spec.name} field {raw!r}: the range {match['range']} runs backwards")
        allowed.update(range(low, high + 1, step))
    return allowed


def _value(token: str, spec: _Field, raw: str) -> int:
    if token.isdigit():
        value = int(token)
    elif token[:3] in spec.names and len(token) == 3:
        value = spec.names.index(token) + (spec.low if spec.names is MONTHS else 0)
    else:
        named = f" or a name ({', '.join(spec.names)})" if spec.names else ""
        raise ValueError(f"cron {spec.name} field {raw!r}: {token!r} is not a number{named}")
    if not spec.low <= value <= spec.high:
        raise ValueError(f"cron {spec.name} field {raw!r}: {value} is outside {spec.low}–{spec.high}")
    return value
