"""The billing period: from 00:00 UTC on QUOTA_PERIOD_START_DAY to the same
day of the next month (the day is at most 28, so every month has it). Used by
ops/usage/quota.py and ops/usage/advisor.py, which do not import each other's
module level."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return _hours(self.end - self.start)

    def hours_left(self, now: datetime) -> float:
        return max(0.0, _hours(self.end - now))

    def days(self) -> list[date]:
        first = self.start.date()
        return [first + timedelta(days=i) for i in range((self.end - self.start).days)]


def billing_period(now: datetime, start_day: int | None = None) -> Period:
    """The period `now` falls in: [start day 00:00 UTC, same day next month)."""
    day = settings.QUOTA_PERIOD_START_DAY if start_day is None else start_day
    if not 1 <= day <= 28:
        raise ValueError(f"the period start day must be 1..28, got {day}")
    now = now.astimezone(UTC)
    start = datetime(now.year, now.month, day, tzinfo=UTC)
    if now < start:
        start = _add_months(start, -1)
    return Period(start=start, end=_add_months(start, 1))
