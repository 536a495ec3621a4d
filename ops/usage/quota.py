"""How much of the Redis command budget this billing period has used, and where
it is heading.

Everything here except `read_server_stats` is computed from CommandUsage rows
(written by ops/usage/metering.py), DrainRun rows and the provider's figures
(ProviderUsageReading, ops/usage/provider.py): reading these figures costs no
Redis command, which matters on a Redis billed per command. Every function
takes `now` so that tests can pin the clock.

Definitions (kept in one place so the page, the banner and `manage.py quota`
agree):

* Billing period: from 00:00 UTC on QUOTA_PERIOD_START_DAY to the same day of
  the next month (the day is at most 28, so every month has it).
* Used: billable commands (`CommandUsage.commands`) in hourly rows whose hour
  falls inside the period.
* Rates (commands/hour): the rows of the last 24 h and of the last 7 days,
  divided by the time those rows cover. A window starts on the hour, 24 h (or
  7 days) before the current hour started, and ends now: the current hour's row
  is partial and so is its time. A window never reaches back before the first
  row ever recorded, so a deployment one hour old is not diluted by 23 empty
  hours it did not exist for.
* Projection: used + rate x hours left in the period, with the 7-day rate once
  at least 24 h of data exist (steadier), else the 24-h rate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Case, Max, Min, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce, TruncDate, TruncDay
from django.utils import timezone

from ops.models import CommandUsage, ProviderUsageReading, Source
from ops.usage import incidents, provider
from ops.usage.period import Period, billing_period
from ops.usage.quota_errors import is_quota_exhausted
from ops.usage.redis_client import (
    UNBILLED_COMMANDS,
    CommandMeter,
    close_client,
    make_client,
)

HOUR = timedelta(hours=1)
RATE_BASIS_7D = "7d"
RATE_BASIS_24H = "24h"


def current_time() -> datetime:
    return timezone.now()


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


# --- Summary: the banner's figures, in one database query -----------------------


@dataclass(frozen=True)
class Rates:
    last_24h: float  # commands/hour
    last_7d: float
    basis: str  # RATE_BASIS_7D or RATE_BASIS_24H: which one projects
    data_hours: float  # age of the oldest usage row (0: no data at all)

    @property
    def current(self) -> float:
        return self.last_7d if self.basis == RATE_BASIS_7D else self.last_24h

    @property
    def basis_label(self) -> str:
        if self.data_hours <= 0:
            return "no usage recorded yet"
        if self.basis == RATE_BASIS_7D:
            return "7-day rate"
        return f"24-hour rate ({self.data_hours:.1f} h of data)"


@dataclass(frozen=True)
class Summary:
    now: datetime
    period: Period
    budget: int
    used: int
    rates: Rates
    projected_total: int
    # When the budget runs out at the current rate, if that is inside this
    # period and has not happened yet.
    runs_out_at: datetime | None
    thresholds: list[int]
    # Thresholds (percent) that `used` has reached, and that the projection has.
    crossed: list[int]
    projected_crossed: list[int]

    @property
    def used_percent(self) -> float:
        return _percent(self.used, self.budget)

    @property
    def projected_percent(self) -> float:
        return _percent(self.projected_total, self.budget)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.budget

    @property
    def projected_over_budget(self) -> bool:
        return self.projected_total >= self.budget

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.used)

    @property
    def level(self) -> str:
        """warning once used reaches a threshold; notice when only the
        projection reaches the budget; else ok."""
        if self.crossed:
            return "warning"
        if self.projected_over_budget:
            return "notice"
        return "ok"


def summary(now: datetime | None = None) -> Summary:
    """Used, rates and projection: one aggregate query over CommandUsage."""
    now = now or current_time()
    period = billing_period(now)
    hour = _floor_hour(now)
    since_24h = hour - timedelta(hours=24)
    since_7d = hour - timedelta(days=7)
    # The oldest row ever: a scalar subquery, so the sums below only scan the
    # recent rows (the hour index) and it is still one round trip.
    oldest = CommandUsage.objects.order_by("hour").values("hour")[:1]
    totals = CommandUsage.objects.filter(
        hour__gte=min(period.start, since_7d), hour__lte=now
    ).aggregate(
        used=Sum("commands", filter=Q(hour__gte=period.start, hour__lt=period.end)),
        last_24h=Sum("commands", filter=Q(hour__gte=since_24h)),
        last_7d=Sum("commands", filter=Q(hour__gte=since_7d)),
        first=Min(Subquery(oldest)),
    )
    rates = _rates(
        now,
        first=totals["first"],
        last_24h=totals["last_24h"] or 0,
        last_7d=totals["last_7d"] or 0,
        since_24h=since_24h,
        since_7d=since_7d,
    )
    return _summarise(now, period, totals["used"] or 0, rates)


def _rates(
    now: datetime,
    *,
    first: datetime | None,
    last_24h: int,
    last_7d: int,
    since_24h: datetime,
    since_7d: datetime,
) -> Rates:
    if first is None:
        return Rates(0.0, 0.0, RATE_BASIS_24H, 0.0)

    def rate(commands: int, since: datetime) -> float:
        covered = _hours(now - max(since, first))
        return commands / covered if covered > 0 else 0.0

    data_hours = max(0.0, _hours(now - first))
    return Rates(
        last_24h=rate(last_24h, since_24h),
        last_7d=rate(last_7d, since_7d),
        basis=RATE_BASIS_7D if data_hours >= 24 else RATE_BASIS_24H,
        data_hours=data_hours,
    )


def _summarise(now: datetime, period: Period, used: int, rates: Rates) -> Summary:
    budget = settings.QUOTA_MONTHLY_BUDGET
    thresholds = list(settings.QUOTA_WARN_THRESHOLDS)
    rate = rates.current
    projected = used + round(rate * period.hours_left(now))
    runs_out_at = None
    if used < budget and rate > 0:
        at = now + timedelta(hours=(budget - used) / rate)
        runs_out_at = at if at < period.end else None
    return Summary(
        now=now,
        period=period,
        budget=budget,
        used=used,
        rates=rates,
        projected_total=projected,
        runs_out_at=runs_out_at,
        thresholds=thresholds,
        crossed=[t for t in thresholds if _percent(used, budget) >= t],
        projected_crossed=[t for t in thresholds if _percent(projected, budget) >= t],
    )


# --- The full report: the quota page and `manage.py quota` ----------------------


@dataclass(frozen=True)
class SourceUsage:
    source: str
    label: str
    commands: int
    unbilled: int
    percent: float  # of this period's billable commands


@dataclass(frozen=True)
class DayUsage:
    day: date
    commands: int
    cumulative: int  # billable commands from the period start to this day's end


@dataclass(frozen=True)
class Report:
    summary: Summary
    by_source: list[SourceUsage]
    # Every day from the period start to today (days without usage as 0).
    by_day: list[DayUsage]
    # The date the budget runs out at the current rate, or was crossed if it is
    # already spent; None when it lasts the period.
    exhausted_on: date | None
    per_job_commands: float
    per_job_source: str
    # More jobs this period could take before the projection reaches the budget.
    headroom_jobs: int
    unbilled: int = 0
    truth: Truth | None = None


def report(
    now: datetime | None = None,
    *,
    costs: Any | None = None,
    stats: ServerStats | None = None,
) -> Report:
    """Everything the quota page shows but the advisor. `costs` (an
    ops.usage.advisor.Costs) saves a query when the caller already measured
    them; `stats`, the server's own count when the caller read it."""
    # Imported here: the advisor reads no quota figures, but quota needs the
    # advisor's per-job cost for the headroom.
    from ops.usage import advisor

    now = now or current_time()
    head = summary(now)
    period = head.period
    # Summed by the database (usage_hour_idx range): a period's hourly rows
    # per source are thousands, and reading each into Python cost more than
    # every other query of the quota page (docs/benchmarks.md).
    rows = CommandUsage.objects.filter(
        hour__gte=period.start, hour__lt=period.end, hour__lte=now
    ).order_by()
    per_source: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_day: defaultdict[date, int] = defaultdict(int)
    for row in rows.values("source").annotate(
        billed=Sum("commands"), unbilled_sum=Sum("unbilled")
    ):
        per_source[row["source"]] = [row["billed"] or 0, row["unbilled_sum"] or 0]
    for row in (
        rows.annotate(day=TruncDate("hour", tzinfo=UTC))
        .values("day")
        .annotate(billed=Sum("commands"))
    ):
        per_day[row["day"]] = row["billed"] or 0

    labels = dict(Source.choices)
    by_source = sorted(
        (
            SourceUsage(
                source=source,
                label=str(labels.get(source, source)),
                commands=billed,
                unbilled=unbilled,
                percent=_percent(billed, head.used),
            )
            for source, (billed, unbilled) in per_source.items()
        ),
        key=lambda s: (-s.commands, s.source),
    )
    by_day = []
    cumulative = 0
    today = now.astimezone(UTC).date()
    for day in period.days():
        if day > today:
            break
        cumulative += per_day.get(day, 0)
        by_day.append(
            DayUsage(day=day, commands=per_day.get(day, 0), cumulative=cumulative)
        )

    if head.exhausted:
        exhausted_on = next(
            (d.day for d in by_day if d.cumulative >= head.budget), today
        )
    else:
        exhausted_on = head.runs_out_at.date() if head.runs_out_at else None

    per_job = (costs or advisor.measured_costs(now)).per_job
    unseen = provider.unseen(now, period.start, period.end)
    application = sum(s.commands for s in by_source if s.source in APPLICATION_SOURCES)
    truth_ = truth(head, application, unseen, stats)
    headroom = max(0, head.budget - truth_.projected_total)
    return Report(
        summary=head,
        by_source=by_source,
        by_day=by_day,
        exhausted_on=exhausted_on,
        per_job_commands=per_job.value,
        per_job_source=per_job.note,
        headroom_jobs=math.floor(headroom / per_job.value) if per_job.value else 0,
        unbilled=sum(u for _, u in per_source.values()),
        truth=truth_,
    )


# --- The larger truth: the console's meters and what others spent --------------

APPLICATION_SOURCES = provider.APPLICATION_SOURCES

TRUTH_PROVIDER = "provider"
TRUTH_SERVER = "server"
TRUTH_METERS = "meters"


@dataclass(frozen=True)
class Truth:
    """Used this period by the console, by the application through metered
    clients, and by everyone else (what the provider or the server counted
    beyond our meters), and the month projected on the larger of the counts.

    * With a monthly provider figure: used = max(metered, the figure + metered
      since it); others' rate = unseen / hours from the period start to it.
    * With only a daily figure: used = metered + that day's unseen; its rate
      likewise over that day.
    * With neither, the server's INFO commandstats when this page read it:
      others' rate = (server's count - ours) / hours since the server started
      (their total is not this period's, so it adds to the rate only).
    * Else the meters alone: others are not seen at all.
    """

    metered: int  # every meter, this period (Summary.used)
    console: int  # the console's own sources
    application: int  # APPLICATION_SOURCES
    unseen: provider.Unseen
    others: int  # counted by the provider or the server, seen by no meter
    others_per_hour: float
    basis: str  # TRUTH_PROVIDER, TRUTH_SERVER or TRUTH_METERS
    basis_note: str
    used: int
    per_hour: float  # the metered rate + others' rate
    projected_total: int
    budget: int

    @property
    def used_percent(self) -> float:
        return _percent(self.used, self.budget)

    @property
    def projected_percent(self) -> float:
        return _percent(self.projected_total, self.budget)

    @property
    def projected_over_budget(self) -> bool:
        return self.projected_total >= self.budget

    @property
    def larger_than_meters(self) -> bool:
        return self.used > self.metered or self.others_per_hour > 0

    def as_json(self) -> dict[str, Any]:
        reading = self.unseen.reading
        return {
            "basis": self.basis,
            "basisNote": self.basis_note,
            "usedByConsole": self.console,
            "usedByApplicationMetered": self.application,
            "usedByOthers": self.others,
            "othersPerHour": round(self.others_per_hour, 3),
            "used": self.used,
            "usedPercent": round(self.used_percent, 2),
            "perHour": round(self.per_hour, 3),
            "projectedPeriodTotal": self.projected_total,
            "projectedPercent": round(self.projected_percent, 2),
            "providerReading": None
            if reading is None
            else {
                "at": reading.at.isoformat(),
                "used": reading.used,
                "limit": reading.limit,
                "kind": reading.kind,
                "origin": reading.origin,
            },
        }


def truth(
    head: Summary,
    application: int,
    unseen: provider.Unseen,
    stats: ServerStats | None = None,
) -> Truth:
    """`application`: this period's metered commands of APPLICATION_SOURCES."""
    console = head.used - application
    hours_left = head.period.hours_left(head.now)
    if unseen.known:
        basis, others, others_rate = TRUTH_PROVIDER, unseen.commands, unseen.per_hour
        if unseen.monthly:
            assert unseen.reading is not None
            used = max(head.used, unseen.reading.used + unseen.metered_since)
        else:
            used = head.used + unseen.commands
        note = unseen.basis()
    elif stats is not None and stats.enabled and not stats.error and stats.since:
        basis, others, used = TRUTH_SERVER, stats.others, head.used
        others_rate = stats.others / max(1.0, _hours(head.now - stats.since))
        note = (
            f"the server's INFO commandstats: {stats.all_clients:,} since "
            f"{stats.since:%Y-%m-%d %H:%M} UTC, {stats.project:,} of them metered"
        )
    else:
        basis, others, others_rate, used = TRUTH_METERS, 0, 0.0, head.used
        note = "the meters only: commands sent without a metered client are not seen"
    rate = head.rates.current + others_rate
    projected = max(head.projected_total, used + round(rate * hours_left))
    return Truth(
        metered=head.used,
        console=console,
        application=application,
        unseen=unseen,
        others=others,
        others_per_hour=others_rate,
        basis=basis,
        basis_note=note,
        used=used,
        per_hour=rate,
        projected_total=projected,
        budget=head.budget,
    )


# --- At a glance: the banner on every page, the larger truth in one query --------


@dataclass(frozen=True)
class Glance:
    """What the banner on every page says: the quota page's larger truth
    (Truth: the meters, or the provider's figure when it is larger) with its
    thresholds and run-out date. Named like Summary's fields where they mean
    the same, on the larger count."""

    summary: Summary  # the meters alone
    truth: Truth
    runs_out_at: datetime | None

    @property
    def period(self) -> Period:
        return self.summary.period

    @property
    def budget(self) -> int:
        return self.summary.budget

    @property
    def used(self) -> int:
        return self.truth.used

    @property
    def used_percent(self) -> float:
        return self.truth.used_percent

    @property
    def projected_total(self) -> int:
        return self.truth.projected_total

    @property
    def projected_percent(self) -> float:
        return self.truth.projected_percent

    @property
    def per_hour(self) -> float:
        return self.truth.per_hour

    @property
    def crossed(self) -> list[int]:
        return [t for t in self.summary.thresholds if self.used_percent >= t]

    @property
    def exhausted(self) -> bool:
        return self.used >= self.budget

    @property
    def includes_others(self) -> bool:
        """The figures count commands no meter saw (the provider's figure)."""
        return self.truth.basis == TRUTH_PROVIDER and self.truth.larger_than_meters

    @property
    def basis_label(self) -> str:
        if self.truth.basis == TRUTH_PROVIDER:
            return "metered and provider's rates"
        return self.summary.rates.basis_label

    @property
    def level(self) -> str:
        """As Summary.level, on the larger truth."""
        if self.crossed:
            return "warning"
        if self.truth.projected_over_budget:
            return "notice"
        return "ok"


def glance(now: datetime | None = None) -> Glance:
    """The banner's figures: Summary and Truth as the quota page computes them
    (provider figure included; the server's INFO is a page read, never a
    banner's), in one aggregate query with the period's latest provider
    reading as subqueries: one round trip, no Redis."""
    now = now or current_time()
    period = billing_period(now)
    hour = _floor_hour(now)
    since_24h = hour - timedelta(hours=24)
    since_7d = hour - timedelta(days=7)
    oldest = CommandUsage.objects.order_by("hour").values("hour")[:1]
    # provider.unseen's choice: the latest monthly reading of the period,
    # else the latest daily one.
    readings = ProviderUsageReading.objects.filter(
        at__gte=period.start, at__lte=now
    ).order_by(
        Case(When(kind=provider.MONTHLY_KIND, then=Value(0)), default=Value(1)),
        "-at",
        "-id",
    )

    def reading(name: str) -> Coalesce:
        # A constant of the row: aggregate() takes aggregates only, and Max
        # over no usage row is NULL, so the bare subquery stands behind it.
        field = Subquery(readings.values(name)[:1])
        return Coalesce(Max(field), field)

    reading_at = Subquery(readings.values("at")[:1])
    in_period = Q(hour__gte=period.start, hour__lt=period.end)
    totals = CommandUsage.objects.filter(
        hour__gte=min(period.start, since_7d), hour__lte=now
    ).aggregate(
        used=Sum("commands", filter=in_period),
        application=Sum(
            "commands", filter=in_period & Q(source__in=APPLICATION_SOURCES)
        ),
        last_24h=Sum("commands", filter=Q(hour__gte=since_24h)),
        last_7d=Sum("commands", filter=Q(hour__gte=since_7d)),
        first=Min(Subquery(oldest)),
        # Rows are on the hour: `hour <= at` is provider.unseen's "before the
        # end of the reading's hour".
        upto_reading=Sum("commands", filter=in_period & Q(hour__lte=reading_at)),
        before_reading_day=Sum(
            "commands",
            filter=in_period & Q(hour__lt=TruncDay(reading_at, tzinfo=UTC)),
        ),
        reading_id=reading("id"),
        reading_at=reading("at"),
        reading_used=reading("used"),
        reading_limit=reading("limit"),
        reading_kind=reading("kind"),
        reading_origin=reading("origin"),
    )
    used = totals["used"] or 0
    rates = _rates(
        now,
        first=totals["first"],
        last_24h=totals["last_24h"] or 0,
        last_7d=totals["last_7d"] or 0,
        since_24h=since_24h,
        since_7d=since_7d,
    )
    head = _summarise(now, period, used, rates)
    if totals["reading_id"] is None:
        unseen = provider.Unseen()
    else:
        row = ProviderUsageReading(
            pk=totals["reading_id"],
            at=totals["reading_at"],
            used=totals["reading_used"],
            limit=totals["reading_limit"],
            kind=totals["reading_kind"],
            origin=totals["reading_origin"],
        )
        upto = totals["upto_reading"] or 0
        before = upto
        if row.kind != provider.MONTHLY_KIND:
            before = upto - (totals["before_reading_day"] or 0)
        unseen = provider.estimate(
            row,
            window_start=provider.window_start_of(row, period.start),
            before=before,
            after=used - upto,
        )
    larger = truth(head, totals["application"] or 0, unseen)
    runs_out_at = None
    if larger.used < larger.budget and larger.per_hour > 0:
        at = now + timedelta(hours=(larger.budget - larger.used) / larger.per_hour)
        runs_out_at = at if at < period.end else None
    return Glance(summary=head, truth=larger, runs_out_at=runs_out_at)


def as_json(rep: Report, advice: Any | None = None) -> dict[str, Any]:
    """The JSON of `manage.py quota --json` (camelCase, like the cron API)."""
    head = rep.summary
    data: dict[str, Any] = {
        "now": head.now.isoformat(),
        "periodStart": head.period.start.isoformat(),
        "periodEnd": head.period.end.isoformat(),
        "budget": head.budget,
        "used": head.used,
        "usedPercent": round(head.used_percent, 2),
        "remaining": head.remaining,
        "unbilled": rep.unbilled,
        "bySource": {s.source: s.commands for s in rep.by_source},
        "byDay": [
            {"date": d.day.isoformat(), "commands": d.commands} for d in rep.by_day
        ],
        "rates": {
            "last24hPerHour": round(head.rates.last_24h, 3),
            "last7dPerHour": round(head.rates.last_7d, 3),
            "basis": head.rates.basis,
            "dataHours": round(head.rates.data_hours, 2),
        },
        "projectedPeriodTotal": head.projected_total,
        "projectedPercent": round(head.projected_percent, 2),
        "exhaustedOn": rep.exhausted_on.isoformat() if rep.exhausted_on else None,
        "alreadyExhausted": head.exhausted,
        "thresholds": head.thresholds,
        "thresholdsCrossed": head.crossed,
        "projectedThresholdsCrossed": head.projected_crossed,
        "perJobCommands": round(rep.per_job_commands, 2),
        "perJobSource": rep.per_job_source,
        "headroomJobs": rep.headroom_jobs,
        "truth": rep.truth.as_json() if rep.truth else None,
    }
    if advice is not None:
        data["advisor"] = advice.as_json()
    return data


# --- Optional: the server's own counters (QUOTA_SERVER_STATS=1) ------------------


@dataclass(frozen=True)
class ServerStats:
    """`INFO commandstats` of the Redis server: every client's commands since
    the server started (or since CONFIG RESETSTAT), beside this project's."""

    enabled: bool
    error: str = ""
    since: datetime | None = None
    all_clients: int = 0  # billable commands any client sent (server's count)
    project: int = 0  # what this project recorded over the same hours
    unbilled_spent: int = 0  # the INFO commands this read sent (not billed)
    billed_spent: int = 0

    @property
    def others(self) -> int:
        return max(0, self.all_clients - self.project)


def read_server_stats(
    now: datetime | None = None, *, asked: bool = False
) -> ServerStats:
    """Read `INFO all` (one command, unbilled: the server's uptime and its
    commandstats in one reply). The only function here that talks to Redis;
    called by the quota page when QUOTA_SERVER_STATS is on, or when a user
    pressed its "read the server's count" button (`asked`), never on an idle
    path."""
    if not (settings.QUOTA_SERVER_STATS or asked):
        return ServerStats(enabled=False)
    if incidents.open_incident() is not None:
        # An exhausted provider may refuse even INFO; the incident's probe
        # schedule decides when Redis is contacted, not a page view.
        return ServerStats(enabled=True, error="skipped while a quota incident is open")
    now = now or current_time()
    meter = CommandMeter(Source.CONSOLE)
    client = make_client(meter)
    try:
        # "all" rather than "server" and "commandstats": one command, and
        # servers before Redis 7 take a single section only.
        stats = client.info("all")
        uptime = int(stats.get("uptime_in_seconds", 0))
    except redis.RedisError as exc:
        if is_quota_exhausted(exc):
            # The provider refused even an unbilled command: that is the
            # quota incident, whoever noticed it first.
            incidents.note_quota_error(Source.CONSOLE, exc)
        return ServerStats(
            enabled=True,
            error=f"{type(exc).__name__}: {exc}",
            unbilled_spent=meter.total - meter.billed,
            billed_spent=meter.billed,
        )
    finally:
        close_client(client)
    all_clients = 0
    for key, values in stats.items():
        # "cmdstat_get", "cmdstat_client|setinfo": the command is the part
        # before "|". Rejected calls count too: the provider bills what is sent.
        if not key.startswith("cmdstat_"):
            continue
        name = key.removeprefix("cmdstat_").split("|", 1)[0].upper()
        if name in UNBILLED_COMMANDS or not isinstance(values, dict):
            continue
        all_clients += int(values.get("calls", 0)) + int(
            values.get("rejected_calls", 0)
        )
    since = now - timedelta(seconds=uptime)
    project = (
        CommandUsage.objects.filter(hour__gte=_floor_hour(since), hour__lte=now)
        .aggregate(total=Sum("commands"))
        .get("total")
        or 0
    )
    return ServerStats(
        enabled=True,
        since=since,
        all_clients=all_clients,
        project=project,
        unbilled_spent=meter.total - meter.billed,
        billed_spent=meter.billed,
    )
