"""The retention prune deletes in bounded batches and goes on where it stopped
(ops/cron/retention.py). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ops.cron import retention
from ops.models import DrainRun, JobRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def env(settings):
    settings.HISTORY_RETENTION_DAYS = 30


@pytest.fixture
def history() -> dict[str, int]:
    """12 old runs with 3 jobs each, 4 old jobs without a run, 2 recent runs
    with a job each, 1 old run still running (kept)."""
    old = timezone.now() - timedelta(days=40)
    runs = DrainRun.objects.bulk_create(
        DrainRun(trigger="cron", status="succeeded", started=old + timedelta(minutes=i))
        for i in range(12)
    )
    recent = DrainRun.objects.bulk_create(
        DrainRun(trigger="cron", status="succeeded") for _ in range(2)
    )
    DrainRun.objects.create(trigger="cron", status="running", started=old)
    jobs = [
        JobRecord(job_id=f"job-{run.pk}-{i}", queue="q", status="finished", run=run)
        for run in runs
        for i in range(3)
    ]
    jobs += [
        JobRecord(job_id=f"orphan-{i}", queue="q", status="finished", created=old)
        for i in range(4)
    ]
    jobs += [
        JobRecord(job_id=f"new-{r.pk}", queue="q", status="finished", run=r)
        for r in recent
    ]
    JobRecord.objects.bulk_create(jobs)
    return {"runs": 12, "jobs": 12 * 3 + 4}


def _delete_sizes(queries: list[dict[str, str]]) -> list[int]:
    """How many ids each DELETE named (its IN list)."""
    return [
        q["sql"].count(",") + 1
        for q in queries
        if q["sql"].lstrip().upper().startswith("DELETE") and " IN (" in q["sql"]
    ]


def test_it_deletes_in_batches_no_larger_than_the_batch_size(history):
    with CaptureQueriesContext(connection) as ctx:
        result = retention.prune_history(batch=5)

    assert result["complete"] is True
    assert result["remaining"] == {"drainRuns": 0}
    assert result["deleted"]["drainRuns"] == history["runs"]
    assert result["deleted"]["jobRecords"] == history["jobs"]
    # 36 jobs of 12 runs, 5 runs (15 jobs) at a time: no DELETE names more
    # than 5 rows of one table.
    sizes = _delete_sizes(ctx.captured_queries)
    assert sizes and max(sizes) <= 5
    assert result["batches"] >= 12 // 5 + 36 // 5
    assert DrainRun.objects.count() == 3  # 2 recent + the running one
    assert JobRecord.objects.count() == 2


def test_a_call_stopped_by_its_budget_says_what_is_left_and_the_next_goes_on(
    history, monkeypatch
):
    # A clock that moves one second each time the prune looks at it: a budget
    # of 4 s lets a call start only a few batches, whatever the machine.
    clock = itertools.count(start=1000.0, step=1.0)
    monkeypatch.setattr(retention.time, "monotonic", lambda: next(clock))

    first = retention.prune_history(batch=2, budget_s=4)

    assert first["complete"] is False
    left = first["remaining"]["drainRuns"]
    assert 0 < left < history["runs"]
    assert left == history["runs"] - first["deleted"]["drainRuns"]
    # No run was deleted before its jobs, none half-pruned: each remaining
    # old run still has its three jobs.
    for run in DrainRun.objects.exclude(status="running").filter(
        started__lt=timezone.now() - timedelta(days=30)
    ):
        assert run.jobs.count() in (0, 3)

    deleted_runs = first["deleted"]["drainRuns"]
    deleted_jobs = first["deleted"]["jobRecords"]
    calls = 1
    result = first
    while not result["complete"]:
        result = retention.prune_history(batch=2, budget_s=4)
        deleted_runs += result["deleted"]["drainRuns"]
        deleted_jobs += result["deleted"]["jobRecords"]
        calls += 1
        assert calls < 50, "the prune makes no progress"

    assert deleted_runs == history["runs"]
    assert deleted_jobs == history["jobs"]
    assert result["remaining"] == {"drainRuns": 0}
    assert JobRecord.objects.count() == 2


def test_nothing_to_prune_is_complete_at_once():
    result = retention.prune_history()
    assert result["complete"] is True
    assert result["deleted"]["drainRuns"] == 0
    assert result["batches"] == 0
