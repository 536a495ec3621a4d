from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from ops.cron import tokens
from ops.models import DrainRun, RateBucket, TokenVersion

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
    assert deleted["tokenVersions"] == 1
    assert deleted["rateBuckets"] == 1
    assert not RateBucket.objects.filter(key="stale").exists()
    assert DrainRun.objects.filter(pk=recent.pk).exists()
    assert DrainRun.objects.filter(status="running").exists()
    assert list(TokenVersion.objects.all()) == [live]


def test_it_needs_a_cron_scope_token(client, settings):
    settings.CRON_TOKEN = "drain-scope-cron-token-123456"
    assert (
        client.post(URL, HTTP_X_CRON_TOKEN="drain-scope-cron-token-123456").status_code
        == 403
    )
    assert client.post(URL).status_code == 401
