"""Admin: the job records, one row per job a drain ran (read only).

Database only: the list and its filters cost no Redis command. The table grows
by a row per job, so the list counts nothing it does not have to (no full
result count) and the queue filter offers the Queue rows, never a DISTINCT
over every record. `?run=<pk>` lists one drain run's jobs (the run page's
"all N jobs of this run").
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ops.console.admin.common import JOB_STATUS_COLOURS
from ops.console.admin.lists import BoundedListMixin, IndexedSearchMixin
from ops.humanize import duration_ms as human_ms
from ops.models import DrainRun, JobRecord, JobStopRequest, Queue


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        names = Queue.objects.order_by("name").values_list("name", flat=True)
        return [(name, name) for name in names]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[JobRecord]
    ) -> QuerySet[JobRecord]:
        value = self.value()
        return queryset.filter(queue=value) if value else queryset


def _run_pk(value: str | None) -> int | None:
    """The run's primary key in `?run=`, None for anything that is not one."""
    if value and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


class RunFilter(admin.SimpleListFilter):
    """`?run=<pk>`: the jobs of one drain run (the run page links here). No
    choices of its own (one per run would be a list as long as the history):
    it shows only while a run is chosen, naming it."""

    title = "drain run"
    parameter_name = "run"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        # Only a filter with a choice filters the list: a bad value gets one
        # too, so that it shows no jobs rather than all of them.
        value, pk = self.value(), _run_pk(self.value())
        if value is None:
            return []
        if pk is None:
            return [(value, "no such run")]
        run = DrainRun.objects.filter(pk=pk).first()
        if run is None:
            return [(value, f"run #{pk} (no longer recorded)")]
        started = timezone.localtime(run.started).strftime("%Y-%m-%d %H:%M:%S")
        return [(value, f"{started} ({run.status})")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[JobRecord]
    ) -> QuerySet[JobRecord]:
        if self.value() is None:
            return queryset
        pk = _run_pk(self.value())
        return queryset.none() if pk is None else queryset.filter(run_id=pk)


@admin.register(JobRecord)
class JobRecordAdmin(BoundedListMixin, IndexedSearchMixin, admin.ModelAdmin):
    list_display = (
        "job_id",
        "queue",
        "func",
        "status_badge",
        "started_at",
        "duration",
        "exception",
        "run_link",
    )
    list_filter = ("status", QueueFilter, RunFilter)
    # Indexed searches only (issue 15): the exact RQ job id, or part of the
    # exception message (a trigram index on PostgreSQL).
    search_fields = ("job_id", "exc_message")
    search_exact = ("job_id",)
    search_contains = ("exc_message",)
    # A substring is looked for among the newest records of the filtered
    # list (IndexedSearchMixin: a primary-key range); a job id in any month.
    search_scope = 20_000
    search_help_text = (
        "An RQ job id (any record), or part of an exception message (3 characters "
        "or more) among the newest 20,000 job records the filters select "
        "(narrow by status, queue or run to reach older ones)."
    )
    # Each sortable column has a (column, id) index (ops/models.py).
    sortable_by = ("duration",)
    # The page's runs in one query (a prefetch), not a join: through a deep
    # OFFSET a join is paid for every skipped row too (issue 15: 51 ms of the
    # last page's 117 ms at 10,000,000 records, docs/benchmarks.md).
    list_select_related = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobRecord]:
        return super().get_queryset(request).prefetch_related("run")

    fields = (
        "job_id",
        "queue",
        "func",
        "status_badge",
        "started",
        "ended",
        "duration",
        "exc_type",
        "exc_message",
        "run_link",
        "worker",
        "created",
    )
    readonly_fields = fields

    # Records of what happened: only the drain engine writes them, and the
    # retention prune deletes them.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: JobRecord | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: JobRecord | None = None
    ) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: JobRecord) -> SafeString:
        return format_html(
            '<span class="ops-badge ops-status-{}" style="background:{}" '
            'title="{}">{}</span>',
            obj.status,
            JOB_STATUS_COLOURS.get(obj.status, "#6b7280"),
            obj.get_status_display(),
            obj.status,
        )

    @admin.display(description="started", ordering="started")
    def started_at(self, obj: JobRecord) -> SafeString | None:
        if obj.started is None:
            return None
        return format_html(
            "{}", timezone.localtime(obj.started).strftime("%Y-%m-%d %H:%M:%S")
        )

    # The one human format for times (ops/humanize.py), the exact ms as tooltip.
    @admin.display(description="took", ordering="duration_ms")
    def duration(self, obj: JobRecord) -> SafeString | None:
        ms = obj.duration_ms
        if ms is None:
            return None
        return format_html('<span title="{} ms">{}</span>', ms, human_ms(ms))

    @admin.display(description="exception", ordering="exc_type")
    def exception(self, obj: JobRecord) -> SafeString | None:
        if not obj.exc_type:
            return None
        return format_html(
            '<span title="{}">{}</span>',
            Truncator(obj.exc_message).chars(300),
            obj.exc_type,
        )

    # The run by its start (ids are long); its id is the tooltip. "-" without
    # one (a read-only field would show None as "None").
    @admin.display(description="run")
    def run_link(self, obj: JobRecord) -> SafeString:
        run = obj.run
        if run is None:
            return self.get_empty_value_display()
        return format_html(
            '<a href="{}" title="{}">{}</a>',
            reverse("admin:ops_drainrun_change", args=[run.pk]),
            run,
            timezone.localtime(run.started).strftime("%Y-%m-%d %H:%M:%S"),
        )


@admin.register(JobStopRequest)
class JobStopRequestAdmin(admin.ModelAdmin):
    """Who asked which job to stop, and which process stopped it: a record.
    Requests are made from a queue's started-jobs page (queue_jobs.py)."""

    # Six columns fit 1366 px; the worker that stopped the job (a long name)
    # is on the request's own page.
    list_display = (
        "job_id",
        "queue",
        "outcome",
        "requested_by",
        "requested_at",
        "handled_at",
    )
    list_filter = ("outcome", "queue")
    list_select_related = ("requested_by",)
    # The UniqueConstraint's index leads with job_id: exact lookups only.
    search_fields = ("=job_id",)
    fields = (*list_display, "handled_by")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: JobStopRequest | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: JobStopRequest | None = None
    ) -> bool:
        return False
