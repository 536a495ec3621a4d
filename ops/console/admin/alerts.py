"""Alert channels in the console: add, edit and disable webhooks (generic
JSON or Slack-compatible) and email recipients, choose their events, and send
a test notification.

Channels are not history and are never deleted here: disabling one keeps its
last result. Viewing needs `view_alertchannel`; adding, editing and the test
button need `add_`/`change_alertchannel`. Every change and every test send
leaves an admin log entry.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ops.models import AlertChannel, AlertEvent
from ops.scheduling import alerts
from ops.scheduling.notify import console_url


class AlertChannelForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=AlertEvent.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="What this channel is told about.",
    )

    class Meta:
        model = AlertChannel
        fields = ("name", "kind", "target", "enabled", "events")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind, target = data.get("kind"), data.get("target")
        if kind and target is not None:
            problem = alerts.target_problem(kind, target)
            if problem:
                self.add_error("target", problem)
            else:
                data["target"] = target.strip()
        return data


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    form = AlertChannelForm
    list_display = (
        "name",
        "kind",
        "target_short",
        "enabled",
        "event_list",
        "last_result",
    )
    list_filter = ("kind", "enabled")
    search_fields = ("name", "target")
    readonly_fields = ("created", "updated", "last_sent_at", "last_error")

    def has_delete_permission(
        self, request: HttpRequest, obj: AlertChannel | None = None
    ) -> bool:
        return False  # disable instead: the row keeps its last result

    # A webhook URL is one long word: cut, whole in the tooltip, so the list
    # fits at 1366 px (tests/console/test_e2e_console.py).
    @admin.display(description="target", ordering="target")
    def target_short(self, obj: AlertChannel) -> SafeString:
        return format_html(
            '<span title="{}">{}</span>', obj.target, Truncator(obj.target).chars(40)
        )

    @admin.display(description="events")
    def event_list(self, obj: AlertChannel) -> str:
        labels = dict(AlertEvent.choices)
        return ", ".join(str(labels.get(e, e)).split(" (")[0] for e in obj.events)

    @admin.display(description="last sent")
    def last_result(self, obj: AlertChannel) -> SafeString:
        if obj.last_sent_at is None:
            return format_html('<span class="quiet">{}</span>', "never")
        when = timezone.localtime(obj.last_sent_at).strftime("%Y-%m-%d %H:%M")
        if obj.last_error:
            return format_html(
                '{} <span style="color:#b91c1c" title="{}">failed</span>',
                when,
                obj.last_error,
            )
        return format_html("{} ok", when)

    def save_model(
        self, request: HttpRequest, obj: AlertChannel, form: Any, change: bool
    ) -> None:
        obj.updated = timezone.now()
        super().save_model(request, obj, form, change)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().change_view(
            request,
            object_id,
            form_url,
            {
                **(extra_context or {}),
                "can_test": self.has_change_permission(request),
                "env_channels": [c.name for c in alerts.env_channels()],
            },
        )

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:object_id>/test/",
                wrap(self.test_view),
                name="ops_alertchannel_test",
            ),
            *super().get_urls(),
        ]

    def test_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """POST: send a test notification to this channel; GET goes back."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        row = get_object_or_404(AlertChannel, pk=object_id)
        back = reverse("admin:ops_alertchannel_change", args=[row.pk])
        if request.method != "POST":
            return HttpResponseRedirect(back)
        channel = alerts.Channel(row.name, row.kind, row.target, row)
        delivery = alerts.send(alerts.test_alert(row, console=console_url()), channel)
        if delivery.ok:
            self.log_change(request, row, "Sent a test notification: delivered.")
            self.message_user(
                request, f"Test notification sent to {row.name}.", messages.SUCCESS
            )
        else:
            self.log_change(
                request, row, f"Sent a test notification: failed ({delivery.error})."
            )
            self.message_user(
                request,
                f"The test notification to {row.name} failed: {delivery.error}",
                messages.ERROR,
            )
        return HttpResponseRedirect(back)
