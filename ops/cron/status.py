"""What GET /api/v1/cron/status reports to uptime monitors and dashboards."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from ops import runtime
from ops.inspection.queue_stats import queue_depths
from ops.models import DrainRun, Source
from ops.queues import enabled_queue_names
from ops.scheduling import alarm, notify
from ops.workers.consumers import live_workers


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def cron_status() -> dict[str, Any]:
    """Costs 4 Redis commands per enabled queue (one pipeline), plus 2 per
    queue that has queued jobs (the alarm's backlog age: LINDEX, HGET), nothing
    else. Also records an alarm state change and sends its notification."""
    last = DrainRun.objects.exclude(status=DrainRun.Status.SKIPPED).first()
    # The drain did its work, whatever its jobs did: failed jobs are not a
    # drain that did not run.
    last_ok = (
        DrainRun.objects.filter(
            status__in=[
                DrainRun.Status.SUCCEEDED,
                DrainRun.Status.WITH_FAILURES,
                DrainRun.Status.DEADLINE,
            ]
        )
        .values_list("finished", flat=True)
        .first()
    )
    depths = queue_depths(enabled_queue_names(), source=Source.API)
    if depths.available:
        # Queues LLEN just found empty need no LINDEX: an idle status call
        # costs what it cost before the alarm existed.
        ages = alarm.backlog_ages(
            list(depths.by_queue),
            source=Source.API,
            empty=[name for name, d in depths.by_queue.items() if not d.queued],
        )
    else:
        ages = alarm.Backlog(error=depths.error)  # no second try at a dead Redis
    report = alarm.evaluate(backlog=ages)
    notify.check(report=report, source=Source.API)
    backlog = {
        name: {
            "queued": d.queued,
            "scheduled": d.scheduled,
            "started": d.started,
            "failed": d.failed,
        }
        for name, d in depths.by_queue.items()
    }
    return {
        "now": timezone.now().isoformat(),
        "workerMode": runtime.worker_mode(),
        "alwaysOnWorkers": live_workers().count(),
        "lastDrain": None
        if last is None
        else {
            "runId": str(last.public_id),
            "status": last.status,
            "trigger": last.trigger,
            "caller": last.requested_by.get_username()
            if last.requested_by
            else last.caller,
            "started": _iso(last.started),
            "finished": _iso(last.finished),
            "totalProcessed": last.total_processed,
            "totalFailed": last.total_failed,
        },
        "lastSuccessfulDrainAt": _iso(last_ok),
        "redis": "ok" if depths.available else "unavailable",
        "redisError": depths.error or None,
        "backlog": backlog,
        "alarm": report.as_json(),
        "redisCommands": depths.redis_commands + ages.redis_commands,
    }
