"""Quota exhaustion as an incident, driven through a real socket: a proxy in
front of the private redis-server answers with Upstash's quota error."""

from __future__ import annotations

import time

import pytest
from rq import Queue as RQQueue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.inspection.queue_stats import queue_depths
from ops.models import DrainRun, QuotaIncident
from ops.usage import incidents
from ops.usage.quota_errors import is_quota_exhausted

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/cron/drain-queues"
TOKEN = "quota-test-drain-token-0123456789"


@pytest.fixture(autouse=True)
def env(settings):
    settings.DRAIN_QUEUES_TOKEN = TOKEN
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1000
    settings.QUOTA_PROBE_COOLDOWN_S = 600


def sent(proxy) -> int:
    """Commands that reached the 'provider' (answered or refused), AUTH aside."""
    total = proxy.forwarded + proxy.refused
    return sum(n for name, n in total.items() if name != "AUTH")


def run_drain() -> DrainRun:
    return drain(trigger=DrainRun.Trigger.CLI, options=parse_options())


@pytest.mark.parametrize(
    ("message", "matches"),
    [
        ("max requests limit exceeded. Limit: 500000, Usage: 500000.", True),
        ("ERR max requests limit exceeded. Limit: 10", True),
        ("max daily request limit exceeded. Limit: 10000", True),
        ("ERR max daily request limit exceeded", True),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
        ("the max requests limit exceeded", False),
        (
            "Command # 1 (LLEN rq:queue:a) of pipeline caused error: "
            "max requests limit exceeded. Limit: 500000",
            True,
        ),
        ("Command # 2 (GET k) of pipeline caused error: WRONGTYPE", False),
    ],
)
def test_the_matcher_knows_both_wordings_with_and_without_err(message, matches):
    import redis

    assert is_quota_exhausted(redis.ResponseError(message)) is matches
    assert is_quota_exhausted(ValueError(message)) is False


def test_the_first_quota_error_opens_an_incident_and_drains_answer_503(
    client, fault, rq_client
):
    RQQueue("batch-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 2)
    fault.exhaust()
    response = client.post(URL, HTTP_X_CRON_TOKEN=TOKEN)
    assert response.status_code == 503
    assert response.json()["error"] == "redis_quota_exhausted"
    incident = QuotaIncident.objects.get()
    assert incident.is_open
    assert incident.source == "drain-check"
    assert "max requests limit exceeded" in incident.last_error
    # The job was never fetched: it is still queued.
    assert rq_client.llen("rq:queue:batch-jobs") == 1


def test_while_open_drains_send_at_most_one_probe_per_cool_down(client, fault):
    fault.exhaust()
    run_drain()  # opens the incident: 1 command
    assert sent(fault) == 1
    for _ in range(20):
        response = client.post(URL, HTTP_X_CRON_TOKEN=TOKEN)
        assert response.status_code == 503
        assert response.json()["error"] == "redis_quota_exhausted"
        assert response.json()["redisCommands"] == 0
    assert sent(fault) == 1  # nothing more reached Redis within the cool-down
    assert queue_depths(["batch-jobs"]).error.startswith("The Redis command quota")
    assert sent(fault) == 1


def test_a_failed_probe_keeps_it_open_and_a_good_one_closes_it(
    client, fault, rq_client, settings
):
    settings.QUOTA_PROBE_COOLDOWN_S = 1
    jobs = [
        RQQueue("dsar-jobs", connection=rq_client).enqueue("tests.jobs.add", i, 1)
        for i in range(3)
    ]
    fault.exhaust()
    run_drain()
    time.sleep(1.1)
    before = sent(fault)
    probe = run_drain()  # the probe: one command, refused
    assert sent(fault) - before == 1
    assert probe.error_code == "redis_quota_exhausted"
    incident = QuotaIncident.objects.get()
    assert incident.is_open and incident.count == 2 and incident.probes == 1

    fault.restore()
    assert run_drain().error_code == "redis_quota_exhausted"  # still cooling down
    time.sleep(1.1)
    recovered = run_drain()
    assert recovered.status == DrainRun.Status.SUCCEEDED
    assert recovered.total_processed == 3
    incident.refresh_from_db()
    assert not incident.is_open
    assert incidents.open_incident() is None
    for job in jobs:
        assert (
            Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FINISHED
        )
    # A new exhaustion opens a new incident.
    fault.exhaust()
    run_drain()
    assert QuotaIncident.objects.filter(closed_at__isnull=True).count() == 1
    assert QuotaIncident.objects.count() == 2


@pytest.mark.parametrize(
    ("executor", "quota_after"),
    # Enough to start, not enough to finish: the rq executor spends ~52
    # commands a job, the lean one ~4.
    [("rq", 200), ("lean", 40)],
)
def test_exhaustion_in_the_middle_of_a_drain_loses_no_job(
    fault, rq_client, settings, executor, quota_after
):
    settings.DRAIN_EXECUTOR = executor  # the engine picks the child's module
    queue = RQQueue("batch-jobs", connection=rq_client)
    ids = [queue.enqueue("tests.jobs.add", i, 1).id for i in range(20)]
    fault.reset_counts()
    fault.quota_after = quota_after
    run = run_drain()
    assert run.status == DrainRun.Status.FAILED or run.total_failed > 0
    assert QuotaIncident.objects.filter(closed_at__isnull=True).exists()
    # Every job is somewhere an operator can see it: finished, still queued,
    # failed, marked started (failed as abandoned later), popped but never
    # registered (the intermediate list: requeued by a later drain), or in the
    # lean executor's claim list (settled by a later drain).
    queued = {j.decode() for j in rq_client.lrange("rq:queue:batch-jobs", 0, -1)}
    queued |= {
        j.decode() for j in rq_client.lrange("rq:queue:batch-jobs:intermediate", 0, -1)
    }
    claimed = {
        j.decode()
        for key in rq_client.keys("kaireon:claimed:*")
        for j in rq_client.lrange(key, 0, -1)
    }
    failed = set(
        FailedJobRegistry("batch-jobs", connection=rq_client).get_job_ids(cleanup=False)
    )
    started = set(
        StartedJobRegistry("batch-jobs", connection=rq_client).get_job_ids(
            cleanup=False
        )
    )
    finished = {i for i in ids if status(rq_client, i) == JobStatus.FINISHED}
    accounted = queued | claimed | failed | started | finished
    assert set(ids) <= accounted
    assert finished, "the drain made progress before the quota ran out"
    assert queued, "jobs the drain could not fetch stayed queued"
    if executor == "lean":
        assert claimed, "the lean drain died holding a claimed batch"
        run.refresh_from_db()
        assert run.has_unsettled_claims

        # The quota is back: the next drain settles the claim list and runs
        # the rest; no job is lost and none runs twice.
        fault.restore()
        QuotaIncident.objects.update(last_probe_at=None, opened_at=run.started)
        after = run_drain()
        assert after.status == DrainRun.Status.SUCCEEDED, after.error
        assert not rq_client.keys("kaireon:claimed:*")
        run.refresh_from_db()
        assert not run.has_unsettled_claims
        outcomes = {i: status(rq_client, i) for i in ids}
        assert set(outcomes.values()) <= {JobStatus.FINISHED, JobStatus.FAILED}
        # At most the job that was running when the quota ran out is failed
        # (AbandonedJobError); everything else finished.
        assert list(outcomes.values()).count(JobStatus.FAILED) <= 1


def status(client, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=client).get_status()


def test_a_console_page_read_opens_the_incident_too(fault, admin_client):
    fault.exhaust()
    response = admin_client.get("/admin/ops/queue/")
    assert response.status_code == 200
    incident = QuotaIncident.objects.get()
    assert incident.source == "console"


# --- A probe costs one command, whoever sends it ------------------------------

CRON_SECRET = "quota-test-cron-secret-0123456789"


def _probe_due() -> None:
    """The cool-down is over: the next caller through the gate is the probe."""
    QuotaIncident.objects.update(last_probe_at=None)


def test_a_status_call_that_probes_sends_one_command_not_twenty(
    client, fault, settings
):
    settings.CRON_SECRET = CRON_SECRET
    fault.exhaust()
    run_drain()  # opens the incident
    _probe_due()
    before = sent(fault)
    response = client.get("/api/v1/cron/status", HTTP_X_CRON_TOKEN=CRON_SECRET)
    assert response.status_code == 200
    body = response.json()
    assert body["redis"] == "unavailable"
    assert "quota" in body["redisError"]
    assert sent(fault) - before == 1  # the first LLEN, refused: nothing more
    assert body["redisCommands"] == 1
    incident = QuotaIncident.objects.get()
    assert incident.is_open and incident.probes == 1 and incident.count == 2

    # The quota is back: the next probe is the first read of a full status
    # call, which closes the incident and reports every queue.
    fault.restore()
    _probe_due()
    before = sent(fault)
    body = client.get("/api/v1/cron/status", HTTP_X_CRON_TOKEN=CRON_SECRET).json()
    assert body["redis"] == "ok"
    assert len(body["backlog"]) == 5
    assert sent(fault) - before == body["redisCommands"] == 20
    assert incidents.open_incident() is None


def test_every_guarded_read_probes_with_one_command(fault):
    from ops.inspection.switch_check import switch_check
    from ops.models import Source
    from ops.scheduling.alarm import backlog_ages

    names = ["batch-jobs", "dsar-jobs", "journey-jobs"]
    fault.exhaust()
    run_drain()
    reads = {
        "queue page": lambda: queue_depths(names).error,
        "backlog ages": lambda: backlog_ages(names, source=Source.OTHER).error,
        "switch check": lambda: switch_check().redis_error,
    }
    for what, read in reads.items():
        _probe_due()
        before = sent(fault)
        assert "quota" in read(), what
        assert sent(fault) - before == 1, what
    assert QuotaIncident.objects.get().probes == 3
