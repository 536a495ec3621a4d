"""Alert channels end to end in a real headless Chromium (Debian's): add a
webhook channel in the admin, send its test notification, and see it reach a
local receiver the test runs."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User

from ops.models import AlertChannel

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOT = Path("/tmp/kaireon-alert-channel.png")


class _Hook(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Receiver(ThreadingHTTPServer):
    received: list[dict[str, Any]]


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(("127.0.0.1", 0), _Hook)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_alert_channel_added_in_the_browser_gets_its_test_notification(
    live_server, browser_page: Page, admin_login, receiver, settings
) -> None:
    from playwright.sync_api import expect

    settings.ALARM_WEBHOOK_URL = ""
    settings.ALARM_EMAILS = []
    page = browser_page
    User.objects.create_superuser("boss", password="correct horse battery")
    SCREENSHOT.unlink(missing_ok=True)
    url = f"http://127.0.0.1:{receiver.server_port}/hook"

    admin_login(
        page,
        live_server.url,
        "boss",
        "correct horse battery",
        next_path="/admin/ops/alertchannel/add/",
    )
    expect(page).to_have_url(re.compile(r"/admin/ops/alertchannel/add/$"))
    page.fill("input[name=name]", "on-call hook")
    page.select_option("select[name=kind]", "webhook")
    # A wrong target first: the form says why and keeps the rest.
    page.fill("input[name=target]", "ftp://example.com/hook")
    page.check("input[name=events][value=missed_tick]")
    page.check("input[name=events][value=quota_incident]")
    page.click("input[type=submit][name=_continue]")
    expect(page.locator(".errorlist")).to_contain_text("http:// or https:// URL")
    page.fill("input[name=target]", url)
    page.click("input[type=submit][name=_continue]")

    expect(page).to_have_url(re.compile(r"/admin/ops/alertchannel/\d+/change/$"))
    expect(page.locator("#ops-channel-last")).to_contain_text("Nothing sent")
    page.click("#ops-send-test")
    expect(page.locator("ul.messagelist")).to_contain_text(
        "Test notification sent to on-call hook."
    )
    expect(page.locator("#ops-channel-last")).to_contain_text("delivered")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    assert len(receiver.received) == 1
    payload = receiver.received[0]
    assert payload["event"] == "test"
    assert payload["channel"] == "on-call hook"
    assert "Missed tick" in payload["message"]
    row = AlertChannel.objects.get()
    assert row.events == ["missed_tick", "quota_incident"]
    assert row.last_error == "" and row.last_sent_at is not None
    messages = [e.get_change_message() for e in LogEntry.objects.order_by("id")]
    assert messages == ["Added.", "Sent a test notification: delivered."]
