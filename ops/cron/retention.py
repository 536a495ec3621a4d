"""Deleting history older than HISTORY_RETENTION_DAYS, in bounded batches.

A year of history is a million drain runs and millions of job records: one
DELETE of all of it holds one transaction (and its locks, and the WAL) for
seconds while drains go on beside it. So the prune deletes in batches of at
most `BATCH` rows, each in its own short transaction, oldest runs first, and
stops starting batches once its time budget is spent. A call that stops early
says so (`complete: false`) and how many old runs are left; the next call (the
next cron tick) goes on where it stopped, because what was deleted is gone.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ops.cron import ratelimit
from ops.models import DrainRun, JobRecord, TokenVersion

# Rows a batch deletes, in one short transaction (runs, or job records).
BATCH = 5_000
# How long one call keeps starting batches. A batch that started finishes, so
# a call lasts at most this plus one batch.
BUDGET_S = 5.0


def prune_history(
    *,
    budget_s: float | None = None,
    batch: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Prune what is older than the retention, batch by batch, within the
    budget: the job records of old runs, then those runs; job records without
    a run; expired tokens and stale rate-limit buckets."""
    batch = batch or BATCH
    started = time.monotonic()
    deadline = started + (BUDGET_S if budget_s is None else budget_s)
    cutoff = (now or timezone.now()) - timedelta(days=settings.HISTORY_RETENTION_DAYS)
    old_runs = DrainRun.objects.filter(started__lt=cutoff).exclude(
        status=DrainRun.Status.RUNNING
    )
    runs = job_records = batches = 0
    complete = False
    while time.monotonic() < deadline:
        # The oldest runs first (the started index): a call that stops early
        # leaves the newest of the old history, never holes in it.
        ids = list(
            old_runs.order_by("started", "pk").values_list("pk", flat=True)[:batch]
        )
        if not ids:
            break
        deleted, transactions = _delete_jobs_of(ids, batch=batch, deadline=deadline)
        job_records += deleted
        batches += transactions
        if (
            time.monotonic() >= deadline
            and JobRecord.objects.filter(run_id__in=ids).exists()
        ):
            break  # this batch's runs still have jobs: the next call goes on
        with transaction.atomic():
            # Their jobs are gone: the cascade finds none (one indexed look).
            _, per_model = DrainRun.objects.filter(pk__in=ids).delete()
        runs += per_model.get(DrainRun._meta.label, 0)
        job_records += per_model.get(JobRecord._meta.label, 0)
        batches += 1
    else:
        ids = None  # the budget ran out before the runs did
    if ids == []:
        # Records written without a run age out on their own (the (run, id)
        # index: run IS NULL is its own range).
        orphans = JobRecord.objects.filter(run=None, created__lt=cutoff)
        while True:
            if time.monotonic() >= deadline:
                break
            chunk = list(orphans.order_by("pk").values_list("pk", flat=True)[:batch])
            if chunk:
                with transaction.atomic():
                    deleted, _ = JobRecord.objects.filter(pk__in=chunk).delete()
                job_records += deleted
                batches += 1
            if len(chunk) < batch:
                complete = True
                break
    # Runs name their credential as text, so old token rows can go (a few).
    dead_tokens, _ = TokenVersion.objects.filter(
        Q(revoked_at__lt=cutoff) | Q(expires_at__lt=cutoff)
    ).delete()
    return {
        "olderThan": cutoff.isoformat(),
        "deleted": {
            "drainRuns": runs,
            "jobRecords": job_records,
            "tokenVersions": dead_tokens,
            "rateBuckets": ratelimit.prune(),
        },
        "complete": complete,
        # Old runs still to prune (their job records go with them): what the
        # next calls will do. An index range count (the started index).
        "remaining": {"drainRuns": 0 if complete else old_runs.count()},
        "batches": batches,
        "durationMs": round((time.monotonic() - started) * 1000),
    }


def _delete_jobs_of(
    run_ids: list[int], *, batch: int, deadline: float
) -> tuple[int, int]:
    """The job records of these runs, `batch` at a time (the (run, id)
    index), until none is left or the budget is spent: (rows, transactions)."""
    deleted = transactions = 0
    jobs = JobRecord.objects.filter(run_id__in=run_ids)
    while True:
        chunk = list(jobs.order_by().values_list("pk", flat=True)[:batch])
        if chunk:
            with transaction.atomic():
                count, _ = JobRecord.objects.filter(pk__in=chunk).delete()
            deleted += count
            transactions += 1
        if len(chunk) < batch or time.monotonic() >= deadline:
            return deleted, transactions
