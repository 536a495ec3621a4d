"""Deleting history older than HISTORY_RETENTION_DAYS."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ops.cron import ratelimit
from ops.models import DrainRun, TokenVersion


def prune_history() -> dict[str, Any]:
    cutoff = timezone.now() - timedelta(days=settings.HISTORY_RETENTION_DAYS)
    runs, _ = (
        DrainRun.objects.filter(started__lt=cutoff)
        .exclude(status=DrainRun.Status.RUNNING)
        .delete()
    )
    # Runs name their credential as text, so old token rows can go.
    dead_tokens, _ = TokenVersion.objects.filter(
        Q(revoked_at__lt=cutoff) | Q(expires_at__lt=cutoff)
    ).delete()
    return {
        "olderThan": cutoff.isoformat(),
        "deleted": {
            "drainRuns": runs,
            "tokenVersions": dead_tokens,
            "rateBuckets": ratelimit.prune(),
        },
    }
