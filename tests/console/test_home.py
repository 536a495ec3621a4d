"""The home page (admin index): health at a glance, what to do when something is
wrong, its Redis cost (one SORT per queue), and the admin's branding and
order of pages."""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta

import pytest
import redis
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.utils import timezone
from rq.utils import utcformat

from ops.engine.enqueue import enqueue_canaries
from ops.inspection.backlog import DEPTH_CAP
from ops.models import (
    ConsoleSettings,
    DrainRun,
    JobRecord,
    Queue,
    QuotaIncident,
    WorkerProcess,
)
from ops.runtime import console_settings

pytestmark = pytest.mark.django_db

HOME = "/admin/"


def _text(html: str) -> str:
    return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def _footer_cost(html: str) -> int:
    match = re.search(r'id="ops-page-cost"[^>]*>This page spent (\d+) Redis', html)
    assert match, "no page-cost footer"
    return int(match.group(1))


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section[^>]*id="{section_id}".*?</section>', html, re.S)
    assert match, f"no section {section_id}"
    return _text(match.group(0))


@pytest.fixture
def viewer() -> Client:
    """A staff user with view permissions only (no change, no drain)."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__startswith="view_"
        )
    )
    client = Client()
    client.force_login(user)
    return client


# --- Cost ----------------------------------------------------------------------


def test_the_home_page_costs_one_command_per_queue_and_says_so(
    admin_client: Client, wire
) -> None:
    enqueue_canaries("batch-jobs", kind="noop", count=3)
    wire.reset()
    html = admin_client.get(HOME).content.decode()
    queues = Queue.objects.count()
    assert queues == 5
    assert wire.billed() == queues
    assert _footer_cost(html) == queues
    assert f"Read now: {queues} Redis commands (one SORT per queue)" in _text(html)


def test_without_queues_the_home_page_sends_nothing(admin_client: Client, wire) -> None:
    Queue.objects.all().delete()
    html = admin_client.get(HOME).content.decode()
    assert wire.billed() == 0
    assert _footer_cost(html) == 0
    assert "No queue yet." in html


def test_a_deep_queue_costs_the_same_one_command(
    admin_client: Client, wire, raw_redis: redis.Redis
) -> None:
    raw_redis.rpush("rq:queue:seed-jobs", *[f"id-{i}" for i in range(DEPTH_CAP + 5)])
    html = admin_client.get(HOME).content.decode()
    assert wire.billed() == 5
    row = re.search(r'id="ops-home-queue-seed-jobs".*?</tr>', html, re.S)
    assert row
    assert f"more than {DEPTH_CAP}" in _text(row.group(0))


# --- Content ----------------------------------------------------------------------


def test_backlog_shows_depth_and_the_oldest_jobs_age(
    admin_client: Client, raw_redis: redis.Redis
) -> None:
    ids = enqueue_canaries("batch-jobs", kind="noop", count=2)
    # The head of the list (the next to run) waited 47 minutes.
    raw_redis.hset(
        f"rq:job:{ids[0]}",
        "enqueued_at",
        utcformat(timezone.now() - timedelta(minutes=47, seconds=5)),
    )
    html = admin_client.get(HOME).content.decode()
    row = _text(re.search(r'id="ops-home-queue-batch-jobs".*?</tr>', html, re.S)[0])
    assert re.search(r"batch-jobs\s+2\s+47 min", row), row
    empty = _text(re.search(r'id="ops-home-queue-dsar-jobs".*?</tr>', html, re.S)[0])
    assert re.search(r"dsar-jobs\s+0\s+empty", empty), empty
    assert '<a href="/admin/ops/queue/' in html  # each queue links to its jobs


def test_all_well_when_nothing_is_wrong(admin_client: Client) -> None:
    ConsoleSettings.objects.create(
        pk=1, schedule_enabled=True, schedule_minutes=5, updated=timezone.now()
    )
    DrainRun.objects.create(
        trigger="schedule",
        status="succeeded",
        total_processed=4,
        finished=timezone.now(),
    )
    html = admin_client.get(HOME).content.decode()
    assert 'id="ops-allwell"' in html
    assert 'id="ops-todos"' not in html
    drain = _section(html, "ops-home-drain")
    assert "succeeded 4 processed, 0 failed" in drain


def test_a_down_alarm_says_what_to_do_and_links_the_schedule(
    admin_client: Client,
) -> None:
    ConsoleSettings.objects.create(
        pk=1,
        schedule_enabled=False,
        expected_interval_minutes=5,
        updated=timezone.now() - timedelta(days=1),
    )
    DrainRun.objects.create(
        trigger="cron",
        status="succeeded",
        started=timezone.now() - timedelta(hours=2),
        finished=timezone.now() - timedelta(hours=2),
    )
    html = admin_client.get(HOME).content.decode()
    alarm = _section(html, "ops-home-alarm")
    assert "down" in alarm and "Cron is down" in alarm
    assert (
        "Drains are not arriving (alarm down, last one 2 h ago): check the "
        "external scheduler's log and its token." in alarm
    )
    assert 'href="/admin/ops/consolesettings/schedule/">Schedule and alarm' in html
    # The next expected tick is past: overdue.
    assert "overdue by 115 min" in _section(html, "ops-home-drain")


def test_failed_jobs_of_the_last_24_hours_are_counted_and_linked(
    admin_client: Client,
) -> None:
    run = DrainRun.objects.create(trigger="cron", status="with_failures")
    JobRecord.objects.create(
        job_id="j1",
        queue="batch-jobs",
        func="ops.jobs.fail",
        status="failed",
        exc_type="RuntimeError",
        run=run,
    )
    JobRecord.objects.create(
        job_id="j2", queue="dsar-jobs", status="abandoned", run=run
    )
    JobRecord.objects.create(job_id="j3", queue="batch-jobs", status="finished")
    JobRecord.objects.create(
        job_id="j0",
        queue="batch-jobs",
        status="failed",
        created=timezone.now() - timedelta(hours=25),
    )
    html = admin_client.get(HOME).content.decode()
    failed = _section(html, "ops-home-failed")
    assert "2 jobs failed or were abandoned" in failed
    assert "RuntimeError" in failed
    assert "2 job(s) failed in the last 24 h" in _text(html)
    assert 'href="/admin/ops/jobrecord/?status=failed"' in html


def test_an_open_incident_leads_the_things_to_do(admin_client: Client, wire) -> None:
    incident = QuotaIncident.objects.create(
        source="drain-check",
        last_error="max requests limit exceeded",
        last_probe_at=timezone.now(),
    )
    html = admin_client.get(HOME).content.decode()
    # The gate refuses Redis until the next probe: the page sends nothing.
    assert wire.billed() == 0
    assert "Redis could not be read" in _section(html, "ops-home-backlog")
    quota_card = _section(html, "ops-home-quota")
    assert "Quota incident open" in quota_card
    todos = re.search(r'id="ops-todos".*?</ul>', html, re.S)
    assert todos
    first = re.search(r"<li>(.*?)</li>", todos.group(0), re.S)
    assert first and "quota exhausted" in first.group(1)
    assert f'href="/admin/ops/quotaincident/{incident.pk}/change/"' in first.group(1)


def test_a_projection_past_the_budget_names_the_run_out_date(
    admin_client: Client, settings
) -> None:
    from ops.models import CommandUsage

    settings.QUOTA_MONTHLY_BUDGET = 1_000
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    CommandUsage.objects.create(
        hour=hour - timedelta(hours=2), source="drain-check", commands=300
    )
    html = admin_client.get(HOME).content.decode()
    quota_card = _section(html, "ops-home-quota")
    assert "runs out on" in quota_card
    assert "the quota page's advisor" in quota_card


def test_the_quota_card_counts_the_providers_larger_figure(
    admin_client: Client, settings
) -> None:
    """The home page, the banner and the quota page agree: a provider figure
    above what the meters saw is the one shown."""
    from ops.models import CommandUsage, ProviderUsageReading

    settings.QUOTA_MONTHLY_BUDGET = 1_000
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    CommandUsage.objects.create(
        hour=hour - timedelta(hours=1), source="drain-check", commands=10
    )
    ProviderUsageReading.objects.create(
        at=timezone.now(), used=900, kind="monthly", origin="manual"
    )
    quota_card = _section(admin_client.get(HOME).content.decode(), "ops-home-quota")
    assert "900 of 1,000 commands used" in quota_card


def test_always_on_mode_without_a_live_worker_says_so(admin_client: Client) -> None:
    ConsoleSettings.objects.create(pk=1, worker_mode="always-on")
    html = admin_client.get(HOME).content.decode()
    workers = _section(html, "ops-home-workers")
    assert "always-on" in workers
    assert "no always-on worker is alive" in workers
    WorkerProcess.objects.create(
        name="kwork.h.1", role="inprocess", host="h", pid=1, state="idle"
    )
    workers = _section(admin_client.get(HOME).content.decode(), "ops-home-workers")
    assert "alive: 1" in workers
    assert "no always-on worker is alive" not in workers


def test_recent_actions_show_everyones_entries(admin_client: Client) -> None:
    other = User.objects.create_user("sre2", password="pw", is_staff=True)
    row = console_settings()
    LogEntry.objects.log_actions(
        user_id=other.pk,
        queryset=[row],
        action_flag=CHANGE,
        change_message="Schedule: enabled=False.",
        single_object=True,
    )
    html = admin_client.get(HOME).content.decode()
    actions = _text(re.search(r'id="recent-actions-module".*?</div>', html, re.S)[0])
    assert "sre2" in actions and "Schedule: enabled=False." in actions


def test_a_view_only_user_gets_only_links_it_may_follow(viewer: Client) -> None:
    ConsoleSettings.objects.create(pk=1, schedule_enabled=False)
    QueueWithJobs = Queue.objects.get(name="batch-jobs")
    enqueue_canaries(QueueWithJobs.name, kind="noop", count=1)
    html = viewer.get(HOME).content.decode()
    assert 'id="ops-home"' in html
    assert "/admin/ops/drainrun/drain/" not in html  # no Drain now permission
    assert "/admin/auth/user/" not in html


# --- Branding and the order of pages ---------------------------------------------


def test_the_site_reads_as_kaireon_ops(admin_client: Client, client: Client) -> None:
    html = admin_client.get(HOME).content.decode()
    assert "<title>Health at a glance | Kaireon Ops</title>" in html
    assert re.search(r'id="site-name"><a href="/admin/">Kaireon Ops</a>', html)
    assert "View site" not in html
    assert "Django administration" not in html
    login = client.get("/admin/login/").content.decode()
    assert "Kaireon Ops" in login and "Django administration" not in login


def _app_list(html: str) -> list[tuple[str, list[str]]]:
    apps = []
    for block in re.findall(r'<div class="app-[^"]*module.*?</table>', html, re.S):
        name = re.search(r'class="section"[^>]*>([^<]+)</a>', block)
        models = re.findall(r'<th scope="row"[^>]*>\s*(?:<a[^>]*>)?([^<]+?)\s*<', block)
        assert name
        apps.append((name.group(1), models))
    return apps


def test_operations_come_in_order_of_use_and_internals_apart(
    admin_client: Client,
) -> None:
    apps = _app_list(admin_client.get(HOME).content.decode())
    assert [name for name, _ in apps] == ["Operations", "Internals"]
    assert apps[0][1] == [
        "Queues",
        "Drain runs",
        "Jobs run by drains",
        "Job stop requests",
        "Cron tokens",
        "Quota",
        "Quota incidents",
        "Provider usage readings",
        "Worker mode",
        "Worker processes",
        "Schedule and missed-tick alarm",
        "Alert channels",
        "Redis switch check",
    ]
    internals = apps[1][1]
    assert internals[:2] == ["Hourly Redis usage rows", "Drain leases"]
    for name in (
        "Authentication: Users",
        "Django-Q (schedule runner): Failed tasks",
        "Login throttling: Access attempts",
    ):
        assert name in internals
    assert not any(name.startswith("Failed tasks") for name in internals)


def test_each_page_of_the_list_opens(admin_client: Client) -> None:
    html = admin_client.get(HOME).content.decode()
    links = re.findall(r'<th scope="row"[^>]*>\s*<a href="([^"]+)"', html)
    assert len(links) >= 20
    for link in links:
        assert admin_client.get(link).status_code in (200, 302), link


def test_an_apps_own_page_keeps_working(admin_client: Client) -> None:
    ops = _app_list(admin_client.get("/admin/ops/").content.decode())
    assert ops[0][0] == "Operations"
    assert ops[0][1][0] == "Queues" and ops[0][1][-1] == "Drain leases"
    auth = _app_list(admin_client.get("/admin/auth/").content.decode())
    assert auth == [("Authentication and Authorization", ["Groups", "Users"])]
    assert admin_client.get("/admin/nosuchapp/").status_code == 404


def test_a_view_only_user_sees_no_internals_it_cannot_open(viewer: Client) -> None:
    apps = _app_list(viewer.get(HOME).content.decode())
    operations = dict(apps)["Operations"]
    assert operations[0] == "Queues" and "Redis switch check" in operations
    assert dict(apps)["Internals"] == ["Hourly Redis usage rows", "Drain leases"]


def test_the_queue_name_help_text_shows_its_placeholder(admin_client: Client) -> None:
    queue = Queue.objects.get(name="batch-jobs")
    html = admin_client.get(f"/admin/ops/queue/{queue.pk}/change/").content.decode()
    assert "rq:queue:&lt;name&gt;" in html
    # Shown, not swallowed as a tag.
    assert "rq:queue:<name>" not in html


def test_no_page_text_points_at_a_runbook_outside_the_repository() -> None:
    from django.conf import settings

    for path in (settings.BASE_DIR / "templates").rglob("*.html"):
        text = re.sub(
            r"{% comment %}.*?{% endcomment %}", "", path.read_text(), flags=re.S
        )
        assert "runbook §" not in text.lower(), path
        assert "../shared" not in text and "/work/shared" not in text, path
    assert ContentType  # imported for LogEntry's content types
