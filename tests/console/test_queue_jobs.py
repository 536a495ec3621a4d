"""The admin's job pages of a queue (ops/console/admin/queue_jobs.py): lists per
state, one job, requeue and delete behind a confirmation, and the links to
them from the queue list and the queue page."""

from __future__ import annotations

import re

import pytest
import rq
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from rq.job import Job, JobStatus
from rq.worker import SimpleWorker

from ops import jobs as canary
from ops.engine.claims import claim_key
from ops.inspection import jobs as service
from ops.models import DrainRun, JobRecord, Queue

pytestmark = pytest.mark.django_db

QUEUE = "batch-jobs"


def staff_client(username: str, *codenames: str, csrf: bool = False) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__in=codenames
        )
    )
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


@pytest.fixture
def viewer() -> Client:
    return staff_client("viewer", "view_queue")


@pytest.fixture
def manager() -> Client:
    return staff_client("manager", "view_queue", "manage_jobs", "view_drainrun")


@pytest.fixture
def queue() -> Queue:
    return Queue.objects.get(name=QUEUE)


def list_url(queue: Queue, state: str) -> str:
    return f"/admin/ops/queue/{queue.pk}/jobs/{state}/"


def job_url(queue: Queue, job_id: str) -> str:
    return f"/admin/ops/queue/{queue.pk}/job/{job_id}/"


def action_url(queue: Queue, state: str, action: str) -> str:
    return f"/admin/ops/queue/{queue.pk}/jobs/{state}/{action}/"


def footer_cost(html: str) -> int:
    match = re.search(r'id="ops-page-cost"[^>]*>This page spent (\d+) Redis', html)
    assert match, "no page-cost footer"
    return int(match.group(1))


def failed(raw, n: int, queue: str = QUEUE) -> list[str]:
    q = rq.Queue(queue, connection=raw)
    ids = [q.enqueue(canary.fail).id for _ in range(n)]
    SimpleWorker([q], connection=raw).work(burst=True)
    return ids


def flash(response) -> list[str]:
    return [str(m) for m in response.wsgi_request._messages]


# --- Links --------------------------------------------------------------------


def test_the_queue_lists_depths_link_to_the_job_pages(admin_client, raw_redis, queue):
    failed(raw_redis, 2)

    html = admin_client.get("/admin/ops/queue/").content.decode()

    for state in ("queued", "scheduled", "started", "failed"):
        assert f'href="{list_url(queue, state)}"' in html
    assert re.search(
        rf'<a href="{list_url(queue, "failed")}"[^>]*><strong class="ops-alert">2<',
        html,
    )


def test_the_queue_page_shows_its_jobs_per_state_with_links(
    admin_client, raw_redis, queue, wire
):
    failed(raw_redis, 2)
    rq.Queue(QUEUE, connection=raw_redis).enqueue(canary.noop)
    wire.reset()

    response = admin_client.get(f"/admin/ops/queue/{queue.pk}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="ops-queue-jobs"' in html
    assert f'href="{list_url(queue, "queued")}">Queued: 1<' in html
    failed_link = rf'href="{list_url(queue, "failed")}">Failed: <strong[^>]*>2<'
    assert re.search(failed_link, html)
    assert footer_cost(html) == wire.billed() == service.COUNT_COMMANDS
    # Saving the form reads nothing from Redis.
    wire.reset()
    admin_client.post(
        f"/admin/ops/queue/{queue.pk}/change/",
        {"name": QUEUE, "enabled": "on", "priority": 10, "description": ""},
    )
    assert wire.billed() == 0


# --- Lists --------------------------------------------------------------------


def test_the_failed_list_shows_each_job_with_its_exception_and_cost(
    viewer, raw_redis, queue, wire
):
    ids = failed(raw_redis, 3)
    wire.reset()

    response = viewer.get(list_url(queue, "failed"))

    html = response.content.decode()
    assert response.status_code == 200
    for job_id in ids:
        assert f'href="{job_url(queue, job_id)}"' in html
    assert html.count("ops.jobs.CanaryFailure") == 3
    assert "canary job failed on purpose" in html
    assert "3 failed jobs on batch-jobs" in html
    assert footer_cost(html) == wire.billed() == service.page_cost("failed", 3) == 5
    # A viewer gets no action: no checkbox, no button.
    assert 'name="job"' not in html
    assert "Requeue" not in html


@pytest.mark.parametrize("state", list(service.STATES))
def test_every_state_page_says_what_it_cost(
    admin_client, raw_redis, queue, wire, state
):
    failed(raw_redis, 1)
    rq.Queue(QUEUE, connection=raw_redis).enqueue(canary.noop)
    wire.reset()

    html = admin_client.get(list_url(queue, state)).content.decode()

    shown = html.count('<input type="checkbox" name="job"')
    assert footer_cost(html) == wire.billed() == service.page_cost(state, shown)


def test_pages_of_a_long_list(admin_client, raw_redis, queue):
    q = rq.Queue(QUEUE, connection=raw_redis)
    ids = [q.enqueue(canary.noop).id for _ in range(30)]

    first = admin_client.get(list_url(queue, "queued")).content.decode()
    second = admin_client.get(list_url(queue, "queued") + "?page=2").content.decode()
    beyond = admin_client.get(list_url(queue, "queued") + "?page=9")

    assert ids[0] in first and ids[24] in first and ids[25] not in first
    assert ids[25] in second and ids[0] not in second
    assert 'href="?page=2"' in first or "page=2" in first
    assert beyond.status_code == 200
    assert "There is no page 9" in beyond.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/admin/ops/queue/999999/jobs/failed/",
        "/admin/ops/queue/{pk}/jobs/nope/",
        "/admin/ops/queue/{pk}/jobs/failed/?page=abc",
        "/admin/ops/queue/{pk}/jobs/failed/?page=0",
        "/admin/ops/queue/{pk}/jobs/failed/explode/",
        "/admin/ops/queue/{pk}/jobs/started/delete/?job=x",
        "/admin/ops/queue/{pk}/jobs/queued/requeue/?job=x",
        "/admin/ops/queue/{pk}/job/no-such-job/",
        "/admin/ops/queue/{pk}/job/%20/",
    ],
)
def test_bad_input_is_a_404_never_a_500(admin_client, queue, url):
    response = admin_client.get(url.format(pk=queue.pk))
    assert response.status_code == 404


def test_redis_down_is_a_message_on_the_page(admin_client, queue, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    listing = admin_client.get(list_url(queue, "failed"))
    one = admin_client.get(job_url(queue, "abc"))

    assert listing.status_code == one.status_code == 200
    assert "Redis could not be read" in listing.content.decode()
    assert "Redis could not be read" in one.content.decode()


# --- One job ------------------------------------------------------------------


def test_a_failed_job_shows_its_traceback_and_the_run_that_failed_it(
    manager, raw_redis, queue, wire
):
    (job_id,) = failed(raw_redis, 1)
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CRON)
    JobRecord.objects.create(
        job_id=job_id,
        queue=QUEUE,
        status=JobRecord.Status.FAILED,
        exc_type="CanaryFailure",
        exc_message="canary job failed on purpose",
        run=run,
    )
    wire.reset()

    response = manager.get(job_url(queue, job_id))

    html = response.content.decode()
    assert response.status_code == 200
    traceback = re.search(r'<pre class="ops-traceback"[^>]*>(.*?)</pre>', html, re.S)
    assert traceback and "Traceback (most recent call last)" in traceback.group(1)
    assert "ops.jobs.CanaryFailure: canary job failed on purpose" in traceback.group(1)
    assert '<pre class="ops-value" id="ops-args">()</pre>' in html
    assert f'href="/admin/ops/drainrun/{run.pk}/change/"' in html
    assert f"{action_url(queue, 'failed', 'requeue')}?job={job_id}" in html
    assert f"{action_url(queue, 'failed', 'delete')}?job={job_id}" in html
    assert footer_cost(html) == wire.billed() == 2


def test_a_job_gone_from_redis_is_a_404_that_still_shows_its_records(
    admin_client, queue
):
    JobRecord.objects.create(job_id="gone-job", queue=QUEUE, status="failed")

    response = admin_client.get(job_url(queue, "gone-job"))

    assert response.status_code == 404
    html = response.content.decode()
    assert "Redis holds no job gone-job" in html
    assert 'id="ops-job-records"' in html


def test_a_job_of_another_queue_offers_no_action_here(manager, raw_redis, queue):
    (job_id,) = failed(raw_redis, 1, queue="dsar-jobs")

    html = manager.get(job_url(queue, job_id)).content.decode()

    assert "belongs to queue dsar-jobs" in html
    assert "requeue/?job=" not in html


# --- Permissions --------------------------------------------------------------


def test_a_viewer_sees_the_pages_but_cannot_act(viewer, raw_redis, queue):
    (job_id,) = failed(raw_redis, 1)

    assert viewer.get(list_url(queue, "failed")).status_code == 200
    assert viewer.get(job_url(queue, job_id)).status_code == 200
    for action in ("requeue", "delete"):
        url = action_url(queue, "failed", action)
        assert viewer.get(url, {"job": job_id}).status_code == 403
        assert viewer.post(url, {"job": job_id}).status_code == 403
    assert Job.fetch(job_id, connection=raw_redis).get_status() == JobStatus.FAILED


def test_without_view_permission_nothing_is_shown(raw_redis, queue):
    (job_id,) = failed(raw_redis, 1)
    nobody = staff_client("nobody", "manage_jobs")

    assert nobody.get(list_url(queue, "failed")).status_code == 403
    assert nobody.get(job_url(queue, job_id)).status_code == 403
    response = nobody.post(action_url(queue, "failed", "requeue"), {"job": job_id})
    assert response.status_code == 403


# --- Acting -------------------------------------------------------------------


def test_the_confirmation_says_which_jobs_and_what_it_costs_and_does_nothing(
    manager, raw_redis, queue, wire
):
    ids = failed(raw_redis, 2)
    wire.reset()

    response = manager.get(action_url(queue, "failed", "requeue"), {"job": ids})

    html = response.content.decode()
    assert response.status_code == 200
    for job_id in ids:
        assert f'<input type="hidden" name="job" value="{job_id}">' in html
    assert "This costs at most 9 Redis commands" in html
    assert 'name="csrfmiddlewaretoken"' in html
    # Looking sent nothing to Redis and changed nothing.
    assert footer_cost(html) == wire.billed() == 0
    assert raw_redis.zcard("rq:failed:batch-jobs") == 2
    assert not LogEntry.objects.exists()


def test_the_all_confirmation_counts_with_one_command(manager, raw_redis, queue, wire):
    failed(raw_redis, 3)
    wire.reset()

    html = manager.get(
        action_url(queue, "failed", "delete"), {"all": "1"}
    ).content.decode()

    assert "Delete all 3 failed jobs of batch-jobs" in " ".join(html.split())
    assert f"at most {2 * 3 + 1 + 2} Redis commands" in html
    assert footer_cost(html) == wire.billed() == 1
    assert raw_redis.zcard("rq:failed:batch-jobs") == 3


def test_requeue_acts_on_post_records_it_and_says_what_it_cost(
    manager, raw_redis, queue, wire
):
    ids = failed(raw_redis, 3)
    wire.reset()

    response = manager.post(
        action_url(queue, "failed", "requeue"), {"job": ids[:2]}, follow=True
    )

    assert response.redirect_chain[0][0] == list_url(queue, "failed")
    assert [i.decode() for i in raw_redis.lrange("rq:queue:batch-jobs", 0, -1)] == ids[
        :2
    ]
    assert raw_redis.zrange("rq:failed:batch-jobs", 0, -1) == [ids[2].encode()]
    (message,) = [m for m in flash(response) if m.startswith("Requeued")]
    assert "Requeued 2 failed jobs of batch-jobs" in message
    assert "This cost 9 Redis commands" in message
    entry = LogEntry.objects.get()
    assert entry.action_flag == CHANGE
    assert entry.object_id == str(queue.pk)
    assert entry.user.username == "manager"
    assert ids[0] in entry.change_message and ids[1] in entry.change_message
    assert ids[2] not in entry.change_message


def test_a_job_a_running_drain_claimed_is_left_alone_and_named(
    manager, raw_redis, queue
):
    ids = failed(raw_redis, 2)
    run = DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON, worker_prefix="kdrain.t.", params={}
    )
    raw_redis.rpush(claim_key(f"{run.worker_prefix}{QUEUE}"), ids[0])

    confirm = manager.get(action_url(queue, "failed", "requeue"), {"job": ids})
    response = manager.post(
        action_url(queue, "failed", "requeue"), {"job": ids}, follow=True
    )

    # The confirmation prices the claim list in.
    assert "at most 10 Redis commands" in confirm.content.decode()
    (message,) = flash(response)
    assert f"Left alone: {ids[0]} (a drain or worker has claimed it" in message
    assert Job.fetch(ids[0], connection=raw_redis).get_status() == JobStatus.FAILED
    assert Job.fetch(ids[1], connection=raw_redis).get_status() == JobStatus.QUEUED


def test_delete_all_queued_jobs(manager, raw_redis, queue):
    q = rq.Queue(QUEUE, connection=raw_redis)
    ids = [q.enqueue(canary.noop).id for _ in range(3)]

    response = manager.post(
        action_url(queue, "queued", "delete"), {"all": "1"}, follow=True
    )

    assert raw_redis.llen("rq:queue:batch-jobs") == 0
    assert not any(raw_redis.exists(f"rq:job:{i}") for i in ids)
    (message,) = flash(response)
    assert message.startswith("Deleted 3 queued jobs of batch-jobs")
    assert "This cost 9 Redis commands" in message
    assert "Deleted 3 queued jobs" in LogEntry.objects.get().change_message


def test_the_action_post_needs_its_csrf_token(raw_redis, queue):
    (job_id,) = failed(raw_redis, 1)
    strict = staff_client("strict", "view_queue", "manage_jobs", csrf=True)

    response = strict.post(action_url(queue, "failed", "requeue"), {"job": job_id})

    assert response.status_code == 403
    assert Job.fetch(job_id, connection=raw_redis).get_status() == JobStatus.FAILED


@pytest.mark.parametrize(
    "data", [{}, {"job": ""}, {"job": "has space"}, {"job": "x" * 201}]
)
def test_a_bad_selection_is_a_message_not_an_error(manager, queue, data, wire):
    response = manager.post(action_url(queue, "failed", "delete"), data)

    assert response.status_code == 302
    assert response.url == list_url(queue, "failed")
    assert flash(response)
    assert wire.billed() == 0
    assert not LogEntry.objects.exists()


# --- Stop a running job (issue 10 item 7) ------------------------------------------


@pytest.fixture
def stopper() -> Client:
    return staff_client("stopper", "view_queue", "stop_jobs")


def stop_url(queue: Queue) -> str:
    return f"/admin/ops/queue/{queue.pk}/stop/"


def running(raw, queue: str = QUEUE) -> str:
    """A job an rq worker runs: in the started registry, status started."""
    job = rq.Queue(queue, connection=raw).enqueue("tests.jobs.add", 1, 2)
    raw.lrem(f"rq:queue:{queue}", 0, job.id)
    raw.zadd(f"rq:wip:{queue}", {f"{job.id}:exec-1": 9_999_999_999})
    raw.hset(job.key, "status", "started")
    return job.id


def test_the_started_page_offers_stop_to_who_may_stop(
    raw_redis, viewer, stopper, queue
):
    job_id = running(raw_redis)
    assert "Stop&hellip;" not in viewer.get(list_url(queue, "started")).content.decode()
    html = stopper.get(list_url(queue, "started")).content.decode()
    assert f'href="{stop_url(queue)}?job={job_id}">Stop&hellip;</a>' in html
    assert 'id="ops-stop-by-id"' in html


def test_stop_confirms_on_get_and_costs_nothing_in_redis(
    raw_redis, wire, stopper, queue
):
    from ops.models import JobStopRequest

    job_id = running(raw_redis)
    wire.reset()
    response = stopper.get(stop_url(queue), {"job": job_id})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Yes, stop this job" in html
    assert footer_cost(html) == 0
    assert not JobStopRequest.objects.exists()

    response = stopper.post(stop_url(queue), {"job": job_id})
    assert response.status_code == 302
    assert wire.billed() == 0
    request = JobStopRequest.objects.get()
    assert (request.job_id, request.queue, request.outcome) == (
        job_id,
        QUEUE,
        "pending",
    )
    assert request.requested_by.username == "stopper"
    entry = LogEntry.objects.get(object_id=str(queue.pk))
    assert entry.action_flag == CHANGE
    assert entry.get_change_message() == f"Asked to stop job {job_id}."
    # The started page now says so instead of offering it again.
    html = stopper.get(list_url(queue, "started")).content.decode()
    assert "stop asked" in html


def test_a_second_stop_of_the_same_job_is_not_a_second_request(
    raw_redis, stopper, queue
):
    from ops.models import JobStopRequest

    job_id = running(raw_redis)
    stopper.post(stop_url(queue), {"job": job_id})
    response = stopper.post(stop_url(queue), {"job": job_id})
    assert any("already asked" in m for m in flash(response))
    assert JobStopRequest.objects.count() == 1
    assert LogEntry.objects.count() == 1
    html = stopper.get(stop_url(queue), {"job": job_id}).content.decode()
    assert 'id="ops-stop-pending"' in html


def test_stop_needs_its_own_permission(raw_redis, manager, queue):
    job_id = running(raw_redis)
    assert manager.get(stop_url(queue), {"job": job_id}).status_code == 403
    assert manager.post(stop_url(queue), {"job": job_id}).status_code == 403


@pytest.mark.parametrize("bad", ["", "has space", "x" * 201])
def test_stop_refuses_a_bad_job_id_without_a_request(stopper, queue, bad):
    from ops.models import JobStopRequest

    response = stopper.post(stop_url(queue), {"job": bad})
    assert response.status_code == 302
    assert not JobStopRequest.objects.exists()
    assert stopper.get("/admin/ops/queue/999999/stop/?job=a").status_code == 404


def test_the_job_page_offers_stop_for_a_queued_or_started_job(
    raw_redis, stopper, queue
):
    job_id = running(raw_redis)
    html = stopper.get(job_url(queue, job_id)).content.decode()
    assert "Stop this job" in html
    (done,) = failed(raw_redis, 1)
    assert "Stop this job" not in stopper.get(job_url(queue, done)).content.decode()


# --- The lean executor's running jobs on the started page -------------------------


def lean_running(raw, *, hint: bool = True, queue: str = QUEUE) -> list[str]:
    """What a lean drain running its second job of a batch of three leaves:
    the batch in its claim list, the first job done, the others `queued`,
    and its run row saying which job runs (when `hint`)."""
    q = rq.Queue(queue, connection=raw)
    ids = [q.enqueue("tests.jobs.add", 1, i).id for i in range(3)]
    raw.delete(f"rq:queue:{queue}")  # claimed: off the queue
    raw.rpush(claim_key(f"kdrain.t.{queue}"), *ids)
    raw.hset(Job.key_for(ids[0]), "status", "finished")
    DrainRun.objects.create(
        trigger="cron",
        worker_prefix="kdrain.t.",
        params={"queues": [queue]},
        current_jobs={queue: ids[1]} if hint else {},
    )
    return ids


@pytest.mark.parametrize("hint", [True, False])
def test_the_started_page_lists_the_job_a_lean_drain_runs(
    raw_redis, wire, stopper, queue, hint
):
    done, runs, waits = lean_running(raw_redis, hint=hint)
    rq_job = running(raw_redis)  # and one an rq worker runs
    wire.reset()

    html = stopper.get(list_url(queue, "started")).content.decode()

    # ZRANGE + ZCARD + one SORT of the claim list, then one HMGET: the
    # rq job's. Only this page pays for the claim list.
    assert wire.billed() == footer_cost(html) == 2 + 1 + 1
    assert service.page_cost("started", 1, claim_lists=1) == 4
    assert f'href="{stop_url(queue)}?job={runs}">Stop&hellip;</a>' in html
    assert f'href="{stop_url(queue)}?job={rq_job}">Stop&hellip;</a>' in html
    assert "running (lean)" in html and "kdrain.t.batch-jobs" in html
    assert done not in html and waits not in html  # ran / not started yet
    assert "2 started jobs" in html


def test_the_started_page_reads_no_claim_list_when_nothing_runs(
    raw_redis, wire, stopper, queue
):
    DrainRun.objects.create(
        trigger="cron", status=DrainRun.Status.SUCCEEDED, worker_prefix="kdrain.x."
    )
    wire.reset()
    html = stopper.get(list_url(queue, "started")).content.decode()
    assert wire.billed() == footer_cost(html) == 2
    assert "No started job." in html


# --- Stop requests that stop nothing end closed -----------------------------------


def test_the_started_page_closes_requests_for_jobs_running_nowhere(
    raw_redis, stopper, queue
):
    from ops.engine import stop
    from ops.models import JobStopRequest

    live = running(raw_redis)
    ended = stop.request_stop("gone-job", QUEUE).request
    kept = stop.request_stop(live, QUEUE).request
    elsewhere = stop.request_stop("gone-job", "dsar-jobs")  # another queue's
    assert not elsewhere.created  # one open request per job id

    html = stopper.get(list_url(queue, "started")).content.decode()

    ended.refresh_from_db()
    kept.refresh_from_db()
    assert ended.outcome == JobStopRequest.Outcome.NOT_RUNNING
    assert "not among the queue's running jobs" in ended.handled_by
    assert kept.outcome == JobStopRequest.Outcome.PENDING
    assert "stop asked" in html


def test_a_stale_request_is_closed_and_the_job_can_be_asked_again(
    raw_redis, stopper, queue
):
    from datetime import timedelta

    from ops.engine import stop
    from ops.models import JobStopRequest

    job_id = running(raw_redis)
    old = stop.request_stop(job_id, QUEUE).request
    JobStopRequest.objects.filter(pk=old.pk).update(
        requested_at=old.requested_at - timedelta(seconds=stop.STALE_AFTER_S + 1)
    )

    html = stopper.get(stop_url(queue), {"job": job_id}).content.decode()
    assert 'id="ops-stop-pending"' not in html
    response = stopper.post(stop_url(queue), {"job": job_id})

    assert any(f"Asked to stop job {job_id}" in m for m in flash(response))
    old.refresh_from_db()
    assert old.outcome == JobStopRequest.Outcome.NOT_RUNNING
    assert JobStopRequest.objects.filter(outcome="pending").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("executor", ["lean", "rq"])
def test_a_running_job_of_either_executor_is_stopped_from_the_started_page(
    raw_redis, queue, executor, tmp_path
):
    """A real `manage.py drain` runs a long job: the started page lists it
    with a Stop link, on both executors, and the Stop ends it as stopped."""
    import os
    import subprocess
    import sys
    import time

    from django.conf import settings

    from ops.models import JobStopRequest
    from tests.conftest import database_url

    client = staff_client("sre", "view_queue", "stop_jobs")
    ledger = tmp_path / "ledger"
    job = rq.Queue(QUEUE, connection=raw_redis).enqueue(
        "tests.jobs.ledger_sleep_marked", str(ledger), "long", 30, job_timeout=600
    )
    env = {**os.environ, "DATABASE_URL": database_url(), "DRAIN_EXECUTOR": executor}
    proc = subprocess.Popen(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "drain", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    link = f'href="{stop_url(queue)}?job={job.id}">Stop&hellip;</a>'
    try:
        deadline = time.monotonic() + 30
        while link not in client.get(list_url(queue, "started")).content.decode():
            assert time.monotonic() < deadline, "the running job was never listed"
            time.sleep(0.2)
        client.post(stop_url(queue), {"job": job.id})
        proc.communicate(timeout=30)
    finally:
        proc.kill()

    assert Job.fetch(job.id, connection=raw_redis).get_status() == JobStatus.STOPPED
    assert not any(line.startswith("end") for line in ledger.read_text().split("\n"))
    assert JobStopRequest.objects.get().outcome == JobStopRequest.Outcome.STOPPED
