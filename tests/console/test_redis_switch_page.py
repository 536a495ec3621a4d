"""The admin's "Redis switch check" page, /admin/ops/queue/redis-switch/."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import rq
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ops.console.admin.drains import QueueAdmin
from ops.models import DrainRun, Queue, WorkerProcess

pytestmark = pytest.mark.django_db

URL = "/admin/ops/queue/redis-switch/"


def staff_client(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer() -> Client:
    """Staff who may only look at queues: no change, no drain, no runs."""
    return staff_client("viewer", "view_queue")


def empty_drains(n: int = 3) -> list[DrainRun]:
    now = timezone.now()
    out = []
    for i in range(n):
        started = now - timedelta(minutes=5 * (n - i))
        out.append(
            DrainRun.objects.create(
                trigger=DrainRun.Trigger.CRON,
                status=DrainRun.Status.SUCCEEDED,
                started=started,
                finished=started + timedelta(seconds=1),
            )
        )
    return out


def spent(html: str) -> int:
    match = re.search(r"This check spent (\d+) Redis command", html)
    assert match, "the page does not say what it spent"
    return int(match.group(1))


def verdict(html: str) -> str:
    match = re.search(r'<div id="ops-verdict"[^>]*>\s*([^<]+?)\s*<small>', html)
    assert match, "no verdict on the page"
    return match.group(1)


def test_the_url_is_the_queue_admins():
    assert reverse("admin:ops_queue_redis_switch") == URL
    # Re-registered as a subclass: the queue list behaves as before.
    assert isinstance(admin.site._registry[Queue], QueueAdmin)


def test_a_view_only_user_sees_the_verdict_and_what_it_cost(viewer, raw_redis, wire):
    empty_drains(1)
    batch = rq.Queue("batch-jobs", connection=raw_redis)
    for _ in range(3):
        batch.enqueue("tests.jobs.add", 1, 2)

    response = viewer.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert verdict(html) == "Not safe to switch Redis"
    assert "batch-jobs: 3 queued jobs would be abandoned" in html
    assert "only 1 of 3 consecutive empty drains" in html
    # The page costs what it says, and what the formula says.
    assert wire.snapshot() == {
        "AUTH": 1,
        "LLEN": 10,
        "ZCARD": 20,
        "SCARD": 1,
        "SMEMBERS": 1,
    }
    assert spent(html) == wire.billed() == 6 * 5 + 2
    assert "(6 per queue + 2: 6 &times; 5 queues + 2 = 32, in one pipeline)" in html
    # Runs are not linked for a user who may not view them.
    assert "/admin/ops/drainrun/" not in html
    assert "no-store" in response["Cache-Control"]  # a stale verdict misleads


def test_the_safe_verdict_and_the_streak(viewer):
    runs = empty_drains(3)

    response = viewer.get(URL)

    html = response.content.decode()
    assert verdict(html) == "Safe to switch Redis"
    assert 'id="ops-reasons"' not in html
    assert "3 consecutive empty drains" in html
    assert html.count("empty: counts") == len(runs)


def test_runs_are_linked_for_users_who_may_view_them():
    [run] = empty_drains(1)
    client = staff_client("runs", "view_queue", "view_drainrun")

    html = client.get(URL).content.decode()

    assert reverse("admin:ops_drainrun_change", args=[run.pk]) in html


def test_the_per_queue_table_and_left_behind_failed_jobs(viewer, raw_redis):
    empty_drains(3)
    Queue.objects.filter(name="seed-jobs").update(enabled=False)
    seed = rq.Queue("seed-jobs", connection=raw_redis)
    seed.enqueue_in(timedelta(hours=1), "tests.jobs.add", 1, 2)
    failed = seed.enqueue("tests.jobs.add", 1, 2)
    raw_redis.lrem("rq:queue:seed-jobs", 0, failed.id)
    raw_redis.zadd("rq:failed:seed-jobs", {failed.id: 9999999999})

    html = viewer.get(URL).content.decode()

    row = re.search(r"<tr><td>seed-jobs .*?</tr>", html, re.S)
    assert row, "no row for seed-jobs"
    cells = [
        re.sub(r"<[^>]+>", "", c).strip()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
    ]
    assert cells == ["seed-jobs (disabled)", "0", "0", "1", "0", "0", "1"]
    assert "seed-jobs (disabled): 1 scheduled job would be abandoned" in html
    assert "seed-jobs (disabled): 1 failed job would be left behind" in html


def test_live_workers_are_listed_and_escaped(viewer):
    empty_drains(3)
    WorkerProcess.objects.create(
        name="<b>kw.batch.1</b>",
        role=WorkerProcess.Role.DEDICATED,
        host="worker-1",
        pid=77,
        queues=["batch-jobs"],
        state=WorkerProcess.State.IDLE,
        heartbeat=timezone.now(),
    )

    html = viewer.get(URL).content.decode()

    assert verdict(html) == "Not safe to switch Redis"
    assert "1 always-on worker alive" in html
    assert "&lt;b&gt;kw.batch.1&lt;/b&gt;" in html
    assert "<b>kw.batch.1</b>" not in html


def test_it_renders_when_redis_is_down(viewer):
    empty_drains(3)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # the autouse fixture restores it

    response = viewer.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert verdict(html) == "Not safe to switch Redis"
    assert "Redis is unreachable" in html
    assert 'id="ops-redis-problem"' in html


def test_staff_without_view_queue_is_refused(wire):
    client = staff_client("runs-only", "view_drainrun")

    response = client.get(URL)

    assert response.status_code == 403
    assert wire.snapshot() == {}  # refused before any Redis command


def test_anonymous_users_are_sent_to_the_login_page(client, wire):
    response = client.get(URL)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert wire.snapshot() == {}


def test_the_queue_list_still_works(viewer):
    response = viewer.get("/admin/ops/queue/")

    assert response.status_code == 200
    assert "batch-jobs" in response.content.decode()


# --- Queues in rq:queues that are not on the Queues page -----------------------


def test_the_page_lists_an_unregistered_queue_holding_jobs(viewer, redis_server):
    import redis as redis_py

    client = redis_py.Redis.from_url(redis_server.url())
    rq.Queue("billing-jobs", connection=client).enqueue("tests.jobs.add", 1, 2)
    html = viewer.get(URL).content.decode()
    assert 'id="ops-unregistered"' in html
    assert "<td>billing-jobs</td>" in html
    reason = "billing-jobs (not on the Queues page: no drain runs it): 1 queued job"
    assert reason in html
    # A viewer may not add queues: no button.
    assert "Register, enabled" not in html
    assert "6 &times; 1 queue of <code>rq:queues</code> not on the Queues page" in html


def test_registering_from_the_page_creates_the_row_and_an_audit_entry(redis_server):
    import redis as redis_py
    from django.contrib.admin.models import ADDITION, LogEntry

    client = redis_py.Redis.from_url(redis_server.url())
    rq.Queue("billing-jobs", connection=client).enqueue("tests.jobs.add", 1, 2)
    operator = staff_client("operator", "view_queue", "add_queue")
    assert "Register, enabled" in operator.get(URL).content.decode()

    # GET does nothing.
    operator.get(reverse("admin:ops_queue_register") + "?name=billing-jobs")
    assert not Queue.objects.filter(name="billing-jobs").exists()

    response = operator.post(
        reverse("admin:ops_queue_register"), {"name": "billing-jobs", "enabled": "0"}
    )
    assert response.status_code == 302
    queue = Queue.objects.get(name="billing-jobs")
    assert queue.enabled is False
    entry = LogEntry.objects.get(object_id=str(queue.pk))
    assert entry.action_flag == ADDITION
    assert entry.user.username == "operator"
    assert "rq:queues" in entry.get_change_message()
    html = operator.get(URL).content.decode()
    assert 'id="ops-unregistered"' not in html
    assert "billing-jobs <span" in html  # listed with the registered queues


def test_registering_needs_the_add_permission_and_a_good_name(viewer):
    url = reverse("admin:ops_queue_register")
    assert viewer.post(url, {"name": "billing-jobs"}).status_code == 403
    operator = staff_client("operator", "view_queue", "add_queue")
    response = operator.post(url, {"name": "batch-jobs", "enabled": "1"}, follow=True)
    assert "Not registered" in response.content.decode()
    response = operator.post(url, {"name": "", "enabled": "1"}, follow=True)
    assert "Not registered" in response.content.decode()
    assert Queue.objects.count() == 5
