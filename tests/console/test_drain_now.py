"""Drain now in the background: the POST queues a run and starts a process for
it, the run page polls a JSON view of the row (0 Redis commands), a second
click starts nothing, and a process that cannot start leaves a failed run."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ops.engine import background
from ops.engine.enqueue import enqueue_canaries
from ops.models import DrainRun

DRAIN_URL = "/admin/ops/drainrun/drain/"


def progress_url(run: DrainRun) -> str:
    return reverse("admin:ops_drainrun_progress", args=[run.pk])


def _staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__in=codenames
        )
    )
    return user


@pytest.fixture
def drainer_client(transactional_db: None) -> Client:
    client = Client()
    client.force_login(_staff("drainer", "view_drainrun", "drain_queues"))
    return client


def test_drain_now_queues_the_run_and_its_process_runs_it(
    drainer_client: Client, raw_redis: redis.Redis, background_drains
) -> None:
    enqueue_canaries("batch-jobs", kind="noop", count=4)

    response = drainer_client.post(DRAIN_URL, {"queues": ["batch-jobs"]})

    run = DrainRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:ops_drainrun_change", args=[run.pk])
    # The request did not drain: the row was queued for a process of its own.
    assert run.status in (DrainRun.Status.QUEUED, DrainRun.Status.RUNNING)
    assert run.requested_by is not None and run.caller == "admin drainer"
    assert run.params["queues"] == ["batch-jobs"]
    page = drainer_client.get(response["Location"]).content.decode()
    assert 'id="ops-run-live"' in page or "Finished</strong>" in page

    finished = background_drains(run.pk)

    assert finished.status == DrainRun.Status.SUCCEEDED
    assert finished.total_processed == 4
    assert finished.current_jobs == {}
    assert raw_redis.llen("rq:queue:batch-jobs") == 0
    data = drainer_client.get(progress_url(finished)).json()
    assert data["active"] is False
    assert data["summary"].startswith("Succeeded: 4 processed, 0 failed, 0 left")


def test_the_progress_view_reads_the_row_only(drainer_client: Client, wire) -> None:
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.ADMIN)
    run.note_progress(
        queue_results={"batch-jobs": {"processed": 7, "failed": 1, "remaining": 3}},
        redis_commands=42,
        current_jobs={"batch-jobs": "job-123"},
    )

    response = drainer_client.get(progress_url(run))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    data = response.json()
    assert data["status"] == "running" and data["active"] is True
    assert (data["processed"], data["failed"], data["remaining"]) == (7, 1, 3)
    assert data["redisCommands"] == 42
    assert data["currentJobs"] == {"batch-jobs": "job-123"}
    assert data["summary"] is None
    assert wire.snapshot() == {}  # 0 Redis commands, not even a connection
    # The page polling it carries the same figures and spends nothing either.
    page = drainer_client.get(reverse("admin:ops_drainrun_change", args=[run.pk]))
    html = page.content.decode()
    assert f'data-progress-url="{progress_url(run)}"' in html
    assert "<code>job-123</code> on batch-jobs" in html
    assert wire.snapshot() == {}


def test_the_progress_view_needs_view_or_drain_permission(
    transactional_db: None,
) -> None:
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.ADMIN)
    nobody = Client()
    nobody.force_login(_staff("nobody"))
    drainer = Client()
    drainer.force_login(_staff("only-drains", "drain_queues"))

    assert nobody.get(progress_url(run)).status_code == 403
    assert drainer.get(progress_url(run)).status_code == 200
    assert drainer.get("/admin/ops/drainrun/999999/progress/").status_code == 404


def test_a_second_click_while_one_is_queued_starts_nothing(
    drainer_client: Client, monkeypatch: pytest.MonkeyPatch, wire
) -> None:
    # No process may take the first run off "queued" during this test.
    monkeypatch.setattr(background, "launch", lambda run: True)
    first = drainer_client.post(DRAIN_URL, {"queues": ["batch-jobs"]})
    queued = DrainRun.objects.get()

    second = drainer_client.post(DRAIN_URL, {"queues": ["batch-jobs"]}, follow=True)

    assert list(DrainRun.objects.all()) == [queued]
    assert first["Location"] == second.redirect_chain[-1][0]
    html = second.content.decode()
    assert "A drain is already running" in html
    assert "no second drain was started" in html
    assert drainer_client.get(DRAIN_URL).content.decode().count("ops-drain-busy") == 1
    assert wire.snapshot() == {}


def test_a_process_that_cannot_start_leaves_a_failed_run_saying_why(
    drainer_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "PYTHON", "/nonexistent/python3")

    response = drainer_client.post(DRAIN_URL, {"queues": ["batch-jobs"]})

    run = DrainRun.objects.get()
    assert response["Location"] == reverse("admin:ops_drainrun_change", args=[run.pk])
    assert run.status == DrainRun.Status.FAILED
    assert run.error_code == background.NOT_STARTED
    assert "could not start" in run.error and "/nonexistent/python3" in run.error
    html = drainer_client.get(response["Location"]).content.decode()
    assert "Finished</strong>: Failed" in html
    # Nothing is left running: the next click starts a drain.
    assert background.running_drain() == (False, None)


def test_a_queued_run_whose_process_never_came_is_failed_not_left_queued(
    drainer_client: Client,
) -> None:
    late = timezone.now() - timedelta(seconds=background.START_TIMEOUT_S + 1)
    run = DrainRun.objects.create(
        trigger=DrainRun.Trigger.ADMIN, status=DrainRun.Status.QUEUED, started=late
    )

    data = drainer_client.get(progress_url(run)).json()

    assert data["status"] == "failed" and data["active"] is False
    run.refresh_from_db()
    assert run.error_code == background.NOT_STARTED
    assert "did not start within" in run.error


def test_a_queued_run_runs_once(manage_py, raw_redis: redis.Redis) -> None:
    enqueue_canaries("batch-jobs", kind="noop", count=2)
    run = DrainRun.objects.create(
        trigger=DrainRun.Trigger.ADMIN,
        status=DrainRun.Status.QUEUED,
        params={
            "maxDurationMs": 30000,
            "maxConcurrentQueues": 1,
            "queues": ["batch-jobs"],
        },
        worker_prefix="kdrain.test0000.",
    )

    first = manage_py("drain", "--run-id", str(run.pk))
    again = manage_py("drain", "--run-id", str(run.pk))

    assert first.returncode == 0, first.stderr
    assert f"drain {run.public_id} succeeded: 2 processed" in first.stdout
    assert again.returncode == 2
    assert "is succeeded, not queued: a run runs once" in again.stderr
    run.refresh_from_db()
    assert run.total_processed == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run-id", "abc"], "--run-id: must be a drain run's number"),
        (["--run-id", "٣"], "--run-id: must be a drain run's number"),
        (["--run-id", "999999"], "there is no drain run 999999"),
        (["--run-id", "1", "--queue", "batch-jobs"], "drop --queue"),
    ],
)
def test_bad_run_ids_are_refused_precisely(
    manage_py, args: list[str], message: str
) -> None:
    result = manage_py("drain", *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("hit", "words"), [(False, "No"), (True, "Yes: it stopped")])
def test_the_run_page_says_the_deadline_in_words_not_icons(
    admin_client: Client, hit: bool, words: str
) -> None:
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CRON)
    run.finish(status=DrainRun.Status.SUCCEEDED, deadline_hit=hit)

    html = admin_client.get(
        reverse("admin:ops_drainrun_change", args=[run.pk])
    ).content.decode()

    field = html[html.index("field-deadline_text") :]
    field = field[: field.index("</div>\n", field.index('class="readonly"'))]
    assert f'<div class="readonly">{words}' in field
    assert "icon-no" not in field and "icon-yes" not in field
