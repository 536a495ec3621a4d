"""The metrics fold aggregates in the database (ops/monitoring/metrics.py
`_aggregate`) and must count exactly what the row-by-row tally counts: the
carry and the live part of a counter add up across the watermark. Runs on
SQLite and PostgreSQL (each has its own JSON query for the per-queue sums)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from ops.models import DrainRun
from ops.monitoring import metrics

pytestmark = pytest.mark.django_db

# Durations on both sides of bucket bounds, beyond the last, and exactly on one.
SECONDS = [0.01, 0.05, 0.2, 0.7, 3.0, 10.0, 44.9, 299.0, 1200.0, 2.5]


@pytest.fixture
def runs():
    now = timezone.now()
    statuses = ["succeeded", "with_failures", "deadline", "failed", "skipped"]
    for i, seconds in enumerate(SECONDS * 3):
        started = now - timedelta(hours=30, minutes=i)
        row = DrainRun.objects.create(
            trigger=["cron", "schedule", "admin"][i % 3], started=started
        )
        DrainRun.objects.filter(pk=row.pk).update(
            status=statuses[i % len(statuses)],
            finished=started + timedelta(seconds=seconds),
            queue_results={
                "batch-jobs": {"processed": i, "failed": i % 4, "remaining": 0},
                **({"dsar-jobs": {"processed": 2, "failed": 0}} if i % 2 else {}),
            },
        )
    # Not counted until they end: still running, or no finish recorded.
    DrainRun.objects.create(trigger="cron", status="running", started=now)
    DrainRun.objects.create(
        trigger="cron", status="succeeded", started=now - timedelta(hours=2)
    )
    # Outside the window below.
    DrainRun.objects.create(
        trigger="cron",
        status="succeeded",
        started=now - timedelta(days=9),
        finished=now - timedelta(days=9) + timedelta(seconds=1),
        queue_results={"old-jobs": {"processed": 50, "failed": 5}},
    )
    return now


def _rounded(totals: dict) -> dict:
    return {**totals, "duration_sum": round(totals["duration_sum"], 6)}


@pytest.mark.parametrize("days", [None, 3])
def test_the_database_fold_counts_what_the_row_tally_counts(runs, days):
    since = None if days is None else runs - timedelta(days=days)
    before = runs + timedelta(minutes=1)

    by_rows = metrics._tally(metrics._runs(since, before))
    in_db = metrics._aggregate(since, before)

    assert sum(in_db["runs"].values()) == len(SECONDS) * 3 + (days is None)
    assert _rounded(in_db) == _rounded(by_rows)
    assert in_db["duration_count"] < sum(in_db["runs"].values())  # skipped: no time


def test_a_fold_reads_no_run_into_python(runs, django_assert_max_num_queries):
    # Three aggregates whatever the number of runs.
    with django_assert_max_num_queries(3):
        metrics._aggregate(None, runs)


def test_usage_older_than_a_week_is_carried_and_counted_once():
    from ops.models import CommandUsage, MetricsCarry

    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    for days, billed in ((40, 100), (8, 20), (1, 3)):
        CommandUsage.objects.create(
            hour=hour - timedelta(days=days), source="worker", commands=billed
        )
    CommandUsage.objects.create(hour=hour, source="console", commands=5, unbilled=2)
    expected = {"worker": [123, 0], "console": [5, 2]}

    assert metrics.usage_totals(now) == expected
    carry = MetricsCarry.objects.get(pk=metrics.USAGE_CARRY)
    assert carry.watermark == hour - metrics.USAGE_FOLD_AFTER
    assert carry.totals == {"worker": [120, 0]}  # the 40- and 8-day-old hours
    # Later scrapes, an hour on: nothing counted twice, new rows counted.
    assert metrics.usage_totals(now) == expected
    CommandUsage.objects.create(hour=hour, source="worker", commands=1)
    later = now + timedelta(hours=1)
    assert metrics.usage_totals(later) == {"worker": [124, 0], "console": [5, 2]}
