"""Drain now, the run page following a drain, rotation's reload and the Drain
runs list, in a real headless Chromium (Debian's, never a downloaded one).

Drain now goes through a real gunicorn (tests/servers.py): the drain runs in a
process the worker starts and does not wait for."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User

from ops.engine.enqueue import enqueue_canaries
from ops.models import DrainRun, TokenVersion
from tests.servers import start_gunicorn, stop_gunicorn

if TYPE_CHECKING:
    from playwright.sync_api import Page

RUNNING_SCREENSHOT = Path("/tmp/kaireon-drain-running.png")
FINISHED_SCREENSHOT = Path("/tmp/kaireon-drain-finished.png")
RUNS_SCREENSHOT = Path("/tmp/kaireon-drain-runs-1366.png")
PASSWORD = "correct horse battery"


@pytest.fixture
def gunicorn_url(transactional_db: None, redis_server, background_drains):
    proc, port = start_gunicorn({"REDIS_URL": redis_server.url()})
    yield f"http://127.0.0.1:{port}"
    stop_gunicorn(proc)


@pytest.mark.e2e
def test_drain_now_answers_at_once_and_the_run_page_follows_it_to_the_end(
    gunicorn_url: str, browser_page: Page, admin_login, background_drains
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    User.objects.create_superuser("boss", password=PASSWORD)
    # Six jobs of 0.5 s on one queue: a drain of about 3 s, long enough to be
    # seen running.
    enqueue_canaries("batch-jobs", kind="sleep", count=6, sleep_ms=500)
    admin_login(page, gunicorn_url, "boss", PASSWORD, next_path="/admin/")
    page.goto(f"{gunicorn_url}/admin/ops/drainrun/drain/")
    page.uncheck("input[name=queues][value=dsar-jobs]")
    page.fill("input[name=max_concurrent_queues]", "1")

    begun = time.monotonic()
    with page.expect_navigation():
        page.click("input[type=submit][name=_drain]")
    answered = time.monotonic() - begun

    print(f"Drain now answered in {answered:.3f} s")  # shown with pytest -s
    # The bound, generous: the POST started the drain, did not run it.
    assert answered < 1.0, f"Drain now took {answered:.2f} s to answer"
    run = DrainRun.objects.get()
    expect(page).to_have_url(re.compile(rf"/admin/ops/drainrun/{run.pk}/change/$"))
    live = page.locator("#ops-run-live")
    expect(live).to_be_visible()
    # While it runs: counts move without a reload.
    expect(live.locator('[data-field="statusLabel"]')).to_have_text("Running")
    expect(live.locator('[data-field="current"]')).to_contain_text("on batch-jobs")
    expect(live.locator('[data-field="processed"]')).not_to_have_text("0")
    page.screenshot(path=str(RUNNING_SCREENSHOT), full_page=True)

    # By itself, the page reaches the outcome.
    state = page.locator("#ops-run-state")
    expect(state).to_contain_text("Finished", timeout=60_000)
    expect(state).to_contain_text("Succeeded: 6 processed, 0 failed, 0 left")
    expect(page.locator("#ops-run-live")).to_have_count(0)
    page.screenshot(path=str(FINISHED_SCREENSHOT), full_page=True)
    run.refresh_from_db()
    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.total_processed == 6


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_reloading_the_new_token_page_creates_no_version(
    live_server, browser_page: Page, admin_login
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    User.objects.create_superuser("boss", password=PASSWORD)
    admin_login(
        page, live_server.url, "boss", PASSWORD, next_path="/admin/ops/tokenversion/"
    )
    page.goto(f"{live_server.url}/admin/ops/tokenversion/rotate/")
    page.fill("input[name=grace_hours]", "1")
    page.click("input[type=submit][name=_rotate]")

    row = TokenVersion.objects.get()
    expect(page).to_have_url(
        re.compile(rf"/admin/ops/tokenversion/{row.pk}/new-token/$")
    )
    token = page.locator("#ops-new-token").input_value()
    assert token.startswith("kaireon_drain_")

    page.reload()
    expect(page.locator("#ops-token-already-shown")).to_be_visible()
    expect(page.locator("#ops-new-token")).to_have_count(0)
    assert token not in page.content()
    page.go_back()  # the rotate form, fetched afresh: nothing is posted
    expect(page).to_have_url(re.compile(r"/admin/ops/tokenversion/rotate/$"))
    page.go_forward()
    expect(page.locator("#ops-token-already-shown")).to_be_visible()

    assert TokenVersion.objects.count() == 1


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_drain_runs_list_fits_1366_px(
    live_server, browser_page: Page, admin_login
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.set_viewport_size({"width": 1366, "height": 800})
    User.objects.create_superuser("boss", password=PASSWORD)
    for status, caller in (
        (DrainRun.Status.WITH_FAILURES, "sre@ops-console-host-eu-west-1 pid 123456"),
        (DrainRun.Status.DEADLINE, "cron 2001:db8:1234:5678::42"),
    ):
        run = DrainRun.objects.create(trigger=DrainRun.Trigger.CLI, caller=caller)
        run.finish(
            status=status,
            queue_results={"batch-jobs": {"processed": 123456, "failed": 1234}},
            redis_commands=1234567,
            deadline_hit=True,
        )
    DrainRun.objects.create(
        trigger=DrainRun.Trigger.SCHEDULE, status=DrainRun.Status.QUEUED
    )
    admin_login(
        page, live_server.url, "boss", PASSWORD, next_path="/admin/ops/drainrun/"
    )
    expect(page.locator("#result_list")).to_be_visible()
    page.screenshot(path=str(RUNS_SCREENSHOT), full_page=True)

    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
    # The table's own box scrolls (the admin's .results) when columns do not
    # fit: they are cut off at its edge.
    cut = page.evaluate(
        "(() => { const box = document.querySelector('#changelist .results');"
        " return box.scrollWidth - box.clientWidth; })()"
    )
    assert cut <= 0, f"the last {cut} px of the run list are cut off"
    # The deadline is said in words beside the status, not as a red cross.
    expect(page.locator(".ops-deadline-note")).to_have_count(1)
    assert page.locator("#result_list img[src*=icon-no]").count() == 0
