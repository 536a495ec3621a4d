"""Alert channels: a test notification reaches a real local receiver, Slack
and email shapes, a failing channel does not stop the others, and the quota,
incident and failed-jobs alerts fire once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.core import mail
from django.utils import timezone

from bench.redis_server import free_port
from ops import tasks
from ops.models import (
    AlertChannel,
    AlertEvent,
    CommandUsage,
    ConsoleSettings,
    DrainRun,
    JobRecord,
    QuotaIncident,
    Source,
)
from ops.runtime import console_settings
from ops.scheduling import alerts, events, notify
from ops.usage import provider

ALL_EVENTS = list(AlertEvent.values)


class _Receiver(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(
            {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
        )
        # A receiver that answers 500: /rejects, whatever `status` says.
        rejects = self.path.startswith("/rejects")
        self.send_response(500 if rejects else self.server.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver(ThreadingHTTPServer):
    received: list[dict[str, Any]]
    status: int

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"

    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on a random port, in a thread."""
    server = Receiver(("127.0.0.1", 0), _Receiver)
    server.received = []
    server.status = 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def quiet_env(settings) -> None:
    settings.ALARM_WEBHOOK_URL = ""
    settings.ALARM_EMAILS = []
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.QUOTA_MONTHLY_BUDGET = 1000
    settings.QUOTA_WARN_THRESHOLDS = [80, 95]
    settings.ALERT_FAILED_JOBS_PER_HOUR = 3
    mail.outbox = []


def channel(kind: str, target: str, events: list[str] | None = None, **kw: Any):
    return AlertChannel.objects.create(
        name=kw.pop("name", f"{kind} channel"),
        kind=kind,
        target=target,
        events=ALL_EVENTS if events is None else events,
        **kw,
    )


def use(commands: int, now: datetime) -> None:
    CommandUsage.objects.create(
        hour=now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1),
        source=Source.DRAIN_JOBS,
        commands=commands,
    )


# --- The test button -------------------------------------------------------------


@pytest.mark.django_db
def test_a_test_notification_reaches_a_local_webhook(admin_client, receiver):
    row = channel("webhook", receiver.url(), name="ops hook")
    response = admin_client.post(f"/admin/ops/alertchannel/{row.pk}/test/")
    assert response.status_code == 302
    assert len(receiver.received) == 1
    hit = receiver.received[0]
    assert hit["path"] == "/hook"
    assert hit["headers"]["Content-Type"] == "application/json"
    assert hit["json"]["event"] == "test"
    assert hit["json"]["channel"] == "ops hook"
    assert "this channel works" in hit["json"]["message"]
    row.refresh_from_db()
    assert row.last_sent_at is not None and row.last_error == ""
    entry = LogEntry.objects.get(object_id=str(row.pk))
    assert entry.get_change_message() == "Sent a test notification: delivered."
    page = admin_client.get(response["Location"])
    assert "Test notification sent to ops hook." in page.content.decode()


@pytest.mark.django_db
def test_a_failing_test_notification_shows_and_records_its_error(admin_client):
    row = channel("webhook", f"http://127.0.0.1:{free_port()}/dead")
    response = admin_client.post(f"/admin/ops/alertchannel/{row.pk}/test/", follow=True)
    assert (
        "The test notification to webhook channel failed" in response.content.decode()
    )
    row.refresh_from_db()
    assert "URLError" in row.last_error
    assert "failed" in LogEntry.objects.get().get_change_message()


@pytest.mark.django_db
def test_the_test_button_needs_change_permission(client, django_user_model, receiver):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user(
        "viewer", password="pw", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_alertchannel"))
    client.force_login(viewer)
    row = channel("webhook", receiver.url())
    assert client.post(f"/admin/ops/alertchannel/{row.pk}/test/").status_code == 403
    assert receiver.received == []


@pytest.mark.django_db
def test_the_form_refuses_a_non_http_webhook_and_a_bad_address(admin_client):
    data = {"name": "x", "kind": "webhook", "target": "file:///etc/passwd"}
    page = admin_client.post("/admin/ops/alertchannel/add/", {**data, "enabled": "on"})
    assert page.status_code == 200
    assert "must be an http:// or https:// URL" in page.content.decode()
    data = {"name": "x", "kind": "email", "target": "oncall@example.com, nope"}
    page = admin_client.post("/admin/ops/alertchannel/add/", data)
    assert "&#x27;nope&#x27; is not an email address" in page.content.decode()
    assert not AlertChannel.objects.exists()
    ok = {
        "name": "oncall",
        "kind": "email",
        "target": " oncall@example.com ",
        "events": ["quota_incident", "missed_tick"],
        "enabled": "on",
    }
    assert admin_client.post("/admin/ops/alertchannel/add/", ok).status_code == 302
    row = AlertChannel.objects.get()
    assert (row.target, row.events) == ("oncall@example.com", ok["events"])
    assert LogEntry.objects.filter(object_id=str(row.pk)).count() == 1
    listing = admin_client.get("/admin/ops/alertchannel/").content.decode()
    assert "oncall@example.com" in listing and "Quota incident opened" in listing


# --- Shapes ------------------------------------------------------------------------


@pytest.mark.django_db
def test_slack_gets_its_text_payload_and_email_goes_by_mail(receiver):
    slack = channel("slack", receiver.url("/slack"), name="slack")
    channel("email", "a@example.com, b@example.com", name="mail")
    alert = alerts.Alert(
        event=AlertEvent.FAILED_JOBS,
        severity="warning",
        title="5 jobs failed in the last hour",
        message="Over the threshold.",
        console="https://ops.example.com/admin/",
    )
    deliveries = alerts.dispatch(alert)
    # In the channels' order (by name).
    assert [(d.channel, d.result) for d in deliveries] == [
        ("mail", "sent"),
        ("slack", "sent"),
    ]
    assert receiver.received[0]["json"] == {
        "text": "*5 jobs failed in the last hour*\nOver the threshold.\n"
        "<https://ops.example.com/admin/|Open the console>"
    }
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["a@example.com", "b@example.com"]
    assert message.subject == "[Kaireon Ops] 5 jobs failed in the last hour"
    assert "Over the threshold." in message.body
    slack.refresh_from_db()
    assert slack.last_sent_at is not None


@pytest.mark.django_db
def test_a_failing_channel_does_not_stop_the_others(receiver, settings):
    channel("webhook", f"http://127.0.0.1:{free_port()}/dead", name="dead")
    channel("webhook", receiver.url("/rejects"), name="rejects")
    channel("webhook", receiver.url("/alive"), name="alive")
    channel("webhook", receiver.url("/off"), name="off", enabled=False)
    channel("webhook", receiver.url("/other"), name="other", events=["missed_tick"])
    settings.ALARM_WEBHOOK_URL = receiver.url("/env")
    alert = alerts.Alert(
        event=AlertEvent.QUOTA_INCIDENT, severity="critical", title="t", message="m"
    )
    results = {d.channel: d.result for d in alerts.dispatch(alert)}
    assert results == {
        alerts.ENV_WEBHOOK: "sent",
        "dead": "failed",
        "rejects": "failed",
        "alive": "sent",
    }
    assert sorted(receiver.paths()) == ["/alive", "/env", "/rejects"]
    assert "Connection refused" in AlertChannel.objects.get(name="dead").last_error
    assert "HTTP Error 500" in AlertChannel.objects.get(name="rejects").last_error
    assert AlertChannel.objects.get(name="alive").last_error == ""


# --- Events, each once -------------------------------------------------------------


@pytest.mark.django_db
def test_quota_thresholds_fire_once_per_period(receiver):
    channel("webhook", receiver.url())
    now = datetime(2030, 5, 10, 12, 0, tzinfo=UTC)
    use(500, now)
    assert events.check(now) == []
    use(350, now - timedelta(hours=1))  # 850 of 1000: 80 % crossed
    assert [d.result for d in events.check(now)] == ["sent"]
    assert events.check(now + timedelta(minutes=1)) == []
    use(110, now - timedelta(hours=2))  # 960: 95 % crossed
    events.check(now + timedelta(minutes=2))
    events.check(now + timedelta(minutes=3))
    sent = [r["json"] for r in receiver.received]
    assert [(p["event"], p["threshold"]) for p in sent] == [
        ("quota_threshold", 80),
        ("quota_threshold", 95),
    ]
    assert sent[1]["used"] == 960 and sent[1]["budget"] == 1000
    assert sent[1]["severity"] == "critical"


@pytest.mark.django_db
def test_a_providers_figure_past_a_threshold_fires_it(receiver):
    """The meters see 10 % of the budget; the provider counted 850."""
    channel("webhook", receiver.url(), events=["quota_threshold"])
    now = datetime(2030, 5, 10, 12, 0, tzinfo=UTC)
    use(100, now)
    assert events.check(now) == []
    provider.record_manual(
        used=850, kind="monthly", by=None, at=now - timedelta(minutes=10)
    )
    assert [d.result for d in events.check(now)] == ["sent"]
    sent = receiver.received[0]["json"]
    assert (sent["threshold"], sent["used"]) == (80, 850)


@pytest.mark.django_db
def test_a_quota_incident_is_announced_opened_then_closed_once_each(receiver, settings):
    settings.ALARM_EMAILS = ["oncall@example.com"]  # the bootstrap gets it too
    channel("webhook", receiver.url(), events=["quota_incident"])
    now = timezone.now()
    QuotaIncident.objects.create(  # old history: not news
        opened_at=now - timedelta(days=2),
        closed_at=now - timedelta(days=2),
        open_marker=None,
        source=Source.DRAIN_JOBS,
    )
    incident = QuotaIncident.objects.create(
        source=Source.DRAIN_JOBS, last_error="ERR max requests limit exceeded"
    )
    events.check()
    events.check()
    QuotaIncident.objects.filter(pk=incident.pk).update(
        closed_at=timezone.now(), open_marker=None
    )
    events.check()
    events.check()
    states = [(r["json"]["state"], r["json"]["incidentId"]) for r in receiver.received]
    assert states == [("opened", incident.pk), ("closed", incident.pk)]
    assert [m.subject for m in mail.outbox] == [
        "[Kaireon Ops] Redis quota exhausted: incident opened",
        "[Kaireon Ops] Redis quota incident closed",
    ]


@pytest.mark.django_db
def test_failed_jobs_over_the_threshold_fire_once_then_resolve_once(receiver):
    channel("webhook", receiver.url(), events=["failed_jobs"])
    now = timezone.now()

    def failed(n: int, at: datetime) -> None:
        JobRecord.objects.bulk_create(
            JobRecord(
                job_id=f"j{i}-{at:%H%M%S%f}", queue="q", status="failed", created=at
            )
            for i in range(n)
        )

    failed(3, now - timedelta(minutes=5))
    assert events.check(now) == []  # 3 is not over 3, and never fired: no resolve
    failed(1, now - timedelta(minutes=1))
    assert len(events.check(now)) == 1
    assert events.check(now + timedelta(minutes=1)) == []
    # An hour later they have aged out: resolved, once; then a new burst.
    later = now + timedelta(hours=2)
    assert len(events.check(later)) == 1
    assert events.check(later + timedelta(minutes=1)) == []
    failed(5, later)
    assert len(events.check(later)) == 1
    sent = [
        (r["json"]["severity"], r["json"]["failedLastHour"]) for r in receiver.received
    ]
    assert sent == [("warning", 4), ("resolved", 0), ("warning", 5)]
    resolved = receiver.received[1]["json"]
    assert resolved["event"] == "failed_jobs"
    assert resolved["title"] == "Failed jobs back under the threshold"
    assert resolved["state"] == "resolved"


@pytest.mark.django_db
def test_the_missed_tick_reaches_subscribed_channels(receiver):
    channel("webhook", receiver.url("/tick"), events=["missed_tick"])
    channel("slack", receiver.url("/quota-only"), events=["quota_threshold"])
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    console_settings()
    ConsoleSettings.objects.filter(pk=1).update(
        schedule_enabled=True, schedule_minutes=5, updated=t0, alarm_state="ok"
    )
    DrainRun.objects.create(trigger="cron", status="succeeded", started=t0)
    result = tasks.check_alarm(now=t0 + timedelta(minutes=11))
    assert result["state"] == "late"
    assert result["alerts"] == [{"channel": "webhook channel", "result": "sent"}]
    assert receiver.paths() == ["/tick"]
    payload = receiver.received[0]["json"]
    assert (payload["event"], payload["severity"]) == ("missed_tick", "warning")
    assert (payload["state"], payload["previous"]) == ("late", "ok")


@pytest.mark.django_db
def test_the_environment_channels_still_get_the_alarm_once(receiver, settings):
    settings.ALARM_WEBHOOK_URL = receiver.url("/env")
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    console_settings()
    ConsoleSettings.objects.filter(pk=1).update(
        schedule_enabled=True, schedule_minutes=5, updated=t0, alarm_state="ok"
    )
    DrainRun.objects.create(trigger="cron", status="succeeded", started=t0)
    transition = notify.check(now=t0 + timedelta(minutes=11))
    assert transition is not None and transition.webhook == "sent"
    assert transition.channels == ()
    assert receiver.paths() == ["/env"]
