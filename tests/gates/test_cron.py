"""The cron parser: Vixie cron's syntax and day rule, checked by hand and against a brute-force reading."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.core.cron import parse_cron


@pytest.mark.parametrize(("text", "minutes", "hours"), [
    ("0 18 * * 5", (0,), (18,)),
    ("*/15 9-17 * * *", (0, 15, 30, 45), tuple(range(9, 18))),
    ("5,10-12 0 * * *", (5, 10, 11, 12), (0,)),
    ("30 8-20/4 * * *", (30,), (8, 12, 16, 20)),
    ("0 3/6 * * *", (0,), (3, 9, 15, 21)),
    ("@hourly", (0,), tuple(range(24))),
    ("@daily", (0,), (0,)),
])
def test_minutes_and_hours(text: str, minutes: tuple[int, ...], hours: tuple[int, ...]) -> None:
    cron = parse_cron(text)
    assert cron.minutes == minutes and cron.hours == hours


def test_names_and_sunday_as_seven() -> None:
    cron = parse_cron("0 0 * jan,JUL sun-mon")
    assert cron.months == {1, 7} and cron.weekdays == {0, 1}
    assert parse_cron("0 0 * * 7").weekdays == {0}
    assert parse_cron("0 0 * * 5-7").weekdays == {5, 6, 0}


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    cron = parse_cron("0 0 13 * 5")  # every 13th, and every Friday
    assert cron.matches_day(date(2024, 9, 13))  # a Friday the 13th
    assert cron.matches_day(date(2024, 6, 13))  # a Thursday
    assert cron.matches_day(date(2024, 6, 14))  # a Friday
    assert not cron.matches_day(date(2024, 6, 15))
    only_fridays = parse_cron("0 0 * * 5")
    assert not only_fridays.matches_day(date(2024, 6, 13))
    stepped = parse_cron("0 0 */2 * 5")  # a field starting with * counts as unrestricted: both must match
    assert stepped.matches_day(date(2024, 6, 21)) and not stepped.matches_day(date(2024, 6, 14))


@pytest.mark.parametrize(("text", "words"), [
    ("0 18 * *", "has 4"),
    ("60 * * * *", "minute field '60': 60 is outside 0–59"),
    ("0 24 * * *", "hour field"),
    ("0 0 0 * *", "day of month field '0': 0 is outside 1–31"),
    ("0 0 * 13 *", "month field"),
    ("0 0 * * 8", "day of week field"),
    ("0 0 * foo *", "'foo' is not a number or a name (jan, feb"),
    ("0 0 * * 5-1", "runs backwards"),
    ("*/0 * * * *", "a step is at least 1"),
    ("1,,2 * * * *", "is not a value"),
])
def test_errors_say_which_field_and_what_is_right(text: str, words: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_cron(text)
    assert words in str(info.value)


def _field_allows(field: str, value: int, low: int, high: int) -> bool:
    """A second, naive reading of one numeric field."""
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            start, end = map(int, base.split("-"))
        else:
            start = int(base)
            end = high if step else start
        if start <= value <= end and (value - start) % int(step or 1) == 0:
            return True
    return False


def _part(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    ranges = st.tuples(value, value).map(lambda t: f"{min(t)}-{max(t)}")
    single = st.one_of(st.just("*"), value.map(str), ranges)
    return st.tuples(single, st.one_of(st.just(""), st.integers(1, 7).map(lambda n: f"/{n}"))).map("".join)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    return st.lists(_part(low, high), min_size=1, max_size=3).map(",".join)


@settings(max_examples=300, deadline=None)
@given(minute=_field(0, 59), hour=_field(0, 23), dom=_field(1, 31), dow=_field(0, 6),
       start=st.dates(date(2020, 1, 1), date(2030, 12, 31)))
def test_the_parser_agrees_with_a_naive_reading(minute: str, hour: str, dom: str, dow: str, start: date) -> None:
    cron = parse_cron(f"{minute} {hour} {dom} * {dow}")
    assert cron.minutes == tuple(m for m in range(60) if _field_allows(minute, m, 0, 59))
    assert cron.hours == tuple(h for h in range(24) if _field_allows(hour, h, 0, 23))
    for offset in range(14):
        day = start + timedelta(days=offset)
        by_dom = _field_allows(dom, day.day, 1, 31)
        weekday = day.isoweekday() % 7  # 7, Sunday again, is reached by steps and open ranges (Vixie cron)
        by_dow = _field_allows(dow, weekday, 0, 7) or (weekday == 0 and _field_allows(dow, 7, 0, 7))
        restricted = not dom.startswith("*") and not dow.startswith("*")
        assert cron.matches_day(day) == ((by_dom or by_dow) if restricted else (by_dom and by_dow))
