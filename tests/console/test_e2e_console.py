"""Every console page in a real headless Chromium (Debian's, never a downloaded
one), for a superuser and for a staff user with view permissions only: it
loads (200), logs no browser console error, and fits a 1366 px wide screen
(neither the page nor a change list's table scrolls sideways). The home
page shows the alarm, a failed job and the quota incident that exist. A
screenshot of each page is kept as a test artifact in
$KAIREON_TEST_ARTIFACTS (default var/test-artifacts/screenshots/, gitignored).

One live server and one browser per user; the pages are iterated inside the
test, so the suite stays fast."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rq import Queue as RQQueue

from ops.cron.tokens import rotate
from ops.engine.enqueue import enqueue_canaries
from ops.engine.lease import DRAIN_LEASE
from ops.models import (
    AlertChannel,
    CommandUsage,
    ConsoleSettings,
    DrainRun,
    JobRecord,
    JobStopRequest,
    Lease,
    ProviderUsageReading,
    Queue,
    QuotaIncident,
    TokenVersion,
    WorkerProcess,
)

if TYPE_CHECKING:
    import redis
    from playwright.sync_api import Page

WIDTH = 1366
PASSWORD = "correct horse battery"
# A queue an application enqueued on that the Queues page does not list: the
# Redis switch page offers to register it.
UNREGISTERED = "app-reports"


def artifacts_dir() -> Path:
    default = settings.BASE_DIR / "var" / "test-artifacts" / "screenshots"
    path = Path(os.environ.get("KAIREON_TEST_ARTIFACTS", "") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


# The page's width and the widest scrolling box: a change list's table sits in
# a `.results` box that scrolls sideways by itself, so columns can be cut off
# while the page itself does not scroll.
WIDTHS = """() => {
  const doc = document.documentElement;
  let scroll = doc.scrollWidth, client = doc.clientWidth;
  for (const box of document.querySelectorAll('.results')) {
    if (box.scrollWidth - box.clientWidth > scroll - client) {
      scroll = box.scrollWidth; client = box.clientWidth;
    }
  }
  return [scroll, client];
}"""


@dataclass(frozen=True)
class World:
    queue: Queue
    run: DrainRun
    failed_job: JobRecord
    incident: QuotaIncident
    token: TokenVersion
    usage: CommandUsage
    worker: WorkerProcess
    # Started after the home page's checks (a drain running now is a drain
    # arriving: the alarm would not be down), by with_running_drain().
    running: DrainRun | None
    channel: AlertChannel
    reading: ProviderUsageReading
    stop: JobStopRequest


def _arrange(raw_redis: redis.Redis) -> World:
    """Something on every page: a late alarm, a drain with a failed job, one
    running now, an open quota incident, a token, usage rows, a provider
    figure, a worker, an alert channel, a stop request, jobs in a queue and in
    a queue the console does not know."""
    now = timezone.now()
    ConsoleSettings.objects.create(
        pk=1,
        schedule_enabled=False,
        expected_interval_minutes=5,
        updated=now - timedelta(days=1),
    )
    run = DrainRun.objects.create(
        trigger="cron",
        status="with_failures",
        started=now - timedelta(hours=3),
        finished=now - timedelta(hours=3) + timedelta(seconds=4),
        total_processed=3,
        total_failed=1,
        queue_results={"batch-jobs": {"processed": 3, "failed": 1, "remaining": 0}},
        redis_commands=17,
    )
    failed = JobRecord.objects.create(
        job_id="e2e-failed-job",
        queue="batch-jobs",
        func="ops.jobs.fail",
        status="failed",
        exc_type="RuntimeError",
        exc_message="canary failure",
        run=run,
        duration_ms=12,
    )
    incident = QuotaIncident.objects.create(
        source="drain-check",
        last_error="max requests limit exceeded. Limit: 500000, Usage: 500000",
        last_probe_at=now,
    )
    token, _ = rotate(scope="drain", label="e2e")
    usage = CommandUsage.objects.create(
        hour=now.replace(minute=0, second=0, microsecond=0),
        source="drain-check",
        commands=42,
    )
    worker = WorkerProcess.objects.create(
        name="kwork.e2e-host.4242.batch-jobs-dsar-jobs-journey-jobs",
        role="dedicated",
        host="e2e-host",
        pid=4242,
        queues=["batch-jobs", "dsar-jobs", "journey-jobs"],
        state="busy",
        current_job="0f8e2a6c-7d1b-4f35-9a51-3c2e8d4b6a70",
    )
    Lease.objects.get_or_create(name=DRAIN_LEASE)
    queue = Queue.objects.get(name="batch-jobs")
    channel = AlertChannel.objects.create(
        name="On-call Slack",
        kind="slack",
        target="https://hooks.slack.example/services/T000/B000/XXXXXXXXXXXXXXXX",
        events=["missed_tick", "quota_threshold", "failed_jobs"],
        last_error="HTTP 500 from hooks.slack.example",
    )
    reading = ProviderUsageReading.objects.create(
        at=now - timedelta(hours=2),
        used=123_456,
        limit=500_000,
        kind="monthly",
        origin="error",
        note="max requests limit exceeded. Limit: 500000, Usage: 123456",
    )
    stop = JobStopRequest.objects.create(
        job_id="0f8e2a6c-7d1b-4f35-9a51-3c2e8d4b6a70", queue="batch-jobs"
    )
    RQQueue(UNREGISTERED, connection=raw_redis).enqueue("tests.jobs.add", 1, 2)
    return World(
        queue,
        run,
        failed,
        incident,
        token,
        usage,
        worker,
        None,
        channel,
        reading,
        stop,
    )


def with_running_drain(world: World) -> World:
    """A drain running now (its page follows it: database only). Its lease is
    not taken, so nothing here waits for it."""
    now = timezone.now()
    running = DrainRun.objects.create(
        trigger="admin",
        status="running",
        started=now - timedelta(seconds=20),
        total_processed=7,
        redis_commands=40,
        queue_results={"batch-jobs": {"processed": 7, "failed": 0, "remaining": 5}},
        current_jobs={"batch-jobs": "5b0d7a8e-3c61-4f0e-9d2b-0a1c2e3f4d5e"},
        progress_at=now,
        params={"queues": ["batch-jobs"], "maxDurationMs": 60000},
    )
    return replace(world, running=running)


def _pages(world: World, *, superuser: bool) -> list[str]:
    q, o = world.queue.pk, "/admin/ops"
    assert world.running is not None
    pages = [
        "/admin/",
        "/admin/ops/",
        f"{o}/queue/",
        f"{o}/queue/{q}/change/",
        f"{o}/queue/{q}/jobs/queued/",
        f"{o}/queue/{q}/jobs/failed/",
        f"{o}/drainrun/",
        f"{o}/drainrun/{world.run.pk}/change/",
        f"{o}/drainrun/{world.running.pk}/change/",
        f"{o}/jobrecord/",
        f"{o}/jobrecord/{world.failed_job.pk}/change/",
        f"{o}/tokenversion/",
        f"{o}/tokenversion/{world.token.pk}/change/",
        f"{o}/tokenversion/scheduler-setup/",
        f"{o}/commandusage/quota/",
        f"{o}/commandusage/",
        f"{o}/commandusage/{world.usage.pk}/change/",
        f"{o}/quotaincident/",
        f"{o}/quotaincident/{world.incident.pk}/change/",
        f"{o}/workerprocess/",
        f"{o}/workerprocess/{world.worker.pk}/change/",
        f"{o}/workerprocess/mode/",
        f"{o}/consolesettings/schedule/",
        f"{o}/lease/",
        f"{o}/lease/{DRAIN_LEASE}/change/",
        f"{o}/alertchannel/",
        f"{o}/alertchannel/{world.channel.pk}/change/",
        f"{o}/providerusagereading/",
        f"{o}/providerusagereading/{world.reading.pk}/change/",
        f"{o}/jobstoprequest/",
        f"{o}/jobstoprequest/{world.stop.pk}/change/",
    ]
    if superuser:
        pages += [
            f"{o}/queue/add/",
            f"{o}/drainrun/drain/",
            f"{o}/alertchannel/add/",
            f"{o}/tokenversion/scheduler-setup/test/{world.run.pk}/",
            f"{o}/tokenversion/scheduler-setup/test/{world.running.pk}/",
            f"{o}/queue/{q}/stop/?job={world.worker.current_job}",
            "/admin/auth/user/",
            "/admin/django_q/schedule/",
        ]
    return pages


def _must_show(world: World, *, superuser: bool) -> dict[str, str]:
    """What a page is for, as a selector that must be on it: a walk that only
    loaded the page would pass on an error message too."""
    q, o = world.queue.pk, "/admin/ops"
    assert world.running is not None
    shown = {
        f"{o}/drainrun/{world.running.pk}/change/": "#ops-run-live",
        f"{o}/drainrun/{world.run.pk}/change/": "#ops-run-jobs .ops-run-job",
        f"{o}/alertchannel/": "#result_list",
        f"{o}/providerusagereading/": "#result_list",
        f"{o}/jobstoprequest/": "#result_list",
    }
    if superuser:
        shown |= {
            f"{o}/commandusage/quota/": "#ops-reading-form",
            f"{o}/alertchannel/{world.channel.pk}/change/": "#ops-send-test",
            f"{o}/tokenversion/scheduler-setup/test/{world.running.pk}/": (
                "[data-progress-url]"
            ),
            f"{o}/queue/{q}/stop/?job={world.worker.current_job}": (
                "form[method=post] [type=submit]"
            ),
        }
    return shown


SWITCH = "/admin/ops/queue/redis-switch/"


def _visit_switch_page(page: Page, base: str, who: str, *, superuser: bool) -> None:
    """The Redis switch page with the queue the console does not know, and
    for a superuser its register button. Walked once the quota incident is
    closed: while one is open the page does not read Redis at all."""
    QuotaIncident.objects.update(closed_at=timezone.now(), open_marker=None)
    wanted = "#ops-unregistered" + (" form.ops-register" if superuser else "")
    _check(_visit_all(page, base, [SWITCH], who, {SWITCH: wanted}))
    if not superuser:
        assert page.locator("#ops-unregistered form.ops-register").count() == 0


@dataclass
class Visit:
    path: str
    status: int
    errors: list[str]
    scroll_width: int
    client_width: int
    missing: str | None = None

    @property
    def overflows(self) -> bool:
        return self.scroll_width > self.client_width


def _visit_all(
    page: Page, base: str, pages: list[str], who: str, must_show: dict[str, str]
) -> list[Visit]:
    errors: list[str] = []
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    out = artifacts_dir()
    visits = []
    for path in pages:
        errors.clear()
        response = page.goto(base + path)
        assert response is not None
        width = page.evaluate(WIDTHS)
        name = re.sub(r"[^a-z0-9]+", "-", path.strip("/").lower()) or "home"
        page.screenshot(path=str(out / f"{who}-{name}.png"), full_page=True)
        wanted = must_show.get(path)
        missing = wanted if wanted and not page.locator(wanted).count() else None
        visits.append(Visit(path, response.status, list(errors), *width, missing))
    return visits


def _check(visits: list[Visit]) -> None:
    """Every page 200 without console errors and within 1366 px."""
    problems = [f"{v.path}: HTTP {v.status}" for v in visits if v.status != 200] + [
        f"{v.path}: console {v.errors}" for v in visits if v.errors
    ]
    problems += [
        f"{v.path}: {v.scroll_width} px wide in {v.client_width}"
        for v in visits
        if v.overflows
    ]
    problems += [f"{v.path}: no {v.missing}" for v in visits if v.missing]
    assert problems == []


def _login(page: Page, base: str, username: str, admin_login) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": WIDTH, "height": 900})
    admin_login(page, base, username, PASSWORD)
    expect(page).to_have_url(re.compile(r"/admin/$"))


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_every_page_works_for_a_superuser_and_the_home_page_tells_whats_wrong(
    live_server, browser_page: Page, admin_login, raw_redis
) -> None:
    from playwright.sync_api import expect

    world = _arrange(raw_redis)
    enqueue_canaries("batch-jobs", kind="noop", count=2)
    User.objects.create_superuser("boss", password=PASSWORD)
    page = browser_page
    page.set_default_timeout(15_000)
    _login(page, live_server.url, "boss", admin_login)

    # The home page: the late alarm, the failed job, the incident, each with
    # what to do and a link to where it is done.
    expect(page.locator("h1")).to_have_text("Health at a glance")
    expect(page.locator("#site-name")).to_have_text("Kaireon Ops")
    todos = page.locator("#ops-todos")
    expect(todos).to_contain_text("quota exhausted")
    expect(todos).to_contain_text("Drains are not arriving (alarm down")
    expect(todos).to_contain_text("1 job(s) failed in the last 24 h")
    expect(page.locator("#ops-home-alarm .ops-badge")).to_have_text("down")
    expect(page.locator("#ops-home-failed")).to_contain_text("RuntimeError")
    expect(page.locator("#ops-home-incident")).to_contain_text("Quota incident open")
    expect(page.locator("text=View site")).to_have_count(0)
    page.click("#ops-todos a:has-text('Failed jobs')")
    expect(page).to_have_url(re.compile(r"/admin/ops/jobrecord/\?status=failed$"))
    expect(page.locator("#result_list")).to_contain_text("e2e-failed-job")

    world = with_running_drain(world)
    visits = _visit_all(
        page,
        live_server.url,
        _pages(world, superuser=True),
        "superuser",
        _must_show(world, superuser=True),
    )
    _check(visits)
    _visit_switch_page(page, live_server.url, "superuser", superuser=True)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_every_page_works_for_a_view_only_staff_user(
    live_server, browser_page: Page, admin_login, raw_redis
) -> None:
    from playwright.sync_api import expect

    world = _arrange(raw_redis)
    user = User.objects.create_user("looker", password=PASSWORD, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__startswith="view_"
        )
    )
    page = browser_page
    page.set_default_timeout(15_000)
    _login(page, live_server.url, "looker", admin_login)
    expect(page.locator("#ops-home-alarm .ops-badge")).to_have_text("down")
    # No way to act from here: no Drain now link, no add buttons.
    expect(page.locator("a[href$='/admin/ops/drainrun/drain/']")).to_have_count(0)
    expect(page.locator("a.addlink")).to_have_count(0)

    world = with_running_drain(world)
    visits = _visit_all(
        page,
        live_server.url,
        _pages(world, superuser=False),
        "viewer",
        _must_show(world, superuser=False),
    )
    _check(visits)
    _visit_switch_page(page, live_server.url, "viewer", superuser=False)
