"""Admin: a queue's jobs in Redis, state by state; one job with its traceback;
requeue and delete.

Pages, hooked onto the Queues admin (like the Redis switch page, no model of
their own):

* /admin/ops/queue/<id>/jobs/<state>/?page=N — one page of the queue's
  queued, scheduled, started, deferred, finished or failed jobs;
* /admin/ops/queue/<id>/job/<job id>/ — one job: traceback, args and kwargs,
  meta, retries left, and the drain runs that ran it (JobRecord rows);
* /admin/ops/queue/<id>/jobs/<state>/requeue/ and …/delete/ — GET: which jobs
  and what it will cost in Redis commands, and a confirmation form (nothing is
  done); POST: do it, record it in the queue's history (admin LogEntry), say
  what was done and what it cost.
* /admin/ops/queue/<id>/stop/?job=<job id> — stop a running job: GET confirms,
  POST writes a stop request (ops/engine/stop.py: the database carries it, 0
  Redis commands) and an admin LogEntry; the job's process stops it within
  about a second. Offered on the started page and on a job's page. The
  started page lists the jobs of both executors: RQ's started registry and,
  on its first page, the job each live lean consumer runs (its claim list);
  it closes the stop requests of jobs it finds running nowhere, and every
  stop page closes requests no process took (ops/engine/stop.py).

Looking needs `ops.view_queue`; acting needs `ops.manage_jobs` as well, and
stopping `ops.stop_jobs`. Every
Redis command goes through ops/inspection/jobs.py, which documents each cost;
the footer states what the page spent (ops/console/middleware.py).

The queue's change page gets a summary of its jobs per state (6 commands) with
links to these pages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ops.engine import stop
from ops.inspection import jobs as service
from ops.inspection.jobs import (
    BULK_LIMIT,
    DELETE,
    FAILED,
    REQUEUE,
    STARTED,
    STATES,
    ActionResult,
    JobDetail,
    JobRow,
)
from ops.models import Queue

MANAGE_JOBS_PERMISSION = "ops.manage_jobs"
STOP_JOBS_PERMISSION = "ops.stop_jobs"
ACTIONS = {REQUEUE: "Requeue", DELETE: "Delete"}
# Statuses a job may have while a worker runs it: `started` (rq's worker), or
# `queued` (the lean executor writes no status until the job's outcome).
STOPPABLE_STATUSES = frozenset({"started", "queued"})


def can_manage_jobs(request: HttpRequest) -> bool:
    return request.user.has_perm(MANAGE_JOBS_PERMISSION)


def can_stop_jobs(request: HttpRequest) -> bool:
    return request.user.has_perm(STOP_JOBS_PERMISSION)


def stop_url(queue: Queue, job_id: str | None = None) -> str:
    url = reverse("admin:ops_queue_job_stop", args=[queue.pk])
    return f"{url}?{urlencode({'job': job_id})}" if job_id else url


def _when(value: datetime | None) -> SafeString:
    if value is None:
        return format_html('<span class="quiet">{}</span>', "-")
    return format_html(
        '<span class="ops-when">{}</span>',
        timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S"),
    )


def jobs_url(queue: Queue, state: str, **query: Any) -> str:
    url = reverse("admin:ops_queue_jobs", args=[queue.pk, state])
    return f"{url}?{urlencode(query, doseq=True)}" if query else url


def job_url(queue: Queue, job_id: str) -> str:
    return reverse("admin:ops_queue_job", args=[queue.pk, job_id])


def action_url(queue: Queue, state: str, action: str, **query: Any) -> str:
    url = reverse("admin:ops_queue_jobs_action", args=[queue.pk, state, action])
    return f"{url}?{urlencode(query, doseq=True)}" if query else url


# --- The list's columns -------------------------------------------------------

Cell = Callable[[JobRow], SafeString]


def _description(row: JobRow) -> SafeString:
    if not row.exists:
        return format_html(
            '<span class="quiet">{}</span>',
            "job data gone (expired or deleted); RQ's cleanup drops the id",
        )
    text = row.description or "(no description)"
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(100))


def _exception(row: JobRow) -> SafeString:
    if not (row.exc_type or row.exc_message):
        return format_html('<span class="quiet">{}</span>', "-")
    return format_html(
        '<strong>{}</strong> <span title="{}">{}</span>',
        row.exc_type,
        row.exc_message,
        Truncator(row.exc_message).chars(160),
    )


def _status_if_odd(state: str) -> Cell:
    """The job's status where it is not the state's own (a stopped job in
    the failed registry, a job changed since it was filed)."""

    def cell(row: JobRow) -> SafeString:
        if row.claimed_by:
            return format_html(
                '<span class="quiet" title="{}">{}</span>',
                "The lean executor writes no status while a job runs "
                f"(it stays {row.status!r}): it holds the job in its claim list.",
                "running (lean)",
            )
        if row.exists and row.status and row.status != state:
            return format_html('<span class="ops-alert">{}</span>', row.status)
        return format_html("{}", "")

    return cell


COLUMNS: dict[str, list[tuple[str, Cell]]] = {
    "queued": [("enqueued", lambda r: _when(r.enqueued_at))],
    "scheduled": [
        ("due", lambda r: _when(r.due_at)),
        ("created", lambda r: _when(r.created_at)),
    ],
    "started": [
        ("started", lambda r: _when(r.started_at)),
        ("worker", lambda r: format_html("<code>{}</code>", r.worker or "-")),
    ],
    "deferred": [("created", lambda r: _when(r.created_at))],
    "finished": [("ended", lambda r: _when(r.ended_at))],
    "failed": [
        ("failed at", lambda r: _when(r.ended_at)),
        ("exception", _exception),
    ],
}


# --- The pages ----------------------------------------------------------------


class QueueJobsMixin:
    """Mixed into whichever Queues admin is registered (see the end of this
    module): the job pages' URLs and views, and the change page's summary."""

    change_form_template = "admin/ops/queue_jobs/queue_change_form.html"

    admin_site: admin.AdminSite
    opts: Any

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        # Before the defaults: "<path:object_id>/" would swallow these.
        return [
            path(
                "<int:queue_id>/jobs/<str:state>/",
                view(self.jobs_view),
                name="ops_queue_jobs",
            ),
            path(
                "<int:queue_id>/jobs/<str:state>/<str:action>/",
                view(self.jobs_action_view),
                name="ops_queue_jobs_action",
            ),
            path(
                "<int:queue_id>/stop/",
                view(self.stop_job_view),
                name="ops_queue_job_stop",
            ),
            path(
                "<int:queue_id>/job/<path:job_id>/",
                view(self.job_view),
                name="ops_queue_job",
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]

    # -- helpers --

    def _queue(self, request: HttpRequest, queue_id: int) -> Queue:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        return get_object_or_404(Queue, pk=queue_id)

    def _context(self, request: HttpRequest, queue: Queue, title: str) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "queue": queue,
            "queue_url": reverse("admin:ops_queue_change", args=[queue.pk]),
            "tabs": [
                (info.name, info.label, jobs_url(queue, info.name))
                for info in STATES.values()
            ],
            "can_manage": can_manage_jobs(request),
        }

    # -- the list of one state --

    def jobs_view(
        self, request: HttpRequest, queue_id: int, state: str
    ) -> HttpResponse:
        queue = self._queue(request, queue_id)
        if state not in STATES:
            raise Http404(f"No job state {state!r}")
        try:
            page_number = int(request.GET.get("page", "1"))
        except ValueError:
            raise Http404("The page must be a number") from None
        if page_number < 1:
            raise Http404("Pages start at 1")
        # Stop requests open before the running jobs are read: those whose
        # job the page then finds running nowhere have nothing left to stop.
        seen = stop.open_requests_of_queue(queue.name) if state == STARTED else []
        page = service.list_jobs(queue.name, state, page=page_number)
        if state == STARTED:
            stop.close_unused(seen, page.running_ids if page.available else None)
        info = STATES[state]
        can_manage = can_manage_jobs(request)
        stoppable = state == STARTED and can_stop_jobs(request)
        rows = [self._row(queue, state, row) for row in page.jobs]
        headers = ["job", "description", "status"] + [h for h, _ in COLUMNS[state]]
        if stoppable:
            # Open requests for the page's jobs: one database query.
            pending = stop.open_requests([row.id for row in page.jobs])
            for row in rows:
                row["cells"].append(_stop_cell(queue, row["id"], pending))
            headers.append("stop")
        context = {
            **self._context(request, queue, f"{info.label} jobs of {queue.name}"),
            "state": info,
            "page": page,
            "headers": headers,
            "rows": rows,
            "stop_url": stop_url(queue) if stoppable else "",
            "selectable": can_manage and (info.can_requeue or info.can_delete),
            "actions": self._actions(queue, state) if can_manage else [],
            "previous_url": jobs_url(queue, state, page=page.page - 1)
            if page.has_previous
            else "",
            "next_url": jobs_url(queue, state, page=page.page + 1)
            if page.has_next
            else "",
            "past_the_end": page.available and page.page > page.num_pages,
            "first_page_url": jobs_url(queue, state),
            "cost_note": _page_cost_note(state),
        }
        return TemplateResponse(request, "admin/ops/queue_jobs/list.html", context)

    def _row(self, queue: Queue, state: str, row: JobRow) -> dict[str, Any]:
        cells = [
            format_html(
                '<a href="{}"><code>{}</code></a>', job_url(queue, row.id), row.id
            ),
            _description(row),
            _status_if_odd(state)(row),
            *(cell(row) for _, cell in COLUMNS[state]),
        ]
        return {"id": row.id, "cells": cells}

    def _actions(self, queue: Queue, state: str) -> list[dict[str, str]]:
        info = STATES[state]
        out = []
        for action, label in ACTIONS.items():
            if service.action_allowed(action, state):
                out.append(
                    {
                        "action": action,
                        "label": label,
                        "selected_url": action_url(queue, state, action),
                        "all_url": action_url(queue, state, action, all=1),
                        "all_label": f"{label} all {info.name}",
                    }
                )
        return out

    # -- one job --

    def job_view(
        self, request: HttpRequest, queue_id: int, job_id: str
    ) -> HttpResponse:
        queue = self._queue(request, queue_id)
        if not service.valid_job_id(job_id):
            raise Http404("Not a job id")
        detail: JobDetail = service.job_detail(job_id)
        belongs = detail.found and detail.origin in ("", queue.name)
        actions = []
        if belongs and can_manage_jobs(request) and detail.state in STATES:
            for action, label in ACTIONS.items():
                if service.action_allowed(action, detail.state):
                    actions.append(
                        {
                            "label": f"{label} this job",
                            "url": action_url(queue, detail.state, action, job=job_id),
                        }
                    )
        if belongs and can_stop_jobs(request) and detail.status in STOPPABLE_STATUSES:
            actions.append({"label": "Stop this job", "url": stop_url(queue, job_id)})
        can_view_runs = request.user.has_perm("ops.view_drainrun")
        context = {
            **self._context(request, queue, f"Job {job_id}"),
            "job": detail,
            "belongs": belongs,
            "job_actions": actions,
            "state_url": jobs_url(queue, detail.state)
            if detail.state in STATES
            else "",
            "records": [
                {
                    "record": record,
                    "run_url": reverse(
                        "admin:ops_drainrun_change", args=[record.run_id]
                    )
                    if record.run_id is not None and can_view_runs
                    else "",
                }
                for record in detail.records
            ],
        }
        # A job that is not there (any more) is a 404, with the page saying so
        # and what the drains recorded of it.
        status = 404 if not detail.found and not detail.error else 200
        return TemplateResponse(
            request, "admin/ops/queue_jobs/detail.html", context, status=status
        )

    # -- requeue and delete --

    def jobs_action_view(
        self, request: HttpRequest, queue_id: int, state: str, action: str
    ) -> HttpResponse:
        queue = self._queue(request, queue_id)
        if not can_manage_jobs(request):
            raise PermissionDenied
        if state not in STATES or action not in ACTIONS:
            raise Http404("No such action")
        if not service.action_allowed(action, state):
            raise Http404(f"{ACTIONS[action]} is not offered for {state} jobs")
        data = request.POST if request.method == "POST" else request.GET
        take_all = data.get("all") == "1"
        ids = list(dict.fromkeys(i.strip() for i in data.getlist("job") if i.strip()))
        back = jobs_url(queue, state)
        if not take_all:
            problem = ""
            if not ids:
                problem = "Choose at least one job first."
            elif len(ids) > BULK_LIMIT:
                problem = f"At most {BULK_LIMIT} jobs at a time."
            elif not all(service.valid_job_id(i) for i in ids):
                problem = "That is not a job id."
            if problem:
                self.message_user(request, problem, messages.WARNING)  # type: ignore[attr-defined]
                return HttpResponseRedirect(back)
        if request.method == "POST":
            return self._act(request, queue, state, action, ids, take_all, back)
        return self._confirm(request, queue, state, action, ids, take_all, back)

    def _confirm(
        self,
        request: HttpRequest,
        queue: Queue,
        state: str,
        action: str,
        ids: list[str],
        take_all: bool,
        back: str,
    ) -> HttpResponse:
        """What the action will do and cost. Selected jobs: no Redis command
        (the ids are on the form). All: one, to count them."""
        claims = service.claim_lists(queue.name)
        cost_of = service.requeue_cost if action == REQUEUE else service.delete_cost
        total = None
        error = ""
        if take_all:
            counted = service.count_jobs(queue.name, state)
            error = counted.error
            total = counted.by_state.get(state, 0)
            n = min(total, BULK_LIMIT)
            cost = cost_of(n, len(claims), take_all=True)
        else:
            n = len(ids)
            cost = cost_of(n, len(claims))
        label = ACTIONS[action]
        title = f"{label} {'all ' if take_all else ''}{state} jobs of {queue.name}?"
        context = {
            **self._context(request, queue, title),
            "state": STATES[state],
            "action": action,
            "action_label": label,
            "take_all": take_all,
            "total": total,
            "count": n,
            "bulk_limit": BULK_LIMIT,
            "jobs": [(job_id, job_url(queue, job_id)) for job_id in ids],
            "claim_lists": len(claims),
            "cost": cost,
            "cost_formula": _action_cost_formula(action, take_all),
            "error": error,
            "back_url": back,
        }
        return TemplateResponse(request, "admin/ops/queue_jobs/confirm.html", context)

    def _act(
        self,
        request: HttpRequest,
        queue: Queue,
        state: str,
        action: str,
        ids: list[str],
        take_all: bool,
        back: str,
    ) -> HttpResponse:
        result: ActionResult
        if action == REQUEUE:
            result = (
                service.requeue_all_failed(queue.name)
                if take_all
                else service.requeue(queue.name, ids)
            )
        else:
            result = (
                service.delete_all(queue.name, state)
                if take_all
                else service.delete(queue.name, ids, state)
            )
        summary = result.summary()
        # The queue's history (admin LogEntry) keeps who did what to which jobs.
        self.log_change(request, queue, summary)  # type: ignore[attr-defined]
        if result.error:
            level = messages.ERROR
        elif result.skipped:
            level = messages.WARNING
        else:
            level = messages.SUCCESS
        self.message_user(request, summary, level)  # type: ignore[attr-defined]
        return HttpResponseRedirect(back)

    # -- stopping a running job --

    def stop_job_view(self, request: HttpRequest, queue_id: int) -> HttpResponse:
        """GET: what stopping does, and a confirmation form; POST: write the
        stop request and the audit entry. 0 Redis commands either way."""
        queue = self._queue(request, queue_id)
        if not can_stop_jobs(request):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        job_id = data.get("job", "").strip()
        back = jobs_url(queue, STARTED)
        if not job_id:
            self.message_user(
                request, "Give the id of the job to stop.", messages.WARNING
            )  # type: ignore[attr-defined]
            return HttpResponseRedirect(back)
        if not service.valid_job_id(job_id):
            self.message_user(request, "That is not a job id.", messages.WARNING)  # type: ignore[attr-defined]
            return HttpResponseRedirect(back)
        if request.method == "POST":
            asked = stop.request_stop(job_id, queue.name, request.user)
            if asked.created:
                summary = f"Asked to stop job {job_id}."
                # The queue's history (admin LogEntry) keeps who asked.
                self.log_change(request, queue, summary)  # type: ignore[attr-defined]
                level = messages.SUCCESS
                summary += (
                    f" Its worker stops it within about {stop.POLL_S:g} s of "
                    "seeing the request; it then shows in the failed jobs as "
                    "stopped."
                )
            else:
                summary = (
                    f"A stop of job {job_id} was already asked for "
                    f"{timezone.localtime(asked.request.requested_at):%H:%M:%S}; "
                    "nothing more was done."
                )
                level = messages.WARNING
            self.message_user(request, summary, level)  # type: ignore[attr-defined]
            return HttpResponseRedirect(back)
        stop.close_stale()  # "already asked" only while it can still apply
        pending = stop.open_requests([job_id]).get(job_id)
        context = {
            **self._context(request, queue, f"Stop job {job_id}?"),
            "state": STATES[STARTED],
            "job_id": job_id,
            "job_url": job_url(queue, job_id),
            "pending": pending,
            "poll_s": stop.POLL_S,
            "stale_after_s": stop.STALE_AFTER_S,
            "back_url": back,
        }
        return TemplateResponse(
            request, "admin/ops/queue_jobs/stop_confirm.html", context
        )

    # -- the queue's change page --

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        if request.method == "GET":
            queue = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
            if queue is not None and self.has_view_permission(request, queue):  # type: ignore[attr-defined]
                counts = service.job_counts(queue.name)
                extra["queue_jobs"] = {
                    "counts": counts,
                    "states": [
                        (
                            info.label,
                            counts.by_state.get(info.name),
                            jobs_url(queue, info.name),
                            info.name == FAILED,
                        )
                        for info in STATES.values()
                    ],
                    "commands": service.COUNT_COMMANDS,
                }
        return super().change_view(request, object_id, form_url, extra)  # type: ignore[misc]


def _stop_cell(queue: Queue, job_id: str, pending: dict[str, Any]) -> SafeString:
    request = pending.get(job_id)
    if request is not None:
        return format_html(
            '<span class="ops-alert" title="asked at {}">stop asked</span>',
            timezone.localtime(request.requested_at).strftime("%Y-%m-%d %H:%M:%S"),
        )
    return format_html('<a href="{}">Stop&hellip;</a>', stop_url(queue, job_id))


def _page_cost_note(state: str) -> str:
    if state == FAILED:
        return (
            "2 + 1 per job shown: the page's ids and fields in one SORT, the "
            "count, and each job's latest result for its exception"
        )
    if state == "started":
        return (
            "2 + 1 per live lean consumer (first page) + 1 per registry job "
            "shown: the page's ids, the count, one SORT of each consumer's "
            "claim list, one HMGET per job of RQ's started registry"
        )
    if state == "scheduled":
        return "3: the page's ids and fields in one SORT, their due times, the count"
    return "2: the page's ids and fields in one SORT, and the count"


def _action_cost_formula(action: str, take_all: bool) -> str:
    if action == REQUEUE:
        text = (
            "3 per job (read its status, take it off the failed registry, "
            "mark it queued) + 3 (MULTI, one RPUSH, EXEC) + 1 per claim list"
        )
    else:
        text = (
            "2 per job (read its status, take it off its list or registry) "
            "+ 1 (one DEL of every key of the jobs) + 1 per claim list"
        )
    if take_all:
        text += " + 2 to read the ids and count them"
    return text


def _install() -> None:
    """Put the job pages on whichever Queues admin is registered now (the
    Redis switch page's subclass, at the end of ops/console/admin/__init__'s
    imports), keeping everything it does."""
    current = admin.site.get_model_admin(Queue)
    if isinstance(current, QueueJobsMixin):
        return
    base = type(current)
    admin.site.unregister(Queue)
    admin.site.register(
        Queue, type(f"{base.__name__}WithJobs", (QueueJobsMixin, base), {})
    )


_install()
