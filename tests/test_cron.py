"""The ``schedule`` cron expressions: next firing times and the errors a user sees.

Times are UTC and minute-resolution; ``next_times(after)`` is strictly after.
A property compares the parser with a brute-force minute scan over value sets
that the test builds alongside each generated expression.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysync.cron import CronError, CronSchedule


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def nexts(expression: str, after: str, count: int = 3) -> list[str]:
    times = CronSchedule(expression).next_times(utc(after), count)
    return [t.strftime("%Y-%m-%d %H:%M %a") for t in times]


# 2026-11-27 is a Friday.
@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        pytest.param(
            "0 2 * * *",
            "2026-11-27T10:00",
            ["2026-11-28 02:00 Sat", "2026-11-29 02:00 Sun", "2026-11-30 02:00 Mon"],
            id="daily-at-2",
        ),
        pytest.param(
            "0 2 * * *",
            "2026-11-27T02:00:00",
            ["2026-11-28 02:00 Sat", "2026-11-29 02:00 Sun", "2026-11-30 02:00 Mon"],
            id="strictly-after",
        ),
        pytest.param(
            "0 2 * * *",
            "2026-11-27T01:59:59.999",
            ["2026-11-27 02:00 Fri", "2026-11-28 02:00 Sat", "2026-11-29 02:00 Sun"],
            id="seconds-ignored",
        ),
        pytest.param(
            "*/15 * * * *",
            "2026-11-27T10:07",
            ["2026-11-27 10:15 Fri", "2026-11-27 10:30 Fri", "2026-11-27 10:45 Fri"],
            id="every-15-min",
        ),
        pytest.param(
            "*/15 * * * *",
            "2026-12-31T23:40",
            ["2026-12-31 23:45 Thu", "2027-01-01 00:00 Fri", "2027-01-01 00:15 Fri"],
            id="every-15-min-over-new-year",
        ),
        pytest.param(
            "0 9 * * mon-fri",
            "2026-11-27T10:00",
            ["2026-11-30 09:00 Mon", "2026-12-01 09:00 Tue", "2026-12-02 09:00 Wed"],
            id="weekdays",
        ),
        pytest.param(
            "0 9 * * MON-Fri",
            "2026-11-27T08:00",
            ["2026-11-27 09:00 Fri", "2026-11-30 09:00 Mon", "2026-12-01 09:00 Tue"],
            id="names-any-case",
        ),
        pytest.param(
            "0 0 1 * *",
            "2026-11-15T00:00",
            ["2026-12-01 00:00 Tue", "2027-01-01 00:00 Fri", "2027-02-01 00:00 Mon"],
            id="monthly",
        ),
        pytest.param(
            "0 0 13 * fri",
            "2026-11-10T00:00",
            ["2026-11-13 00:00 Fri", "2026-11-20 00:00 Fri", "2026-11-27 00:00 Fri"],
            id="dom-or-dow-friday",
        ),
        pytest.param(
            "0 0 13 * fri",
            "2026-11-27T00:00",
            ["2026-12-04 00:00 Fri", "2026-12-11 00:00 Fri", "2026-12-13 00:00 Sun"],
            id="dom-or-dow-the-13th",
        ),
        pytest.param(
            "0 0 */10 * *",
            "2026-11-27T00:00",
            ["2026-12-01 00:00 Tue", "2026-12-11 00:00 Fri", "2026-12-21 00:00 Mon"],
            id="dom-step-with-any-dow-is-and",
        ),
        pytest.param(
            "30 6 1 jan,jul *",
            "2026-11-27T00:00",
            ["2027-01-01 06:30 Fri", "2027-07-01 06:30 Thu", "2028-01-01 06:30 Sat"],
            id="month-names",
        ),
        pytest.param(
            "0 9-11 * * *",
            "2026-11-27T10:30",
            ["2026-11-27 11:00 Fri", "2026-11-28 09:00 Sat", "2026-11-28 10:00 Sat"],
            id="hour-range",
        ),
        pytest.param(
            "0-30/10 8 * * *",
            "2026-11-27T08:05",
            ["2026-11-27 08:10 Fri", "2026-11-27 08:20 Fri", "2026-11-27 08:30 Fri"],
            id="range-step",
        ),
        pytest.param(
            "5/20 8 * * *",
            "2026-11-27T08:00",
            ["2026-11-27 08:05 Fri", "2026-11-27 08:25 Fri", "2026-11-27 08:45 Fri"],
            id="start-step",
        ),
        pytest.param(
            "0 12 * * 1,3,5",
            "2026-11-27T13:00",
            ["2026-11-30 12:00 Mon", "2026-12-02 12:00 Wed", "2026-12-04 12:00 Fri"],
            id="weekday-list",
        ),
        pytest.param(
            "0 0 * * 7",
            "2026-11-27T00:00",
            ["2026-11-29 00:00 Sun", "2026-12-06 00:00 Sun", "2026-12-13 00:00 Sun"],
            id="sunday-is-7",
        ),
        pytest.param(
            "0 0 * * sun",
            "2026-11-27T00:00",
            ["2026-11-29 00:00 Sun", "2026-12-06 00:00 Sun", "2026-12-13 00:00 Sun"],
            id="sunday-by-name",
        ),
        pytest.param(
            "0 0 29 2 *",
            "2026-03-01T00:00",
            ["2028-02-29 00:00 Tue", "2032-02-29 00:00 Sun", "2036-02-29 00:00 Fri"],
            id="leap-day",
        ),
        pytest.param(
            "0 0 29 feb *",
            "2097-01-01T00:00",
            ["2104-02-29 00:00 Fri"],
            id="leap-day-across-2100",
        ),
        pytest.param(
            "0 0 31 * *",
            "2026-11-27T00:00",
            ["2026-12-31 00:00 Thu", "2027-01-31 00:00 Sun", "2027-03-31 00:00 Wed"],
            id="skips-short-months",
        ),
        pytest.param(
            "59 23 31 12 *",
            "2026-12-31T23:59",
            ["2027-12-31 23:59 Fri"],
            id="last-minute-of-year",
        ),
    ],
)
def test_next_times(expression: str, after: str, expected: list[str]) -> None:
    assert nexts(expression, after, len(expected)) == expected


def test_next_times_keep_the_timezone() -> None:
    (moment,) = CronSchedule("0 2 * * *").next_times(utc("2026-11-27T10:00"), 1)
    assert moment == datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "expected 5 fields (minute hour day month weekday), got 0"),
        ("0 2 * *", "expected 5 fields (minute hour day month weekday), got 4"),
        ("0 2 * * * *", "expected 5 fields (minute hour day month weekday), got 6"),
        ("60 * * * *", "minute field: 60 is outside 0-59"),
        ("0 24 * * *", "hour field: 24 is outside 0-23"),
        ("0 0 0 * *", "day of month field: 0 is outside 1-31"),
        ("0 0 32 * *", "day of month field: 32 is outside 1-31"),
        ("0 0 * 13 *", "month field: 13 is outside 1-12"),
        ("0 0 * 0 *", "month field: 0 is outside 1-12"),
        ("0 0 * * 8", "day of week field: 8 is outside 0-7"),
        ("*/0 * * * *", "minute field: bad step '0'"),
        ("*/x * * * *", "minute field: bad step 'x'"),
        ("*/ * * * *", "minute field: bad step ''"),
        ("0 1-5/-1 * * *", "hour field: bad step '-1'"),
        ("0 5-1 * * *", "hour field: range '5-1' runs backwards"),
        ("0 0 * * fri-mon", "day of week field: range 'fri-mon' runs backwards"),
        ("a * * * *", "minute field: 'a' is not a number"),
        ("jan * * * *", "minute field: 'jan' is not a number"),
        ("0 ² * * *", "hour field: '²' is not a number"),
        ("0 -1 * * *", "hour field: '' is not a number"),
        ("0 1,,2 * * *", "hour field: empty list item in '1,,2'"),
        ("0 0 * * monday", "day of week field: 'monday' is not a number"),
        ("0 0 31 2 *", "day of month '31' never occurs in month '2': the expression never fires"),
        ("0 0 30,31 feb *", "day of month '30,31' never occurs in month 'feb'"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        CronSchedule(expression)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_dom_and_dow_both_restricted_can_fire_even_on_a_missing_date() -> None:
    # 31 February never comes, but with a weekday too the OR rule fires every Monday.
    assert nexts("0 0 31 2 mon", "2026-11-27T00:00", 2) == [
        "2027-02-01 00:00 Mon",
        "2027-02-08 00:00 Mon",
    ]


# --- property: the parser agrees with a brute-force scan ------------------------------


@st.composite
def field(draw: st.DrawFn, low: int, high: int) -> tuple[str, set[int]]:
    """One cron field as text, with the set of values it stands for."""
    kind = draw(st.sampled_from(["star", "value", "range", "step", "range-step", "list"]))
    if kind == "star":
        return "*", set(range(low, high + 1))
    if kind == "step":
        step = draw(st.integers(1, high - low + 1))
        return f"*/{step}", set(range(low, high + 1, step))
    a = draw(st.integers(low, high))
    if kind == "value":
        return str(a), {a}
    b = draw(st.integers(a, high))
    if kind == "range":
        return f"{a}-{b}", set(range(a, b + 1))
    if kind == "range-step":
        step = draw(st.integers(1, 10))
        return f"{a}-{b}/{step}", set(range(a, b + 1, step))
    parts = draw(st.lists(st.integers(low, high), min_size=1, max_size=4))
    return ",".join(map(str, parts)), set(parts)


@given(
    minute=field(0, 59),
    hour=field(0, 23),
    dom=field(1, 31),
    dow=field(0, 7),
    start=st.datetimes(datetime(2024, 1, 1), datetime(2030, 12, 31)),
)
@settings(deadline=None)  # up to 4,320 minutes scanned per example
def test_next_times_agree_with_a_minute_by_minute_scan(
    minute: tuple[str, set[int]],
    hour: tuple[str, set[int]],
    dom: tuple[str, set[int]],
    dow: tuple[str, set[int]],
    start: datetime,
) -> None:
    expression = f"{minute[0]} {hour[0]} {dom[0]} * {dow[0]}"
    weekdays = {d % 7 for d in dow[1]}

    def fires(moment: datetime) -> bool:
        on_dom = moment.day in dom[1]
        on_dow = moment.isoweekday() % 7 in weekdays
        both_restricted = dom[0] != "*" and dow[0] != "*"
        day = (on_dom or on_dow) if both_restricted else (on_dom and on_dow)
        return day and moment.hour in hour[1] and moment.minute in minute[1]

    after = start.replace(tzinfo=timezone.utc)
    times = CronSchedule(expression).next_times(after, 2)
    assert after < times[0] < times[1]
    assert all(fires(t) for t in times)
    # Nothing skipped: scan every minute up to the second time (bounded for speed).
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = min(times[1], moment + timedelta(days=3))
    while moment < end:
        assert fires(moment) == (moment in times), moment
        moment += timedelta(minutes=1)
