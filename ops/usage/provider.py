"""The provider's own figure of billed commands (ProviderUsageReading rows).

Two ways in: every quota error carries `Usage: N` (recorded where incidents
are opened, ops/usage/incidents.py), and an SRE can enter the figure shown on
the provider's dashboard (the quota page's form). Nothing here talks to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from ops.models import CommandUsage, ProviderUsageReading, Source
from ops.usage.quota_errors import provider_figure

# The application's traffic where a meter sees it: the lean enqueue API,
# django-rq's connections and clients made with metered_redis(). The quota
# page's "used by the application" and the advisor's application line.
APPLICATION_SOURCES = (Source.ENQUEUE, Source.DJANGO_RQ, Source.APP)


def record_from_error(
    exc: BaseException, *, at: datetime | None = None
) -> ProviderUsageReading | None:
    """Keep the `Usage: N` of a quota error, if it has one.

    While the quota stays spent every refused command repeats the same figure:
    one row per figure per probe cool-down is history enough (a burst of
    errors from one drain writes one row, not one per command)."""
    figure = provider_figure(exc)
    if figure is None:
        return None
    at = at or timezone.now()
    latest = (
        ProviderUsageReading.objects.filter(
            kind=figure.kind, origin=ProviderUsageReading.Origin.ERROR
        )
        .order_by("-at", "-id")
        .first()
    )
    if (
        latest is not None
        and latest.used == figure.used
        and latest.limit == figure.limit
        and at - latest.at < timedelta(seconds=settings.QUOTA_PROBE_COOLDOWN_S)
    ):
        return latest
    return ProviderUsageReading.objects.create(
        at=at,
        used=figure.used,
        limit=figure.limit,
        kind=figure.kind,
        origin=ProviderUsageReading.Origin.ERROR,
        note=str(exc)[:300],
    )


def record_manual(
    *,
    used: int,
    kind: str,
    by: Any,
    limit: int | None = None,
    at: datetime | None = None,
    note: str = "",
) -> ProviderUsageReading:
    """An SRE's reading of the provider's dashboard (validated by the form)."""
    return ProviderUsageReading.objects.create(
        at=at or timezone.now(),
        used=used,
        limit=limit,
        kind=kind,
        origin=ProviderUsageReading.Origin.MANUAL,
        entered_by=by,
        note=note[:300],
    )


def latest(
    kind: str, *, since: datetime, until: datetime
) -> ProviderUsageReading | None:
    """The newest reading of `kind` taken in [since, until] (one query, on the
    (kind, -at) index)."""
    return (
        ProviderUsageReading.objects.filter(kind=kind, at__gte=since, at__lte=until)
        .order_by("-at", "-id")
        .first()
    )


# --- What no meter saw -------------------------------------------------------------


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Unseen:
    """Commands the provider counted that no meter of this project recorded,
    estimated from the latest reading: its `used` minus the metered commands
    of the same window (the billing period for a monthly reading, the UTC day
    for a daily one). Meters book by the hour, so the reading's whole hour
    counts as before it: the estimate errs low by at most an hour of metered
    traffic."""

    reading: ProviderUsageReading | None = None
    window_start: datetime | None = None
    metered_in_window: int = 0  # metered, window start to the reading's hour
    metered_since: int = 0  # metered after the reading's hour, up to now
    commands: int = 0  # max(0, reading.used - metered_in_window)
    per_hour: float = 0.0  # commands / hours from window start to the reading

    @property
    def known(self) -> bool:
        return self.reading is not None

    @property
    def monthly(self) -> bool:
        return self.reading is not None and self.reading.kind == MONTHLY_KIND

    def basis(self) -> str:
        """Where the estimate comes from, for the page and the command."""
        reading = self.reading
        if reading is None or self.window_start is None:
            return "no provider figure recorded this period"
        where = (
            "a quota error"
            if reading.origin == ProviderUsageReading.Origin.ERROR
            else "entered from the provider's dashboard"
        )
        hours = max(_MIN_WINDOW_HOURS, _hours(reading.at - self.window_start))
        return (
            f"the provider's {reading.kind} figure {reading.used:,} at "
            f"{reading.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({where}) minus "
            f"{self.metered_in_window:,} metered by then: {self.commands:,} unseen "
            f"in {hours:,.1f} h"
        )


MONTHLY_KIND = ProviderUsageReading.Kind.MONTHLY
DAILY_KIND = ProviderUsageReading.Kind.DAILY
# A figure taken minutes after the window opened says little about a rate.
_MIN_WINDOW_HOURS = 1.0


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def unseen(now: datetime, period_start: datetime, period_end: datetime) -> Unseen:
    """The latest monthly reading of this period, else the latest daily one,
    against the meters (two queries, no Redis)."""
    reading = latest(MONTHLY_KIND, since=period_start, until=now) or latest(
        DAILY_KIND, since=period_start, until=now
    )
    if reading is None:
        return Unseen()
    window_start = window_start_of(reading, period_start)
    reading_hour_end = _floor_hour(reading.at) + timedelta(hours=1)
    sums = CommandUsage.objects.filter(
        hour__gte=window_start, hour__lt=period_end, hour__lte=now
    ).aggregate(
        before=Sum("commands", filter=Q(hour__lt=reading_hour_end)),
        after=Sum("commands", filter=Q(hour__gte=reading_hour_end)),
    )
    return estimate(
        reading,
        window_start=window_start,
        before=sums["before"] or 0,
        after=sums["after"] or 0,
    )


def window_start_of(reading: ProviderUsageReading, period_start: datetime) -> datetime:
    """Where a reading's count starts: the period for a monthly figure, its
    UTC day for a daily one."""
    if reading.kind == MONTHLY_KIND:
        return period_start
    return reading.at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def estimate(
    reading: ProviderUsageReading, *, window_start: datetime, before: int, after: int
) -> Unseen:
    """The unseen commands of `reading`, given what the meters booked in its
    window up to its hour (`before`) and after it (`after`)."""
    commands = max(0, reading.used - before)
    hours = max(_MIN_WINDOW_HOURS, _hours(reading.at - window_start))
    return Unseen(
        reading=reading,
        window_start=window_start,
        metered_in_window=before,
        metered_since=after,
        commands=commands,
        per_hour=commands / hours,
    )
