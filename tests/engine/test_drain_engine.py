"""The drain engine against a real redis-server: costs, outcomes, limits."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from ops.engine import drain as drain_module
from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.models import DrainRun, JobRecord, Queue, ScheduledHint

pytestmark = pytest.mark.django_db(transaction=True)


def run_drain(**options) -> DrainRun:
    return drain(trigger=DrainRun.Trigger.CLI, options=parse_options(**options))


def rq(name: str, client) -> RQQueue:
    return RQQueue(name, connection=client)


def test_an_idle_drain_sends_exactly_one_command_on_the_wire(wire):
    run = run_drain()
    assert run.status == DrainRun.Status.SUCCEEDED
    # AUTH is the private server's password (not billed); nothing else but
    # the one EXISTS over ten keys.
    assert wire.snapshot() == {"AUTH": 1, "EXISTS": 1}
    assert run.redis_commands == 1
    assert run.total_processed == 0


def test_the_idle_check_covers_every_enabled_queue_list_and_scheduled_registry(
    wire, rq_client
):
    # A job scheduled far in the future makes the EXISTS true, so the drain
    # looks further (and finds nothing due).
    rq("seed-jobs", rq_client).enqueue_in(timedelta(hours=1), "tests.jobs.add", 1, 2)
    run = run_drain()
    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.total_processed == 0
    # The check is true: the look (the lists' depths, the registries' due ids,
    # one EXISTS over the intermediate lists) finds nothing to run, and the
    # earliest entry of each registry is read once to remember it.
    assert wire.snapshot() == {
        "AUTH": 1,
        "EXISTS": 2,
        "LLEN": 5,
        "ZRANGEBYSCORE": 5,
        "ZRANGE": 5,
    }
    assert run.redis_commands == 17
    assert ScheduledJobRegistry("seed-jobs", connection=rq_client).count == 1


def test_a_disabled_queue_is_not_checked_or_drained(wire, rq_client):
    rq("batch-jobs", rq_client).enqueue("tests.jobs.add", 1, 2)
    Queue.objects.filter(name="batch-jobs").update(enabled=False)
    run = run_drain()
    assert run.total_processed == 0
    assert "batch-jobs" not in run.queue_results
    assert wire.billed() == 1
    assert rq_client.llen("rq:queue:batch-jobs") == 1


def test_it_drains_every_job_a_plain_rq_client_enqueued(rq_client):
    jobs = []
    for name in (
        "batch-jobs",
        "dsar-jobs",
        "journey-jobs",
        "retrain-jobs",
        "seed-jobs",
    ):
        for i in range(3):
            jobs.append(rq(name, rq_client).enqueue("tests.jobs.add", i, 10))
    run = run_drain()
    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.total_processed == 15
    assert run.total_failed == 0
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.return_value() == job.args[0] + 10
    assert all(
        r == {"processed": 3, "failed": 0, "remaining": 0}
        for r in run.queue_results.values()
    )


def test_it_promotes_due_scheduled_jobs_and_leaves_future_ones(rq_client):
    queue = rq("retrain-jobs", rq_client)
    due = queue.enqueue_at(
        datetime.now(UTC) - timedelta(seconds=5), "tests.jobs.add", 2, 3
    )
    later = queue.enqueue_in(timedelta(hours=2), "tests.jobs.add", 4, 5)
    run = run_drain()
    assert run.queue_results["retrain-jobs"]["processed"] == 1
    assert Job.fetch(due.id, connection=rq_client).get_status() == JobStatus.FINISHED
    assert Job.fetch(later.id, connection=rq_client).get_status() == JobStatus.SCHEDULED


def test_redis_commands_reported_match_the_wire_with_jobs(wire, rq_client):
    for i in range(5):
        rq("batch-jobs", rq_client).enqueue("tests.jobs.add", i, 1)
    rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail")
    wire.reset()
    run = run_drain()
    assert run.total_processed == 6
    assert run.total_failed == 1
    # Parent and child processes both go through the proxy: every billable
    # command they sent is in the run's own count.
    assert run.redis_commands == wire.billed()


def test_a_failing_job_lands_in_rqs_failed_registry(rq_client):
    job = rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail")
    run = run_drain()
    assert run.status == DrainRun.Status.WITH_FAILURES
    assert run.queue_results["dsar-jobs"] == {
        "processed": 1,
        "failed": 1,
        "remaining": 0,
    }
    assert job.id in FailedJobRegistry("dsar-jobs", connection=rq_client).get_job_ids()
    assert (
        "canary job failed on purpose"
        in Job.fetch(job.id, connection=rq_client).exc_info
    )


def test_a_job_with_retries_is_requeued_as_rq_would(rq_client):
    job = rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail", retry=Retry(max=1))
    run = run_drain()
    # First attempt fails and is requeued; the same drain picks it up again.
    assert run.queue_results["dsar-jobs"]["processed"] == 2
    assert run.queue_results["dsar-jobs"]["failed"] == 2
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FAILED


def test_a_crashing_job_is_failed_and_the_rest_of_the_queue_still_runs(rq_client):
    queue = rq("seed-jobs", rq_client)
    crash = queue.enqueue("ops.jobs.crash")
    after = [queue.enqueue("tests.jobs.add", i, 1) for i in range(3)]
    run = run_drain()
    assert run.status == DrainRun.Status.WITH_FAILURES
    assert run.queue_results["seed-jobs"] == {
        "processed": 4,
        "failed": 1,
        "remaining": 0,
    }
    crashed = Job.fetch(crash.id, connection=rq_client)
    assert crashed.get_status() == JobStatus.FAILED
    assert "AbandonedJobError" in crashed.exc_info
    assert "exit status 13" in crashed.exc_info
    assert (
        StartedJobRegistry("seed-jobs", connection=rq_client).get_job_ids(cleanup=False)
        == []
    )
    for job in after:
        assert (
            Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FINISHED
        )
    # The dead child's worker registration is gone too.
    assert not [w for w in rq_client.smembers("rq:workers") if b"kdrain" in w]


def test_a_job_timeout_is_enforced_when_the_drain_runs_off_the_main_thread(rq_client):
    job = rq("batch-jobs", rq_client).enqueue("ops.jobs.sleep", 20_000, job_timeout=1)
    result: list[DrainRun] = []
    thread = threading.Thread(target=lambda: result.append(run_drain()))
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    run = result[0]
    assert run.status == DrainRun.Status.WITH_FAILURES
    assert run.queue_results["batch-jobs"]["failed"] == 1
    assert "JobTimeoutException" in Job.fetch(job.id, connection=rq_client).exc_info


def test_it_stops_taking_jobs_at_the_deadline_and_leaves_the_rest_queued(rq_client):
    queue = rq("batch-jobs", rq_client)
    for _ in range(60):
        queue.enqueue("ops.jobs.sleep", 150)
    # The budget leaves room for a slow child start on a loaded machine.
    run = run_drain(max_duration_ms=3000, queues=["batch-jobs"])
    assert run.status == DrainRun.Status.DEADLINE
    assert run.deadline_hit is True
    processed = run.queue_results["batch-jobs"]["processed"]
    assert 0 < processed < 60
    assert run.queue_results["batch-jobs"]["remaining"] == 60 - processed
    assert rq_client.llen("rq:queue:batch-jobs") == 60 - processed
    assert FailedJobRegistry("batch-jobs", connection=rq_client).get_job_ids() == []


def test_a_job_running_past_the_grace_is_killed_and_failed(rq_client, settings):
    settings.DRAIN_JOB_GRACE_MS = 500
    job = rq("batch-jobs", rq_client).enqueue("ops.jobs.sleep", 30_000, job_timeout=600)
    queued = rq("batch-jobs", rq_client).enqueue("tests.jobs.add", 1, 1)
    run = run_drain(max_duration_ms=4000, queues=["batch-jobs"])
    # The killed job failed: failed jobs win over the deadline, which the run
    # still records.
    assert run.status == DrainRun.Status.WITH_FAILURES
    assert run.deadline_hit is True
    assert run.queue_results["batch-jobs"] == {
        "processed": 1,
        "failed": 1,
        "remaining": 1,
    }
    killed = Job.fetch(job.id, connection=rq_client)
    assert killed.get_status() == JobStatus.FAILED
    assert "hard deadline" in killed.exc_info
    assert Job.fetch(queued.id, connection=rq_client).get_status() == JobStatus.QUEUED


def overlap(path: Path) -> int:
    events = []
    for line in path.read_text().splitlines():
        kind, _, stamp = line.split()
        events.append((float(stamp), 1 if kind == "start" else -1))
    level = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        level += delta
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_at_most_max_concurrent_queues_are_drained_at_once(rq_client, tmp_path, limit):
    log = tmp_path / "track.log"
    names = ["batch-jobs", "dsar-jobs", "journey-jobs", "retrain-jobs"]
    for name in names:
        for i in range(2):
            rq(name, rq_client).enqueue(
                "tests.jobs.track", str(log), f"{name}-{i}", 400
            )
    run = run_drain(max_concurrent_queues=limit)
    assert run.total_processed == 8
    assert overlap(log) == limit


def test_queues_are_drained_in_priority_order(rq_client, tmp_path):
    log = tmp_path / "track.log"
    Queue.objects.filter(name="seed-jobs").update(priority=1)
    for name in ("batch-jobs", "seed-jobs"):
        rq(name, rq_client).enqueue("tests.jobs.track", str(log), name, 10)
    run_drain(max_concurrent_queues=1)
    starts = [
        line.split()[1]
        for line in log.read_text().splitlines()
        if line.startswith("start")
    ]
    assert starts == ["seed-jobs", "batch-jobs"]


def test_a_second_drain_is_skipped_while_one_runs_and_costs_no_redis(
    wire, rq_client, tmp_path
):
    marker = tmp_path / "started"
    rq("batch-jobs", rq_client).enqueue("tests.jobs.mark_started", str(marker), 1500)
    first: list[DrainRun] = []
    thread = threading.Thread(target=lambda: first.append(run_drain()))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        before = wire.billed()
        second = run_drain()
        assert wire.billed() == before
    finally:
        thread.join(timeout=60)
    assert second.status == DrainRun.Status.SKIPPED
    assert second.redis_commands == 0
    assert second.blocked_by == first[0].public_id
    assert first[0].status == DrainRun.Status.SUCCEEDED
    assert first[0].total_processed == 1


def test_it_reports_redis_unreachable_without_raising(settings):
    from bench.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    run = run_drain()
    assert run.status == DrainRun.Status.FAILED
    assert run.error_code == "redis_unavailable"
    assert "unreachable" in run.error
    # The lease was released: the next drain is not skipped.
    assert run_drain().status == DrainRun.Status.FAILED


def test_a_drain_with_no_enabled_queue_does_nothing_and_costs_nothing(wire):
    Queue.objects.update(enabled=False)
    run = run_drain()
    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.queue_results == {}
    assert wire.billed() == 0


def test_a_job_stranded_between_queue_and_worker_is_requeued_and_run(rq_client):
    """A consumer that LMOVEd a job to the intermediate list and died before
    registering it leaves it neither queued nor started. The idle check sees the
    intermediate list; after RQ's two sightings a minute apart, a drain puts the
    job back and runs it."""
    queue = rq("journey-jobs", rq_client)
    job = queue.enqueue("tests.jobs.add", 20, 22)
    rq_client.lmove("rq:queue:journey-jobs", "rq:queue:journey-jobs:intermediate")
    first = run_drain()
    assert first.total_processed == 0  # first sighting only
    assert rq_client.llen("rq:queue:journey-jobs:intermediate") == 1
    # Pretend the first sighting was two minutes ago.
    first_seen_key = f"rq:queue:journey-jobs:intermediate:first_seen:{job.id}"
    rq_client.set(first_seen_key, time.time() - 120)
    second = run_drain()
    assert second.queue_results["journey-jobs"]["processed"] == 1
    assert Job.fetch(job.id, connection=rq_client).return_value() == 42
    assert rq_client.llen("rq:queue:journey-jobs:intermediate") == 0
    assert not rq_client.exists(first_seen_key)


def test_a_job_a_live_worker_is_registering_is_left_alone(rq_client):
    queue = rq("journey-jobs", rq_client)
    job = queue.enqueue("tests.jobs.add", 1, 1)
    rq_client.lmove("rq:queue:journey-jobs", "rq:queue:journey-jobs:intermediate")
    rq_client.zadd("rq:wip:journey-jobs", {f"{job.id}:exec1": time.time() + 600})
    rq_client.set(
        f"rq:queue:journey-jobs:intermediate:first_seen:{job.id}", time.time() - 120
    )
    run_drain()
    assert rq_client.llen("rq:queue:journey-jobs:intermediate") == 1
    assert rq_client.llen("rq:queue:journey-jobs") == 0


# --- far-future scheduled jobs: one command a tick -----------------------------


def test_a_tick_with_only_a_far_future_scheduled_job_costs_one_command(wire, rq_client):
    rq("seed-jobs", rq_client).enqueue_in(timedelta(hours=1), "tests.jobs.add", 1, 2)
    first = run_drain()
    assert first.redis_commands == 17  # the look, remembered
    wire.reset()
    second = run_drain()
    assert second.redis_commands == 1
    assert wire.billed() == 1
    assert second.total_processed == 0


def test_a_job_queued_after_the_hint_is_not_missed(wire, rq_client):
    rq("seed-jobs", rq_client).enqueue_in(timedelta(hours=1), "tests.jobs.add", 1, 2)
    run_drain()
    job = rq("batch-jobs", rq_client).enqueue("tests.jobs.add", 2, 2)
    run = run_drain()  # one more key exists: the hint no longer holds
    assert run.total_processed == 1
    assert Job.fetch(job.id, connection=rq_client).return_value() == 4


def test_a_job_queued_while_the_far_future_one_went_away_is_not_missed(rq_client):
    later = rq("seed-jobs", rq_client).enqueue_in(
        timedelta(hours=1), "tests.jobs.add", 1, 2
    )
    run_drain()
    later.cancel()
    later.delete()
    job = rq("batch-jobs", rq_client).enqueue("tests.jobs.add", 5, 5)
    run = run_drain()
    assert run.total_processed == 1
    assert Job.fetch(job.id, connection=rq_client).return_value() == 10


def test_a_sooner_job_on_another_queue_is_not_missed(rq_client):
    rq("seed-jobs", rq_client).enqueue_in(timedelta(hours=1), "tests.jobs.add", 1, 2)
    run_drain()
    soon = rq("dsar-jobs", rq_client).enqueue_at(
        datetime.now(UTC) - timedelta(seconds=1), "tests.jobs.add", 3, 3
    )
    run = run_drain()
    assert run.total_processed == 1
    assert Job.fetch(soon.id, connection=rq_client).return_value() == 6


def test_the_hint_is_rechecked_after_the_interval(wire, rq_client, settings):
    rq("seed-jobs", rq_client).enqueue_in(timedelta(hours=1), "tests.jobs.add", 1, 2)
    run_drain()
    # A sooner job on the same queue keeps the number of keys: the documented
    # blind spot, bounded by DRAIN_SCHEDULED_RECHECK_S.
    soon = rq("seed-jobs", rq_client).enqueue_at(
        datetime.now(UTC) - timedelta(seconds=1), "tests.jobs.add", 4, 4
    )
    assert run_drain().total_processed == 0
    ScheduledHint.objects.update(checked_at=timezone.now() - timedelta(seconds=901))
    run = run_drain()
    assert run.total_processed == 1
    assert Job.fetch(soon.id, connection=rq_client).return_value() == 8


def test_with_the_recheck_off_every_tick_looks_closer(wire, rq_client, settings):
    settings.DRAIN_SCHEDULED_RECHECK_S = 0
    rq("seed-jobs", rq_client).enqueue_in(timedelta(hours=1), "tests.jobs.add", 1, 2)
    assert run_drain().redis_commands == 17
    # Scheduled jobs were seen: the cheap look (EXISTS over the lists and the
    # earliest of each registry) every tick.
    assert run_drain().redis_commands == 7


# --- fork or spawn ---------------------------------------------------------------


def _refuse(*args, **kwargs):
    raise AssertionError("this way of starting a child must not be used here")


def test_a_drain_outside_a_transaction_forks_its_children(monkeypatch, rq_client):
    # Threads earlier tests left behind (proxies, servers) count as safe here;
    # a thread started now does not (the test below).
    running = frozenset(t.name for t in threading.enumerate())
    monkeypatch.setattr(
        "ops.engine.drain.FORK_SAFE_THREADS",
        drain_module.FORK_SAFE_THREADS | running,
    )
    monkeypatch.setattr("ops.engine.children.spawn", _refuse)
    job = rq("batch-jobs", rq_client).enqueue("tests.jobs.add", 1, 2)
    run = run_drain()
    assert run.total_processed == 1, run.error
    assert Job.fetch(job.id, connection=rq_client).return_value() == 3


def test_inside_a_transaction_it_spawns_fresh_interpreters(monkeypatch, rq_client):
    from django.db import transaction

    monkeypatch.setattr("ops.engine.children.fork", _refuse)
    rq("batch-jobs", rq_client).enqueue("tests.jobs.add", 1, 2)
    with transaction.atomic():
        run = run_drain()
    assert run.total_processed == 1, run.error


def test_with_another_thread_running_it_spawns(monkeypatch, rq_client):
    monkeypatch.setattr("ops.engine.children.fork", _refuse)
    rq("batch-jobs", rq_client).enqueue("tests.jobs.add", 1, 2)
    release = threading.Event()
    other = threading.Thread(target=release.wait, name="someone-elses-thread")
    other.start()
    try:
        run = run_drain()
    finally:
        release.set()
        other.join()
    assert run.total_processed == 1, run.error


# --- both executors ---------------------------------------------------------------


@pytest.mark.parametrize("executor", ["lean", "rq"])
def test_both_executors_run_rq_jobs_with_the_same_outcomes(
    settings, rq_client, executor
):
    settings.DRAIN_EXECUTOR = executor
    ok = [rq("batch-jobs", rq_client).enqueue("tests.jobs.add", i, 1) for i in range(3)]
    bad = rq("dsar-jobs", rq_client).enqueue("ops.jobs.fail", retry=Retry(max=1))
    run = run_drain()
    assert run.queue_results["batch-jobs"] == {
        "processed": 3,
        "failed": 0,
        "remaining": 0,
    }
    # The failing job ran twice (one retry), both times counted as failed.
    assert run.queue_results["dsar-jobs"]["processed"] == 2
    assert [Job.fetch(j.id, connection=rq_client).return_value() for j in ok] == [
        1,
        2,
        3,
    ]
    failed = Job.fetch(bad.id, connection=rq_client)
    assert failed.get_status() == JobStatus.FAILED
    assert failed.retries_left == 0
    assert bad.id in FailedJobRegistry("dsar-jobs", connection=rq_client).get_job_ids()
    records = JobRecord.objects.filter(run=run)
    assert records.count() == 5
    assert sorted(records.values_list("status", flat=True)) == [
        "failed",
        "finished",
        "finished",
        "finished",
        "retried",
    ]


def test_a_drain_with_one_job_costs_24_billed_commands(wire, rq_client):
    """The lean drain's fixed part, as the quota advisor counts it: the idle
    EXISTS (1), the look (5 LLEN, 5 ZRANGEBYSCORE, one EXISTS over the
    intermediate lists), the child's claim (MULTI, SORT, SORT, LTRIM, EXEC),
    the dependents' EXISTS and its closing ZADD + DEL = 19 beyond the idle
    check, + the job's own 4. The queue was drained empty: no LLEN after."""
    rq("batch-jobs", rq_client).enqueue("tests.jobs.add", 1, 2)
    wire.reset()
    run = run_drain()
    assert run.total_processed == 1
    assert run.queue_results["batch-jobs"]["remaining"] == 0
    assert wire.billed() == 24
    assert run.redis_commands == 24
