"""Admin: always-on worker processes and the worker mode page.

Listing workers reads the database only (supervisors keep WorkerProcess rows
fresh). The mode page reads RQ's worker registry on demand — one SMEMBERS,
stated on the page — to show RQ workers this console did not start.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from ops import runtime
from ops.console.admin.lists import BoundedListMixin, IndexedSearchMixin
from ops.models import ConsoleSettings, Source, WorkerProcess
from ops.usage import incidents
from ops.workers import consumers

MODE_PERMISSION = "ops.change_worker_mode"
# How far back the host filter looks for hosts.
RECENT_HOSTS_DAYS = 30

STATE_COLOURS = {
    WorkerProcess.State.STARTING: "#2563eb",
    WorkerProcess.State.IDLE: "#15803d",
    WorkerProcess.State.BUSY: "#b45309",
    WorkerProcess.State.STOPPED: "#6b7280",
    WorkerProcess.State.CRASHED: "#b91c1c",
}


class ModeForm(forms.Form):
    worker_mode = forms.ChoiceField(
        choices=ConsoleSettings.WorkerMode.choices,
        required=False,
        label="Worker mode",
        help_text="Applied by the console's supervisor within a minute.",
    )


class RecentHostFilter(admin.SimpleListFilter):
    """Hosts of the processes started in the last RECENT_HOSTS_DAYS (the
    (started, id) index: a range of recent rows, whatever the history)."""

    title = "host"
    parameter_name = "host"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        since = timezone.now() - timedelta(days=RECENT_HOSTS_DAYS)
        hosts = (
            WorkerProcess.objects.filter(started__gte=since)
            .order_by()
            .values_list("host", flat=True)
            .distinct()
        )
        return [(host, host) for host in sorted(hosts)]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        return queryset.filter(host=value) if value else queryset


@admin.register(WorkerProcess)
class WorkerProcessAdmin(BoundedListMixin, IndexedSearchMixin, admin.ModelAdmin):
    # Short cells so that the list fits 1366 px beside the navigation and the
    # filters: the process (host:pid, role) under the name, the job id
    # shortened, one time (the heartbeat); the full values are on the row's
    # page and in the cells' titles. Long names wrap (change_list.html).
    list_display = [
        "worker",
        "state_badge",
        "queue_list",
        "job_short",
        "heartbeat_short",
        "restarts",
    ]
    # The host filter offers the hosts of recent processes only: Django's own
    # ("host") is a DISTINCT over every row ever recorded (issue 15).
    list_filter = ["state", "role", RecentHostFilter]
    # A substring of the name, host or job id among the newest processes
    # (IndexedSearchMixin: a range of the started index, not a scan of all of
    # them).
    search_fields = ["name", "host", "current_job"]
    search_contains = ("name", "host", "current_job")
    search_scope = 1_000
    search_scope_field = "started"
    search_help_text = (
        "Part of a worker's name, host or current job id (3 characters or "
        "more), among the newest 1,000 worker processes the filters select."
    )
    # A row per process start: the newest 1,000 are what an SRE looks at;
    # the filters reach older ones.
    list_max_pages = 10
    show_full_result_count = False
    # Sorted by start only (the (started, id) index, issue 15).
    sortable_by = ["started"]
    readonly_fields = [f.name for f in WorkerProcess._meta.fields]
    change_list_template = "admin/ops/workerprocess/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the record of what ran: retention prunes it, nobody else

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: WorkerProcess) -> str:
        return format_html(
            '<span class="ops-badge" style="background:{}">{}</span>',
            STATE_COLOURS.get(obj.state, "#6b7280"),
            obj.state,
        )

    @admin.display(description="queues")
    def queue_list(self, obj: WorkerProcess) -> str:
        return format_html("{}", ", ".join(obj.queues))

    @admin.display(description="worker", ordering="name")
    def worker(self, obj: WorkerProcess) -> str:
        return format_html(
            '{}<br><span class="quiet" title="{}">{}:{} · {}</span>',
            obj.name,
            obj.get_role_display(),
            obj.host,
            obj.pid,
            obj.role,
        )

    @admin.display(description="current job")
    def job_short(self, obj: WorkerProcess) -> str:
        return format_html(
            '<span title="{}">{}</span>',
            obj.current_job,
            Truncator(obj.current_job).chars(14),
        )

    @admin.display(description="heartbeat", ordering="heartbeat")
    def heartbeat_short(self, obj: WorkerProcess) -> str:
        return _short_time(obj.heartbeat)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "mode/",
                self.admin_site.admin_view(self.mode_view),
                name="ops_workerprocess_mode",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {
            "worker_mode": runtime.worker_mode(),
            "consumption_warnings": consumers.double_consumption_warnings(),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=extra)

    def mode_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        can_switch = request.user.has_perm(MODE_PERMISSION)
        row = runtime.console_settings()
        if request.method == "POST":
            if not can_switch:
                raise PermissionDenied
            form = ModeForm(request.POST)
            if form.is_valid():
                before = row.worker_mode or "(from WORKER_INPROCESS)"
                row.worker_mode = form.cleaned_data["worker_mode"]
                row.updated = timezone.now()
                row.updated_by = request.user
                row.save(update_fields=["worker_mode", "updated", "updated_by"])
                # An operator action: it leaves an entry in the admin's log.
                self.log_change(
                    request,
                    row,
                    f"Worker mode set to {row.worker_mode or '(from WORKER_INPROCESS)'}"
                    f" (was {before}).",
                )
                messages.success(
                    request,
                    f"Worker mode is now {runtime.worker_mode(row)}; the console's "
                    "supervisor applies it within a minute.",
                )
                return HttpResponseRedirect(reverse("admin:ops_workerprocess_mode"))
        else:
            form = ModeForm(initial={"worker_mode": row.worker_mode})

        registered = _registered_workers()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Worker mode",
            "form": form,
            "can_switch": can_switch,
            "effective_mode": runtime.worker_mode(row),
            "env_default": "always-on" if settings.WORKER_INPROCESS else "cron-drain",
            "stored_mode": row.worker_mode,
            "live_workers": consumers.live_workers(),
            "warnings": consumers.double_consumption_warnings(),
            "registered": registered,
        }
        return TemplateResponse(request, "admin/ops/workerprocess/mode.html", context)


def _short_time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return format_html(
        '<span title="{}">{}</span>',
        f"{moment:%Y-%m-%d %H:%M:%S} UTC",
        f"{timezone.localtime(moment):%m-%d %H:%M}",
    )


def _registered_workers() -> consumers.RegisteredWorkers:
    names: list[str] = []
    with incidents.guarded_read(Source.CONSOLE) as read:
        if read.client is not None:
            names = consumers.registered_rq_workers(read.client)
    if read.problem():
        return consumers.RegisteredWorkers(
            [], [], read.meter.billed, error=read.problem()
        )
    ours, foreign = consumers.split_ours(names)
    return consumers.RegisteredWorkers(ours, foreign, read.meter.billed)
