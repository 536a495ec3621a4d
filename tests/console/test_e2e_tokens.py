"""Token rotation end to end in a real headless Chromium (Debian's, never a
downloaded one): rotate from the admin, copy the token shown once, and call
the live drain endpoint with it."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User

from ops.cron import tokens
from ops.models import DrainRun, TokenVersion

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOT = Path("/tmp/kaireon-token-once.png")  # the token page, shown once
# The pages on the way, for a person to look at.
ROTATE_SCREENSHOT = Path("/tmp/kaireon-token-rotate.png")
LIST_SCREENSHOT = Path("/tmp/kaireon-token-list.png")
SETUP_SCREENSHOT = Path("/tmp/kaireon-scheduler-setup.png")


def _drain(url: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=b"", method="POST", headers={"X-Cron-Token": token}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.load(response)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_token_rotated_in_the_browser_opens_the_drain_endpoint(
    live_server, browser_page: Page, admin_login, background_drains
) -> None:
    # The fixture has already failed the test if playwright is missing.
    from playwright.sync_api import expect

    page = browser_page
    # So that the Copy button's navigator.clipboard can be checked.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    User.objects.create_superuser("boss", password="correct horse battery")
    old, old_token = tokens.rotate(scope="drain", label="before the e2e test")
    for path in (SCREENSHOT, ROTATE_SCREENSHOT, LIST_SCREENSHOT, SETUP_SCREENSHOT):
        path.unlink(missing_ok=True)
    endpoint = f"{live_server.url}/api/v1/cron/drain-queues"

    admin_login(
        page,
        live_server.url,
        "boss",
        "correct horse battery",
        next_path="/admin/ops/tokenversion/",
    )
    expect(page).to_have_url(re.compile(r"/admin/ops/tokenversion/$"))
    expect(page.locator("#ops-env-credentials")).to_contain_text("not set")

    page.click("a.ops-rotate-link")
    expect(page).to_have_url(re.compile(r"/admin/ops/tokenversion/rotate/$"))
    expect(page.locator("#ops-after-drain")).to_contain_text(old.prefix)
    page.select_option("select[name=scope]", "drain")
    page.fill("input[name=grace_hours]", "2")
    page.fill("input[name=label]", "e2e scheduler")
    page.screenshot(path=str(ROTATE_SCREENSHOT), full_page=True)
    page.click("input[type=submit][name=_rotate]")

    # POST-redirect-GET: the token is on the new version's page, shown once.
    expect(page).to_have_url(re.compile(r"/admin/ops/tokenversion/\d+/new-token/$"))
    field = page.locator("#ops-new-token")
    expect(field).to_be_visible()
    expect(page.locator("#ops-token-warning")).to_have_text(
        "Copy this token now: it will not be shown again."
    )
    token = field.input_value()
    assert token.startswith("kaireon_drain_")
    assert field.get_attribute("readonly") is not None
    page.click("#ops-copy-token")
    expect(page.locator("#ops-copy-token")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == token
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    status, body = _drain(endpoint, token)
    assert status == 200, body
    assert body["status"] == "succeeded"
    assert body["trigger"] == "cron"

    page.click("#ops-back-to-list")
    expect(page).to_have_url(re.compile(r"/admin/ops/tokenversion/$"))
    new_row = page.locator("#result_list tr", has_text="e2e scheduler")
    expect(new_row.locator("td.field-state_badge")).to_have_text("active")
    expect(new_row.locator("td.field-last_used")).to_contain_text("from 127.0.0.1")
    expect(new_row.locator("td.field-uses")).to_have_text("1")
    old_row = page.locator("#result_list tr", has_text="before the e2e test")
    expect(old_row.locator("td.field-state_badge")).to_contain_text("in grace until")
    assert token not in page.content()
    page.screenshot(path=str(LIST_SCREENSHOT), full_page=True)

    page.click("a.ops-setup-link")
    expect(page.locator("#recipe-curl-1")).to_contain_text(endpoint)
    assert token not in page.content()
    # The test drain: an idle drain here, run in the background, then
    # answered as the endpoint would (the page follows it by itself).
    page.click("input[type=submit][name=_test_drain]")
    expect(page).to_have_url(
        re.compile(r"/admin/ops/tokenversion/scheduler-setup/test/\d+/#ops-test-drain$")
    )
    expect(page.locator("#ops-test-status")).to_have_text("HTTP 200", timeout=60_000)
    expect(page.locator("#ops-test-json")).to_contain_text('"status": "succeeded"')
    page.screenshot(path=str(SETUP_SCREENSHOT), full_page=True)

    new = TokenVersion.objects.get(label="e2e scheduler")
    assert new.version == 2
    assert new.created_by is not None and new.created_by.username == "boss"
    assert new.use_count == 1
    run = DrainRun.objects.get(trigger=DrainRun.Trigger.CRON)
    assert run.credential == f"token:drain v2 {new.prefix}"
    # The old version still works during its grace.
    assert tokens.authenticate(old_token) is not None
    assert SCREENSHOT.stat().st_size > 0
