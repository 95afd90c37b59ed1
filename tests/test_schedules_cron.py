"""Cron arithmetic (shared/cron.py): the seed's examples, the syntax, validation, and what a
02:30 schedule does on the daylight-saving days in Europe/Berlin."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from shared import cron


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def iso(values: list[float], tz: str = "UTC") -> list[str]:
    zone = cron.zone(tz)
    return [datetime.fromtimestamp(v, zone).isoformat() for v in values]


# -- the seed's four examples ---------------------------------------------------------------


def test_every_five_minutes():
    c = cron.parse("*/5 * * * *")
    assert iso(c.next_after(ts("2026-01-01T10:02:30+00:00"), 3)) == [
        "2026-01-01T10:05:00+00:00", "2026-01-01T10:10:00+00:00", "2026-01-01T10:15:00+00:00",
    ]


def test_nine_on_weekdays_skips_the_weekend():
    c = cron.parse("0 9 * * MON-FRI")
    # 2026-01-02 is a Friday: after its 09:00 the next is Monday.
    assert iso(c.next_after(ts("2026-01-02T10:00:00+00:00"), 6)) == [
        "2026-01-05T09:00:00+00:00", "2026-01-06T09:00:00+00:00", "2026-01-07T09:00:00+00:00",
        "2026-01-08T09:00:00+00:00", "2026-01-09T09:00:00+00:00", "2026-01-12T09:00:00+00:00",
    ]


def test_first_day_of_every_month():
    c = cron.parse("0 0 1 * *")
    assert iso(c.next_after(ts("2026-01-15T00:00:00+00:00"), 3)) == [
        "2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00",
    ]


def test_half_past_two_pm_every_saturday():
    c = cron.parse("30 14 * * 6")
    got = [datetime.fromtimestamp(v, UTC) for v in c.next_after(ts("2026-01-01T00:00:00+00:00"), 3)]
    assert [d.isoformat() for d in got] == [
        "2026-01-03T14:30:00+00:00", "2026-01-10T14:30:00+00:00", "2026-01-17T14:30:00+00:00",
    ]
    assert {d.strftime("%A") for d in got} == {"Saturday"}


# -- syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # month and day names, any case
        ("0 0 1 JAN *", "2026-02-01T00:00:00", ["2027-01-01T00:00"]),
        ("0 12 * jan,jul mon", "2026-01-20T00:00:00", ["2026-01-26T12:00", "2026-07-06T12:00"]),
        # ranges with steps, and lists
        ("0-10/5 8 * * *", "2026-01-01T00:00:00",
         ["2026-01-01T08:00", "2026-01-01T08:05", "2026-01-01T08:10", "2026-01-02T08:00"]),
        ("15,45 9-10 * * *", "2026-01-01T00:00:00",
         ["2026-01-01T09:15", "2026-01-01T09:45", "2026-01-01T10:15", "2026-01-01T10:45"]),
        # day of month and day of week both restricted: either matches (classic cron)
        ("0 0 13 * FRI", "2026-01-01T00:00:00",
         ["2026-01-02T00:00", "2026-01-09T00:00", "2026-01-13T00:00", "2026-01-16T00:00"]),
        # macros
        ("@hourly", "2026-01-01T00:30:00", ["2026-01-01T01:00", "2026-01-01T02:00"]),
        ("@daily", "2026-01-01T00:30:00", ["2026-01-02T00:00"]),
    ],
)
def test_names_ranges_steps_lists(expr, after, expected):
    got = cron.parse(expr).next_after(ts(after + "+00:00"), len(expected))
    assert [datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%dT%H:%M") for v in got] == expected


def test_the_timezone_decides_the_wall_clock():
    c = cron.parse("0 9 * * *", "America/New_York")
    assert iso(c.next_after(ts("2026-01-01T00:00:00+00:00"))) == ["2026-01-01T14:00:00+00:00"]


@pytest.mark.parametrize(
    ("expr", "tz", "field", "says"),
    [
        ("", "UTC", "cron_expr", "empty"),
        ("* * * *", "UTC", "cron_expr", "4 fields"),
        ("* * * * * *", "UTC", "cron_expr", "6 fields"),  # seconds: not standard cron
        ("61 * * * *", "UTC", "cron_expr", "out of range"),
        ("0 9 * * MON-FUN", "UTC", "cron_expr", "invalid cron expression"),
        ("0 0 30 2 *", "UTC", "cron_expr", "matches no date"),  # 30 February
        ("H * * * *", "UTC", "cron_expr", "not supported"),  # differs between processes
        ("R 1 * * *", "UTC", "cron_expr", "not supported"),
        ("@reboot", "UTC", "cron_expr", "unknown macro"),
        ("x" * 201, "UTC", "cron_expr", "longer than"),
        ("* * * * *", "Mars/Olympus_Mons", "timezone", "unknown timezone"),
        ("* * * * *", "../../etc/passwd", "timezone", "unknown timezone"),
        ("* * * * *", "", "timezone", "unknown timezone"),
    ],
)
def test_invalid_input_names_the_field(expr, tz, field, says):
    with pytest.raises(cron.CronError) as caught:
        cron.parse(expr, tz)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert says in str(caught.value)


def test_preview_bounds_n():
    assert len(cron.preview("* * * * *", "UTC", 0.0, 100)) == 100
    for n in (0, 101):
        with pytest.raises(cron.CronError, match="between 1 and 100"):
            cron.preview("* * * * *", "UTC", 0.0, n)


# -- daylight saving (docs/schedules.md) ---------------------------------------------------


BERLIN = "Europe/Berlin"


def test_spring_forward_a_missing_0230_fires_once_at_0300():
    # 2026-03-29: clocks go from 02:00 CET straight to 03:00 CEST; 02:30 does not exist.
    c = cron.parse("30 2 * * *", BERLIN)
    got = c.next_after(ts("2026-03-28T12:00:00+01:00"), 3)
    assert iso(got, BERLIN) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert iso(got[:1]) == ["2026-03-29T01:00:00+00:00"]


def test_fall_back_a_repeated_0230_fires_once_at_its_first_occurrence():
    # 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
    c = cron.parse("30 2 * * *", BERLIN)
    got = c.next_after(ts("2026-10-24T12:00:00+02:00"), 2)
    assert iso(got, BERLIN) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    # Asked between the two occurrences, it does not offer the second one.
    between = ts("2026-10-25T02:45:00+02:00")
    assert iso(c.next_after(between), BERLIN) == ["2026-10-26T02:30:00+01:00"]
    assert iso([c.latest_at_or_before(ts("2026-10-25T02:45:00+01:00"))], BERLIN) == [
        "2026-10-25T02:30:00+02:00"
    ]


def test_fall_back_a_wildcard_hour_fires_in_both_copies_of_the_hour():
    # "every 30 minutes" must not go silent for the repeated hour.
    c = cron.parse("*/30 * * * *", BERLIN)
    got = c.next_after(ts("2026-10-25T01:50:00+02:00"), 6)
    assert iso(got, BERLIN) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T03:30:00+01:00",
    ]
    assert [b - a for a, b in pairwise(got)] == [1800.0] * 5


def test_spring_forward_two_wall_times_on_one_instant_fire_once():
    c = cron.parse("0 2,3 * * *", BERLIN)
    got = c.next_after(ts("2026-03-29T00:00:00+01:00"), 3)
    assert iso(got, BERLIN) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T03:00:00+02:00",
    ]


@pytest.mark.parametrize("expr", ["30 2 * * *", "*/30 * * * *", "0 * * * *", "15 1-3 * * *",
                                  "0 9 * * MON-FRI", "*/7 2 * * *"])
@pytest.mark.parametrize("tz", [BERLIN, "America/New_York", "Australia/Lord_Howe", "UTC"])
def test_next_and_latest_agree_everywhere(expr, tz):
    """Every scheduler computes the same fire times from any starting instant: the series
    from one start, and the answers from any instant in between, are the same."""
    c = cron.parse(expr, tz)
    rng = random.Random(f"{expr}{tz}")
    for start in ("2026-03-28T00:00:00+00:00", "2026-10-24T00:00:00+00:00",
                  "2026-04-04T00:00:00+00:00"):
        series = c.next_after(ts(start), 30)
        assert series == sorted(set(series))
        for a, b in pairwise(series):
            probe = rng.uniform(a, b - 0.01)
            assert c.next_after(probe)[0] == b
            assert c.latest_at_or_before(probe) == a
            assert c.latest_at_or_before(b) == b
