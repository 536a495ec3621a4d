"""The Prometheus series of GET /api/v1/cron/metrics, every figure from the database.

A scrape builds a fresh CollectorRegistry holding one custom collector: no
process-global counter, so every gunicorn worker answers the same figures.
Counters are totals over history:

* `kaireon_drain_runs_total`, `kaireon_jobs_{processed,failed}_total` and
  `kaireon_drain_duration_seconds` count finished drain runs. The retention
  prune deletes old runs, so the totals of runs started before a watermark
  are carried in the MetricsCarry row (folded in once an hour by whichever
  scrape comes first, with a conditional UPDATE so two processes never fold
  the same runs twice) and later runs are counted from their rows: the query
  reads only the runs started since the watermark (drainrun_started_idx),
  about the last one to two hours. A run still running is counted once it
  ends; the watermark never passes the oldest running run.
* `kaireon_redis_commands_total` sums CommandUsage, which is never pruned
  but grows by an hourly row per source: hours older than a week are carried
  in a second MetricsCarry row (pk=2) the same way, so a scrape sums a week
  of rows, not all of history.

The duration histogram has fixed buckets (DURATION_BUCKETS_S) spanning what a
drain can take (the 600 s budget cap plus the job grace): Prometheus adds
bucket counts across scrapes and instances only when the bounds stay put, so
bounds derived from the stored durations would break `histogram_quantile`
the day they moved. Thanks to the carry the histogram is exact over all runs.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ops.models import CommandUsage, DrainRun, MetricsCarry, QuotaIncident
from ops.scheduling import alarm
from ops.scheduling.alarm import AlarmState
from ops.usage import quota
from ops.workers.consumers import live_workers

# What generate_latest writes (the text exposition format).
CONTENT_TYPE = CONTENT_TYPE_LATEST
DURATION_BUCKETS_S = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
)  # fmt: skip
# Runs started at least this long ago are folded into the carry.
FOLD_AFTER = timedelta(hours=1)
# Usage hours this old are folded into their own carry row. A meter books
# commands into the hour they were sent, possibly later (a flush retried
# after a database outage): a week leaves room for that; anything booked
# into a folded hour afterwards is not counted (a counter may lag, never
# go down).
USAGE_FOLD_AFTER = timedelta(days=7)
USAGE_CARRY = 2


def _empty() -> dict[str, Any]:
    return {
        "runs": {},  # "status|trigger" -> runs
        "processed": {},  # queue -> jobs
        "failed": {},
        "buckets": [0] * (len(DURATION_BUCKETS_S) + 1),  # per bucket, last: +Inf
        "duration_sum": 0.0,
        "duration_count": 0,
    }


def _tally(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals of finished runs (running ones are left for later)."""
    totals = _empty()
    by_run: Counter[str] = Counter()
    processed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for run in runs:
        if run["status"] == DrainRun.Status.RUNNING or run["finished"] is None:
            continue
        by_run[f"{run['status']}|{run['trigger']}"] += 1
        for queue, result in (run["queue_results"] or {}).items():
            processed[queue] += int(result.get("processed", 0))
            failed[queue] += int(result.get("failed", 0))
        if run["status"] == DrainRun.Status.SKIPPED:
            continue  # it drained nothing: its duration says nothing
        seconds = max(0.0, (run["finished"] - run["started"]).total_seconds())
        totals["buckets"][bisect.bisect_left(DURATION_BUCKETS_S, seconds)] += 1
        totals["duration_sum"] += seconds
        totals["duration_count"] += 1
    totals["runs"], totals["processed"] = dict(by_run), dict(processed)
    totals["failed"] = dict(failed)
    return totals


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged = _empty()
    for key in ("runs", "processed", "failed"):
        merged[key] = dict(Counter(a.get(key, {})) + Counter(b.get(key, {})))
        # Counter addition drops zeros; a series seen once stays (at 0).
        for name in {*a.get(key, {}), *b.get(key, {})}:
            merged[key].setdefault(name, 0)
    width = len(merged["buckets"])
    merged["buckets"] = [
        x + y
        for x, y in zip(
            (a.get("buckets") or [0] * width),
            (b.get("buckets") or [0] * width),
            strict=True,
        )
    ]
    merged["duration_sum"] = a.get("duration_sum", 0.0) + b.get("duration_sum", 0.0)
    merged["duration_count"] = a.get("duration_count", 0) + b.get("duration_count", 0)
    return merged


_FIELDS = ("status", "trigger", "queue_results", "started", "finished")


def _runs(since: datetime | None, before: datetime | None = None) -> Iterator[dict]:
    runs = DrainRun.objects.order_by()
    if since is not None:
        runs = runs.filter(started__gte=since)  # drainrun_started_idx
    if before is not None:
        runs = runs.filter(started__lt=before)
    return runs.values(*_FIELDS).iterator(chunk_size=2000)


_QUEUE_SUMS_SQL = {
    # Per queue, the jobs the finished runs in [since, before) processed and
    # failed (DrainRun.queue_results: {"queue": {"processed": n, "failed": n}}).
    "postgresql": """
        SELECT q.key,
               SUM(CASE WHEN jsonb_typeof(q.value -> 'processed') = 'number'
                        THEN (q.value ->> 'processed')::numeric ELSE 0 END),
               SUM(CASE WHEN jsonb_typeof(q.value -> 'failed') = 'number'
                        THEN (q.value ->> 'failed')::numeric ELSE 0 END)
        FROM ops_drainrun AS r
        CROSS JOIN LATERAL jsonb_each(
            CASE WHEN jsonb_typeof(r.queue_results) = 'object'
                 THEN r.queue_results ELSE '{}'::jsonb END) AS q
        WHERE r.started >= %s AND r.started < %s
          AND r.status <> 'running' AND r.finished IS NOT NULL
          AND jsonb_typeof(q.value) = 'object'
        GROUP BY q.key
    """,
    "sqlite": """
        SELECT q.key,
               SUM(CASE WHEN json_type(q.value, '$.processed') IN ('integer', 'real')
                        THEN json_extract(q.value, '$.processed') ELSE 0 END),
               SUM(CASE WHEN json_type(q.value, '$.failed') IN ('integer', 'real')
                        THEN json_extract(q.value, '$.failed') ELSE 0 END)
        FROM ops_drainrun AS r, json_each(r.queue_results) AS q
        WHERE r.started >= %s AND r.started < %s
          AND r.status <> 'running' AND r.finished IS NOT NULL
          AND json_valid(r.queue_results) AND q.type = 'object'
        GROUP BY q.key
    """,
}


def _aggregate(since: datetime | None, before: datetime) -> dict[str, Any]:
    """What `_tally` makes of the runs started in [since, before), computed by
    the database: a fold reads every run since the last one (the first fold,
    a year of them: 20 s through Python at 1,000,000 runs, docs/benchmarks.md),
    so it must not carry each row into Python. Three aggregates; the same
    totals as `_tally` (tests/monitoring/test_metrics_fold.py)."""
    lower = since or datetime(1970, 1, 1, tzinfo=before.tzinfo)
    finished = (
        DrainRun.objects.order_by()
        .filter(started__gte=lower, started__lt=before, finished__isnull=False)
        .exclude(status=DrainRun.Status.RUNNING)
    )
    totals = _empty()
    for row in finished.values("status", "trigger").annotate(n=Count("pk")):
        totals["runs"][f"{row['status']}|{row['trigger']}"] = row["n"]
    # Cumulative bucket counts (a duration falls in the first bucket whose
    # bound it does not exceed, as bisect_left does), their sum and count.
    timed = finished.exclude(status=DrainRun.Status.SKIPPED).annotate(
        took=ExpressionWrapper(F("finished") - F("started"), DurationField())
    )
    bounds = {
        f"le{i}": Count("pk", filter=Q(took__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(DURATION_BUCKETS_S)
    }
    agg = timed.aggregate(n=Count("pk"), total=Sum("took"), **bounds)
    below = 0
    for i in range(len(DURATION_BUCKETS_S)):
        totals["buckets"][i] = agg[f"le{i}"] - below
        below = agg[f"le{i}"]
    totals["buckets"][-1] = agg["n"] - below
    totals["duration_count"] = agg["n"]
    took = agg["total"]
    totals["duration_sum"] = max(0.0, took.total_seconds()) if took else 0.0
    connection = connections[finished.db]
    with connection.cursor() as cursor:
        cursor.execute(_QUEUE_SUMS_SQL[connection.vendor], [lower, before])
        for queue, processed, failed in cursor.fetchall():
            totals["processed"][queue] = int(processed or 0)
            totals["failed"][queue] = int(failed or 0)
    return totals


def fold(now: datetime) -> MetricsCarry:
    """Fold the runs started before the new watermark into the carry, once."""
    carry, _ = MetricsCarry.objects.get_or_create(pk=1)
    target = now.replace(minute=0, second=0, microsecond=0) - FOLD_AFTER
    # drainrun_status_idx: the oldest run still running holds the watermark.
    oldest_running = (
        DrainRun.objects.filter(status=DrainRun.Status.RUNNING)
        .order_by("started")
        .values_list("started", flat=True)
        .first()
    )
    if oldest_running is not None:
        target = min(target, oldest_running)
    if carry.watermark is not None and target <= carry.watermark:
        return carry
    totals = _merge(carry.totals or _empty(), _aggregate(carry.watermark, target))
    won = MetricsCarry.objects.filter(pk=1, watermark=carry.watermark).update(
        watermark=target, totals=totals
    )
    if won != 1:  # another process folded first: take its result
        return MetricsCarry.objects.get(pk=1)
    carry.watermark, carry.totals = target, totals
    return carry


def usage_totals(now: datetime) -> dict[str, list[int]]:
    """Billed and unbilled commands by source over all of CommandUsage: the
    hours older than USAGE_FOLD_AFTER are carried in MetricsCarry row
    USAGE_CARRY (folded once an hour, like the runs), the later ones summed
    from their rows (usage_hour_idx: a week of rows, not all of history)."""
    carry, _ = MetricsCarry.objects.get_or_create(pk=USAGE_CARRY)
    target = now.replace(minute=0, second=0, microsecond=0) - USAGE_FOLD_AFTER
    if carry.watermark is None or target > carry.watermark:
        totals = _add_usage(carry.totals, _usage_sums(carry.watermark, target))
        won = MetricsCarry.objects.filter(
            pk=USAGE_CARRY, watermark=carry.watermark
        ).update(watermark=target, totals=totals)
        if won == 1:
            carry.watermark, carry.totals = target, totals
        else:  # another process folded first: take its result
            carry = MetricsCarry.objects.get(pk=USAGE_CARRY)
    return _add_usage(carry.totals, _usage_sums(carry.watermark, None))


def _add_usage(
    a: dict[str, list[int]], b: dict[str, list[int]]
) -> dict[str, list[int]]:
    """[billed, unbilled] by source, summed over both."""
    return {
        name: [
            x + y for x, y in zip(a.get(name, [0, 0]), b.get(name, [0, 0]), strict=True)
        ]
        for name in {*a, *b}
    }


def _usage_sums(
    since: datetime | None, before: datetime | None
) -> dict[str, list[int]]:
    rows = CommandUsage.objects.order_by()
    if since is not None:
        rows = rows.filter(hour__gte=since)
    if before is not None:
        rows = rows.filter(hour__lt=before)
    return {
        row["source"]: [int(row["billed"] or 0), int(row["unbilled"] or 0)]
        for row in rows.values("source").annotate(
            billed=Sum("commands"), unbilled=Sum("unbilled")
        )
    }


def drain_totals(now: datetime) -> dict[str, Any]:
    carry = fold(now)
    return _merge(carry.totals or _empty(), _tally(_runs(carry.watermark)))


def _split(key: str) -> list[str]:
    status, _, trigger = key.partition("|")
    return [status, trigger]


class ConsoleCollector(Collector):
    """Every series, gathered when the registry is rendered."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        now = self.now or timezone.now()
        yield from self._drains(now)
        yield from self._redis(now)
        yield from self._quota(now)
        yield from self._alarm(now)
        incidents = GaugeMetricFamily(
            "kaireon_quota_incidents_open",
            "Open quota incidents (Redis answered quota exhausted): 0 or 1.",
        )
        incidents.add_metric([], QuotaIncident.objects.filter(closed_at=None).count())
        yield incidents
        workers = GaugeMetricFamily(
            "kaireon_always_on_workers_alive",
            "Always-on worker processes whose heartbeat is recent.",
        )
        workers.add_metric([], live_workers().count())
        yield workers

    def _drains(self, now: datetime) -> Iterator[Metric]:
        totals = drain_totals(now)
        runs = CounterMetricFamily(
            "kaireon_drain_runs",
            "Finished drain runs by status and trigger.",
            labels=["status", "trigger"],
        )
        for key, value in sorted(totals["runs"].items()):
            runs.add_metric(_split(key), value)
        yield runs
        running = GaugeMetricFamily(
            "kaireon_drain_runs_running", "Drain runs running now."
        )
        running.add_metric(
            [], DrainRun.objects.filter(status=DrainRun.Status.RUNNING).count()
        )
        yield running
        for name, what in (("processed", "ran"), ("failed", "ran that failed")):
            family = CounterMetricFamily(
                f"kaireon_jobs_{name}",
                f"Jobs drains {what}, by queue.",
                labels=["queue"],
            )
            for queue, value in sorted(totals[name].items()):
                family.add_metric([queue], value)
            yield family
        cumulative, buckets = 0, []
        bounds = [*(repr(b) for b in DURATION_BUCKETS_S), "+Inf"]
        for bound, count in zip(bounds, totals["buckets"], strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        duration = HistogramMetricFamily(
            "kaireon_drain_duration_seconds",
            "Duration of finished drain runs (skipped runs excluded).",
        )
        duration.add_metric([], buckets, sum_value=totals["duration_sum"])
        yield duration

    def _redis(self, now: datetime) -> Iterator[Metric]:
        billed = CounterMetricFamily(
            "kaireon_redis_commands",
            "Billable Redis commands this project's processes sent, by source.",
            labels=["source"],
        )
        unbilled = CounterMetricFamily(
            "kaireon_redis_unbilled_commands",
            "Unbilled Redis commands (AUTH, INFO, PING, ...) by source.",
            labels=["source"],
        )
        for source, (billed_total, unbilled_total) in sorted(usage_totals(now).items()):
            billed.add_metric([source], billed_total)
            unbilled.add_metric([source], unbilled_total)
        yield billed
        yield unbilled

    def _quota(self, now: datetime) -> Iterator[Metric]:
        head = quota.summary(now)
        for name, help_text, value in (
            ("budget", "Billable commands the billing period may spend.", head.budget),
            ("used", "Billable commands this billing period has used.", head.used),
            (
                "projected",
                "Billable commands the period is projected to use by its end.",
                head.projected_total,
            ),
        ):
            family = GaugeMetricFamily(f"kaireon_quota_{name}_commands", help_text)
            family.add_metric([], value)
            yield family
        end = GaugeMetricFamily(
            "kaireon_quota_period_end_timestamp_seconds",
            "When the current billing period ends (Unix time).",
        )
        end.add_metric([], head.period.end.timestamp())
        yield end

    def _alarm(self, now: datetime) -> Iterator[Metric]:
        report = alarm.evaluate(now=now)
        state = GaugeMetricFamily(
            "kaireon_alarm_state",
            "The missed-tick alarm: 1 for its current state, 0 for the others.",
            labels=["state"],
        )
        for value in AlarmState.values:
            state.add_metric([value], 1 if report.state == value else 0)
        yield state
        interval = GaugeMetricFamily(
            "kaireon_drain_expected_interval_seconds",
            "How often a drain should start (absent when the alarm is off).",
        )
        if report.config.interval_minutes:
            interval.add_metric([], report.config.interval_minutes * 60)
        yield interval
        age = GaugeMetricFamily(
            "kaireon_last_drain_age_seconds",
            "Seconds since the last drain started, skipped runs excluded "
            "(absent before the first drain).",
        )
        started = GaugeMetricFamily(
            "kaireon_last_drain_timestamp_seconds",
            "When the last drain started (Unix time; skipped runs excluded).",
        )
        if report.last_drain_at is not None:
            age.add_metric(
                [], max(0.0, (report.now - report.last_drain_at).total_seconds())
            )
            started.add_metric([], report.last_drain_at.timestamp())
        yield age
        yield started


def render(now: datetime | None = None) -> bytes:
    """The exposition text of every series (0 Redis commands)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsoleCollector(now))
    return generate_latest(registry)
