"""Freeze windows over a fake clock: cron + wall-clock duration in a real time zone, DST changes, chains,
allow windows and one-off ranges."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stagewise.core.gates_spec import WindowSpec
from stagewise.core.windows import covering, freeze_at, next_opening

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(*parts: int, zone: ZoneInfo = BERLIN) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[misc]


def local(t: float | None, zone: ZoneInfo = BERLIN) -> str:
    assert t is not None
    return datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M %Z")


def window(**rule: Any) -> WindowSpec:
    kind = rule.pop("kind", "deny")
    name = rule.pop("name", None)
    return WindowSpec.model_validate({kind: rule, "name": name})


WEEKEND = window(cron="0 18 * * 5", duration="64h", timeZone="Europe/Berlin")
"""The issue's example: from Friday 18:00 to Monday 10:00, Berlin time."""


def test_a_weekend_freeze_from_friday_evening_to_monday_morning() -> None:
    assert freeze_at([WEEKEND], at(2024, 6, 14, 17, 59)) is None
    for moment in [(2024, 6, 14, 18, 0), (2024, 6, 15, 12, 0), (2024, 6, 17, 9, 59)]:
        freeze = freeze_at([WEEKEND], at(*moment))
        assert freeze is not None and local(freeze.until) == "2024-06-17 10:00 CEST", moment
        assert "deny window" in freeze.reason and "0 18 * * 5" in freeze.reason
    assert freeze_at([WEEKEND], at(2024, 6, 17, 10, 0)) is None


@pytest.mark.parametrize(("friday", "monday", "hours"), [
    ((2024, 3, 29), "2024-04-01 10:00 CEST", 63),  # clocks go forward on Sunday 31 March: one hour less
    ((2024, 10, 25), "2024-10-28 10:00 CET", 65),  # clocks go back on Sunday 27 October: one hour more
])
def test_the_weekend_ends_monday_ten_o_clock_whatever_the_clocks_did(
        friday: tuple[int, int, int], monday: str, hours: int) -> None:
    start = at(*friday, 18, 0)
    freeze = freeze_at([WEEKEND], start + 3600)
    assert freeze is not None and local(freeze.until) == monday
    assert freeze.until is not None and round((freeze.until - start) / 3600) == hours
    assert freeze_at([WEEKEND], freeze.until - 1) is not None
    assert freeze_at([WEEKEND], freeze.until) is None


def test_an_opening_in_the_spring_forward_gap_opens_at_the_jump() -> None:
    nightly = window(cron="30 2 * * *", duration="1h", timeZone="Europe/Berlin")
    # 31 March 2024: Berlin's clocks jump from 02:00 to 03:00; 02:30 to 03:30 of wall-clock time is 03:00 to 03:30.
    assert local(next_opening(nightly.rule, at(2024, 3, 31, 0, 0))) == "2024-03-31 03:00 CEST"
    assert covering(nightly.rule, at(2024, 3, 31, 1, 59)) is None
    end = covering(nightly.rule, at(2024, 3, 31, 3, 0))
    assert end is not None and local(end) == "2024-03-31 03:30 CEST"
    assert covering(nightly.rule, at(2024, 3, 31, 3, 30)) is None
    assert local(covering(nightly.rule, at(2024, 4, 1, 2, 45))) == "2024-04-01 03:30 CEST", "a day later: normal"


def test_a_repeated_hour_opens_once_at_its_first_occurrence() -> None:
    nightly = window(cron="30 2 * * *", duration="30m", timeZone="Europe/Berlin")
    # 27 October 2024: Berlin's clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
    first = datetime(2024, 10, 27, 2, 30, tzinfo=BERLIN, fold=0).timestamp()
    second = datetime(2024, 10, 27, 2, 30, tzinfo=BERLIN, fold=1).timestamp()
    assert second - first == 3600
    assert local(next_opening(nightly.rule, first - 60)) == "2024-10-27 02:30 CEST"
    assert local(next_opening(nightly.rule, first + 1)) == "2024-10-28 02:30 CET", "the repeat opens nothing"
    # 02:30 to 03:00 of wall-clock time: from the first 02:30 until 03:00 comes, after the repeated hour
    assert local(covering(nightly.rule, second + 60)) == "2024-10-27 03:00 CET"


def test_a_time_zone_is_its_own_not_the_servers() -> None:
    ny = window(cron="0 9 * * *", duration="1h", timeZone="America/New_York")
    assert freeze_at([ny], at(2024, 6, 3, 9, 30, zone=NEW_YORK)) is not None
    assert freeze_at([ny], at(2024, 6, 3, 9, 30, zone=BERLIN)) is None


def test_windows_that_chain_hold_until_the_last_one_ends() -> None:
    evening = window(cron="0 18 * * *", duration="2h", timeZone="UTC", name="evening")
    night = window(cron="0 20 * * *", duration="10h", timeZone="UTC", name="night")
    freeze = freeze_at([evening, night], at(2024, 6, 3, 19, 0, zone=ZoneInfo("UTC")))
    assert freeze is not None and "evening" in freeze.reason
    assert local(freeze.until, ZoneInfo("UTC")) == "2024-06-04 06:00 UTC"


def test_allow_windows_hold_outside_them_until_the_next_opens() -> None:
    office = window(kind="allow", cron="0 9 * * mon-fri", duration="8h", timeZone="Europe/Berlin")
    assert freeze_at([office], at(2024, 6, 14, 12, 0)) is None  # Friday noon
    freeze = freeze_at([office], at(2024, 6, 14, 17, 0))
    assert freeze is not None and "outside every allow window" in freeze.reason
    assert local(freeze.until) == "2024-06-17 09:00 CEST"
    # a deny window wins over an allow window, and the allow window then decides when it may go on
    friday_deny = window(cron="0 0 * * fri", duration="24h", timeZone="Europe/Berlin")
    freeze = freeze_at([office, friday_deny], at(2024, 6, 14, 12, 0))
    assert freeze is not None and "deny window" in freeze.reason
    assert local(freeze.until) == "2024-06-17 09:00 CEST"


def test_one_off_ranges_dates_and_times() -> None:
    holidays = window(start="2024-12-23", end="2025-01-02", timeZone="Europe/Berlin")
    assert freeze_at([holidays], at(2024, 12, 22, 23, 59)) is None
    freeze = freeze_at([holidays], at(2024, 12, 23, 0, 0))
    assert freeze is not None and local(freeze.until) == "2025-01-02 00:00 CET"
    assert freeze_at([holidays], at(2025, 1, 2, 0, 0)) is None
    launch = window(start="2024-06-03T12:00:00+00:00", end="2024-06-03T16:00", timeZone="Europe/Berlin")
    assert freeze_at([launch], at(2024, 6, 3, 13, 59)) is None  # 11:59 UTC: the offset in start counts
    freeze = freeze_at([launch], at(2024, 6, 3, 14, 30))
    assert freeze is not None and local(freeze.until) == "2024-06-03 16:00 CEST"
    allowed_once = window(kind="allow", start="2024-06-10", end="2024-06-11", timeZone="UTC")
    freeze = freeze_at([allowed_once], at(2024, 6, 12, 0, 0))
    assert freeze is not None and freeze.until is None, "an allow window that will not open again"


@pytest.mark.parametrize(("rule", "words"), [
    ({"cron": "0 18 * * 5"}, "needs both cron"),
    ({"cron": "0 18 * * 5", "duration": "1h", "start": "2024-01-01"}, "either recurring"),
    ({"start": "2024-01-01"}, "needs both start and end"),
    ({"cron": "0 25 * * 5", "duration": "1h"}, "hour field"),
    ({"cron": "0 18 * * 5", "duration": "1h", "timeZone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"start": "24.12.2024", "end": "2025-01-01"}, "expected a date such as 2024-12-24"),
])
def test_bad_windows_are_refused_with_what_would_be_right(rule: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        WindowSpec.model_validate({"deny": rule})
    assert words in str(info.value)
    with pytest.raises(ValidationError, match="exactly one of deny or allow"):
        WindowSpec.model_validate({"deny": {"start": "2024-01-01", "end": "2024-01-02"},
                                   "allow": {"start": "2024-01-01", "end": "2024-01-02"}})


@settings(max_examples=200, deadline=None)
@given(minute=st.integers(0, 59), hour=st.integers(0, 23), weekday=st.integers(0, 6),
       hours=st.integers(1, 100), offset=st.integers(0, 14 * 24 * 60),
       zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]))
def test_a_freeze_holds_exactly_until_it_says(minute: int, hour: int, weekday: int, hours: int, offset: int,
                                              zone: str) -> None:
    """Where a freeze says it ends, it has ended, and a minute before, it still held; outside, nothing holds."""
    rule = window(cron=f"{minute} {hour} * * {weekday}", duration=f"{hours}h", timeZone=zone)
    now = at(2024, 3, 1, 0, 0, zone=ZoneInfo("UTC")) + offset * 60
    freeze = freeze_at([rule], now)
    if freeze is None:
        assert covering(rule.rule, now) is None
        return
    assert freeze.until is not None and freeze.until > now
    assert freeze_at([rule], freeze.until) is None
    assert freeze_at([rule], freeze.until - 60) is not None
    tz = ZoneInfo(zone)
    ended = datetime.fromtimestamp(freeze.until, tz)
    opened = ended.replace(tzinfo=None) - timedelta(hours=hours)  # wall-clock duration
    offsets = {datetime.fromtimestamp(freeze.until - k * 1800, tz).utcoffset() for k in range(2 * hours + 3)}
    # it opened at the cron's wall-clock time, unless the clocks changed on the way (a skipped opening
    # or end moves to the jump)
    assert (opened.hour, opened.minute) == (hour, minute) or len(offsets) > 1
