"""Alarm notifications: a webhook POST and an email when the alarm's state changes.

The state is kept in ConsoleSettings.alarm_state. Every evaluator (the
scheduled check_alarm task, the status endpoint, the Schedule admin page) may
see the change; only the one whose conditional UPDATE (`WHERE alarm_state =
<what it read>`) changes the row notifies, so several processes never send the
same notification twice.

Only changes a person acts on are sent: into "late" or "down", and back to "ok"
from them. Configuring or removing the alarm ("off", "unknown") and the first
drain after configuring it ("unknown" -> "ok") change the stored state quietly.

Sending never raises: a dead webhook or mail server is logged, the state change
stands (the next change is sent normally).

Where it goes: the environment's ALARM_WEBHOOK_URL and ALARM_EMAILS (the
bootstrap, reported in the Transition as before) and every enabled alert
channel subscribed to the "missed_tick" event (ops/scheduling/alerts.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from ops.humanize import duration
from ops.models import AlertEvent, ConsoleSettings, Source
from ops.runtime import console_settings
from ops.scheduling import alarm, alerts
from ops.scheduling.alarm import AlarmReport, AlarmState

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = alerts.WEBHOOK_TIMEOUT_S
ALERT_STATES = {AlarmState.LATE, AlarmState.DOWN}


def should_notify(previous: str, state: str) -> bool:
    if state == previous:
        return False
    if state in ALERT_STATES:
        return True
    # Recovery: only worth a message if the alert before it was sent.
    return state == AlarmState.OK and previous in ALERT_STATES


@dataclass(frozen=True)
class Transition:
    previous: str
    state: str
    at: datetime
    notified: bool
    # "sent", "failed" or "off" (not configured / not a notifying change)
    webhook: str = "off"
    email: str = "off"
    # The console-managed alert channels it went to.
    channels: tuple[alerts.Delivery, ...] = ()


def check(
    *,
    now: datetime | None = None,
    report: AlarmReport | None = None,
    source: str = Source.OTHER,
) -> Transition | None:
    """Evaluate the alarm, record a state change, notify if this process won.

    Database only, unless a notification goes out without the backlog read:
    then ≤ 2 Redis commands per enabled queue, billed to `source`. Returns
    None when the state did not change (or another process recorded it)."""
    row = console_settings()
    if report is None:
        report = alarm.evaluate(now=now, row=row)
    previous = row.alarm_state
    if report.state == previous:
        return None
    claimed = ConsoleSettings.objects.filter(pk=row.pk, alarm_state=previous).update(
        alarm_state=report.state, alarm_changed_at=report.now
    )
    if claimed != 1:
        return None  # another evaluator recorded (and notifies) this change
    if not should_notify(previous, report.state):
        log.info("alarm state %s -> %s (no notification)", previous, report.state)
        return Transition(previous, report.state, report.now, notified=False)
    if report.backlog is None:
        report = alarm.with_backlog(report, source=source)
    log.warning("alarm state %s -> %s: %s", previous, report.state, report.headline)
    payload = webhook_payload(report, previous)
    return Transition(
        previous,
        report.state,
        report.now,
        notified=True,
        webhook=post_webhook(payload),
        email=send_email(report, previous),
        channels=tuple(
            alerts.dispatch(alarm_alert(report, previous), include_env=False)
        ),
    )


def alarm_alert(report: AlarmReport, previous: str) -> alerts.Alert:
    """The alarm's state change for the alert channels: the generic JSON
    carries the same fields as the ALARM_WEBHOOK_URL payload."""
    severity = {AlarmState.LATE: "warning", AlarmState.DOWN: "critical"}.get(
        AlarmState(report.state), "resolved"
    )
    return alerts.Alert(
        event=AlertEvent.MISSED_TICK,
        severity=severity,
        title=f"Drain alarm: {report.state} (was {previous})",
        message=report.headline,
        at=report.now,
        console=console_url(),
        fields=webhook_payload(report, previous),
    )


def console_url() -> str:
    """Where the Schedule page is, as well as a background task can tell: the
    first CSRF trusted origin, else the first concrete ALLOWED_HOSTS entry."""
    path = reverse("admin:ops_consolesettings_schedule")
    for origin in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in origin:
            return origin.rstrip("/") + path
    for host in settings.ALLOWED_HOSTS:
        if host and "*" not in host and not host.startswith("."):
            local = host in {"127.0.0.1", "localhost", "::1"}
            return f"{'http' if local else 'https'}://{host}{path}"
    return path


def webhook_payload(report: AlarmReport, previous: str) -> dict[str, Any]:
    section = report.as_json()
    return {
        "state": report.state,
        "previous": previous,
        "message": report.headline,
        "changedAt": report.now.isoformat(),
        "lastDrainAt": section["lastDrainAt"],
        "lastDrainTrigger": section["lastDrainTrigger"],
        "expectedIntervalMinutes": section["expectedIntervalMinutes"],
        "graceMinutes": section["graceMinutes"],
        "oldestQueuedJobAgeS": section["oldestQueuedJobAgeS"],
        "console": console_url(),
    }


def post_webhook(payload: dict[str, Any]) -> str:
    url = settings.ALARM_WEBHOOK_URL
    if not url:
        return "off"
    # urllib also opens file:// and ftp:// URLs: a webhook is http(s) only.
    if alerts.target_problem("webhook", url):
        log.error("ALARM_WEBHOOK_URL must be an http(s) URL; not posting")
        return "failed"
    error = alerts.post_json(url, payload)
    if error:
        log.warning("alarm webhook failed: %s", error)
        return "failed"
    return "sent"


def send_email(report: AlarmReport, previous: str) -> str:
    recipients = list(settings.ALARM_EMAILS)
    if not recipients:
        return "off"
    subject = f"[Kaireon Ops] drain alarm: {report.state} (was {previous})"
    section = report.as_json()
    lines = [
        report.headline,
        "",
        f"State: {report.label} (was {previous})",
        f"Expected interval: {duration(section['expectedIntervalMinutes'] * 60)}",
        f"Grace: {duration(section['graceMinutes'] * 60)}",
        f"Last drain: {section['lastDrainAt'] or 'none'}"
        + (
            f" ({section['lastDrainTrigger']}, {section['lastDrainStatus']})"
            if section["lastDrainTrigger"]
            else ""
        ),
        "Oldest queued job: "
        + (
            f"{duration(section['oldestQueuedJobAgeS'])} old"
            if section["oldestQueuedJobAgeS"] is not None
            else ("none" if section["backlogKnown"] else "unknown")
        ),
        f"Console: {console_url()}",
        f"Sent at {timezone.now():%Y-%m-%d %H:%M:%S} UTC.",
    ]
    error = alerts.send_email(recipients, subject, "\n".join(lines))
    if error:  # SMTP, DNS, bad settings: the alarm must go on
        log.warning("alarm email failed: %s", error)
        return "failed"
    return "sent"
