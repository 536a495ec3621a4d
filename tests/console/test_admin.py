from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
import rq
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from ops import jobs
from ops.engine.enqueue import enqueue_canaries
from ops.engine.lease import DRAIN_LEASE
from ops.humanize import duration_ms
from ops.models import DrainRun, JobRecord, Lease, Queue

RUNBOOK_QUEUES = [
    "batch-jobs",
    "dsar-jobs",
    "journey-jobs",
    "retrain-jobs",
    "seed-jobs",
]

QUEUES_URL = "/admin/ops/queue/"
RUNS_URL = "/admin/ops/drainrun/"
DRAIN_URL = "/admin/ops/drainrun/drain/"
LEASES_URL = "/admin/ops/lease/"
JOBS_URL = "/admin/ops/jobrecord/"


def _staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__in=codenames
        )
    )
    return user


VIEW_ALL = ("view_queue", "view_drainrun", "view_lease")


@pytest.fixture
def viewer_client(db: None) -> Client:
    client = Client()
    client.force_login(_staff("viewer", *VIEW_ALL))
    return client


@pytest.fixture
def drainer(db: None) -> User:
    return _staff("drainer", *VIEW_ALL, "drain_queues")


@pytest.fixture
def drainer_client(drainer: User) -> Client:
    client = Client()
    client.force_login(drainer)
    return client


@pytest.fixture
def holding_run(db: None) -> Iterator[DrainRun]:
    """A drain that holds the drain lease right now (as if running elsewhere)."""
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CRON, caller="cron 10.0.0.9")
    Lease.objects.filter(name=DRAIN_LEASE).update(
        holder=run.public_id,
        expires_at=timezone.now() + timedelta(minutes=5),
        acquired_at=timezone.now(),
    )
    yield run
    Lease.objects.filter(name=DRAIN_LEASE).update(holder=None)


def _row_cells(html: str, name: str) -> dict[str, str]:
    """The changelist cells (by column class) of the row showing `name`."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S):
        if f">{name}<" in row:
            return {
                column: re.sub(r"<[^>]+>", "", cell).strip()
                for column, cell in re.findall(
                    r'<t[dh] class="field-([\w-]+)"[^>]*>(.*?)</t[dh]>', row, re.S
                )
            }
    raise AssertionError(f"no row for {name}")


def _spent(html: str) -> int:
    match = re.search(r"This page spent (\d+) Redis command", html)
    assert match, "the page does not say what it spent"
    return int(match.group(1))


# --- Queue list ---------------------------------------------------------------


def test_it_shows_the_live_depth_of_jobs_enqueued_with_plain_rq(
    admin_client: Client, raw_redis: redis.Redis, wire
) -> None:
    batch = rq.Queue("batch-jobs", connection=raw_redis)
    for _ in range(3):
        batch.enqueue(jobs.noop)
    batch.enqueue_in(timedelta(hours=1), jobs.noop)
    dsar = rq.Queue("dsar-jobs", connection=raw_redis)
    dsar.enqueue(jobs.fail)
    rq.SimpleWorker([dsar], connection=raw_redis).work(burst=True)
    dsar.enqueue(jobs.noop)

    response = admin_client.get(QUEUES_URL)

    assert response.status_code == 200
    html = response.content.decode()
    batch_row = _row_cells(html, "batch-jobs")
    assert [batch_row[c] for c in ("queued", "scheduled", "started", "failed")] == [
        "3",
        "1",
        "0",
        "0",
    ]
    dsar_row = _row_cells(html, "dsar-jobs")
    assert [dsar_row[c] for c in ("queued", "scheduled", "started", "failed")] == [
        "1",
        "0",
        "0",
        "1",
    ]
    # One pipeline for the page: LLEN + 3 ZCARD per queue, nothing per row.
    assert wire.snapshot() == {"AUTH": 1, "LLEN": 5, "ZCARD": 15}
    assert _spent(html) == wire.billed() == 4 * 5


def test_it_spends_commands_only_for_the_queues_on_the_page(
    admin_client: Client, wire
) -> None:
    response = admin_client.get(QUEUES_URL, {"q": "dsar"})

    assert response.status_code == 200
    html = response.content.decode()
    assert _row_cells(html, "dsar-jobs")["queued"] == "0"
    assert "seed-jobs" not in html
    assert wire.snapshot() == {"AUTH": 1, "LLEN": 1, "ZCARD": 3}
    assert _spent(html) == 4


def test_the_queue_list_renders_when_redis_is_down(admin_client: Client) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # the autouse fixture restores it

    response = admin_client.get(QUEUES_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Live depths unavailable" in html
    assert "ConnectionError" in html
    assert _row_cells(html, "batch-jobs")["queued"] == "?"


def test_it_saves_enabled_and_priority_from_the_list(admin_client: Client) -> None:
    page = admin_client.get(QUEUES_URL)
    queues = list(page.context["cl"].result_list)
    data = {
        "form-TOTAL_FORMS": str(len(queues)),
        "form-INITIAL_FORMS": str(len(queues)),
        "_save": "Save",
    }
    for i, queue in enumerate(queues):
        data[f"form-{i}-id"] = str(queue.pk)
        data[f"form-{i}-priority"] = str(queue.priority)
        if queue.name != "seed-jobs":
            data[f"form-{i}-enabled"] = "on"
        if queue.name == "dsar-jobs":
            data[f"form-{i}-priority"] = "5"

    response = admin_client.post(QUEUES_URL, data)

    assert response.status_code == 302
    assert not Queue.objects.get(name="seed-jobs").enabled
    assert Queue.objects.get(name="dsar-jobs").priority == 5


# --- Who may drain ------------------------------------------------------------


def test_it_hides_drain_now_without_permission(viewer_client: Client) -> None:
    DrainRun.objects.create(trigger=DrainRun.Trigger.CLI, caller="host/123")

    runs = viewer_client.get(RUNS_URL)
    queues = viewer_client.get(QUEUES_URL)

    assert runs.status_code == 200
    assert "host/123" in runs.content.decode()
    assert queues.status_code == 200
    for response in (runs, queues):
        assert DRAIN_URL not in response.content.decode()
        assert "Drain now" not in response.content.decode()


def test_viewing_runs_does_not_grant_triggering(viewer_client: Client, wire) -> None:
    assert viewer_client.get(DRAIN_URL).status_code == 403
    response = viewer_client.post(DRAIN_URL, {"queues": ["batch-jobs"]})

    assert response.status_code == 403
    assert DrainRun.objects.count() == 0
    assert wire.snapshot() == {}


def test_it_shows_drain_now_to_users_who_may_drain(drainer_client: Client) -> None:
    for url in (RUNS_URL, QUEUES_URL):
        response = drainer_client.get(url)
        assert response.status_code == 200
        assert f'href="{DRAIN_URL}"' in response.content.decode()


def test_the_drain_page_needs_a_staff_login(client: Client) -> None:
    response = client.get(DRAIN_URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- The drain page -----------------------------------------------------------


def test_the_drain_page_spends_zero_redis_commands_on_get(
    drainer_client: Client, wire
) -> None:
    Queue.objects.filter(name="seed-jobs").update(enabled=False)

    response = drainer_client.get(DRAIN_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'value="batch-jobs"' in html
    assert 'value="seed-jobs"' not in html  # only enabled queues are offered
    assert 'name="max_duration_ms"' in html
    assert 'name="max_concurrent_queues"' in html
    assert wire.snapshot() == {}


def test_a_user_with_drain_permission_drains_and_lands_on_the_run(
    drainer: User, raw_redis: redis.Redis, background_drains
) -> None:
    enqueue_canaries("batch-jobs", kind="noop", count=3)
    client = Client()
    client.force_login(drainer)
    assert client.get(DRAIN_URL).status_code == 200

    response = client.post(
        DRAIN_URL,
        {
            "max_duration_ms": "30000",
            "max_concurrent_queues": "2",
            "queues": ["batch-jobs", "dsar-jobs"],
        },
    )

    # The drain is started, not run, by the request: its run page follows it.
    queued = DrainRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:ops_drainrun_change", args=[queued.pk]
    )
    run = background_drains(queued.pk)
    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.total_processed == 3
    assert run.trigger == DrainRun.Trigger.ADMIN
    assert run.requested_by == drainer
    assert run.caller == "admin drainer"
    assert run.params["queues"] == ["batch-jobs", "dsar-jobs"]
    assert raw_redis.llen("rq:queue:batch-jobs") == 0

    page = client.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200
    assert "The drain runs in the background" in html  # the message
    assert "Finished</strong>: Succeeded: 3 processed, 0 failed, 0 left" in html
    assert 'id="ops-run-live"' not in html  # ended: nothing to follow
    assert re.search(r"<td>batch-jobs</td><td>3</td><td>0</td><td>0</td>", html), (
        "per-queue results table"
    )


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"max_duration_ms": "abc"}, "max_duration_ms", "must be an integer"),
        ({"max_duration_ms": "0"}, "max_duration_ms", "must be at least 1, got 0"),
        # str.isdigit() says yes, int() says no: a form error, not a 500.
        ({"max_duration_ms": "²"}, "max_duration_ms", "must be an integer"),
        ({"max_concurrent_queues": "٣"}, "max_concurrent_queues", "an integer"),
        ({"max_duration_ms": "9" * 5000}, "max_duration_ms", "must be at most"),
        (
            {"max_concurrent_queues": "99"},
            "max_concurrent_queues",
            "must be between 1 and 5 (the number of enabled queues), got 99",
        ),
        ({"queues": []}, "queues", "must name at least one queue"),
        ({"queues": ["nope-jobs"]}, "queues", "unknown queue nope-jobs"),
        ({"queues": ["seed-jobs"]}, "queues", "queue seed-jobs is disabled"),
    ],
)
def test_bad_input_rerenders_the_form_and_starts_no_drain(
    drainer_client: Client, wire, data: dict, field: str, message: str
) -> None:
    if field == "queues" and "seed-jobs" in data.get("queues", []):
        Queue.objects.filter(name="seed-jobs").update(enabled=False)
        data = {**data, "max_concurrent_queues": "1"}
    posted = {"max_duration_ms": "1000", "queues": ["batch-jobs"], **data}

    response = drainer_client.post(DRAIN_URL, posted)

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    html = response.content.decode()
    assert escape(errors[field][0]) in html
    assert 'class="form-row errors field-' + field in html  # next to its field
    assert DrainRun.objects.count() == 0
    assert wire.snapshot() == {}  # no drain, not even the idle check


def test_the_drain_post_is_csrf_protected(drainer: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(drainer)

    response = client.post(DRAIN_URL, {"queues": ["batch-jobs"]})

    assert response.status_code == 403
    assert DrainRun.objects.count() == 0


def test_a_drain_while_another_runs_is_not_started_and_links_the_running_one(
    drainer_client: Client, holding_run: DrainRun, wire
) -> None:
    page = drainer_client.get(DRAIN_URL)
    assert "A drain is already running" in page.content.decode()

    response = drainer_client.post(DRAIN_URL, {"queues": ["batch-jobs"]})

    assert list(DrainRun.objects.all()) == [holding_run]  # no second run
    holding_url = reverse("admin:ops_drainrun_change", args=[holding_run.pk])
    assert response["Location"] == holding_url
    html = drainer_client.get(response["Location"]).content.decode()
    assert "A drain is already running" in html
    assert "no second drain was started" in html
    assert f'<a href="{holding_url}">{escape(holding_run)}</a>' in html
    assert 'id="ops-run-live"' in html  # the running one's page follows it
    assert wire.snapshot() == {}


def test_a_drainer_without_view_permission_lands_on_the_index(
    client: Client, wire, background_drains
) -> None:
    client.force_login(_staff("cronbot", "drain_queues"))

    response = client.post(DRAIN_URL, {"queues": ["batch-jobs"]})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
    run = background_drains(DrainRun.objects.get().pk)
    assert run.status == DrainRun.Status.SUCCEEDED
    assert wire.snapshot() == {"AUTH": 1, "EXISTS": 1}  # an idle drain


# --- Runs and the lease -------------------------------------------------------


def _finished_run(**params: object) -> DrainRun:
    run = DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON,
        caller="cron 10.0.0.7",
        params={
            "maxDurationMs": 600000,
            "maxConcurrentQueues": 2,
            "queues": ["dsar-jobs", "batch-jobs"],
            **params,
        },
    )
    run.finish(
        status=DrainRun.Status.DEADLINE,
        queue_results={
            "batch-jobs": {"processed": 7, "failed": 2, "remaining": 11},
            "dsar-jobs": {"processed": 4, "failed": 0, "remaining": 0},
        },
        redis_commands=321,
        deadline_hit=True,
        error="batch-jobs: <b>gave up</b> after 5 worker deaths",
    )
    return run


def test_the_run_list_renders_with_badges_and_totals(admin_client: Client) -> None:
    run = _finished_run()

    response = admin_client.get(RUNS_URL)

    assert response.status_code == 200
    html = response.content.decode()
    row = _row_cells(html, "cron 10.0.0.7")
    assert row["status_badge"] == "deadline"
    assert 'class="ops-badge ops-status-deadline"' in html
    assert 'title="Stopped at the time budget"' in html
    assert row["jobs"] == "112 failed"  # 11, then on its own line "2 failed"
    assert '11<br><strong class="ops-alert">2 failed</strong>' in html
    assert row["trigger_code"] == "cron"
    assert row["commands"] == "321"
    # The one human format (ops/humanize.py), the exact ms as the tooltip.
    assert row["duration"] == duration_ms(run.duration_ms)
    assert f'title="{run.duration_ms} ms"' in html


def test_the_run_page_shows_every_result_read_only(admin_client: Client) -> None:
    run = _finished_run(
        clamped={"maxDurationMs": {"requested": 900000, "applied": 600000}}
    )
    url = reverse("admin:ops_drainrun_change", args=[run.pk])

    response = admin_client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    # Per-queue table in drain order, error text escaped, params and clamping.
    assert re.search(
        r"<tr><td>dsar-jobs</td><td>4</td><td>0</td><td>0</td></tr>\s*"
        r"<tr><td>batch-jobs</td><td>7</td><td>2</td><td>11</td>",
        html,
    )
    assert "&lt;b&gt;gave up&lt;/b&gt;" in html
    assert "&quot;maxConcurrentQueues&quot;: 2" in html
    assert "maxDurationMs: requested 900000, applied 600000" in html
    assert 'name="_save"' not in html
    assert admin_client.post(url, {"status": "succeeded"}).status_code == 403
    assert admin_client.get(reverse("admin:ops_drainrun_add")).status_code == 403


def test_the_lease_list_links_the_run_holding_it(
    viewer_client: Client, holding_run: DrainRun
) -> None:
    response = viewer_client.get(LEASES_URL)

    assert response.status_code == 200
    html = response.content.decode()
    url = reverse("admin:ops_drainrun_change", args=[holding_run.pk])
    assert f'<a href="{url}">{holding_run.public_id}</a>' in html
    assert viewer_client.get(LEASES_URL + "add/").status_code == 403


def test_a_lease_held_by_an_unknown_run_shows_its_id(admin_client: Client) -> None:
    stranger = uuid.uuid4()
    Lease.objects.filter(name=DRAIN_LEASE).update(holder=stranger)

    response = admin_client.get(LEASES_URL)

    assert response.status_code == 200
    assert str(stranger) in response.content.decode()


# --- Job records --------------------------------------------------------------


def _job_records() -> tuple[DrainRun, JobRecord, JobRecord]:
    run = _finished_run()
    started = timezone.now() - timedelta(seconds=2)
    ok = JobRecord.objects.create(
        job_id="job-ok-1",
        queue="batch-jobs",
        func="tests.jobs.add",
        status=JobRecord.Status.FINISHED,
        started=started,
        ended=started + timedelta(milliseconds=1234),
        duration_ms=1234,
        run=run,
        worker="kdrain.abc.batch-jobs.1",
    )
    failed = JobRecord.objects.create(
        job_id="job-failed-2",
        queue="dsar-jobs",
        func="ops.jobs.fail",
        status=JobRecord.Status.FAILED,
        exc_type="CanaryFailure",
        exc_message="canary <b>job</b> failed on purpose",
    )
    return run, ok, failed


def test_the_job_list_shows_records_with_status_duration_and_run(
    admin_client: Client, wire
) -> None:
    run, ok, failed = _job_records()

    response = admin_client.get(JOBS_URL)

    assert response.status_code == 200
    html = response.content.decode()
    row = _row_cells(html, ok.job_id)
    assert row["queue"] == "batch-jobs"
    assert row["func"] == "tests.jobs.add"
    assert row["status_badge"] == "finished"
    assert row["duration"] == "1.2 s"
    assert row["exception"] == "-"
    assert reverse("admin:ops_drainrun_change", args=[run.pk]) in html
    assert 'class="ops-badge ops-status-failed"' in html
    row = _row_cells(html, failed.job_id)
    assert row["exception"] == "CanaryFailure"
    assert row["run_link"] == "-"
    assert "canary &lt;b&gt;job&lt;/b&gt; failed on purpose" in html
    assert _spent(html) == wire.billed() == 0  # the database only


def test_the_job_list_filters_and_searches(admin_client: Client) -> None:
    _, ok, failed = _job_records()

    html = admin_client.get(JOBS_URL, {"status": "failed"}).content.decode()
    assert failed.job_id in html and ok.job_id not in html
    html = admin_client.get(JOBS_URL, {"queue": "batch-jobs"}).content.decode()
    assert ok.job_id in html and failed.job_id not in html
    html = admin_client.get(JOBS_URL, {"q": "on purpose"}).content.decode()
    assert failed.job_id in html and ok.job_id not in html


def test_job_records_cannot_be_added_changed_or_deleted(
    admin_client: Client,
) -> None:
    _, ok, _ = _job_records()
    url = reverse("admin:ops_jobrecord_change", args=[ok.pk])

    page = admin_client.get(url)
    assert page.status_code == 200  # viewing is fine, read only
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(url, {"status": "failed"}).status_code == 403
    assert admin_client.get(reverse("admin:ops_jobrecord_add")).status_code == 403
    delete_url = reverse("admin:ops_jobrecord_delete", args=[ok.pk])
    assert admin_client.get(delete_url).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    bulk = admin_client.post(
        JOBS_URL,
        {"action": "delete_selected", "_selected_action": [ok.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    ok.refresh_from_db()
    assert ok.status == JobRecord.Status.FINISHED
    assert JobRecord.objects.count() == 2


@pytest.mark.parametrize(
    "model", ["drainrun", "queue", "workerprocess"], ids=lambda m: f"no-delete-{m}"
)
def test_history_and_queues_cannot_be_deleted_from_the_admin(admin_client, model):
    from django.utils import timezone

    from ops.models import DrainRun, Queue, WorkerProcess

    if model == "drainrun":
        obj = DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)
    elif model == "queue":
        obj = Queue.objects.get(name="batch-jobs")
    else:
        obj = WorkerProcess.objects.create(
            name="w",
            role="dedicated",
            host="h",
            pid=1,
            supervisor_pid=1,
            queues=["batch-jobs"],
            started=timezone.now(),
        )
    url = reverse(f"admin:ops_{model}_delete", args=[obj.pk])
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()
