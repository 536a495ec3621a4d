"""What more than one admin page shares: the drain permission, run-status colours
and small HTML constants. Page modules import this, never each other (except
the switch page, which extends the Queues admin)."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.safestring import mark_safe

from ops.models import DrainRun

DRAIN_PERMISSION = "ops.drain_queues"

STATUS_COLOURS = {
    DrainRun.Status.RUNNING: "#2563eb",
    DrainRun.Status.SUCCEEDED: "#15803d",
    DrainRun.Status.DEADLINE: "#b45309",
    DrainRun.Status.FAILED: "#b91c1c",
    DrainRun.Status.SKIPPED: "#6b7280",
    DrainRun.Status.ABANDONED: "#7c2d12",
}

LINE_BREAK = mark_safe("<br>")  # a constant: no data goes through it


def can_drain(request: HttpRequest) -> bool:
    return request.user.has_perm(DRAIN_PERMISSION)
