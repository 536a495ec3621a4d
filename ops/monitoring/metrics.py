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
* `kaireon_redis_commands_total` sums CommandUsage, which is never pruned.

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

from django.db.models import Sum
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
    totals = _merge(carry.totals or _empty(), _tally(_runs(carry.watermark, target)))
    won = MetricsCarry.objects.filter(pk=1, watermark=carry.watermark).update(
        watermark=target, totals=totals
    )
    if won != 1:  # another process folded first: take its result
        return MetricsCarry.objects.get(pk=1)
    carry.watermark, carry.totals = target, totals
    return carry


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
        yield from self._redis()
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

    def _redis(self) -> Iterator[Metric]:
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
        rows = (
            CommandUsage.objects.order_by()
            .values("source")
            .annotate(billed=Sum("commands"), unbilled=Sum("unbilled"))
        )
        for row in sorted(rows, key=lambda r: r["source"]):
            billed.add_metric([row["source"]], row["billed"] or 0)
            unbilled.add_metric([row["source"]], row["unbilled"] or 0)
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
