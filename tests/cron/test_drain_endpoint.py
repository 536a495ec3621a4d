"""POST /api/v1/cron/drain-queues: statuses, bodies, and zero Redis on rejection."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rq import Queue as RQQueue

from ops.cron import tokens
from ops.models import DrainRun, Lease, TokenVersion

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/cron/drain-queues"
DRAIN_TOKEN = "drain-token-" + "d" * 20
CRON_SECRET = "cron-secret-" + "c" * 20


@pytest.fixture(autouse=True)
def env_tokens(settings):
    settings.DRAIN_QUEUES_TOKEN = DRAIN_TOKEN
    settings.CRON_SECRET = CRON_SECRET
    settings.CRON_TOKEN = ""
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1000  # the limit has its own tests


def post(client, body=None, *, token=DRAIN_TOKEN, query="", raw=None, **headers):
    if token is not None:
        headers.setdefault("HTTP_X_CRON_TOKEN", token)
    data = raw if raw is not None else (json.dumps(body) if body is not None else "")
    return client.post(
        URL + query, data=data, content_type="application/json", **headers
    )


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert body["detail"]
    return body


def test_an_idle_drain_answers_200_with_the_result_and_no_store(client, wire):
    response = post(client)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["totalProcessed"] == 0
    assert body["redisCommands"] == 1
    assert wire.billed() == 1
    run = DrainRun.objects.get(public_id=body["runId"])
    assert run.trigger == "cron"
    assert run.credential == "env:DRAIN_QUEUES_TOKEN"
    assert run.caller == "cron 127.0.0.1"


def test_it_drains_queued_jobs_with_options_from_the_body(client, rq_client):
    for i in range(3):
        RQQueue("dsar-jobs", connection=rq_client).enqueue("tests.jobs.add", i, 1)
    RQQueue("seed-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 1)
    response = post(
        client,
        {"maxDurationMs": 30000, "maxConcurrentQueues": 1, "queues": ["dsar-jobs"]},
    )
    body = response.json()
    assert response.status_code == 200
    assert body["totalProcessed"] == 3
    assert list(body["queues"]) == ["dsar-jobs"]
    assert body["maxDurationMs"] == 30000
    assert rq_client.llen("rq:queue:seed-jobs") == 1


def test_options_may_come_as_query_parameters(client):
    response = post(
        client, query="?maxDurationMs=2000&queues=batch-jobs&queues=seed-jobs"
    )
    body = response.json()
    assert response.status_code == 200
    assert body["maxDurationMs"] == 2000
    assert sorted(body["queues"]) == ["batch-jobs", "seed-jobs"]


def test_the_bearer_header_is_accepted(client):
    response = post(client, token=None, HTTP_AUTHORIZATION=f"Bearer {DRAIN_TOKEN}")
    assert response.status_code == 200


def test_an_over_cap_duration_is_clamped_and_said(client):
    body = post(client, {"maxDurationMs": 3_600_000}).json()
    assert body["maxDurationMs"] == 600_000
    assert body["clamped"]["maxDurationMs"] == {
        "requested": 3_600_000,
        "applied": 600_000,
    }


@pytest.mark.parametrize(
    ("raw", "query", "field", "words"),
    [
        ('{"maxDurationMs": "soon"}', "", "maxDurationMs", "must be an integer"),
        ('{"maxDurationMs": 0}', "", "maxDurationMs", "at least 1"),
        ('{"maxDurationMs": true}', "", "maxDurationMs", "boolean"),
        ('{"maxConcurrentQueues": 50}', "", "maxConcurrentQueues", "between 1 and 5"),
        ('{"queues": ["nope"]}', "", "queues", "unknown queue nope"),
        ('{"queues": "batch-jobs"}', "", "queues", None),
        ('{"queues": 5}', "", "queues", "list of queue names"),
        ('{"maxDuration": 5}', "", "maxDuration", "not a known option"),
        ('{"maxDurationMs": 5', "", "body", "not valid JSON"),
        ("[1, 2]", "", "body", "must be a JSON object"),
        ("", "?token=abc", "token", "not a known option"),
        ('{"maxDurationMs": 5}', "?maxDurationMs=6", "maxDurationMs", "both"),
    ],
)
def test_invalid_options_are_a_400_naming_the_field_and_cost_no_redis(
    client, wire, raw, query, field, words
):
    response = post(client, raw=raw, query=query)
    if words is None:  # a comma-separated string is accepted like the query form
        assert response.status_code == 200
        return
    body = assert_error(response, 400, "invalid_option")
    assert body["field"] == field
    assert field in body["detail"]
    assert words in body["detail"]
    assert wire.billed() == 0
    assert not DrainRun.objects.exists()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_X_CRON_TOKEN": "wrong-token-but-long-enough"},
        {"HTTP_X_CRON_TOKEN": ""},
        {"HTTP_AUTHORIZATION": f"Basic {DRAIN_TOKEN}"},
        {"HTTP_AUTHORIZATION": "Bearer"},
        {"HTTP_X_CRON_TOKEN": "ünïcödé-tøken-ÿ" * 3},
        {"HTTP_X_CRON_TOKEN": DRAIN_TOKEN[:-1]},
        {"HTTP_X_CRON_TOKEN": DRAIN_TOKEN + "x"},
    ],
)
def test_a_missing_or_wrong_token_is_the_same_401(client, wire, headers):
    response = post(client, token=None, **headers)
    body = assert_error(response, 401, "unauthorized")
    assert body == {"error": "unauthorized", "detail": "Missing or invalid cron token."}
    assert wire.billed() == 0
    assert not DrainRun.objects.exists()


def test_the_token_is_not_read_from_the_query_string(client, wire):
    response = client.post(f"{URL}?X-Cron-Token={DRAIN_TOKEN}&token={DRAIN_TOKEN}")
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head", "options"])
def test_any_method_but_post_is_a_405(client, wire, method):
    response = getattr(client, method)(URL, HTTP_X_CRON_TOKEN=DRAIN_TOKEN)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    if method != "head":
        assert response.json()["error"] == "method_not_allowed"
    assert wire.billed() == 0


def test_a_body_over_16_kb_is_a_413(client, wire):
    raw = json.dumps({"queues": ["batch-jobs"], "pad": "x" * 17_000})
    assert_error(post(client, raw=raw), 413, "payload_too_large")
    assert wire.billed() == 0


def test_a_body_of_exactly_16_kb_is_read(client):
    raw = '{"maxDurationMs": 1000}'
    raw = raw + " " * (16 * 1024 - len(raw))
    assert post(client, raw=raw).status_code == 200


def test_a_second_drain_while_one_runs_is_a_409_with_the_running_id(client, wire):
    running = uuid.uuid4()
    Lease.objects.filter(name="drain").update(
        holder=running, expires_at=timezone.now() + timedelta(minutes=5)
    )
    body = assert_error(post(client), 409, "drain_running")
    assert body["status"] == "skipped"
    assert body["runningRunId"] == str(running)
    assert wire.billed() == 0


def test_redis_unreachable_is_a_503(client, settings):
    from bench.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    body = assert_error(post(client), 503, "redis_unavailable")
    assert body["status"] == "failed"


def test_a_console_token_lets_the_drain_in_and_is_recorded(client):
    row, token = tokens.rotate(scope=TokenVersion.Scope.DRAIN)
    response = post(client, token=token, REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 200
    run = DrainRun.objects.get(public_id=response.json()["runId"])
    assert run.credential == f"token:drain v1 {row.prefix}"
    row.refresh_from_db()
    assert (row.use_count, row.last_used_ip) == (1, "203.0.113.7")
    assert row.last_used_at is not None


def test_unknown_cron_paths_answer_json_404(client):
    response = client.post("/api/v1/cron/enqueue", HTTP_X_CRON_TOKEN=CRON_SECRET)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_form_encoded_options_are_accepted(client):
    response = client.post(
        URL,
        data="maxDurationMs=4000&queues=seed-jobs",
        content_type="application/x-www-form-urlencoded",
        HTTP_X_CRON_TOKEN=DRAIN_TOKEN,
    )
    assert response.status_code == 200
    assert response.json()["maxDurationMs"] == 4000
    assert list(response.json()["queues"]) == ["seed-jobs"]


def test_an_empty_multipart_post_is_a_plain_drain(client):
    response = client.post(URL, HTTP_X_CRON_TOKEN=DRAIN_TOKEN)
    assert response.status_code == 200
