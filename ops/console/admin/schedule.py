"""The "Schedule" page: the built-in drain schedule and the missed-tick alarm.

ConsoleSettings is a single row, so its admin has no list and no add/delete:
the change list and change form redirect to this page. Looking needs
`view_consolesettings`, changing needs `ops.change_consolesettings`; a change
goes through ops.scheduling.schedule.update_settings, which syncs django-q2's
Schedule rows.

A page view spends at most 2 Redis commands per enabled queue (the backlog
age) and says how many it spent; everything else comes from the database.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ops.models import ConsoleSettings, DrainRun, Source
from ops.queues import enabled_queue_names
from ops.scheduling import alarm, notify, schedule

SCHEDULE_URL_NAME = "ops_consolesettings_schedule"


def alarm_badge(state: str) -> SafeString:
    value = alarm.AlarmState(state)
    return format_html(
        '<span class="ops-badge ops-alarm-{}" style="background:{}" title="{}">'
        "{}</span>",
        value.value,
        alarm.STATE_COLOURS[value],
        value.label,
        value.value,
    )


def _minutes_field(label: str, *, required: bool, help_text: str) -> forms.Field:
    return forms.IntegerField(
        label=label,
        required=required,
        min_value=schedule.MIN_MINUTES,
        max_value=schedule.MAX_MINUTES,
        help_text=help_text,
    )


class ScheduleForm(forms.Form):
    schedule_enabled = forms.BooleanField(
        label="Built-in schedule on",
        required=False,
        help_text="Drain every N minutes from the console's own qcluster "
        "(manage.py qcluster must run). Scheduling itself costs no Redis command; "
        "an idle drain costs one.",
    )
    schedule_minutes = _minutes_field(
        "Every (minutes)",
        required=True,
        help_text=f"{schedule.MIN_MINUTES} to {schedule.MAX_MINUTES}. The next "
        "drain is due this long after a change.",
    )
    expected_interval_minutes = _minutes_field(
        "External scheduler every (minutes)",
        required=False,
        help_text="When an external cron calls the drain endpoint instead: how often "
        "its calls should come. The missed-tick alarm watches it while the "
        "built-in schedule is off.",
    )
    alarm_off = forms.BooleanField(
        label="No missed-tick alarm",
        required=False,
        help_text="With the built-in schedule off: nobody is told when drains stop "
        "arriving. Turning the schedule off does not turn the alarm off; this "
        "does. (With the schedule on, the alarm always watches it.)",
    )
    alarm_grace_minutes = _minutes_field(
        "Alarm grace (minutes)",
        required=False,
        help_text="Late after interval + grace, down after interval + 2 x grace. "
        "Empty: one interval.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if (
            not data.get("schedule_enabled")
            and not data.get("alarm_off")
            and data.get("expected_interval_minutes") is None
            and "expected_interval_minutes" not in self.errors
        ):
            # Two separate choices: the schedule going off must not take the
            # alarm with it unnoticed.
            self.add_error(
                "expected_interval_minutes",
                "With the built-in schedule off, the missed-tick alarm needs the "
                'external scheduler\'s interval; or tick "No missed-tick alarm".',
            )
        return data

    def values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "enabled": bool(data["schedule_enabled"]),
            "minutes": data["schedule_minutes"],
            "expected_interval_minutes": data["expected_interval_minutes"],
            "alarm_grace_minutes": data["alarm_grace_minutes"],
            "alarm_off": bool(data["alarm_off"]),
        }


def _initial(row: ConsoleSettings) -> dict[str, Any]:
    return {
        "schedule_enabled": row.schedule_enabled,
        "schedule_minutes": row.schedule_minutes,
        "expected_interval_minutes": row.expected_interval_minutes,
        "alarm_grace_minutes": row.alarm_grace_minutes,
        "alarm_off": not row.schedule_enabled and not row.expected_interval_minutes,
    }


@admin.register(ConsoleSettings)
class ConsoleSettingsAdmin(admin.ModelAdmin):
    # One row, created on first use (ops.runtime.console_settings).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: ConsoleSettings | None = None
    ) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: "<path:object_id>/" would swallow "schedule/".
        return [
            path(
                "schedule/",
                self.admin_site.admin_view(self.schedule_view),
                name=SCHEDULE_URL_NAME,
            ),
            *super().get_urls(),
        ]

    def _to_schedule_page(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(reverse(f"admin:{SCHEDULE_URL_NAME}"))

    # The generic list and form would change the schedule without syncing it.
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return self._to_schedule_page(request)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return self._to_schedule_page(request)

    def schedule_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the schedule, the alarm and the form. POST: change and sync."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        may_change = self.has_change_permission(request)
        if request.method == "POST":
            if not may_change:
                raise PermissionDenied
            form = ScheduleForm(request.POST)
            if form.is_valid():
                result = schedule.update_settings(**form.values(), by=request.user)
                # An operator action: it leaves an entry in the admin's log.
                changes = ", ".join(f"{k}={v}" for k, v in form.values().items())
                self.log_change(
                    request, schedule.schedule_info().settings, f"Schedule: {changes}."
                )
                kept = (
                    f" The missed-tick alarm keeps watching: it now expects an "
                    f"external scheduler every {result.kept_alarm_minutes} min."
                    if result.kept_alarm_minutes
                    else ""
                )
                self.message_user(
                    request,
                    f"Saved. Django-Q schedules: {result}.{kept}",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(request.path)
        else:
            form = ScheduleForm(initial=_initial(schedule.schedule_info().settings))
        return self._render(request, form, may_change)

    def _render(
        self, request: HttpRequest, form: ScheduleForm, may_change: bool
    ) -> TemplateResponse:
        report = alarm.with_backlog(alarm.evaluate(), source=Source.CONSOLE)
        # Looking is also a check: a change noticed here is recorded and sent
        # (with the backlog just read, so no second Redis read).
        notify.check(report=report, source=Source.CONSOLE)
        info = schedule.schedule_info()
        last_run = info.last_run
        may_view_runs = request.user.has_perm("ops.view_drainrun")
        backlog = report.backlog
        assert backlog is not None
        context = {
            **self.admin_site.each_context(request),
            "title": "Drain schedule and missed-tick alarm",
            "opts": self.opts,
            "form": form,
            "may_change": may_change,
            "change_permission": "ops.change_consolesettings",
            "info": info,
            "activity": schedule.cluster_activity(),
            "report": report,
            "state_badge": alarm_badge(report.state),
            "stored_state_badge": alarm_badge(info.settings.alarm_state)
            if info.settings.alarm_state in alarm.AlarmState.values
            else info.settings.alarm_state,
            "backlog": backlog,
            "backlog_rows": [
                (name, backlog.ages.get(name)) for name in enabled_queue_names()
            ],
            "last_run_url": reverse("admin:ops_drainrun_change", args=[last_run.pk])
            if last_run is not None and may_view_runs
            else "",
            "last_drain_url": reverse(
                "admin:ops_drainrun_change", args=[report.last_drain.pk]
            )
            if report.last_drain is not None and may_view_runs
            else "",
            "schedule_trigger": DrainRun.Trigger.SCHEDULE,
            "drain_schedule_name": schedule.DRAIN_SCHEDULE,
            "alarm_schedule_name": schedule.ALARM_SCHEDULE,
        }
        return TemplateResponse(request, "admin/ops/schedule.html", context)
