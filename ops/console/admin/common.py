"""What more than one admin page shares: the drain permission, run- and
job-status colours and small HTML constants. Page modules import this, never
each other (except the switch page, which extends the Queues admin)."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.safestring import mark_safe

from ops.models import DrainRun, JobRecord

DRAIN_PERMISSION = "ops.drain_queues"

STATUS_COLOURS = {
    DrainRun.Status.QUEUED: "#64748b",  # a Drain now whose process is starting
    DrainRun.Status.RUNNING: "#2563eb",
    DrainRun.Status.SUCCEEDED: "#15803d",
    # Orange-red: between the deadline's amber and a failed drain's red.
    DrainRun.Status.WITH_FAILURES: "#c2410c",
    DrainRun.Status.DEADLINE: "#b45309",
    DrainRun.Status.FAILED: "#b91c1c",
    DrainRun.Status.SKIPPED: "#6b7280",
    DrainRun.Status.ABANDONED: "#7c2d12",
}

# The same palette applied to the jobs a run ran (the job records list and the
# run page's jobs table).
JOB_STATUS_COLOURS = {
    JobRecord.Status.FINISHED: "#15803d",
    JobRecord.Status.FAILED: "#b91c1c",
    JobRecord.Status.RETRIED: "#b45309",
    JobRecord.Status.ABANDONED: "#7c2d12",
    JobRecord.Status.REQUEUED: "#6b7280",
}

LINE_BREAK = mark_safe("<br>")  # a constant: no data goes through it


def can_drain(request: HttpRequest) -> bool:
    return request.user.has_perm(DRAIN_PERMISSION)
