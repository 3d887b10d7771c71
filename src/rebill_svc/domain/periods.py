"""Billing periods of a subscription, calendar-correct in UTC.

Period n (0 for the first) starts at the anchor plus n × interval_count intervals, always
counted from the anchor, never from the previous period: a subscription anchored on Jan 31
renews Feb 28 (29 in a leap year), Mar 31, Apr 30, May 31; one anchored on Feb 29 renews on
Feb 28 in other years and on Feb 29 again in leap years. A day past the end of a month falls
on the month's last day, at the anchor's time of day. Days and weeks are fixed lengths of
24 h and 7 × 24 h (UTC has no daylight saving)."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from paymesh.platform.problems import FieldViolation


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


# The most intervals of each kind in one period: a period is at most one year (as Stripe's).
MAX_COUNT = {Interval.DAY: 365, Interval.WEEK: 52, Interval.MONTH: 12, Interval.YEAR: 1}


@dataclass(frozen=True)
class Period:
    number: int  # 0 for the first
    start: datetime
    end: datetime  # the next period's start


def plan_violations(interval: str, interval_count: int) -> list[FieldViolation]:
    """What is wrong with a subscription's interval, named by field (empty: nothing)."""
    if interval not in {i.value for i in Interval}:
        allowed = ", ".join(i.value for i in Interval)
        return [
            FieldViolation("interval", "invalid_interval", f"interval must be one of {allowed}")
        ]
    most = MAX_COUNT[Interval(interval)]
    if not 1 <= interval_count <= most:
        return [
            FieldViolation(
                "interval_count",
                "invalid_interval_count",
                f"a period is at most one year: interval_count must be 1 to {most} for"
                f" interval {interval}",
            )
        ]
    return []


def period_start(
    anchor: datetime, interval: Interval, interval_count: int, number: int
) -> datetime:
    """The start of period `number` of a subscription anchored at `anchor` (timezone-aware)."""
    if anchor.tzinfo is None:
        raise ValueError("the anchor must be timezone-aware")
    if number < 0:
        raise ValueError("periods are numbered from 0")
    anchor = anchor.astimezone(UTC)
    steps = number * interval_count
    if interval == Interval.DAY:
        return anchor + timedelta(days=steps)
    if interval == Interval.WEEK:
        return anchor + timedelta(weeks=steps)
    months = steps * 12 if interval == Interval.YEAR else steps
    return _add_months(anchor, months)


def period(anchor: datetime, interval: Interval, interval_count: int, number: int) -> Period:
    return Period(
        number,
        period_start(anchor, interval, interval_count, number),
        period_start(anchor, interval, interval_count, number + 1),
    )


def periods_starting(
    anchor: datetime,
    interval: Interval,
    interval_count: int,
    after: int,
    until: datetime,
) -> Iterator[Period]:
    """The periods after period `after` whose start is at or before `until`, in order: what
    falls due when a clock moves to `until`."""
    number = after + 1
    while (current := period(anchor, interval, interval_count, number)).start <= until:
        yield current
        number += 1


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
