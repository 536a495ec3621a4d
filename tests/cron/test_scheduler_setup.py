"""The "Scheduler setup" page: five recipes filled in with this site's URL and a
placeholder (never a token), and the test drain that answers like the endpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
import redis
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from ops.cron import recipes, tokens
from ops.engine.enqueue import enqueue_canaries
from ops.engine.lease import DRAIN_LEASE
from ops.models import DrainRun, Lease

SETUP_URL = "/admin/ops/tokenversion/scheduler-setup/"
DRAIN_ENDPOINT = "/api/v1/cron/drain-queues"
SITE_URL = f"http://testserver{DRAIN_ENDPOINT}"
ENV_TOKEN = "env-drain-queues-token-0001"


def _staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__in=codenames
        )
    )
    return user


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(db: None) -> Client:
    return _client(_staff("viewer", "view_tokenversion"))


@pytest.fixture
def tester(db: None) -> User:
    return _staff("tester", "view_tokenversion", "drain_queues", "view_drainrun")


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


def _recipes(html: str) -> dict[str, str]:
    """Recipe id -> the text of its <pre> blocks, as a person would copy it."""
    found = {}
    for key, body in re.findall(
        r'<section class="ops-recipe" id="recipe-([\w-]+)">(.*?)</section>', html, re.S
    ):
        blocks = re.findall(r'<pre id="recipe-[\w-]+">(.*?)</pre>', body, re.S)
        assert blocks, f"recipe {key} has no <pre>"
        found[key] = "\n".join(unescape(block) for block in blocks)
    return found


def _test_result(html: str) -> tuple[int, dict[str, Any]]:
    status = re.search(r'<strong id="ops-test-status">HTTP (\d+)</strong>', html)
    body = re.search(
        r'<pre class="ops-json" id="ops-test-json">(.*?)</pre>', html, re.S
    )
    assert status and body, "the page shows no test result"
    return int(status.group(1)), json.loads(unescape(body.group(1)))


# --- The recipes --------------------------------------------------------------


def test_the_page_has_five_recipes_with_this_sites_url_and_no_token(
    viewer_client: Client, settings
) -> None:
    settings.DRAIN_QUEUES_TOKEN = ENV_TOKEN
    _, console_token = tokens.rotate(scope="drain")

    response = viewer_client.get(SETUP_URL)

    assert response.status_code == 200
    html = response.content.decode()
    shown = _recipes(html)
    assert list(shown) == [
        "cron-job-org",
        "aws-eventbridge",
        "github-actions",
        "uptime-monitor",
        "curl",
    ]
    for key, text in shown.items():
        assert SITE_URL in text, key
        assert "X-Cron-Token" in text, key
        assert "<YOUR-DRAIN-TOKEN>" in text or "secrets.KAIREON_DRAIN_TOKEN" in text
    # A Copy button per <pre>, aimed at it.
    pres = re.findall(r'<pre id="(recipe-[\w-]+)">', html)
    assert len(pres) >= 5
    for pre_id in pres:
        assert f'data-copy-target="{pre_id}"' in html
    assert "navigator.clipboard.writeText" in html

    cron_job_org = shown["cron-job-org"]
    assert re.search(r"^Request method: +POST", cron_job_org, re.M)
    assert re.search(r"^Header: +X-Cron-Token: <YOUR-DRAIN-TOKEN>", cron_job_org, re.M)
    assert re.search(r"^Timeout: +30 seconds", cron_job_org, re.M)
    assert re.search(r"^Schedule: +every 5 minutes", cron_job_org, re.M)

    aws = shown["aws-eventbridge"]
    for command in (
        "aws events create-connection",
        "--authorization-type API_KEY",
        '"ApiKeyName": "X-Cron-Token", "ApiKeyValue": "<YOUR-DRAIN-TOKEN>"',
        "aws events create-api-destination",
        f"--invocation-endpoint {SITE_URL}",
        "--http-method POST",
        "aws events put-rule",
        "--schedule-expression 'rate(5 minutes)'",
        "aws events put-targets",
        '"MaximumRetryAttempts": 0',
    ):
        assert command in aws, command

    github = shown["github-actions"]
    assert "on:\n  schedule:\n    - cron: '*/5 * * * *'" in github
    assert "${{ secrets.KAIREON_DRAIN_TOKEN }}" in github
    max_time = recipes.full_budget_timeout_s()
    assert f"curl -fsS --max-time {max_time} -X POST" in github
    assert '-H "X-Cron-Token: $KAIREON_DRAIN_TOKEN"' in github
    assert "repository secret named KAIREON_DRAIN_TOKEN" in unescape(html)

    monitor = shown["uptime-monitor"]
    for line in (
        r"Monitor type: +HTTP\(s\)",
        r"HTTP method: +POST",
        r"Custom HTTP header: +X-Cron-Token: <YOUR-DRAIN-TOKEN>",
        r"Monitoring interval: +5 minutes",
    ):
        assert re.search(f"^{line}$", monitor, re.M), line

    assert (
        f'curl -fsS -X POST -H "X-Cron-Token: $KAIREON_DRAIN_TOKEN" {SITE_URL}'
        in shown["curl"]
    )

    # Never a token: not the console's, not the environment's, not a part of one.
    for secret in (console_token, ENV_TOKEN, console_token[-12:], ENV_TOKEN[-8:]):
        assert secret not in html
    # Reached over plain HTTP here: the page warns about it.
    assert 'id="ops-plain-http"' in html


def test_over_https_the_recipes_use_https(viewer_client: Client) -> None:
    response = viewer_client.get(SETUP_URL, secure=True)

    html = response.content.decode()
    assert f"https://testserver{DRAIN_ENDPOINT}" in unescape(html)
    assert SITE_URL not in html
    assert 'id="ops-plain-http"' not in html


def test_the_token_list_links_the_setup_page(viewer_client: Client) -> None:
    html = viewer_client.get("/admin/ops/tokenversion/").content.decode()

    assert f'href="{SETUP_URL}"' in html


def test_the_page_needs_view_permission_on_tokens(db: None) -> None:
    drainer = _client(_staff("drainer", "drain_queues", "view_drainrun"))

    assert drainer.get(SETUP_URL).status_code == 403
    assert drainer.post(SETUP_URL).status_code == 403
    assert not DrainRun.objects.exists()


def test_the_page_says_whether_cron_calls_arrived(viewer_client: Client) -> None:
    assert "No drain has come through the endpoint yet" in (
        viewer_client.get(SETUP_URL).content.decode()
    )
    DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON,
        caller="cron 10.0.0.9",
        credential="env:DRAIN_QUEUES_TOKEN",
    )

    html = viewer_client.get(SETUP_URL).content.decode()

    assert "The last drain through the endpoint started" in html
    assert "credential env:DRAIN_QUEUES_TOKEN" in html


# --- The test drain -----------------------------------------------------------


def test_the_test_drain_runs_the_endpoints_drain_and_shows_its_answer(
    tester: User, raw_redis: redis.Redis, background_drains
) -> None:
    enqueue_canaries("batch-jobs", kind="noop", count=2)
    client = _client(tester)
    page = client.get(SETUP_URL).content.decode()
    assert 'name="_test_drain"' in page
    assert "does <strong>not</strong> check the scheduler's" in page

    posted = client.post(SETUP_URL, {"_test_drain": "Send a test drain"})

    # Started in the background: the answer is a redirect to this page for
    # the run, which follows it, then shows the endpoint's answer.
    assert posted.status_code == 302
    queued = DrainRun.objects.get()
    test_url = f"{SETUP_URL}test/{queued.pk}/"
    assert posted["Location"] == f"{test_url}#ops-test-drain"
    background_drains(queued.pk)
    response = client.get(test_url)
    assert response.status_code == 200
    html = response.content.decode()
    assert '"totalProcessed": 2' in unescape(html)
    status, body = _test_result(html)
    run = DrainRun.objects.get()
    assert status == 200
    assert body["runId"] == str(run.public_id)
    assert body["status"] == "succeeded"
    assert body["maxDurationMs"] == 10_000
    assert run.trigger == DrainRun.Trigger.ADMIN
    assert run.requested_by == tester
    assert run.caller == "scheduler setup test by tester"
    assert raw_redis.llen("rq:queue:batch-jobs") == 0
    assert f'href="/admin/ops/drainrun/{run.pk}/change/"' in html


def test_without_drain_permission_there_is_no_test_button(
    viewer_client: Client, wire
) -> None:
    html = viewer_client.get(SETUP_URL).content.decode()

    assert 'name="_test_drain"' not in html
    assert 'id="ops-test-drain-denied"' in html
    assert viewer_client.post(SETUP_URL, {"_test_drain": "1"}).status_code == 403
    assert not DrainRun.objects.exists()
    assert wire.snapshot() == {}  # not even the idle check


def test_the_test_drain_post_is_csrf_protected(tester: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(tester)

    assert client.post(SETUP_URL, {"_test_drain": "1"}).status_code == 403
    assert not DrainRun.objects.exists()


def _endpoint(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.post(DRAIN_ENDPOINT, HTTP_X_CRON_TOKEN=ENV_TOKEN)
    return response.status_code, response.json()


def test_no_test_drain_starts_while_a_drain_runs(
    tester: User, holding_run: DrainRun, wire
) -> None:
    client = _client(tester)

    response = client.post(SETUP_URL, follow=True)

    html = response.content.decode()
    assert "A drain is already running" in html
    assert f'href="/admin/ops/drainrun/{holding_run.pk}/change/"' in html
    assert list(DrainRun.objects.all()) == [holding_run]  # no second run
    assert wire.snapshot() == {}


def test_with_redis_down_the_test_drain_answers_503_like_the_endpoint(
    tester: User, settings, monkeypatch: pytest.MonkeyPatch, background_drains
) -> None:
    settings.DRAIN_QUEUES_TOKEN = ENV_TOKEN
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # the autouse fixture restores it
    monkeypatch.setenv("REDIS_URL", settings.REDIS_URL)  # the drain's process
    client = _client(tester)

    posted = client.post(SETUP_URL)
    background_drains(DrainRun.objects.get().pk)
    status, body = _test_result(client.get(posted["Location"]).content.decode())
    endpoint_status, endpoint_body = _endpoint(client)

    assert status == endpoint_status == 503
    assert body["error"] == endpoint_body["error"] == "redis_unavailable"
    assert set(body) == set(endpoint_body)
