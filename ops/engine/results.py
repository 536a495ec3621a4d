"""The JSON shape of a drain's result, shared by the endpoint, the admin and the CLI."""

from __future__ import annotations

from typing import Any

from ops.engine.drain import ErrorCode
from ops.humanize import duration_ms
from ops.models import DrainRun


def drain_result(run: DrainRun) -> dict[str, Any]:
    params = run.params or {}
    result: dict[str, Any] = {
        "runId": str(run.public_id),
        "status": run.status,
        "trigger": run.trigger,
        "totalProcessed": run.total_processed,
        "totalFailed": run.total_failed,
        "queues": run.queue_results,
        "durationMs": run.duration_ms,
        "deadlineHit": run.deadline_hit,
        "redisCommands": run.redis_commands,
        "maxDurationMs": params.get("maxDurationMs"),
        "maxConcurrentQueues": params.get("maxConcurrentQueues"),
    }
    if params.get("clamped"):
        result["clamped"] = params["clamped"]
    if run.status == DrainRun.Status.SKIPPED:
        result["runningRunId"] = str(run.blocked_by) if run.blocked_by else None
    if run.recovered_jobs:
        result["recoveredAbandonedJobs"] = run.recovered_jobs
    if run.error_code:
        result["error"] = run.error_code
    if run.error:
        result["detail"] = run.error
    return result


# The cron endpoint's HTTP status for a finished run's error code.
_STATUS_FOR_ERROR = {
    ErrorCode.REDIS_UNAVAILABLE: 503,
    ErrorCode.REDIS_QUOTA_EXHAUSTED: 503,
    ErrorCode.INTERNAL: 500,
}


def drain_answer(run: DrainRun) -> tuple[int, dict[str, Any]]:
    """The status and JSON body POST /api/v1/cron/drain-queues gives for `run`
    (also shown by the admin's "send a test drain")."""
    result = drain_result(run)
    if run.status == DrainRun.Status.SKIPPED:
        result.update(
            error="drain_running",
            detail=f"Drain {run.blocked_by} is running; this call did nothing.",
        )
        return 409, result
    return _STATUS_FOR_ERROR.get(run.error_code, 200), result


def summary_line(run: DrainRun, *, label: bool = False) -> str:
    """One line for a terminal or a log, starting with the status's code
    (`with_failures: 34 processed, 6 failed, ...`); `label`: with its label
    instead, for people (`Finished with failed jobs: 34 processed, ...`)."""
    if run.status == DrainRun.Status.SKIPPED:
        return f"skipped: drain {run.blocked_by} is running"
    status = run.get_status_display() if label else run.status
    # People read the one human format (ops/humanize.py); a terminal or a log
    # keeps the exact milliseconds.
    took = f"{run.duration_ms} ms"
    if label and run.duration_ms is not None:
        took = duration_ms(run.duration_ms)
    line = (
        f"{status}: {run.total_processed} processed, {run.total_failed} failed, "
        f"{sum(r.get('remaining', 0) for r in run.queue_results.values())} left, "
        f"{took}, {run.redis_commands} Redis commands"
    )
    if run.error:
        line += f" ({run.error})"
    return line


def progress_result(run: DrainRun) -> dict[str, Any]:
    """What the run page polls while a drain runs (ops/engine/progress.py
    writes these columns as it goes): database only. `remaining` is an
    estimate while it runs (jobs found minus jobs run), the queues' lengths
    once it ends."""
    results = run.queue_results or {}
    active = run.is_active
    return {
        "runId": str(run.public_id),
        "status": run.status,
        "statusLabel": run.get_status_display(),
        "active": active,
        "processed": run.total_processed,
        "failed": run.total_failed,
        "remaining": sum(r.get("remaining", 0) for r in results.values()),
        "redisCommands": run.redis_commands,
        "currentJobs": run.current_jobs or {},
        "queues": results,
        "progressAt": run.progress_at.isoformat() if run.progress_at else None,
        "durationMs": run.duration_ms,
        "summary": None if active else summary_line(run, label=True),
    }
