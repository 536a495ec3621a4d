"""Deleting history older than HISTORY_RETENTION_DAYS, in bounded batches.

A year of history is a million drain runs and millions of job records: one
DELETE of all of it holds one transaction (and its locks, and the WAL) for
seconds while drains go on beside it. So the prune deletes in batches, each
in its own short transaction, oldest runs first, and stops starting batches
once its time budget is spent. A call that stops early says so (`complete:
false`) and how many old runs are left; the next call (the next cron tick)
goes on where it stopped, because what was deleted is gone.

Each batch reads at most n ids (an index range, the ids only) and sends one
`DELETE … WHERE id IN (<those ids>)` (`QuerySet._raw_delete`), in one short
transaction. Django's `delete()` would load every row and look for cascades
first, which cost ~600 ms per 5,000 runs at a year of history
(docs/benchmarks.md). Nor is it one `DELETE … WHERE id IN (SELECT id … LIMIT
n)`: PostgreSQL plans that as a join and, to estimate it, looks up the real
lowest and highest id in the primary key's index, stepping over every entry
the prune has just deleted (until VACUUM removes them): at a year of history
that planning read 20,000 pages and took 80+ ms for a 2 ms delete, and the
prune slowed to a third of its speed (docs/benchmarks.md). The cascade is done
here instead, in order: a run's job records (the only rows pointing at a
run) go before the run, and the run's own DELETE deletes its job records
again in the same transaction, so a record written late can never be left
pointing at nothing (the foreign key is checked at COMMIT).

Besides runs and job records, the same retention applies to provider usage
readings (never the latest of each kind, nor one of the current billing
period: the quota page reads those), handled job stop requests (a pending
one is an open request and stays), and the alert markers of past quota
periods and incidents (ops/scheduling/events.py only looks at the current
period and the last hour). The admin's audit log (LogEntry) is never
pruned: it is the record of operator actions.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from ops.cron import ratelimit
from ops.models import (
    AlertState,
    DrainRun,
    JobRecord,
    JobStopRequest,
    ProviderUsageReading,
    TokenVersion,
)
from ops.usage.period import billing_period

# Drain runs a batch deletes, in one short transaction.
BATCH = 1_000
# Job records one DELETE removes (in its own transaction): a batch of runs
# has about ten times as many, deleted in as many short transactions.
JOB_BATCH = 1_000
# How long one call keeps starting batches. A batch that started finishes, so
# a call lasts at most this plus one batch.
BUDGET_S = 5.0
# After each delete transaction the prune pauses as long as it took (at
# least PAUSE_S): it holds the database at most half the time, so the drains
# beside it are not kept waiting behind its writes (the idle drain's latency
# while pruning, measured in docs/benchmarks.md).
PAUSE_S = 0.02


def _pause(since: float) -> None:
    time.sleep(max(PAUSE_S, time.perf_counter() - since))


def _delete_some(rows: models.QuerySet[Any], batch: int) -> int:
    """Up to `batch` of `rows`, in their own transaction: their ids (no other
    column), then `DELETE … WHERE id IN (<ids>)` (the module's docstring says
    why not a subquery)."""
    manager = rows.model._default_manager
    began = time.perf_counter()
    with transaction.atomic(using=rows.db):
        ids = list(rows.values_list("pk", flat=True)[:batch])
        deleted = manager.filter(pk__in=ids)._raw_delete(rows.db) if ids else 0
    _pause(began)
    return int(deleted or 0)


def prune_history(
    *,
    budget_s: float | None = None,
    batch: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Prune what is older than the retention, batch by batch, within the
    budget: the job records of old runs, then those runs; job records without
    a run; the small histories (readings, stop requests, alert markers);
    expired tokens and stale rate-limit buckets."""
    run_batch = batch or BATCH
    job_batch = batch or JOB_BATCH
    started = time.monotonic()
    deadline = started + (BUDGET_S if budget_s is None else budget_s)
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.HISTORY_RETENTION_DAYS)
    old_runs = DrainRun.objects.filter(started__lt=cutoff).exclude(
        status=DrainRun.Status.RUNNING
    )
    deleted = dict.fromkeys(
        ("drainRuns", "jobRecords", "providerReadings", "stopRequests", "alertStates"),
        0,
    )
    batches = 0
    complete = False
    ids: list[int] | None = None
    while time.monotonic() < deadline:
        # The oldest runs first (the started index): a call that stops early
        # leaves the newest of the old history, never holes in it. A batch's
        # run ids come into Python (1,000 numbers); its job records do not.
        ids = list(
            old_runs.order_by("started", "pk").values_list("pk", flat=True)[:run_batch]
        )
        if not ids:
            break
        # Their job records first (jobrecord_run_idx), JOB_BATCH at a time.
        jobs = JobRecord.objects.filter(run_id__in=ids).order_by()
        done, count, transactions = _delete_all(jobs, job_batch, deadline)
        deleted["jobRecords"] += count
        batches += transactions
        if not done:
            break  # this batch's runs still have jobs: the next call goes on
        began = time.perf_counter()
        with transaction.atomic():
            # Their jobs are gone; a record written since goes with its run
            # (an empty range of the (run, id) index, as a rule).
            deleted["jobRecords"] += jobs._raw_delete(jobs.db)
            deleted["drainRuns"] += DrainRun.objects.filter(pk__in=ids)._raw_delete(
                DrainRun.objects.db
            )
        _pause(began)
        batches += 1
    else:
        ids = None  # the budget ran out before the runs did
    if ids == []:
        # Records written without a run age out on their own (the (run, id)
        # index: run IS NULL is its own range).
        orphans = JobRecord.objects.filter(run=None, created__lt=cutoff).order_by("pk")
        small = _small_histories(now, cutoff)
        complete = True
        for name, rows in (("jobRecords", orphans), *small):
            finished, count, transactions = _delete_all(rows, job_batch, deadline)
            deleted[name] += count
            batches += transactions
            complete = complete and finished
    # Runs name their credential as text, so old token rows can go (a few).
    dead_tokens, _ = TokenVersion.objects.filter(
        Q(revoked_at__lt=cutoff) | Q(expires_at__lt=cutoff)
    ).delete()
    return {
        "olderThan": cutoff.isoformat(),
        "deleted": {
            **deleted,
            "tokenVersions": dead_tokens,
            "rateBuckets": ratelimit.prune(),
        },
        "complete": complete,
        # Old runs still to prune (their job records go with them): what the
        # next calls will do. An index range count (drainrun_window_idx).
        "remaining": {"drainRuns": 0 if complete else old_runs.count()},
        "batches": batches,
        "durationMs": round((time.monotonic() - started) * 1000),
    }


def _small_histories(
    now: datetime, cutoff: datetime
) -> list[tuple[str, models.QuerySet[Any]]]:
    """The other histories past the retention, oldest first (each a few rows
    a day: one batch, as a rule)."""
    # The quota page reads the latest reading of each kind within the
    # current billing period: those stay whatever their age.
    readings_before = min(cutoff, billing_period(now).start)
    latest = [  # providerreading_kind_at_idx: one index look per kind
        ProviderUsageReading.objects.filter(kind=kind)
        .order_by("-at", "-id")
        .values_list("pk", flat=True)
        .first()
        for kind in ProviderUsageReading.Kind.values
    ]
    readings = (
        ProviderUsageReading.objects.filter(at__lt=readings_before)
        .exclude(pk__in=[pk for pk in latest if pk is not None])
        .order_by("pk")
    )
    # Only handled requests: a pending one is still an open request.
    stops = JobStopRequest.objects.filter(handled_at__lt=cutoff).order_by("pk")
    # "quota:<period>:<threshold>" and "incident:<id>:<state>" mark alerts
    # already sent; the check claims only the current period's and the last
    # hour's, so older markers are history. The "failed_jobs" state row is a
    # toggle the check needs: it stays.
    markers = AlertState.objects.filter(
        Q(key__startswith="quota:") | Q(key__startswith="incident:"),
        changed_at__lt=cutoff,
    ).order_by("pk")
    return [
        ("providerReadings", readings),
        ("stopRequests", stops),
        ("alertStates", markers),
    ]


def _delete_all(
    rows: models.QuerySet[Any], batch: int, deadline: float
) -> tuple[bool, int, int]:
    """Delete `rows` `batch` at a time until none is left or the budget is
    spent: (finished, rows, transactions)."""
    count = transactions = 0
    while True:  # one batch at least: a call always makes progress
        deleted = _delete_some(rows, batch)
        count += deleted
        transactions += int(deleted > 0)
        if deleted < batch:
            return True, count, transactions
        if time.monotonic() >= deadline:
            return not rows.exists(), count, transactions
