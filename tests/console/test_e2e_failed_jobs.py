"""A failed job, end to end in Debian's headless Chromium: the run says so,
the failed-jobs page lists it, its traceback is readable, requeue, the next
drain runs it, and it is no longer failed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from django.contrib.auth.models import User
from rq import Queue as RQQueue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from ops.models import DrainRun

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOT = Path("/tmp/kaireon-e2e-failed-job.png")


def drain_now(page: Page, url: str) -> None:
    page.goto(f"{url}/admin/ops/drainrun/drain/")
    page.click("input[type=submit][name=_drain]")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_operator_sees_a_failed_job_requeues_it_and_the_next_drain_runs_it(
    live_server,
    raw_redis: redis.Redis,
    browser_page: Page,
    admin_login,
    tmp_path,
    background_drains,
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    User.objects.create_superuser("oncall", password="correct horse battery")
    fixed = tmp_path / "fixed"
    job = RQQueue("dsar-jobs", connection=raw_redis).enqueue(
        "tests.jobs.fail_until", str(fixed)
    )
    admin_login(page, live_server.url, "oncall", "correct horse battery")

    # The drain: its run says the job failed.
    drain_now(page, live_server.url)
    expect(page).to_have_url(re.compile(r"/admin/ops/drainrun/\d+/change/$"))
    expect(page.locator(".field-status_badge .ops-badge")).to_have_text(
        "with_failures", timeout=60_000
    )
    expect(page.locator("body")).to_contain_text(job.id)

    # The queue list's failed count leads to the failed-jobs page.
    page.goto(f"{live_server.url}/admin/ops/queue/")
    row = page.locator("#result_list tr", has_text="dsar-jobs")
    row.locator("a[title^='the failed jobs']").click()
    expect(page.locator("#ops-jobs")).to_contain_text(job.id)

    # Its traceback is readable.
    page.locator("#ops-jobs a", has_text=job.id).first.click()
    expect(page.locator("#ops-traceback")).to_contain_text("RuntimeError")
    expect(page.locator("#ops-traceback")).to_contain_text("waiting for")

    # Requeue: a confirmation that names the job and its cost, then the act.
    page.locator("#ops-job-actions a", has_text="Requeue").click()
    expect(page.locator("#ops-confirm-jobs")).to_contain_text(job.id)
    expect(page.locator("#ops-action-cost")).to_contain_text("Redis command")
    page.locator("#ops-confirm-form [type=submit]").first.click()
    expect(page.locator(".messagelist")).to_contain_text("equeued")
    assert Job.fetch(job.id, connection=raw_redis).get_status() == JobStatus.QUEUED

    # The cause is fixed; the next drain runs the job and it is no longer failed.
    fixed.write_text("ok")
    drain_now(page, live_server.url)
    # The run page follows the background drain and reloads at its end.
    expect(page.locator(".field-status_badge .ops-badge")).to_have_text(
        "succeeded", timeout=60_000
    )
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    done = Job.fetch(job.id, connection=raw_redis)
    assert done.get_status() == JobStatus.FINISHED
    assert done.return_value() == "fixed"
    assert (
        job.id not in FailedJobRegistry("dsar-jobs", connection=raw_redis).get_job_ids()
    )
    assert DrainRun.objects.filter(status=DrainRun.Status.SUCCEEDED).count() == 1
