"""Alert channels: where alerts go, and sending one alert to each of them.

Channels are AlertChannel rows (managed in the admin) plus the environment's
bootstrap: ALARM_WEBHOOK_URL is an implicit generic-JSON webhook and
ALARM_EMAILS an implicit email channel, both subscribed to every event. Kinds:

* generic webhook: POST of the alert's JSON (`event`, `severity`, `title`,
  `message`, `at`, `console`, and the event's own fields);
* Slack-compatible webhook: POST of {"text": ...} (Slack incoming webhooks,
  and what Mattermost and Rocket.Chat accept too);
* email: Django's send_mail to the comma-separated addresses.

Sending never raises and costs no Redis command: a webhook has
WEBHOOK_TIMEOUT_S, a failing channel has its error recorded on its row
(`last_error`) and logged, and the others are still sent. Deciding *when* an
alert fires (once) is the callers' business: ops/scheduling/notify.py for the
missed-tick alarm, ops/scheduling/events.py for the rest.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.utils import timezone

from ops.models import AlertChannel, AlertEvent

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 5
ENV_WEBHOOK = "env:ALARM_WEBHOOK_URL"
ENV_EMAILS = "env:ALARM_EMAILS"
TEST_EVENT = "test"


@dataclass(frozen=True)
class Alert:
    """One thing to tell people, in each channel's shape."""

    event: str  # an AlertEvent value, or TEST_EVENT
    severity: str  # "warning", "critical", "resolved" or "info"
    title: str  # one line: the email subject, Slack's bold first line
    message: str  # a sentence or two
    at: datetime = field(default_factory=timezone.now)
    console: str = ""
    # The event's own figures, merged into the generic JSON.
    fields: dict[str, Any] = field(default_factory=dict)
    # Extra lines of the email body (after the message).
    details: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "at": self.at.isoformat(),
            "console": self.console,
            **self.fields,
        }

    def slack_payload(self) -> dict[str, Any]:
        link = f"\n<{self.console}|Open the console>" if self.console else ""
        return {"text": f"*{self.title}*\n{self.message}{link}"}

    def email_body(self) -> str:
        lines = [self.message, "", *self.details]
        if self.console:
            lines.append(f"Console: {self.console}")
        lines.append(f"Sent at {self.at:%Y-%m-%d %H:%M:%S} UTC.")
        return "\n".join(lines)


@dataclass(frozen=True)
class Channel:
    """A row, or one of the environment's implicit channels (row None)."""

    name: str
    kind: str
    target: str
    row: AlertChannel | None = None


@dataclass(frozen=True)
class Delivery:
    channel: str
    kind: str
    error: str  # "" when sent

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def result(self) -> str:
        return "sent" if self.ok else "failed"


# --- Validation (the admin form) -----------------------------------------------


def target_problem(kind: str, target: str) -> str:
    """Why `target` cannot be a `kind` channel's target, or ""."""
    target = target.strip()
    if not target:
        return "A target is required."
    if kind == AlertChannel.Kind.EMAIL:
        addresses = email_addresses(target)
        if not addresses:
            return "Give at least one email address."
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                return f"{address!r} is not an email address."
        return ""
    parts = urlsplit(target)
    # urllib also opens file:// and ftp:// URLs: a webhook is http(s) only.
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return "A webhook target must be an http:// or https:// URL."
    return ""


def email_addresses(target: str) -> list[str]:
    return [part.strip() for part in target.split(",") if part.strip()]


# --- Which channels --------------------------------------------------------------


def env_channels() -> list[Channel]:
    found = []
    if settings.ALARM_WEBHOOK_URL:
        found.append(
            Channel(ENV_WEBHOOK, AlertChannel.Kind.WEBHOOK, settings.ALARM_WEBHOOK_URL)
        )
    if settings.ALARM_EMAILS:
        found.append(
            Channel(
                ENV_EMAILS, AlertChannel.Kind.EMAIL, ",".join(settings.ALARM_EMAILS)
            )
        )
    return found


def row_channels(event: str) -> list[Channel]:
    """Enabled rows subscribed to `event` (a few rows: filtered here, since a
    JSON "contains" is not portable between SQLite and PostgreSQL)."""
    return [
        Channel(row.name, row.kind, row.target, row)
        for row in AlertChannel.objects.filter(enabled=True)
        if event in (row.events or [])
    ]


# --- Sending ---------------------------------------------------------------------


def post_json(url: str, payload: dict[str, Any]) -> str:
    """POST `payload`; "" when the receiver answered 2xx, else the error."""
    if urlsplit(url).scheme not in {"http", "https"}:
        return "the webhook URL must be an http(s) URL; not posting"
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "kaireon-ops"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read(1024)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        # HTTPError (a 4xx/5xx answer) is a URLError; timeouts are OSErrors.
        return f"{type(exc).__name__}: {exc}"
    return ""


def send_email(addresses: list[str], subject: str, body: str) -> str:
    try:
        send_mail(subject, body, None, addresses)
    except Exception as exc:  # SMTP, DNS, bad settings: the others must go on
        return f"{type(exc).__name__}: {exc}"
    return ""


def send(alert: Alert, channel: Channel) -> Delivery:
    """Send `alert` to one channel; record the outcome on its row; never raise."""
    try:
        if channel.kind == AlertChannel.Kind.EMAIL:
            error = send_email(
                email_addresses(channel.target),
                f"[Kaireon Ops] {alert.title}",
                alert.email_body(),
            )
        elif channel.kind == AlertChannel.Kind.SLACK:
            error = post_json(channel.target, alert.slack_payload())
        else:
            error = post_json(channel.target, alert.payload())
    except Exception as exc:  # a bug in one channel must not stop the others
        log.exception("alert channel %s failed", channel.name)
        error = f"{type(exc).__name__}: {exc}"
    if error:
        log.warning(
            "alert %s to channel %s failed: %s", alert.event, channel.name, error
        )
    if channel.row is not None:
        channel.row.record_result(error)
    return Delivery(channel=channel.name, kind=channel.kind, error=error)


def dispatch(alert: Alert, *, include_env: bool = True) -> list[Delivery]:
    """Send `alert` to every enabled channel subscribed to its event, and to
    the environment's implicit channels unless the caller sends those itself."""
    channels = row_channels(alert.event)
    if include_env:
        channels = env_channels() + channels
    return [send(alert, channel) for channel in channels]


def test_alert(row: AlertChannel, *, console: str = "") -> Alert:
    subscribed = ", ".join(
        str(AlertEvent(event).label)
        for event in row.events
        if event in AlertEvent.values
    )
    return Alert(
        event=TEST_EVENT,
        severity="info",
        title=f"Test notification for {row.name}",
        message=(
            "This is a test notification from Kaireon Ops: this channel works. "
            f"It is subscribed to: {subscribed or 'no events yet'}."
        ),
        console=console,
        fields={"channel": row.name},
    )
