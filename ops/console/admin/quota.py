"""The Redis quota in the console: the usage rows, the quota incidents, the
provider's figures and the quota page (usage against the budget, a daily chart
with the projection, usage by source and by whom, the provider's figure and
its form, and the mode advisor).

Looking at any of it costs database queries only: every figure comes from
CommandUsage, DrainRun and ProviderUsageReading rows (ops/usage/quota.py,
ops/usage/advisor.py, ops/usage/provider.py). The one exception is the
server's own counters, read with one INFO command (not billed) on each view
when QUOTA_SERVER_STATS=1, or once when a user presses the page's button.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ops.console.admin.lists import BoundedListMixin
from ops.models import CommandUsage, ProviderUsageReading, QuotaIncident
from ops.usage import advisor, incidents, provider, quota

QUOTA_URL_NAME = "ops_commandusage_quota"


def quota_url() -> str:
    return reverse(f"admin:{QUOTA_URL_NAME}")


# --- Usage rows --------------------------------------------------------------------


@admin.register(CommandUsage)
class CommandUsageAdmin(BoundedListMixin, admin.ModelAdmin):
    """The hourly usage rows, read-only: only the metering recorder writes them."""

    list_display = ("hour_cell", "source", "commands_cell", "unbilled_cell")
    list_filter = ("source", "hour")
    # A row per source per hour (issue 15): no date hierarchy (a DISTINCT over
    # the table) and a bounded count (BoundedListMixin); sorted by hour only.
    sortable_by = ("hour_cell",)
    list_per_page = 100
    readonly_fields = ("hour", "source", "commands", "unbilled")
    change_list_template = "admin/ops/includes/quota_usage_change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: CommandUsage | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: CommandUsage | None = None
    ) -> bool:
        return False

    @admin.display(description="hour (UTC)", ordering="hour")
    def hour_cell(self, obj: CommandUsage) -> SafeString:
        return format_html("{}", obj.hour.astimezone(UTC).strftime("%Y-%m-%d %H:00"))

    @admin.display(description="billable commands", ordering="commands")
    def commands_cell(self, obj: CommandUsage) -> SafeString:
        return format_html("{}", f"{obj.commands:,}")

    @admin.display(description="unbilled (AUTH, INFO, …)", ordering="unbilled")
    def unbilled_cell(self, obj: CommandUsage) -> SafeString:
        return format_html("{}", f"{obj.unbilled:,}")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {**(extra_context or {}), "quota_url": quota_url()}
        )

    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: "<path:object_id>/" would swallow "quota/".
        return [
            path(
                "quota/",
                self.admin_site.admin_view(self.quota_view),
                name=QUOTA_URL_NAME,
            ),
            *super().get_urls(),
        ]

    def quota_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the page. POST: record the provider's figure an SRE read on
        its dashboard (needs ops.add_providerusagereading, not only view)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        may_record = may_record_reading(request)
        form = ProviderReadingForm()
        if request.method == "POST":
            if not may_record:
                raise PermissionDenied
            form = ProviderReadingForm(request.POST)
            if form.is_valid():
                reading = provider.record_manual(**form.values(), by=request.user)
                # An operator action: it leaves an entry in the admin's log.
                self.log_addition(
                    request, reading, f"Entered the provider's figure: {reading}."
                )
                self.message_user(
                    request,
                    f"Recorded the provider's {reading.kind} figure "
                    f"{reading.used:,} at {reading.at:%Y-%m-%d %H:%M} UTC.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(request.path)
        return self._render(request, form, may_record)

    def _render(
        self, request: HttpRequest, form: ProviderReadingForm, may_record: bool
    ) -> TemplateResponse:
        now = quota.current_time()
        # The server's own count costs one INFO (not billed): on every view
        # only when QUOTA_SERVER_STATS is on, else when the button asked.
        asked = request.method == "GET" and request.GET.get("server_stats") == "1"
        stats = (
            quota.read_server_stats(now, asked=asked)
            if settings.QUOTA_SERVER_STATS or asked
            else None
        )
        advice = advisor.advice_now(now)
        report = quota.report(now, costs=advice.costs, stats=stats)
        context = {
            **self.admin_site.each_context(request),
            "title": "Redis quota",
            "opts": self.opts,
            "report": report,
            "summary": report.summary,
            "truth": report.truth,
            "advice": advice,
            "chart": usage_chart(report),
            "progress": progress_bar(report.summary),
            "period_start_day": settings.QUOTA_PERIOD_START_DAY,
            "hours_left": report.summary.period.hours_left(now),
            "incident": incidents.open_incident(),
            "stats": stats,
            "spent_billed": stats.billed_spent if stats else 0,
            "spent_unbilled": stats.unbilled_spent if stats else 0,
            "has_usage_view_permission": self.has_view_permission(request),
            "incident_list_url": reverse("admin:ops_quotaincident_changelist"),
            "readings": list(ProviderUsageReading.objects.all()[:5]),
            "readings_url": reverse("admin:ops_providerusagereading_changelist"),
            "may_view_readings": request.user.has_perm("ops.view_providerusagereading"),
            "reading_form": form,
            "may_record": may_record,
        }
        return TemplateResponse(request, "admin/ops/quota.html", context)


# --- The provider's figures -----------------------------------------------------

RECORD_READING_PERMISSION = "ops.add_providerusagereading"
# The largest figure the form takes: far beyond any plan, inside a BigInteger.
MAX_FIGURE = 10**15


def may_record_reading(request: HttpRequest) -> bool:
    return request.user.has_perm(RECORD_READING_PERMISSION)


class ProviderReadingForm(forms.Form):
    """The figure an SRE reads on the provider's dashboard."""

    used = forms.IntegerField(
        min_value=0,
        max_value=MAX_FIGURE,
        label="Commands used",
        help_text="The provider's count of billed commands.",
    )
    kind = forms.ChoiceField(
        choices=ProviderUsageReading.Kind.choices,
        initial=ProviderUsageReading.Kind.MONTHLY,
        label="Counted over",
    )
    limit = forms.IntegerField(
        min_value=1,
        max_value=MAX_FIGURE,
        required=False,
        label="Limit",
        help_text="Optional: the plan's limit, as the dashboard shows it.",
    )
    at = forms.DateTimeField(
        required=False,
        label="As of (UTC)",
        help_text="When the dashboard showed it, e.g. 2025-03-10 12:00. Empty: now.",
    )
    note = forms.CharField(max_length=300, required=False, label="Note")

    def clean_at(self) -> Any:
        at = self.cleaned_data.get("at")
        # A figure from the future would pass for the newest one for days.
        if at is not None and at > timezone.now() + timedelta(minutes=5):
            raise forms.ValidationError("This moment is in the future.")
        return at

    def values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "used": data["used"],
            "kind": data["kind"],
            "limit": data["limit"],
            "at": data["at"],
            "note": data["note"],
        }


@admin.register(ProviderUsageReading)
class ProviderUsageReadingAdmin(admin.ModelAdmin):
    """The provider's figures, as history: recorded from quota errors and from
    the quota page's form, never edited or deleted here."""

    list_display = ("at", "kind", "used_cell", "limit", "origin", "entered_by", "note")
    list_filter = ("kind", "origin")
    readonly_fields = (
        "at",
        "kind",
        "used",
        "limit",
        "origin",
        "entered_by",
        "note",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the quota page's form adds, with its own checks

    def has_change_permission(
        self, request: HttpRequest, obj: ProviderUsageReading | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: ProviderUsageReading | None = None
    ) -> bool:
        return False

    @admin.display(description="used", ordering="used")
    def used_cell(self, obj: ProviderUsageReading) -> SafeString:
        return format_html("{}", f"{obj.used:,}")


# --- Quota incidents ---------------------------------------------------------------


class _IncidentState(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin
    ) -> list[tuple[str, str]]:
        return [("open", "Open"), ("closed", "Closed")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[QuotaIncident]
    ) -> QuerySet[QuotaIncident]:
        if self.value() == "open":
            return queryset.filter(closed_at__isnull=True)
        if self.value() == "closed":
            return queryset.filter(closed_at__isnull=False)
        return queryset


@admin.register(QuotaIncident)
class QuotaIncidentAdmin(admin.ModelAdmin):
    """Incidents are opened and closed by the code that meets the quota error
    (ops/usage/incidents.py); the console only shows them."""

    list_display = (
        "opened",
        "state_badge",
        "count",
        "source",
        "error_excerpt",
        "last_seen_at",
        "probes",
        "closed_at",
    )
    list_filter = (_IncidentState, "source")
    fields = (
        "state_badge",
        "opened_at",
        "last_seen_at",
        "closed_at",
        "count",
        "source",
        "error_text",
        "last_probe_at",
        "probes",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: QuotaIncident | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: QuotaIncident | None = None
    ) -> bool:
        return False

    @admin.display(description="opened", ordering="opened_at")
    def opened(self, obj: QuotaIncident) -> SafeString:
        return format_html(
            "{}", obj.opened_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        )

    @admin.display(description="state")
    def state_badge(self, obj: QuotaIncident) -> SafeString:
        colour, label = ("#b91c1c", "open") if obj.is_open else ("#15803d", "closed")
        return format_html(
            '<span class="ops-badge" style="background:{}">{}</span>', colour, label
        )

    @admin.display(description="last error")
    def error_excerpt(self, obj: QuotaIncident) -> SafeString:
        return format_html("{}", Truncator(obj.last_error).chars(80))

    @admin.display(description="last error")
    def error_text(self, obj: QuotaIncident) -> SafeString:
        return format_html('<pre class="ops-json">{}</pre>', obj.last_error or "-")


# --- The progress bar and the chart ---------------------------------------------


@dataclass(frozen=True)
class Progress:
    used: float  # percent of the bar's width
    projected: float
    marks: list[float]


def progress_bar(summary: quota.Summary) -> Progress:
    def width(percent: float) -> float:
        return round(max(0.0, min(100.0, percent)), 2)

    return Progress(
        used=width(summary.used_percent),
        projected=width(summary.projected_percent),
        marks=[width(t) for t in summary.thresholds if t < 100],
    )


# --- The chart ---------------------------------------------------------------------
# Drawn here as plain numbers and rendered by a template as inline SVG: no
# JavaScript, no CDN, and it prints.

CHART_WIDTH = 760
CHART_HEIGHT = 300
PLOT_LEFT = 64
PLOT_RIGHT = 20
PLOT_TOP = 18
PLOT_BOTTOM = 40
LABEL_HEIGHT = 11  # px of an 11px label


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str
    day: str = ""


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    rects: list[Rect]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    budget_y: float
    budget_label: str
    thresholds: list[Tick]
    now_x: float
    projection: Line | None
    projection_label: str
    projection_label_x: float
    projection_label_y: float
    runs_out: Tick | None
    description: str


def _threshold_ticks(head: quota.Summary, y_at: Callable[[float], float]) -> list[Tick]:
    """Dotted lines at the warning thresholds. A label goes under its line;
    one that would overlap the label above it (or the budget line) is left
    out, the line stays (the legend names them)."""
    ticks = []
    taken = y_at(head.budget)  # the lowest pixel used by a label so far
    for percent in sorted((t for t in head.thresholds if t < 100), reverse=True):
        y = y_at(head.budget * percent / 100)
        label = f"{percent} %" if y >= taken + 2 else ""
        if label:
            taken = y + LABEL_HEIGHT
        ticks.append(Tick(y, label))
    return ticks


def short_number(n: float) -> str:
    """500000 -> 500k, 1250000 -> 1.25M: axis labels must stay narrow."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.3g}"


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def usage_chart(report: quota.Report) -> Chart:
    """Cumulative usage per day (bars), the projection to the period end (a
    dashed line), the budget and the warning thresholds (horizontal lines).

    Bars are cumulative so that they meet the budget line where the budget
    runs out; each bar's darker top is that day's own usage."""
    head = report.summary
    period = head.period
    right = CHART_WIDTH - PLOT_RIGHT
    bottom = CHART_HEIGHT - PLOT_BOTTOM
    plot_w = right - PLOT_LEFT
    plot_h = bottom - PLOT_TOP
    top_value = max(head.budget, head.used)
    # A runaway projection would flatten everything else: show at most twice
    # the budget and say the rest in the label.
    shown_projection = min(head.projected_total, 2 * top_value)
    y_max = max(top_value, shown_projection) * 1.08 or 1.0
    step = _nice_step(y_max)
    y_max = math.ceil(y_max / step) * step

    def x_at(moment: datetime) -> float:
        share = (moment - period.start) / (period.end - period.start)
        return round(PLOT_LEFT + max(0.0, min(1.0, share)) * plot_w, 1)

    def y_at(value: float) -> float:
        return round(bottom - min(value, y_max) / y_max * plot_h, 1)

    day_w = plot_w / len(period.days())
    gap = max(1.0, day_w * 0.15)
    rects: list[Rect] = []
    for day in report.by_day:
        start = datetime(day.day.year, day.day.month, day.day.day, tzinfo=UTC)
        x = x_at(start) + gap / 2
        before = day.cumulative - day.commands
        title = (
            f"{day.day:%Y-%m-%d}: {day.commands:,} commands "
            f"({day.cumulative:,} since the period started)"
        )
        if before > 0:
            rects.append(
                Rect(
                    x,
                    y_at(before),
                    round(day_w - gap, 1),
                    round(bottom - y_at(before), 1),
                    "ops-bar-before",
                    title,
                    f"{day.day:%Y-%m-%d}",
                )
            )
        rects.append(
            Rect(
                x,
                y_at(day.cumulative),
                round(day_w - gap, 1),
                round(y_at(before) - y_at(day.cumulative), 1),
                "ops-bar",
                title,
                f"{day.day:%Y-%m-%d}",
            )
        )

    y_ticks = [
        Tick(y_at(v), short_number(v))
        for v in (i * step for i in range(round(y_max / step) + 1))
    ]
    days = period.days()
    label_every = 5 if len(days) > 20 else 2
    x_ticks = [
        Tick(
            round(x_at(datetime(d.year, d.month, d.day, tzinfo=UTC)) + day_w / 2, 1),
            f"{d:%b} {d.day}",
        )
        for i, d in enumerate(days)
        if i % label_every == 0
    ]

    now_x = x_at(head.now)
    projection = None
    label = ""
    label_x = label_y = 0.0
    if head.now < period.end:
        end_value = head.projected_total
        x2, y2 = x_at(period.end), y_at(end_value)
        if end_value > y_max and end_value > head.used:
            # Clip where the line leaves the plot.
            share = (y_max - head.used) / (end_value - head.used)
            x2 = round(now_x + share * (x_at(period.end) - now_x), 1)
            y2 = y_at(y_max)
        projection = Line(now_x, y_at(head.used), x2, y2)
        label = f"projected {short_number(end_value)} ({head.projected_percent:.0f} %)"
        label_x = min(x2, right - 4)
        label_y = max(PLOT_TOP + 12, y2 - 8)

    runs_out = None
    if report.exhausted_on is not None:
        moment = datetime(
            report.exhausted_on.year,
            report.exhausted_on.month,
            report.exhausted_on.day,
            tzinfo=UTC,
        ) + timedelta(hours=12)
        word = "ran out" if head.exhausted else "runs out"
        runs_out = Tick(
            x_at(moment), f"{word} {report.exhausted_on:%b} {report.exhausted_on.day}"
        )

    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        left=PLOT_LEFT,
        right=right,
        top=PLOT_TOP,
        bottom=bottom,
        rects=rects,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        budget_y=y_at(head.budget),
        budget_label=f"budget {head.budget:,}",
        thresholds=_threshold_ticks(head, y_at),
        now_x=now_x,
        projection=projection,
        projection_label=label,
        projection_label_x=label_x,
        projection_label_y=label_y,
        runs_out=runs_out,
        description=(
            f"{head.used:,} of {head.budget:,} commands used by "
            f"{head.now:%Y-%m-%d %H:%M} UTC; projected {head.projected_total:,} "
            f"by {period.end:%Y-%m-%d}."
        ),
    )
