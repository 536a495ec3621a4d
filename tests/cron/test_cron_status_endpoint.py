from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rq import Queue as RQQueue

from ops.models import DrainRun

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/cron/status"
SECRET = "cron-secret-for-status-0123456789"


@pytest.fixture(autouse=True)
def env(settings):
    settings.CRON_SECRET = SECRET
    settings.DRAIN_QUEUES_TOKEN = "drain-only-token-0123456789"


def test_it_reports_backlog_last_drain_and_mode(client, rq_client, wire):
    RQQueue("dsar-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 2)
    RQQueue("dsar-jobs", connection=rq_client).enqueue_in(
        timedelta(hours=1), "tests.jobs.add", 1, 2
    )
    DrainRun.objects.create(
        trigger="cron",
        caller="cron 1.2.3.4",
        status="succeeded",
        finished=timezone.now(),
        total_processed=7,
    )
    DrainRun.objects.create(trigger="cron", status="skipped")  # not "the last drain"
    wire.reset()
    response = client.get(URL, HTTP_X_CRON_TOKEN=SECRET)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["workerMode"] == "cron-drain"
    assert body["lastDrain"]["status"] == "succeeded"
    assert body["lastDrain"]["totalProcessed"] == 7
    assert body["lastDrain"]["caller"] == "cron 1.2.3.4"
    assert body["lastSuccessfulDrainAt"] is not None
    assert body["backlog"]["dsar-jobs"] == {
        "queued": 1,
        "scheduled": 1,
        "started": 0,
        "failed": 0,
    }
    assert body["redis"] == "ok"
    # Four commands per enabled queue, one pipeline, plus the alarm's backlog
    # age for the one queue with a queued job (LINDEX + HGET), nothing else.
    assert body["redisCommands"] == 22
    assert wire.billed() == 22


def test_it_answers_with_redis_down(client, settings):
    from bench.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    body = client.get(URL, HTTP_X_CRON_TOKEN=SECRET).json()
    assert body["redis"] == "unavailable"
    assert body["backlog"] == {}
    assert body["lastDrain"] is None


def test_a_drain_token_is_forbidden_here_and_costs_no_redis(client, wire):
    response = client.get(URL, HTTP_X_CRON_TOKEN="drain-only-token-0123456789")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert wire.billed() == 0


def test_post_is_a_405(client):
    response = client.post(URL, HTTP_X_CRON_TOKEN=SECRET)
    assert response.status_code == 405
    assert response["Allow"] == "GET"
