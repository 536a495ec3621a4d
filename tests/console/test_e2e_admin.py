"""The admin driven end to end in a real headless Chromium (Debian's, never a
downloaded one): log in, open "Drain now", submit, read the run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from django.contrib.auth.models import User

from ops.engine.enqueue import enqueue_canaries
from ops.models import DrainRun

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOT = Path("/tmp/kaireon-e2e.png")  # the run page, the end state
# The pages on the way, for a person to look at.
QUEUES_SCREENSHOT = Path("/tmp/kaireon-e2e-queues.png")
FORM_SCREENSHOT = Path("/tmp/kaireon-e2e-drain-form.png")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_superuser_drains_from_the_browser_and_sees_the_run(
    live_server,
    raw_redis: redis.Redis,
    browser_page: Page,
    admin_login,
    background_drains,
) -> None:
    # The fixture has already failed the test if playwright is missing.
    from playwright.sync_api import expect

    page = browser_page
    User.objects.create_superuser("boss", password="correct horse battery")
    enqueue_canaries("batch-jobs", kind="noop", count=4)
    SCREENSHOT.unlink(missing_ok=True)

    admin_login(
        page,
        live_server.url,
        "boss",
        "correct horse battery",
        next_path="/admin/ops/queue/",
    )
    expect(page).to_have_url(re.compile(r"/admin/ops/queue/$"))
    batch_row = page.locator("#result_list tr", has_text="batch-jobs")
    expect(batch_row.locator("td.field-queued")).to_have_text("4")
    expect(page.locator("#ops-redis-cost")).to_contain_text("spent")
    page.screenshot(path=str(QUEUES_SCREENSHOT), full_page=True)

    page.goto(f"{live_server.url}/admin/ops/drainrun/")
    page.click("a.ops-drain-link")
    expect(page).to_have_url(re.compile(r"/admin/ops/drainrun/drain/$"))
    expect(page.locator("h1")).to_have_text("Drain now")
    expect(page.locator("input[name=queues][value=batch-jobs]")).to_be_checked()
    page.screenshot(path=str(FORM_SCREENSHOT), full_page=True)

    page.click("input[type=submit][name=_drain]")
    expect(page).to_have_url(re.compile(r"/admin/ops/drainrun/\d+/change/$"))

    # The drain runs in the background; the run page follows it to its end.
    expect(page.locator("#ops-run-state")).to_contain_text(
        "Finished: Succeeded: 4 processed, 0 failed, 0 left", timeout=60_000
    )
    expect(page.locator(".field-status_badge .ops-badge")).to_have_text("succeeded")
    expect(page.locator(".field-total_processed .readonly")).to_have_text("4")
    expect(
        page.locator("table.ops-queue-results tr", has_text="batch-jobs")
    ).to_have_text(re.compile(r"batch-jobs\s*4\s*0\s*0"))
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    run = DrainRun.objects.get()
    assert run.total_processed == 4
    assert run.trigger == DrainRun.Trigger.ADMIN
    assert run.requested_by is not None
    assert run.requested_by.username == "boss"
    assert raw_redis.llen("rq:queue:batch-jobs") == 0
    assert SCREENSHOT.stat().st_size > 0
