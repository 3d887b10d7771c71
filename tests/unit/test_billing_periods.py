"""Calendar-correct billing periods (issue 10): table-driven edge cases, then properties that
hold for any anchor, interval and count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebill_svc.domain.periods import (
    MAX_COUNT,
    Interval,
    period,
    period_start,
    periods_starting,
    plan_violations,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("anchor", "interval", "count", "starts"),
    [
        # Anchored on the 31st: the month's last day when it is shorter, back to the 31st.
        (
            "2025-01-31T09:30",
            "month",
            1,
            ["2025-01-31T09:30", "2025-02-28T09:30", "2025-03-31T09:30", "2025-04-30T09:30"],
        ),
        ("2024-01-31", "month", 1, ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]),
        ("2024-08-31", "month", 6, ["2024-08-31", "2025-02-28", "2025-08-31", "2026-02-28"]),
        ("2025-12-31", "month", 2, ["2025-12-31", "2026-02-28", "2026-04-30", "2026-06-30"]),
        # Anchored on Feb 29: Feb 28 in other years, Feb 29 again in leap years.
        (
            "2024-02-29",
            "year",
            1,
            ["2024-02-29", "2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"],
        ),
        ("2024-02-29", "month", 12, ["2024-02-29", "2025-02-28", "2026-02-28"]),
        # Days and weeks are fixed lengths, across month and year ends.
        (
            "2025-12-30T23:00",
            "day",
            1,
            ["2025-12-30T23:00", "2025-12-31T23:00", "2026-01-01T23:00"],
        ),
        ("2025-12-25", "week", 2, ["2025-12-25", "2026-01-08", "2026-01-22"]),
        ("2025-01-01", "day", 365, ["2025-01-01", "2026-01-01", "2027-01-01"]),
    ],
)
def test_period_starts_follow_the_calendar(anchor, interval, count, starts):
    got = [period_start(at(anchor), Interval(interval), count, n) for n in range(len(starts))]
    assert got == [at(s) for s in starts]


def test_what_falls_due_when_a_clock_moves_is_every_period_in_order():
    due = list(
        periods_starting(at("2025-01-31"), Interval.MONTH, 1, after=0, until=at("2025-05-31"))
    )

    assert [(p.number, p.start.date().isoformat()) for p in due] == [
        (1, "2025-02-28"),
        (2, "2025-03-31"),
        (3, "2025-04-30"),
        (4, "2025-05-31"),
    ]
    assert list(periods_starting(at("2025-01-31"), Interval.MONTH, 1, 4, at("2025-06-29"))) == []


@pytest.mark.parametrize(
    ("interval", "count", "field", "reason"),
    [
        ("fortnight", 1, "interval", "invalid_interval"),
        ("month", 13, "interval_count", "invalid_interval_count"),
        ("day", 366, "interval_count", "invalid_interval_count"),
        ("week", 53, "interval_count", "invalid_interval_count"),
        ("year", 2, "interval_count", "invalid_interval_count"),
        ("month", 0, "interval_count", "invalid_interval_count"),
    ],
)
def test_a_plan_longer_than_a_year_or_unknown_is_refused_by_field(interval, count, field, reason):
    [violation] = plan_violations(interval, count)
    assert (violation.field, violation.reason) == (field, reason)


def test_a_naive_anchor_is_refused():
    with pytest.raises(ValueError):
        period_start(datetime(2025, 1, 31), Interval.MONTH, 1, 1)  # noqa: DTZ001


anchors = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)
plans = st.sampled_from(list(Interval)).flatmap(
    lambda interval: st.tuples(st.just(interval), st.integers(1, MAX_COUNT[interval]))
)


@given(anchors, plans, st.integers(0, 40))
def test_periods_are_contiguous_increasing_and_at_most_a_year(anchor, plan, number):
    interval, count = plan
    current, following = (
        period(anchor, interval, count, number),
        period(anchor, interval, count, number + 1),
    )

    assert current.end == following.start
    assert current.start < current.end
    assert current.end - current.start <= timedelta(days=366)
    assert current.start.time() == anchor.time()


@given(anchors, st.integers(0, 30))
def test_a_monthly_period_falls_on_the_anchor_day_or_the_months_last(anchor, number):
    start = period_start(anchor, Interval.MONTH, 1, number)
    following_day = start + timedelta(days=1)
    assert start.day == anchor.day or (start.day < anchor.day and following_day.day == 1)
    assert period_start(anchor, Interval.MONTH, 12, number) == period_start(
        anchor, Interval.YEAR, 1, number
    )
