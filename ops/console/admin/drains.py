"""The console: queues with their live depth, drain runs, the drain lease, and
the "Drain now" page.

Looking and acting are separate permissions: `view_drainrun` shows runs,
`ops.drain_queues` starts a drain. Every Redis command a page sends is billed,
so the queue list reads all its depths in one pipeline
(ops/inspection/queue_stats.py) and says what it spent; the other pages send
none.

"Drain now" answers at once: the drain runs in a background process
(ops/engine/background.py) and the run's page follows it by polling a JSON
view of the row (database only). Starting a drain leaves an audit entry; so do
the queue edits (the admin's own change history); a queue named by history
(runs or job records) keeps its name.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ops.console.admin.common import (
    JOB_STATUS_COLOURS,
    LINE_BREAK,
    STATUS_COLOURS,
    can_drain,
)
from ops.console.admin.lists import BoundedListMixin, IndexedSearchMixin, month_filter
from ops.engine import background
from ops.engine.drain_options import DrainOptionError, parse_options
from ops.engine.lease import DRAIN_LEASE
from ops.engine.results import progress_result, summary_line
from ops.humanize import duration_ms as human_ms
from ops.inspection.queue_stats import COMMANDS_PER_QUEUE, QueueDepth, queue_depths
from ops.models import DrainRun, JobRecord, Lease, Queue
from ops.queues import enabled_queue_names

# A depth cell when Redis could not be read (the page says why).
UNKNOWN = format_html('<span class="quiet" title="Redis unavailable">{}</span>', "?")


def _drain_links(request: HttpRequest) -> dict[str, Any]:
    """Context for the "Drain now" button of the change lists."""
    return {
        "can_drain": can_drain(request),
        "drain_url": reverse("admin:ops_drainrun_drain"),
    }


def _run_link(run_pk: int | None, label: object) -> SafeString:
    if run_pk is None:
        return format_html("{}", label)
    url = reverse("admin:ops_drainrun_change", args=[run_pk])
    return format_html('<a href="{}">{}</a>', url, label)


# --- Queues -------------------------------------------------------------------


def _depth_cell(field_name: str, description: str, alert: bool = False) -> Any:
    """A list column reading the depth the change list fetched for the page,
    linked to the page of those jobs (ops/console/admin/queue_jobs.py)."""

    @admin.display(description=description)
    def cell(model_admin: QueueAdmin, obj: Queue) -> SafeString:
        depth: QueueDepth | None = getattr(obj, "live_depth", None)
        if depth is None:
            return UNKNOWN
        value = getattr(depth, field_name)
        url = reverse("admin:ops_queue_jobs", args=[obj.pk, field_name])
        if alert and value:
            return format_html(
                '<a href="{}" title="the {} jobs of {}">'
                '<strong class="ops-alert">{}</strong></a>',
                url,
                field_name,
                obj.name,
                value,
            )
        return format_html(
            '<a href="{}" title="the {} jobs of {}">{}</a>',
            url,
            field_name,
            obj.name,
            value,
        )

    cell.__name__ = f"{field_name}_depth"
    return cell


def queue_history(name: str) -> tuple[int, int]:
    """(drain runs, job records) that name the queue: database only. A run
    names every queue it was asked to drain (its per-queue results)."""
    runs = DrainRun.objects.filter(queue_results__has_key=name).count()
    records = JobRecord.objects.filter(queue=name).count()
    return runs, records


class QueueForm(forms.ModelForm):
    class Meta:
        model = Queue
        fields = "__all__"

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        old = self.instance.name if self.instance.pk else None
        if old is None or name == old:
            return name
        runs, records = queue_history(old)
        if runs or records:
            # The history says what happened to "old": renaming the row would
            # make it describe another queue (and RQ's list keeps the old name).
            raise forms.ValidationError(
                f"{old} has history ({runs} drain run{'s' if runs != 1 else ''}, "
                f"{records} job record{'s' if records != 1 else ''}), which names "
                f"it: it cannot be renamed. Add a queue named {name} instead, and "
                f"disable {old} once it is empty.",
                code="has_history",
            )
        return name


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    form = QueueForm
    list_display = (
        "name",
        "enabled",
        "priority",
        "description_text",
        "queued",
        "scheduled",
        "started",
        "failed",
    )
    list_display_links = ("name",)
    list_editable = ("enabled", "priority")
    # No filter sidebar: a handful of queues, and the depth columns need the room.
    search_fields = ("name", "description")
    readonly_fields = ("created",)

    queued = _depth_cell("queued", "queued")
    scheduled = _depth_cell("scheduled", "scheduled")
    started = _depth_cell("started", "started")
    failed = _depth_cell("failed", "failed", alert=True)

    @admin.display(description="description")
    def description_text(self, obj: Queue) -> SafeString:
        return format_html("{}", Truncator(obj.description).chars(80))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(
            request, {**(extra_context or {}), **_drain_links(request)}
        )
        context = getattr(response, "context_data", None)
        if not context or "cl" not in context:
            return response  # a redirect after a bulk edit: nothing to show
        # One pipeline for the whole page, not a Redis call per row: the rows
        # are the page's (already fetched) queryset, which the template reuses.
        rows = list(context["cl"].result_list)
        depths = queue_depths([queue.name for queue in rows])
        for queue in rows:
            queue.live_depth = depths.get(queue.name)
        context["queue_depths"] = depths
        context["commands_per_queue"] = COMMANDS_PER_QUEUE
        return response

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A queue's runs and jobs refer to it by name: disable it instead.
        return False


# --- Drain runs ---------------------------------------------------------------


class _AnyQueueField(forms.MultipleChoiceField):
    """Checkboxes of the enabled queues; parse_options, not the form, decides
    which names are valid, so every interface words the error the same way."""

    def valid_value(self, value: str) -> bool:
        return True


class DrainForm(forms.Form):
    # Plain text fields: the values go to parse_options as typed.
    max_duration_ms = forms.CharField(
        label="Time budget (ms)",
        required=False,
        help_text=(
            f"Stop starting jobs after this long. Above "
            f"{settings.DRAIN_MAX_DURATION_CAP_MS} ms it is cut to "
            f"{settings.DRAIN_MAX_DURATION_CAP_MS} ms. Empty: the default."
        ),
    )
    max_concurrent_queues = forms.CharField(
        label="Queues at once",
        required=False,
        help_text="How many queues are drained side by side. Empty: the default.",
    )
    queues = _AnyQueueField(
        label="Queues",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Drained in priority order.",
    )

    # DrainOptionError.field (the endpoint's spelling) -> this form's field
    FIELDS = {
        "maxDurationMs": "max_duration_ms",
        "maxConcurrentQueues": "max_concurrent_queues",
        "queues": "queues",
    }

    def __init__(self, *args: Any, enabled: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["queues"].choices = [(name, name) for name in enabled]

    def option_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "max_duration_ms": data["max_duration_ms"] or None,
            "max_concurrent_queues": data["max_concurrent_queues"] or None,
            "queues": list(data["queues"]),
        }

    def add_option_error(self, exc: DrainOptionError) -> None:
        self.add_error(self.FIELDS.get(exc.field), exc.message)


# The run page lists this many of the run's jobs (in the order they ended) and
# links to the job records list for all of them; the Problems section names
# this many crashed jobs.
RUN_JOBS_SHOWN = 200
CRASHED_JOBS_SHOWN = 20


def _run_jobs_url(run: DrainRun, status: str = "") -> str:
    """The job records list filtered to this run (and one outcome)."""
    url = f"{reverse('admin:ops_jobrecord_changelist')}?run={run.pk}"
    return f"{url}&status__exact={status}" if status else url


def _run_jobs_context(request: HttpRequest, run: DrainRun) -> dict[str, Any]:
    """The run page's jobs table: its job records, from the database only
    (2 queries: the outcome counts, the first RUN_JOBS_SHOWN rows)."""
    if not request.user.has_perm("ops.view_jobrecord"):
        return {"run_jobs_visible": False}
    all_url = _run_jobs_url(run)
    # order_by(): the model's ordering would otherwise join the GROUP BY.
    counts = {
        row["status"]: row["n"]
        for row in run.jobs.order_by().values("status").annotate(n=Count("pk"))
    }
    outcomes = [
        {
            "label": status.value,
            "count": counts[status.value],
            "url": _run_jobs_url(run, status.value),
        }
        for status in JobRecord.Status
        if counts.get(status.value)
    ]
    rows = [
        {"job": job, "colour": JOB_STATUS_COLOURS.get(job.status, "#6b7280")}
        for job in run.jobs.order_by("id")[:RUN_JOBS_SHOWN]
    ]
    return {
        "run_jobs_visible": True,
        "run_jobs": rows,
        "run_jobs_total": sum(counts.values()),
        "run_job_outcomes": outcomes,
        "run_jobs_url": all_url,
    }


def _default_options(enabled: list[str]) -> dict[str, Any]:
    """What the form starts with: the defaults parse_options would apply."""
    return {
        "max_duration_ms": settings.DRAIN_MAX_DURATION_MS,
        "max_concurrent_queues": min(
            settings.DRAIN_MAX_CONCURRENT_QUEUES, max(1, len(enabled))
        ),
        "queues": enabled,
    }


@admin.register(DrainRun)
class DrainRunAdmin(BoundedListMixin, IndexedSearchMixin, admin.ModelAdmin):
    # Seven narrow columns: the list fits at 1366 px beside the navigation
    # and the filters (tests/console/test_e2e_drain_now.py).
    list_display = (
        "started_at",
        "status_badge",
        "trigger_code",
        "requested",
        "jobs",
        "duration",
        "commands",
    )
    # "deadline hit" finds the runs stopped at their time budget whatever their
    # status (failed jobs win over the deadline: DrainRun's docstring).
    # A year of runs (issue 15): a month filter from two indexed lookups
    # instead of the date hierarchy's DISTINCT over the table, a bounded count
    # and pages (BoundedListMixin), sorts only where an index serves them.
    list_filter = (
        "status",
        "trigger",
        "deadline_hit",
        "started",
        month_filter("started"),
    )
    list_select_related = ("requested_by",)
    sortable_by = ("started_at", "jobs", "commands")
    # The caller holds the console user's name too ("admin <user>").
    search_fields = ("caller",)
    search_contains = ("caller",)
    search_uuid = "public_id"
    # A substring is looked for among the newest runs of the filtered list,
    # along the started index (IndexedSearchMixin); a run id in any month.
    search_scope = 20_000
    search_scope_field = "started"
    search_help_text = (
        "A run id (any run), or part of the caller (IP, host, user; 3 characters "
        "or more) among the newest 20,000 runs the filters select (10 weeks at a "
        "5-minute cron): choose a month to search an older one."
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "public_id",
                    "status_badge",
                    "trigger",
                    "requested_by",
                    "caller",
                    "credential",
                    "started",
                    "finished",
                    "duration_ms",
                )
            },
        ),
        (
            "Results",
            {
                "fields": (
                    "total_processed",
                    "total_failed",
                    "queue_results_table",
                    "redis_commands",
                    "deadline_text",
                    "recovered_jobs",
                )
            },
        ),
        ("Options", {"fields": ("params_json", "clamped_info")}),
        (
            "Problems",
            {"fields": ("error_code", "error", "crashed_jobs", "blocked_by_link")},
        ),
        (
            "Internals",
            {
                "classes": ("collapse",),
                "fields": ("worker_prefix", "lease_expires", "progress_at"),
            },
        ),
    )
    # A run is a record: every field shown is read-only.
    readonly_fields = tuple(f for _, opts in fieldsets for f in opts["fields"])

    # Runs are records of what happened: only the drain engine writes them.
    def has_delete_permission(
        self, request: HttpRequest, obj: DrainRun | None = None
    ) -> bool:
        return False  # history is a record: retention prunes it, nobody else

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: DrainRun | None = None
    ) -> bool:
        return False

    @admin.display(description="started", ordering="started")
    def started_at(self, obj: DrainRun) -> SafeString:
        # Compact and to the second: runs come every few minutes.
        return format_html(
            "{}", timezone.localtime(obj.started).strftime("%Y-%m-%d %H:%M:%S")
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: DrainRun) -> SafeString:
        # The short code keeps the column narrow; the label is the tooltip.
        badge = format_html(
            '<span class="ops-badge ops-status-{}" style="background:{}" '
            'title="{}">{}</span>',
            obj.status,
            STATUS_COLOURS.get(obj.status, "#6b7280"),
            obj.get_status_display(),
            obj.status,
        )
        if obj.deadline_hit and obj.status != DrainRun.Status.DEADLINE:
            # Failed jobs win over the deadline (DrainRun's docstring): say
            # both here rather than in a column of its own.
            return format_html(
                '{} <span class="ops-deadline-note" title="{}">{}</span>',
                badge,
                "It also stopped at its time budget with jobs left.",
                "+ deadline",
            )
        return badge

    # None renders as the admin's empty value ("-").
    @admin.display(description="requested by")
    def requested(self, obj: DrainRun) -> SafeString | None:
        if obj.requested_by is not None:
            return format_html("{}", obj.requested_by.get_username())
        return format_html("{}", obj.caller) if obj.caller else None

    # The one human format for times (ops/humanize.py); the exact milliseconds
    # are the tooltip (and the JSON's durationMs).
    @admin.display(description="took")
    def duration(self, obj: DrainRun) -> SafeString | None:
        ms = obj.duration_ms
        if ms is None:
            return None
        return format_html('<span title="{} ms">{}</span>', ms, human_ms(ms))

    # A read-only field shows None as "None", a list cell as "-": say "-" here.
    @admin.display(description="duration")
    def duration_ms(self, obj: DrainRun) -> SafeString:
        return self.duration(obj) or self.get_empty_value_display()

    @admin.display(description="trigger", ordering="trigger")
    def trigger_code(self, obj: DrainRun) -> SafeString:
        # The short code keeps the column narrow; the label is the tooltip.
        return format_html(
            '<span title="{}">{}</span>', obj.get_trigger_display(), obj.trigger
        )

    # Short headers: the list must fit beside the filter sidebar.
    @admin.display(description="jobs", ordering="total_processed")
    def jobs(self, obj: DrainRun) -> SafeString:
        """Jobs run, and below, in red, how many of them failed."""
        if obj.total_failed:
            return format_html(
                '{}{}<strong class="ops-alert">{} failed</strong>',
                obj.total_processed,
                LINE_BREAK,
                obj.total_failed,
            )
        return format_html("{}", obj.total_processed)

    @admin.display(description="Redis cmds", ordering="redis_commands")
    def commands(self, obj: DrainRun) -> SafeString:
        return format_html("{}", obj.redis_commands)

    # Words, not the admin's boolean icons: "no" is the good outcome here, and
    # a red cross would say the opposite.
    @admin.display(description="deadline hit")
    def deadline_text(self, obj: DrainRun) -> str:
        if obj.deadline_hit:
            return "Yes: it stopped at its time budget (see what was left per queue)."
        return "No"

    @admin.display(description="per queue")
    def queue_results_table(self, obj: DrainRun) -> SafeString:
        results = obj.queue_results or {}
        if not results:
            return format_html("{}", "No queue was drained.")
        # Drain order first (params), then anything else the run recorded.
        order = [q for q in (obj.params or {}).get("queues", []) if q in results]
        order += sorted(set(results) - set(order))
        rows = format_html_join(
            "\n",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    name,
                    results[name].get("processed", 0),
                    results[name].get("failed", 0),
                    results[name].get("remaining", 0),
                )
                for name in order
            ),
        )
        return format_html(
            '<table class="ops-queue-results"><thead><tr><th>queue</th>'
            "<th>processed</th><th>failed</th><th>remaining</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="parameters")
    def params_json(self, obj: DrainRun) -> SafeString:
        return format_html(
            '<pre class="ops-json">{}</pre>',
            json.dumps(obj.params or {}, indent=2, sort_keys=True),
        )

    @admin.display(description="clamped")
    def clamped_info(self, obj: DrainRun) -> SafeString:
        clamped = (obj.params or {}).get("clamped") or {}
        if not clamped:
            return format_html("{}", "Nothing was clamped.")
        return format_html(
            "{}",
            format_html_join(
                LINE_BREAK,
                "{}: requested {}, applied {}",
                (
                    (name, values.get("requested"), values.get("applied"))
                    for name, values in sorted(clamped.items())
                ),
            ),
        )

    @admin.display(description="crashed jobs")
    def crashed_jobs(self, obj: DrainRun) -> SafeString:
        """Jobs this run failed as abandoned (their worker process died or was
        killed at the hard deadline), with the reason. Database only."""
        crashed = list(
            obj.jobs.filter(status=JobRecord.Status.ABANDONED)
            .order_by("id")
            .values_list("job_id", "queue", "exc_message")[: CRASHED_JOBS_SHOWN + 1]
        )
        if not crashed:
            return self.get_empty_value_display()
        lines = format_html_join(
            LINE_BREAK,
            "job <code>{}</code> on {}: {}",
            (
                (job_id, queue, message or "its worker died")
                for job_id, queue, message in crashed[:CRASHED_JOBS_SHOWN]
            ),
        )
        if len(crashed) > CRASHED_JOBS_SHOWN:
            more = format_html(
                '… and more: <a href="{}">every crashed job of this run</a>',
                _run_jobs_url(obj, JobRecord.Status.ABANDONED.value),
            )
            return format_html("{}{}{}", lines, LINE_BREAK, more)
        return lines

    @admin.display(description="blocked by")
    def blocked_by_link(self, obj: DrainRun) -> SafeString:
        if obj.blocked_by is None:
            return self.get_empty_value_display()
        running = DrainRun.objects.filter(public_id=obj.blocked_by).first()
        if running is None:
            return format_html("{} (no longer recorded)", obj.blocked_by)
        return _run_link(running.pk, running)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {**(extra_context or {}), **_drain_links(request)}
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: DrainRun | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(_run_jobs_context(request, obj))
            if obj.status == DrainRun.Status.QUEUED:
                background.fail_stale(obj)  # its process never came: say so
            context["run_live"] = obj.is_active
            context["progress_url"] = reverse(
                "admin:ops_drainrun_progress", args=[obj.pk]
            )
            context["run_summary"] = (
                None if obj.is_active else summary_line(obj, label=True)
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: "<path:object_id>/" would swallow "drain/".
        return [
            path(
                "drain/",
                self.admin_site.admin_view(self.drain_view),
                name="ops_drainrun_drain",
            ),
            path(
                "<int:object_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="ops_drainrun_progress",
            ),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest, object_id: int) -> JsonResponse:
        """A run's counts so far, as JSON, for its page to poll while it runs.
        From its row only: 0 Redis commands. Those who may start a drain may
        follow it, even without the view permission (the test drain)."""
        if not (self.has_view_permission(request) or can_drain(request)):
            raise PermissionDenied
        run = get_object_or_404(DrainRun, pk=object_id)
        if run.status == DrainRun.Status.QUEUED:
            background.fail_stale(run)
        response = JsonResponse(progress_result(run))
        add_never_cache_headers(response)
        return response

    def drain_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the options and a confirmation. POST: start the drain in the
        background and show its run's page, which follows it; while a drain
        runs, say so and show that one instead of starting another."""
        if not can_drain(request):
            raise PermissionDenied
        enabled = enabled_queue_names()
        if request.method == "POST":
            form = DrainForm(request.POST, enabled=enabled)
            if form.is_valid():
                try:
                    options = parse_options(**form.option_values())
                except DrainOptionError as exc:
                    form.add_option_error(exc)
                else:
                    started = background.start(
                        trigger=DrainRun.Trigger.ADMIN,
                        options=options,
                        requested_by=request.user,
                        caller=f"admin {request.user}",
                    )
                    return self._after_start(request, started)
        else:
            form = DrainForm(enabled=enabled, initial=_default_options(enabled))
        return self._render_drain_page(request, form, enabled)

    def _after_start(
        self, request: HttpRequest, started: background.Start
    ) -> HttpResponseRedirect:
        run = started.run or started.running
        if started.run is None:
            self.message_user(
                request,
                format_html(
                    "A drain is already running{}: no second drain was started.",
                    format_html(" ({})", _run_link(run.pk, run)) if run else "",
                ),
                messages.WARNING,
            )
        else:
            params = started.run.params
            self.log_addition(
                request,
                started.run,
                f"Drain now: started in the background "
                f"(queues {', '.join(params['queues']) or '-'}; "
                f"time budget {params['maxDurationMs']} ms)",
            )
            self.message_user(
                request,
                "The drain runs in the background; this page follows it.",
                messages.INFO,
            )
        if run is not None and self.has_view_permission(request, run):
            return HttpResponseRedirect(
                reverse("admin:ops_drainrun_change", args=[run.pk])
            )
        return HttpResponseRedirect(reverse("admin:index"))

    def _render_drain_page(
        self, request: HttpRequest, form: DrainForm, enabled: list[str]
    ) -> TemplateResponse:
        # Database only: showing this page must cost no Redis command.
        busy, holder = background.running_drain()
        lease = Lease.objects.filter(name=DRAIN_LEASE).first()
        if lease is not None and not lease.is_held():
            lease = None
        context = {
            **self.admin_site.each_context(request),
            "title": "Drain now",
            "opts": self.opts,
            "form": form,
            "enabled": enabled,
            "busy": busy,
            "lease": lease,
            "holder": holder,
            "has_view_permission": self.has_view_permission(request),
            "job_grace_ms": settings.DRAIN_JOB_GRACE_MS,
        }
        return TemplateResponse(request, "admin/ops/drainrun/drain.html", context)


# --- The drain lease ----------------------------------------------------------


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    """Who holds the drain lease (a drain running now, or a dead one's row)."""

    list_display = ("name", "holder_link", "held", "expires_at", "acquired_at")
    readonly_fields = ("name", "holder", "expires_at", "acquired_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Lease]:
        # The holder's run id by annotation: no query per row.
        holder_run = DrainRun.objects.filter(public_id=OuterRef("holder"))
        return (
            super()
            .get_queryset(request)
            .annotate(holder_run_pk=Subquery(holder_run.values("pk")[:1]))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: Lease | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: Lease | None = None
    ) -> bool:
        return False

    @admin.display(description="holder")
    def holder_link(self, obj: Lease) -> SafeString | None:
        if obj.holder is None:
            return None
        return _run_link(getattr(obj, "holder_run_pk", None), obj.holder)

    @admin.display(description="held now", boolean=True)
    def held(self, obj: Lease) -> bool:
        return obj.is_held()
