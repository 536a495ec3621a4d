"""Stopping a running job from the console, in a real headless Chromium
(Debian's, never a downloaded one), on the default lean executor: Drain now
starts a drain with a long job (a real gunicorn, tests/servers.py, and the
detached drain process it starts), the queue's started page lists the job
the lean drain runs, Stop asks for a confirmation, and the job ends stopped."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from rq import Queue as RQQueue
from rq.job import Job, JobStatus

from ops.models import DrainRun, JobStopRequest, Queue
from tests.servers import start_gunicorn, stop_gunicorn

if TYPE_CHECKING:
    from playwright.sync_api import Page

PASSWORD = "correct horse battery"
STOPPED_SCREENSHOT = Path("/tmp/kaireon-stop-job.png")


@pytest.fixture
def gunicorn_url(transactional_db: None, redis_server, background_drains):
    # The default executor: the lean one, whose running jobs are in no
    # registry of RQ's.
    proc, port = start_gunicorn(
        {"REDIS_URL": redis_server.url(), "DRAIN_EXECUTOR": "lean"}
    )
    yield f"http://127.0.0.1:{port}"
    stop_gunicorn(proc)


@pytest.mark.e2e
def test_an_sre_stops_a_running_lean_job_with_one_click_and_a_confirmation(
    gunicorn_url: str,
    browser_page: Page,
    admin_login,
    background_drains,
    rq_client,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    User.objects.create_superuser("boss", password=PASSWORD)
    ledger = tmp_path / "ledger"
    job = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.ledger_sleep_marked", str(ledger), "long", 60, job_timeout=600
    )
    queue = Queue.objects.get(name="batch-jobs")
    admin_login(page, gunicorn_url, "boss", PASSWORD, next_path="/admin/")
    page.goto(f"{gunicorn_url}/admin/ops/drainrun/drain/")
    page.uncheck("input[name=queues][value=dsar-jobs]")
    with page.expect_navigation():
        page.click("input[type=submit][name=_drain]")
    run = DrainRun.objects.get()

    # The started page lists the job once the drain's child has claimed it.
    started = f"{gunicorn_url}/admin/ops/queue/{queue.pk}/jobs/started/"
    stop_link = page.locator(f'a[href$="stop/?job={job.id}"]')
    for _ in range(60):
        page.goto(started)
        if stop_link.count():
            break
        page.wait_for_timeout(500)
    expect(stop_link).to_be_visible()
    expect(page.locator("#ops-jobs")).to_contain_text("running (lean)")

    stop_link.click()
    expect(page.locator("#ops-stop-what")).to_contain_text(job.id)
    with page.expect_navigation():
        page.click("input[type=submit][value='Yes, stop this job']")
    expect(page).to_have_url(re.compile(r"/jobs/started/$"))
    expect(page.locator(".messagelist")).to_contain_text(f"Asked to stop job {job.id}")

    ended = background_drains(run.pk, timeout_s=30)
    assert ended.total_failed == 1
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.STOPPED
    assert JobStopRequest.objects.get().outcome == JobStopRequest.Outcome.STOPPED
    assert not any(x.startswith("end") for x in ledger.read_text().splitlines())

    # The failed page shows it, as stopped.
    page.goto(f"{gunicorn_url}/admin/ops/queue/{queue.pk}/jobs/failed/")
    row = page.locator("#ops-jobs tr", has_text=job.id)
    expect(row).to_contain_text("stopped")
    expect(row).to_contain_text("JobStopped")
    page.screenshot(path=str(STOPPED_SCREENSHOT), full_page=True)
