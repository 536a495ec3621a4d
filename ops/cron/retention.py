"""Deleting history older than HISTORY_RETENTION_DAYS."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ops.cron import ratelimit
from ops.models import DrainRun, JobRecord, TokenVersion


def prune_history() -> dict[str, Any]:
    cutoff = timezone.now() - timedelta(days=settings.HISTORY_RETENTION_DAYS)
    # A run's job records go with it (CASCADE): count each model on its own.
    _, per_model = (
        DrainRun.objects.filter(started__lt=cutoff)
        .exclude(status=DrainRun.Status.RUNNING)
        .delete()
    )
    runs = per_model.get(DrainRun._meta.label, 0)
    job_records = per_model.get(JobRecord._meta.label, 0)
    # Records written without a run age out on their own.
    orphans, _ = JobRecord.objects.filter(run=None, created__lt=cutoff).delete()
    # Runs name their credential as text, so old token rows can go.
    dead_tokens, _ = TokenVersion.objects.filter(
        Q(revoked_at__lt=cutoff) | Q(expires_at__lt=cutoff)
    ).delete()
    return {
        "olderThan": cutoff.isoformat(),
        "deleted": {
            "drainRuns": runs,
            "jobRecords": job_records + orphans,
            "tokenVersions": dead_tokens,
            "rateBuckets": ratelimit.prune(),
        },
    }
