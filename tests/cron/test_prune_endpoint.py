from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from ops.cron import tokens
from ops.models import DrainRun, JobRecord, RateBucket, TokenVersion

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/cron/prune"
SECRET = "cron-secret-for-prune-0123456789"


@pytest.fixture(autouse=True)
def env(settings):
    settings.CRON_SECRET = SECRET
    settings.HISTORY_RETENTION_DAYS = 30


def test_it_deletes_history_older_than_the_retention(client, monkeypatch):
    # Keep the limiter's own once-a-minute pruning out of this request.
    monkeypatch.setattr("ops.cron.ratelimit._last_prune", time.time())
    old = timezone.now() - timedelta(days=31)
    DrainRun.objects.create(trigger="cron", status="succeeded", started=old)
    DrainRun.objects.create(trigger="cron", status="running", started=old)  # kept
    recent = DrainRun.objects.create(trigger="cron", status="succeeded")
    expired, _ = tokens.rotate(scope="drain")
    TokenVersion.objects.filter(pk=expired.pk).update(expires_at=old)
    live, _ = tokens.rotate(scope="cron")
    RateBucket.objects.create(key="stale", tat=0.0)

    response = client.post(URL, HTTP_X_CRON_TOKEN=SECRET)
    assert response.status_code == 200
    deleted = response.json()["deleted"]
    assert deleted["drainRuns"] == 1
    assert deleted["jobRecords"] == 0
    assert deleted["tokenVersions"] == 1
    assert deleted["rateBuckets"] == 1
    assert not RateBucket.objects.filter(key="stale").exists()
    assert DrainRun.objects.filter(pk=recent.pk).exists()
    assert DrainRun.objects.filter(status="running").exists()
    assert list(TokenVersion.objects.all()) == [live]


def _jobs(run: DrainRun | None, count: int, **fields) -> None:
    JobRecord.objects.bulk_create(
        JobRecord(
            job_id=f"job-{run.pk if run else 'none'}-{i}",
            queue="batch-jobs",
            status=JobRecord.Status.FINISHED,
            run=run,
            **fields,
        )
        for i in range(count)
    )


def test_job_records_go_with_their_run_and_alone_after_the_retention(client):
    old = timezone.now() - timedelta(days=31)
    pruned = DrainRun.objects.create(trigger="cron", status="succeeded", started=old)
    running = DrainRun.objects.create(trigger="cron", status="running", started=old)
    recent = DrainRun.objects.create(trigger="cron", status="succeeded")
    _jobs(pruned, 3)  # created recently, but their run goes: they go
    _jobs(running, 2, created=old)  # their run is kept: kept
    _jobs(recent, 1, created=old)
    _jobs(None, 4, created=old)  # no run, past the retention: deleted
    _jobs(None, 1)  # no run, recent: kept

    response = client.post(URL, HTTP_X_CRON_TOKEN=SECRET)

    assert response.status_code == 200
    deleted = response.json()["deleted"]
    assert deleted["drainRuns"] == 1  # runs alone, not their cascaded records
    assert deleted["jobRecords"] == 3 + 4
    assert JobRecord.objects.filter(run=running).count() == 2
    assert JobRecord.objects.filter(run=recent).count() == 1
    assert JobRecord.objects.filter(run=None).count() == 1
    assert not JobRecord.objects.filter(run_id=pruned.pk).exists()


def test_the_documented_answer_lists_every_key_it_sends(client, settings):
    schema = json.loads((settings.BASE_DIR / "docs" / "openapi.json").read_text())
    documented = schema["components"]["schemas"]["PruneResult"]["properties"]
    answer = client.post(URL, HTTP_X_CRON_TOKEN=SECRET).json()
    assert set(answer) == set(documented)
    assert set(answer["deleted"]) == set(documented["deleted"]["properties"])


def test_it_needs_a_cron_scope_token(client, settings):
    settings.CRON_TOKEN = "drain-scope-cron-token-123456"
    assert (
        client.post(URL, HTTP_X_CRON_TOKEN="drain-scope-cron-token-123456").status_code
        == 403
    )
    assert client.post(URL).status_code == 401


def test_it_reports_its_progress_and_what_is_left(client, monkeypatch):
    monkeypatch.setattr("ops.cron.retention.BATCH", 2)
    monkeypatch.setattr("ops.cron.retention.BUDGET_S", 0.0)
    old = timezone.now() - timedelta(days=31)
    DrainRun.objects.bulk_create(
        DrainRun(trigger="cron", status="succeeded", started=old) for _ in range(3)
    )

    answer = client.post(URL, HTTP_X_CRON_TOKEN=SECRET).json()

    # A budget of 0 starts no batch: nothing deleted, all of it still to do.
    assert answer["complete"] is False
    assert answer["remaining"] == {"drainRuns": 3}
    assert answer["deleted"]["drainRuns"] == 0
    assert answer["batches"] == 0
    assert isinstance(answer["durationMs"], int)

    monkeypatch.setattr("ops.cron.retention.BUDGET_S", 30.0)
    answer = client.post(URL, HTTP_X_CRON_TOKEN=SECRET).json()
    assert answer["complete"] is True
    assert answer["remaining"] == {"drainRuns": 0}
    assert answer["deleted"]["drainRuns"] == 3
    assert not DrainRun.objects.exists()
