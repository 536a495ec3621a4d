"""Double consumption (runbook §6.1): detected from the database, shown in the
admin and by a system check; RQ's registry read only when a page asks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.checks import run_checks
from django.utils import timezone

from ops.models import ConsoleSettings, DrainRun, WorkerProcess
from ops.workers.consumers import double_consumption_warnings, live_workers

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def schedule_off():
    ConsoleSettings.objects.create(pk=1, schedule_enabled=False)


def worker(name: str, role: str, queues: list[str], **kw) -> WorkerProcess:
    return WorkerProcess.objects.create(
        name=name,
        role=role,
        host=kw.pop("host", "h1"),
        pid=1,
        queues=queues,
        state=kw.pop("state", WorkerProcess.State.IDLE),
        **kw,
    )


def test_stale_and_stopped_workers_are_not_live():
    worker("a", "dedicated", ["batch-jobs"])
    worker(
        "b",
        "dedicated",
        ["batch-jobs"],
        heartbeat=timezone.now() - timedelta(minutes=5),
    )
    worker("c", "dedicated", ["batch-jobs"], state=WorkerProcess.State.STOPPED)
    assert [w.name for w in live_workers()] == ["a"]


def test_inprocess_and_dedicated_on_the_same_queue_is_a_warning():
    worker("in", "inprocess", ["batch-jobs", "dsar-jobs"], host="api")
    worker("ded", "dedicated", ["dsar-jobs"], host="box")
    warnings = double_consumption_warnings()
    assert len(warnings) == 1
    assert warnings[0].startswith("dsar-jobs is consumed both")
    assert "W002" in {m.id.split(".")[1] for m in run_checks(databases=["default"])}


def test_a_drain_that_processed_jobs_while_workers_run_is_a_warning():
    worker("ded", "dedicated", ["batch-jobs"])
    DrainRun.objects.create(trigger="cron", status="succeeded", total_processed=0)
    assert double_consumption_warnings() == []
    DrainRun.objects.create(trigger="cron", status="succeeded", total_processed=3)
    assert "processed jobs while 1 always-on" in double_consumption_warnings()[0]


def test_the_schedule_with_inprocess_workers_is_a_warning():
    ConsoleSettings.objects.filter(pk=1).update(schedule_enabled=True)
    worker("in", "inprocess", ["batch-jobs"])
    assert "built-in drain schedule" in double_consumption_warnings()[0]


def test_all_quiet_without_workers():
    ConsoleSettings.objects.filter(pk=1).update(schedule_enabled=True)
    DrainRun.objects.create(trigger="cron", status="succeeded", total_processed=3)
    assert double_consumption_warnings() == []
    assert "ops.W002" not in {m.id for m in run_checks(databases=["default"])}


@pytest.fixture
def viewer(client):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_workerprocess"))
    client.force_login(user)
    return client


def test_the_worker_list_shows_workers_and_warnings_without_redis(viewer, wire):
    worker("in", "inprocess", ["batch-jobs"], host="api")
    worker("ded", "dedicated", ["batch-jobs"], host="box")
    response = viewer.get("/admin/ops/workerprocess/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "batch-jobs is consumed both" in body
    assert "Worker mode: cron-drain" in body
    assert wire.billed() == 0


def test_the_mode_page_reads_rqs_registry_once_and_names_foreign_workers(
    viewer, wire, raw_redis
):
    raw_redis.sadd("rq:workers", "rq:worker:someone-else", "rq:worker:kwork.x.1")
    wire.reset()
    response = viewer.get("/admin/ops/workerprocess/mode/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "someone-else" in body
    assert 'id="foreign-workers">1<' in body
    assert wire.billed() == 1  # one SMEMBERS
    assert "spent 1 Redis command" in body
    # A viewer cannot switch.
    assert "Save mode" not in body
    assert (
        viewer.post(
            "/admin/ops/workerprocess/mode/", {"worker_mode": "always-on"}
        ).status_code
        == 403
    )


def test_a_user_with_the_permission_switches_the_mode(client, settings):
    settings.WORKER_INPROCESS = False
    user = User.objects.create_user("op", password="pw", is_staff=True)
    for codename in ("view_workerprocess", "change_worker_mode"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    response = client.post(
        "/admin/ops/workerprocess/mode/", {"worker_mode": "always-on"}
    )
    assert response.status_code == 302
    from ops.runtime import worker_mode

    assert worker_mode() == "always-on"
    response = client.post(
        "/admin/ops/workerprocess/mode/", {"worker_mode": "sometimes"}
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert worker_mode() == "always-on"
    client.post("/admin/ops/workerprocess/mode/", {"worker_mode": ""})
    assert worker_mode() == "cron-drain"  # back to WORKER_INPROCESS


def test_a_mode_switch_leaves_an_entry_in_the_admin_log(client, settings):
    from django.contrib.admin.models import LogEntry

    settings.WORKER_INPROCESS = False
    user = User.objects.create_user("op2", password="pw", is_staff=True)
    for codename in ("view_workerprocess", "change_worker_mode"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    client.post("/admin/ops/workerprocess/mode/", {"worker_mode": "always-on"})
    entry = LogEntry.objects.get()
    assert entry.user == user
    assert "Worker mode set to always-on" in entry.get_change_message()
