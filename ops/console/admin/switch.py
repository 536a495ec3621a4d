"""The "Redis switch check" page, /admin/ops/queue/redis-switch/.

Hooked onto the Queues admin: QueueAdmin is re-registered as a subclass that
only adds this URL. A proxy model would have given the page its own entry on
the admin index, but at the price of a migration and a second set of
permissions; the page is about queues, and viewing it needs `ops.view_queue`.

Every view of the page sends 6 x queues + 2 billed Redis commands (one
pipeline, ops/inspection/switch_check.py), + 6 per queue of RQ's `rq:queues`
that is not on the Queues page, and says so. Those queues, when they hold
jobs, are listed with a button that registers them (a POST to
/admin/ops/queue/redis-switch/register/, `ops.add_queue`, an audit LogEntry):
from then on the drains see them (enabled) or the page lists them as
disabled.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ops.console.admin.common import STATUS_COLOURS
from ops.console.admin.drains import QueueAdmin
from ops.inspection.switch_check import (
    COMMANDS_PER_QUEUE,
    COST_FORMULA,
    EXTRA_COMMANDS,
    LIVE_WORKER_WINDOW,
    DrainInStreak,
    QueuePending,
    SwitchCheck,
    register_queue,
    switch_check,
)
from ops.models import Queue, Source, WorkerProcess

PENDING_COLUMNS = ("queued", "intermediate", "scheduled", "started", "deferred")


def _count_cell(value: int, *, alert: bool) -> SafeString:
    if alert and value:
        return format_html('<strong class="ops-alert">{}</strong>', value)
    return format_html("{}", value)


def _queue_row(name: str, pending: QueuePending) -> list[SafeString]:
    label = (
        format_html("{}", name)
        if pending.enabled
        else format_html('{} <span class="quiet">(disabled)</span>', name)
    )
    # Non-zero pending counts block the switch; failed jobs are only history.
    return [
        label,
        *(_count_cell(getattr(pending, c), alert=True) for c in PENDING_COLUMNS),
        _count_cell(pending.failed, alert=False),
    ]


def _drain_row(drain: DrainInStreak, *, can_view_runs: bool) -> list[SafeString]:
    run = drain.run
    started = timezone.localtime(run.started).strftime("%Y-%m-%d %H:%M:%S")
    status = format_html(
        '<span class="ops-badge" style="background:{}" title="{}">{}</span>',
        STATUS_COLOURS.get(run.status, "#6b7280"),
        run.get_status_display(),
        run.status,
    )
    note = (
        format_html('<strong class="ops-alert">{}</strong>', drain.note)
        if drain.role == "breaks"
        else format_html("{}", drain.note)
    )
    return [
        format_html(
            '<a href="{}">{}</a>',
            reverse("admin:ops_drainrun_change", args=[run.pk]),
            started,
        )
        if can_view_runs
        else format_html("{}", started),
        status,
        format_html("{}", run.trigger),
        format_html("{}", run.total_processed),
        note,
    ]


def _worker_row(worker: WorkerProcess) -> list[SafeString]:
    heartbeat = timezone.localtime(worker.heartbeat).strftime("%Y-%m-%d %H:%M:%S")
    return [
        format_html("{}", worker.name),
        format_html("{}", worker.get_role_display()),
        format_html("{}", worker.host),
        format_html("{}", worker.pid),
        format_html("{}", worker.state),
        format_html("{}", ", ".join(worker.queues) or "-"),
        format_html("{}", heartbeat),
    ]


class QueueAdminWithSwitchCheck(QueueAdmin):
    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: "<path:object_id>/" would swallow "redis-switch/".
        return [
            path(
                "redis-switch/",
                self.admin_site.admin_view(self.redis_switch_view),
                name="ops_queue_redis_switch",
            ),
            path(
                "redis-switch/register/",
                self.admin_site.admin_view(self.register_queue_view),
                name="ops_queue_register",
            ),
            *super().get_urls(),
        ]

    def register_queue_view(self, request: HttpRequest) -> HttpResponse:
        """POST only: put a queue of rq:queues on the Queues page."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        back = reverse("admin:ops_queue_redis_switch")
        if request.method != "POST":
            return HttpResponseRedirect(back)
        name = request.POST.get("name", "").strip()
        enabled = request.POST.get("enabled") == "1"
        try:
            queue = register_queue(name, enabled=enabled)
        except ValidationError as exc:
            self.message_user(
                request, f"Not registered: {'; '.join(exc.messages)}", messages.ERROR
            )
            return HttpResponseRedirect(back)
        # The queue's history starts with who registered it, and how.
        self.log_addition(
            request,
            queue,
            f"Registered from the Redis switch page ({queue.name} was in "
            f"rq:queues), {'enabled' if enabled else 'disabled'}.",
        )
        self.message_user(
            request,
            f"Queue {queue.name} registered, "
            + (
                "enabled: the next drain runs its jobs."
                if enabled
                else "disabled: no drain runs it until you enable it."
            ),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(back)

    def redis_switch_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        check: SwitchCheck = switch_check(source=Source.CONSOLE)
        can_view_runs = request.user.has_perm("ops.view_drainrun")
        context = {
            **self.admin_site.each_context(request),
            "title": "Redis switch check",
            "opts": self.opts,
            "check": check,
            "queue_rows": [
                _queue_row(name, p) for name, p in (check.pending or {}).items()
            ],
            "unregistered_rows": [
                {"name": name, "cells": _queue_row(name, p)[1:]}
                for name, p in (check.unregistered or {}).items()
            ],
            "can_register": self.has_add_permission(request),
            "register_url": reverse("admin:ops_queue_register"),
            "drain_rows": [
                _drain_row(d, can_view_runs=can_view_runs) for d in check.recent_drains
            ],
            "worker_rows": [_worker_row(w) for w in check.live_workers],
            "live_window_minutes": int(LIVE_WORKER_WINDOW.total_seconds() // 60),
            "commands_per_queue": COMMANDS_PER_QUEUE,
            "extra_commands": EXTRA_COMMANDS,
            "cost_formula": COST_FORMULA,
            "queue_count": check.registered_queues,
            "unknown_count": check.unknown_queues,
            "runs_url": reverse("admin:ops_drainrun_changelist")
            if can_view_runs
            else "",
        }
        # admin_view adds never_cache: a verdict is only true when it is read.
        return TemplateResponse(request, "admin/ops/redis_switch.html", context)


# The import at the end of ops/console/admin/drains.py brings this module in once, after
# QueueAdmin is registered.
if admin.site.is_registered(Queue):
    admin.site.unregister(Queue)
admin.site.register(Queue, QueueAdminWithSwitchCheck)
