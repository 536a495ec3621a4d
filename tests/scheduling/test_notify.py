"""Alarm notifications: one webhook POST and one email per state change, from
one process only, never raised, and no Redis unless a notification goes out."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from rq import Queue as RQQueue

from ops import tasks
from ops.models import ConsoleSettings, DrainRun
from ops.runtime import console_settings
from ops.scheduling import notify

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
LAST = T0 + MIN  # the last drain
LATE = LAST + 11 * MIN  # 5-minute interval, 5-minute grace
DOWN = LAST + 16 * MIN
PAGE_PATH = "/admin/ops/consolesettings/schedule/"


class _Hook(BaseHTTPRequestHandler):
    server: _HookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(
            {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
        )
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output clean


class _HookServer(ThreadingHTTPServer):
    received: list[dict[str, Any]]
    status: int


@pytest.fixture
def webhook(settings) -> Iterator[_HookServer]:
    server = _HookServer(("127.0.0.1", 0), _Hook)
    server.received = []
    server.status = 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.ALARM_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def email(settings) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALARM_EMAILS = ["oncall@example.com", "sre@example.com"]
    mail.outbox = []


def configure(state: str = "ok") -> None:
    console_settings()
    ConsoleSettings.objects.filter(pk=1).update(
        schedule_enabled=True,
        schedule_minutes=5,
        expected_interval_minutes=None,
        alarm_grace_minutes=None,
        updated=T0,
        alarm_state=state,
    )
    DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON, status="succeeded", started=LAST
    )


@pytest.mark.django_db
def test_a_state_change_posts_once_and_emails_once(webhook, rq_client):
    configure("ok")
    RQQueue("dsar-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 2)
    transition = notify.check(now=LATE)
    assert transition is not None
    assert (transition.webhook, transition.email) == ("sent", "sent")

    assert len(webhook.received) == 1
    hook = webhook.received[0]
    assert hook["path"] == "/hook"
    assert hook["headers"]["Content-Type"] == "application/json"
    payload = hook["json"]
    assert payload["state"] == "late"
    assert payload["previous"] == "ok"
    assert payload["lastDrainAt"] == LAST.isoformat()
    assert payload["expectedIntervalMinutes"] == 5
    assert isinstance(payload["oldestQueuedJobAgeS"], int)
    assert payload["console"].endswith(PAGE_PATH)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["oncall@example.com", "sre@example.com"]
    assert "late (was ok)" in message.subject
    assert "Drains are late" in message.body
    # Times in the one human format (ops/humanize.py), not raw seconds: the job
    # was enqueued years before the pinned clock.
    assert "Expected interval: 5 min\n" in message.body
    assert "Grace: 5 min\n" in message.body
    assert re.search(r"^Oldest queued job: \d+ d( \d+ h)? old$", message.body, re.M)

    # Evaluated again, in the same state: nothing more is sent.
    assert notify.check(now=LATE + MIN) is None
    assert len(webhook.received) == 1
    assert len(mail.outbox) == 1
    # The next change is sent again.
    assert notify.check(now=DOWN) is not None
    assert [h["json"]["state"] for h in webhook.received] == ["late", "down"]
    assert len(mail.outbox) == 2


@pytest.mark.django_db(transaction=True)
def test_of_concurrent_evaluators_only_one_notifies(webhook):
    configure("ok")
    barrier = threading.Barrier(4)
    results: list[object] = []

    def evaluate() -> None:
        try:
            barrier.wait()
            results.append(notify.check(now=LATE))
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4
    assert sum(r is not None for r in results) == 1
    assert len(webhook.received) == 1
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_stale_reader_loses_the_conditional_update(webhook, monkeypatch):
    configure("ok")
    stale = ConsoleSettings.objects.get(pk=1)
    # Another process recorded (and notified) "late" after this one read "ok".
    ConsoleSettings.objects.filter(pk=1).update(alarm_state="late")
    monkeypatch.setattr(notify, "console_settings", lambda: stale)
    assert notify.check(now=LATE) is None
    assert webhook.received == []
    assert mail.outbox == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "stored, now, new",
    [
        ("unknown", LAST + MIN, "ok"),  # the first drain after configuring
        ("ok", None, "off"),  # the alarm was turned off
    ],
)
def test_configuration_changes_are_recorded_quietly(webhook, stored, now, new):
    configure(stored)
    if new == "off":
        ConsoleSettings.objects.filter(pk=1).update(schedule_enabled=False)
    transition = notify.check(now=now or LATE)
    assert transition is not None and transition.state == new
    assert transition.notified is False
    assert ConsoleSettings.objects.get(pk=1).alarm_state == new
    assert webhook.received == [] and mail.outbox == []


def test_which_changes_notify():
    assert notify.should_notify("ok", "late")
    assert notify.should_notify("late", "down")
    assert notify.should_notify("unknown", "late")
    assert notify.should_notify("down", "ok")
    assert notify.should_notify("late", "ok")
    assert not notify.should_notify("unknown", "ok")
    assert not notify.should_notify("ok", "off")
    assert not notify.should_notify("off", "unknown")
    assert not notify.should_notify("down", "down")


@pytest.mark.django_db
def test_a_failing_webhook_is_logged_not_raised(webhook, caplog):
    webhook.status = 500
    configure("ok")
    transition = notify.check(now=LATE)
    assert transition is not None
    assert transition.webhook == "failed"
    assert transition.email == "sent"  # one channel failing does not stop the other
    assert ConsoleSettings.objects.get(pk=1).alarm_state == "late"
    assert "alarm webhook failed" in caplog.text


@pytest.mark.django_db
def test_an_unreachable_webhook_and_mail_server_are_logged_not_raised(settings, caplog):
    from bench.redis_server import free_port

    settings.ALARM_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/hook"
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = free_port()
    settings.EMAIL_TIMEOUT = 5
    configure("ok")
    transition = notify.check(now=LATE)
    assert transition is not None
    assert (transition.webhook, transition.email) == ("failed", "failed")
    assert "alarm webhook failed" in caplog.text
    assert "alarm email failed" in caplog.text


@pytest.mark.django_db
def test_a_non_http_webhook_url_is_refused(settings, caplog):
    settings.ALARM_WEBHOOK_URL = "file:///etc/passwd"
    configure("ok")
    transition = notify.check(now=LATE)
    assert transition is not None and transition.webhook == "failed"
    assert "must be an http(s) URL" in caplog.text


@pytest.mark.django_db
def test_nothing_configured_sends_nothing(settings):
    settings.ALARM_WEBHOOK_URL = ""
    settings.ALARM_EMAILS = []
    configure("ok")
    transition = notify.check(now=LATE)
    assert transition is not None and transition.notified
    assert (transition.webhook, transition.email) == ("off", "off")


@pytest.mark.django_db
def test_redis_is_read_only_when_a_notification_goes_out(webhook, wire):
    configure("unknown")
    assert notify.check(now=LAST + MIN) is not None  # quiet: unknown -> ok
    assert notify.check(now=LAST + 2 * MIN) is None  # no change
    assert wire.total == 0
    assert notify.check(now=LATE) is not None  # ok -> late: the backlog age
    assert wire.billed() == 5  # five empty queues: one LINDEX each


@pytest.mark.django_db
def test_the_scheduled_check_reports_what_it_did(webhook):
    configure("ok")
    assert tasks.check_alarm(now=LATE) == {
        "changed": True,
        "previous": "ok",
        "state": "late",
        "notified": True,
        "webhook": "sent",
        "email": "sent",
    }
    assert tasks.check_alarm(now=LATE + MIN) == {"changed": False}
