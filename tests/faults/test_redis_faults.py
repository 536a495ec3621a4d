"""Redis failing under a drain, on both executors: stopped for 3 s and 8 s
(issue 10 item 3), client connections cut, the provider's quota error. The
proxy in front of Redis (harness.StepProxy) plays each fault; the data stays."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rq.job import Job, JobStatus

from ops.engine.results import drain_answer
from ops.models import DrainRun, QuotaIncident
from tests.faults.harness import assert_books, enqueue, wait_until

A, B = "batch-jobs", "dsar-jobs"


def assert_abandoned(client, job: Job) -> None:
    """Failed as RQ fails a dead worker's job: it ran, its outcome was lost."""
    now = Job.fetch(job.id, connection=client)
    assert now.get_status() == JobStatus.FAILED, now.get_status()
    assert "AbandonedJobError" in now.exc_info


# Both outages of the issue, each on one executor (the suite's runtime); the
# two executors are both covered across them.
@pytest.mark.parametrize(
    ("executor", "outage_s"), [("lean", 3), ("rq", 8)], indirect=["executor"]
)
def test_after_a_redis_outage_mid_drain_no_job_is_stranded(
    outage_s, executor, redis_faults, procs, ledger, gates, rq_client
):
    """Two queues: the job on A runs through the outage, the one on B ends
    during it (its outcome cannot be written). The drain reports the outage
    (exit 4, the endpoint's 503); the next drain settles what it left: the
    job on B failed as abandoned (it ran once), nothing started or
    registered."""
    gate_a, gate_b = gates.new("a"), gates.new("b")
    on_a = enqueue(rq_client, A, ledger, gate=gate_a)
    on_b = enqueue(rq_client, B, ledger, gate=gate_b)
    rest = [enqueue(rq_client, q, ledger) for q in (A, B)]
    # A budget that outlasts the outage: Redis stops inside the drain.
    drain = procs.drain("--queue", A, "--queue", B, "--max-duration-ms", "10000")
    ledger.wait_for("start", on_a.id)
    ledger.wait_for("start", on_b.id)
    redis_faults.outage()
    gates.open(gate_b)
    # The next drains start during the outage and wait, set up, for it to end.
    following = [procs.drain_later("--max-duration-ms", "5000") for _ in range(2)]
    time.sleep(outage_s)
    redis_faults.recover()
    gates.open(gate_a)

    first = drain.finish()
    # The failure is reported: exit 4 from the command, 503 from the endpoint.
    assert first.returncode == 4, first
    run = DrainRun.objects.get(public_id=first.json["runId"])
    assert run.status == DrainRun.Status.FAILED
    assert drain_answer(run)[0] == 503
    # Redis is back: the next drains leave nothing stranded.
    for later in following:
        assert later.release().finish().returncode == 0
    assert_books(rq_client, ledger, [on_a, on_b, *rest])
    run.refresh_from_db()
    assert run.recovered_at is not None
    assert_abandoned(rq_client, on_b)


def test_connections_cut_mid_drain_lose_no_job_and_run_none_twice(
    executor, redis_faults, procs, ledger, gates, rq_client
):
    """Every connection to Redis is cut twice while jobs run (a proxy or the
    provider dropping clients): the drain reconnects and goes on."""
    first_gate, second_gate = gates.new("1"), gates.new("2")
    jobs = [
        enqueue(rq_client, A, ledger, gate=first_gate),
        enqueue(rq_client, A, ledger),
        enqueue(rq_client, A, ledger, gate=second_gate),
        enqueue(rq_client, A, ledger),
    ]
    drain = procs.drain("--queue", A, "--max-duration-ms", "10000")
    for job, gate in ((jobs[0], first_gate), (jobs[2], second_gate)):
        ledger.wait_for("start", job.id)
        redis_faults.drop_connections()
        gates.open(gate)
    result = drain.finish()
    assert result.returncode == 0, result
    assert result.json["totalProcessed"] == len(jobs)
    assert_books(rq_client, ledger, jobs)
    for job in jobs:
        assert Job.fetch(job.id, connection=rq_client).get_status() == "finished"


def test_quota_errors_mid_drain_open_an_incident_and_lose_no_job(
    executor, redis_faults, procs, ledger, gates, rq_client
):
    """The provider starts answering every command with its quota error while
    a job runs; once the quota is back, the next drains settle everything."""
    gate = gates.new("job")
    running = enqueue(rq_client, A, ledger, gate=gate)
    rest = [enqueue(rq_client, A, ledger) for _ in range(3)]
    # The next drains set up now, and wait for the test to release them.
    following = [
        procs.drain_later("--queue", A, "--max-duration-ms", "5000") for _ in range(2)
    ]
    drain = procs.drain("--queue", A, "--max-duration-ms", "10000")
    ledger.wait_for("start", running.id)
    redis_faults.exhaust()
    gates.open(gate)

    first = drain.finish()
    assert first.returncode == 5, first
    assert first.json["error"] == "redis_quota_exhausted"
    assert QuotaIncident.objects.filter(closed_at__isnull=True).exists()

    redis_faults.restore()
    # QUOTA_PROBE_COOLDOWN_S after the last probe, the next drain may probe.
    incident = QuotaIncident.objects.get(closed_at__isnull=True)
    probe_at = incident.last_probe_at + timedelta(seconds=1, milliseconds=50)
    wait_until(lambda: timezone.now() >= probe_at, 10, "the probe cool-down")
    for later in following:
        assert later.release().finish().returncode == 0
    # The job whose outcome the quota refused ran once (failed as abandoned);
    # the lean executor's never-started claims went back and ran once.
    assert_books(rq_client, ledger, [running, *rest])
    assert_abandoned(rq_client, running)
    assert not QuotaIncident.objects.filter(closed_at__isnull=True).exists()
