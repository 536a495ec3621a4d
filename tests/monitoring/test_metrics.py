"""GET /api/v1/cron/metrics: the documented series from the database, 0 Redis
commands a scrape, a cron-scope token or an allowed address."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from ops.cron import tokens
from ops.models import (
    CommandUsage,
    ConsoleSettings,
    DrainRun,
    MetricsCarry,
    QuotaIncident,
    Source,
    WorkerProcess,
)
from ops.monitoring import metrics
from ops.runtime import console_settings

URL = "/api/v1/cron/metrics"
SECRET = "cron-secret-for-metrics-0123456789"
DRAIN_TOKEN = "drain-only-token-for-metrics-0123"

# Every series docs/monitoring.md documents, as the parser names them.
DOCUMENTED = {
    "kaireon_drain_runs": "counter",
    "kaireon_drain_runs_running": "gauge",
    "kaireon_jobs_processed": "counter",
    "kaireon_jobs_failed": "counter",
    "kaireon_drain_duration_seconds": "histogram",
    "kaireon_redis_commands": "counter",
    "kaireon_redis_unbilled_commands": "counter",
    "kaireon_quota_budget_commands": "gauge",
    "kaireon_quota_used_commands": "gauge",
    "kaireon_quota_projected_commands": "gauge",
    "kaireon_quota_period_end_timestamp_seconds": "gauge",
    "kaireon_alarm_state": "gauge",
    "kaireon_drain_expected_interval_seconds": "gauge",
    "kaireon_last_drain_age_seconds": "gauge",
    "kaireon_last_drain_timestamp_seconds": "gauge",
    "kaireon_quota_incidents_open": "gauge",
    "kaireon_always_on_workers_alive": "gauge",
}


@pytest.fixture(autouse=True)
def env(settings):
    settings.CRON_SECRET = SECRET
    settings.DRAIN_QUEUES_TOKEN = DRAIN_TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.QUOTA_MONTHLY_BUDGET = 1000
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1000


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def run(
    *,
    status: str,
    trigger: str = DrainRun.Trigger.CRON,
    started: datetime,
    seconds: float = 2.0,
    results: dict | None = None,
) -> DrainRun:
    row = DrainRun.objects.create(trigger=trigger, started=started)
    DrainRun.objects.filter(pk=row.pk).update(
        status=status,
        finished=started + timedelta(seconds=seconds),
        queue_results=results or {},
    )
    return row


@pytest.fixture
def history(db):
    now = timezone.now()
    run(
        status="succeeded",
        started=now - timedelta(minutes=20),
        seconds=0.3,
        results={"dsar-jobs": {"processed": 4, "failed": 0, "remaining": 0}},
    )
    run(
        status="with_failures",
        trigger=DrainRun.Trigger.SCHEDULE,
        started=now - timedelta(minutes=3),
        seconds=45,
        results={"dsar-jobs": {"processed": 3, "failed": 2, "remaining": 0}},
    )
    run(status="skipped", started=now - timedelta(minutes=1))
    hour = now.replace(minute=0, second=0, microsecond=0)
    CommandUsage.objects.create(hour=hour, source=Source.DRAIN_CHECK, commands=120)
    CommandUsage.objects.create(
        hour=hour, source=Source.CONSOLE, commands=30, unbilled=4
    )
    QuotaIncident.objects.create(source=Source.DRAIN_JOBS)
    WorkerProcess.objects.create(
        name="w1", role="dedicated", host="h", pid=1, state="idle"
    )
    console_settings()
    ConsoleSettings.objects.filter(pk=1).update(
        schedule_enabled=True, schedule_minutes=5, updated=now - timedelta(hours=1)
    )
    return now


def test_it_answers_every_documented_series_from_the_database(client, history, wire):
    wire.reset()
    response = client.get(URL, HTTP_X_CRON_TOKEN=SECRET)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "no-store" in response["Cache-Control"]
    text = response.content.decode()
    assert families(text) == DOCUMENTED
    got = samples(text)
    assert (
        got[
            ("kaireon_drain_runs_total", (("status", "succeeded"), ("trigger", "cron")))
        ]
        == 1
    )
    assert (
        got[
            (
                "kaireon_drain_runs_total",
                (("status", "with_failures"), ("trigger", "schedule")),
            )
        ]
        == 1
    )
    assert (
        got[("kaireon_drain_runs_total", (("status", "skipped"), ("trigger", "cron")))]
        == 1
    )
    assert got[("kaireon_jobs_processed_total", (("queue", "dsar-jobs"),))] == 7
    assert got[("kaireon_jobs_failed_total", (("queue", "dsar-jobs"),))] == 2
    # Two runs with a duration (the skipped one has none worth counting).
    assert got[("kaireon_drain_duration_seconds_count", ())] == 2
    assert got[("kaireon_drain_duration_seconds_sum", ())] == pytest.approx(45.3)
    assert got[("kaireon_drain_duration_seconds_bucket", (("le", "0.5"),))] == 1
    assert got[("kaireon_drain_duration_seconds_bucket", (("le", "30.0"),))] == 1
    assert got[("kaireon_drain_duration_seconds_bucket", (("le", "60.0"),))] == 2
    assert got[("kaireon_drain_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert got[("kaireon_redis_commands_total", (("source", "drain-check"),))] == 120
    assert got[("kaireon_redis_commands_total", (("source", "console"),))] == 30
    assert got[("kaireon_redis_unbilled_commands_total", (("source", "console"),))] == 4
    assert got[("kaireon_quota_budget_commands", ())] == 1000
    assert got[("kaireon_quota_used_commands", ())] == 150
    assert got[("kaireon_quota_projected_commands", ())] >= 150
    assert got[("kaireon_alarm_state", (("state", "ok"),))] == 1
    assert got[("kaireon_alarm_state", (("state", "down"),))] == 0
    assert got[("kaireon_drain_expected_interval_seconds", ())] == 300
    # The last drain that was not skipped started 3 minutes ago.
    assert 180 <= got[("kaireon_last_drain_age_seconds", ())] < 240
    assert got[("kaireon_quota_incidents_open", ())] == 1
    assert got[("kaireon_always_on_workers_alive", ())] == 1
    # Every figure came from the database.
    assert wire.total == 0


def test_a_scrape_costs_no_redis_command_even_with_nothing_recorded(client, db, wire):
    wire.reset()
    response = client.get(URL, HTTP_X_CRON_TOKEN=SECRET)
    assert response.status_code == 200
    got = samples(response.content.decode())
    # The built-in schedule is on by default; no drain has run yet.
    assert got[("kaireon_alarm_state", (("state", "unknown"),))] == 1
    assert ("kaireon_last_drain_age_seconds", ()) not in got
    assert wire.total == 0


@pytest.mark.parametrize(
    "headers, status, code",
    [
        ({}, 401, "unauthorized"),
        (
            {"HTTP_X_CRON_TOKEN": "not-the-secret-at-all-0123456789"},
            401,
            "unauthorized",
        ),
        ({"HTTP_X_CRON_TOKEN": DRAIN_TOKEN}, 403, "forbidden"),
    ],
)
def test_it_refuses_a_caller_without_a_cron_credential(
    client, db, headers, status, code
):
    response = client.get(URL, **headers)
    assert response.status_code == status
    assert response.json()["error"] == code
    assert "no-store" in response["Cache-Control"]
    assert b"kaireon_" not in response.content


def test_it_rejects_a_revoked_token(client, db):
    row, token = tokens.rotate(scope="cron")
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    row.revoke()
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_it_answers_only_get(client, db):
    response = client.post(URL, HTTP_X_CRON_TOKEN=SECRET)
    assert response.status_code == 405
    assert response["Allow"] == "GET"


def test_an_allowed_address_needs_no_token(client, db, settings):
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.1.0.0/16")]
    inside = client.get(URL, REMOTE_ADDR="10.1.2.3")
    assert inside.status_code == 200
    assert b"kaireon_drain_runs" in inside.content
    # An IPv4-mapped IPv6 peer is its IPv4 address (ops/cron/client_ip.py).
    assert client.get(URL, REMOTE_ADDR="::ffff:10.1.9.9").status_code == 200
    outside = client.get(URL, REMOTE_ADDR="10.2.0.1")
    assert outside.status_code == 401
    # A spoofed X-Forwarded-For buys nothing without TRUSTED_PROXIES.
    spoofed = client.get(URL, REMOTE_ADDR="10.2.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert spoofed.status_code == 401


def test_counters_keep_counting_after_the_prune(db):
    now = datetime(2030, 3, 10, 12, 30, tzinfo=UTC)
    old = run(
        status="succeeded",
        started=now - timedelta(days=3),
        results={"q": {"processed": 5, "failed": 1, "remaining": 0}},
    )
    run(
        status="succeeded",
        started=now - timedelta(minutes=5),
        results={"q": {"processed": 2, "failed": 0, "remaining": 0}},
    )
    before = metrics.drain_totals(now)
    assert before["processed"] == {"q": 7}
    carry = MetricsCarry.objects.get(pk=1)
    # The old run is folded in; the recent one is still counted from its row.
    assert carry.watermark == now.replace(minute=0) - timedelta(hours=1)
    assert carry.totals["processed"] == {"q": 5}
    old.delete()  # what the retention prune does
    after = metrics.drain_totals(now)
    assert after == before
    # A second fold in the same hour adds nothing twice.
    assert metrics.drain_totals(now + timedelta(minutes=10)) == before


def test_the_watermark_waits_for_a_running_drain(db):
    now = datetime(2030, 3, 10, 12, 30, tzinfo=UTC)
    running = DrainRun.objects.create(trigger="cron", started=now - timedelta(hours=5))
    run(status="succeeded", started=now - timedelta(hours=4))
    metrics.drain_totals(now)
    assert MetricsCarry.objects.get(pk=1).watermark == running.started
    # It ends: counted from then on, folded at the next hour.
    DrainRun.objects.filter(pk=running.pk).update(
        status="abandoned", finished=now - timedelta(minutes=1)
    )
    totals = metrics.drain_totals(now + timedelta(hours=1))
    assert totals["runs"] == {"abandoned|cron": 1, "succeeded|cron": 1}
