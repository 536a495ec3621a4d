"""The retention prune deletes in bounded batches and goes on where it stopped
(ops/cron/retention.py). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ops.cron import retention
from ops.models import (
    AlertState,
    DrainRun,
    JobRecord,
    JobStopRequest,
    ProviderUsageReading,
)

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


@pytest.fixture
def deletes(monkeypatch) -> list[tuple[str, int]]:
    """(table, rows) of every DELETE the prune sends (QuerySet._raw_delete)."""
    from django.db.models import QuerySet

    seen: list[tuple[str, int]] = []
    original = QuerySet._raw_delete

    def spy(self, using):
        rows = original(self, using)
        seen.append((self.model._meta.db_table, rows))
        return rows

    monkeypatch.setattr(QuerySet, "_raw_delete", spy)
    return seen


def test_it_deletes_in_batches_no_larger_than_the_batch_size(history, deletes):
    result = retention.prune_history(batch=5)

    assert result["complete"] is True
    assert result["remaining"] == {"drainRuns": 0}
    assert result["deleted"]["drainRuns"] == history["runs"]
    assert result["deleted"]["jobRecords"] == history["jobs"]
    # 36 jobs of 12 runs, 5 runs (15 jobs) at a time: no DELETE removes more
    # than 5 rows of one table.
    assert deletes and max(rows for _, rows in deletes) <= 5
    assert sum(r for t, r in deletes if t == "ops_drainrun") == history["runs"]
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


def test_it_deletes_without_loading_the_rows(history):
    with CaptureQueriesContext(connection) as ctx:
        result = retention.prune_history()
    assert result["deleted"]["jobRecords"] == history["jobs"]

    # Django's delete() selects the rows (and their cascades) before deleting
    # them; the prune reads a batch's ids only, then deletes them by id. Not
    # by a subquery: PostgreSQL plans `id IN (SELECT …)` as a join and looks
    # up the primary key's real ends, stepping over every entry just deleted.
    sql = [q["sql"] for q in ctx.captured_queries]
    assert not [q for q in sql if '"ops_jobrecord"."exc_message"' in q]
    assert not [q for q in sql if '"ops_drainrun"."queue_results"' in q]
    job_reads = [q for q in sql if q.startswith("SELECT") and "ops_jobrecord" in q]
    assert job_reads
    assert all(
        q.startswith('SELECT "ops_jobrecord"."id" AS "pk" FROM "ops_jobrecord"')
        for q in job_reads
    )
    deletes = [q for q in sql if q.startswith("DELETE FROM")]
    job_deletes = [q for q in deletes if q.startswith('DELETE FROM "ops_jobrecord"')]
    assert job_deletes
    assert not [q for q in deletes if "SELECT" in q]


def test_the_small_histories_age_out_with_the_same_retention(django_user_model):
    old = timezone.now() - timedelta(days=40)
    recent = timezone.now() - timedelta(days=1)
    monthly = [
        ProviderUsageReading.objects.create(
            at=old - timedelta(days=i), used=1000, kind="monthly", origin="manual"
        )
        for i in range(3)
    ]
    daily_new = ProviderUsageReading.objects.create(
        at=recent, used=10, kind="daily", origin="error"
    )
    handled = JobStopRequest.objects.create(
        job_id="a", queue="q", requested_at=old, handled_at=old, outcome="stopped"
    )
    pending = JobStopRequest.objects.create(job_id="b", queue="q", requested_at=old)
    handled_new = JobStopRequest.objects.create(
        job_id="c", queue="q", handled_at=recent, outcome="stopped"
    )
    AlertState.objects.create(key="quota:2020-01-01:80", changed_at=old)
    AlertState.objects.create(key="incident:7:opened", changed_at=old)
    AlertState.objects.create(key="incident:8:opened", changed_at=recent)
    AlertState.objects.create(key="failed_jobs", state="ok", changed_at=old)
    user = django_user_model.objects.create(username="sre")
    LogEntry.objects.create(
        user=user, action_flag=1, object_repr="x", change_message="old"
    )
    LogEntry.objects.filter().update(action_time=old)

    result = retention.prune_history()

    assert result["complete"] is True
    assert result["deleted"]["providerReadings"] == 2
    assert result["deleted"]["stopRequests"] == 1
    assert result["deleted"]["alertStates"] == 2
    # The newest monthly reading stays however old (the quota page's
    # figure), and every daily one is recent.
    assert set(ProviderUsageReading.objects.all()) == {monthly[0], daily_new}
    assert set(JobStopRequest.objects.all()) == {pending, handled_new}
    assert set(AlertState.objects.values_list("key", flat=True)) == {
        "incident:8:opened",
        "failed_jobs",
    }
    assert handled.pk not in JobStopRequest.objects.values_list("pk", flat=True)
    # The audit log is kept whatever its age.
    assert LogEntry.objects.count() == 1
