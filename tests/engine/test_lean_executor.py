"""The lean executor (ops/engine/lean_worker.py) against a real redis-server:
exact billed commands on the wire, and what rq's public API sees afterwards."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job, JobStatus
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

from bench.wire_proxy import WireProxy
from ops.engine.enqueue import JobSpec, enqueue_many
from ops.engine.lean_worker import LeanExecutor, claim_key_for

QUEUE = "batch-jobs"

pytestmark = pytest.mark.django_db


@pytest.fixture
def counted(redis_server) -> Callable[[], tuple[WireProxy, redis.Redis]]:
    """A client whose every command crosses a counting proxy."""
    opened: list[tuple[WireProxy, redis.Redis]] = []

    def make() -> tuple[WireProxy, redis.Redis]:
        proxy = WireProxy(redis_server.port).start()
        client = redis.Redis.from_url(
            proxy.url(redis_server.password), protocol=2, driver_info=None
        )
        client.ping()
        proxy.reset()
        opened.append((proxy, client))
        return proxy, client

    yield make
    for proxy, client in opened:
        client.close()
        proxy.close()


def execute(client: redis.Redis, queue: str = QUEUE) -> list[str]:
    lines: list[str] = []
    LeanExecutor(
        client=client,
        queue_name=queue,
        worker_name="lean-test",
        claim_key=claim_key_for("lean-test"),
        report=lines.append,
    ).run()
    return lines


def enqueue(rq_client, *args, **kwargs) -> Job:
    return RQQueue(QUEUE, connection=rq_client).enqueue(*args, **kwargs)


# --- exact wire counts -------------------------------------------------------


def test_one_job_costs_12_billed_commands(counted, rq_client):
    job = enqueue(rq_client, "tests.jobs.add", 1, 2)
    proxy, client = counted()
    execute(client)
    # Claim: MULTI, SORT (ids + fields), SORT STORE, LTRIM, EXEC. The job: HSET,
    # XADD, EXPIRE (result), EXPIRE (job). After the batch: EXISTS (dependents);
    # closing: ZADD (finished registry), DEL (claim list).
    assert proxy.snapshot() == {
        "MULTI": 1,
        "SORT": 2,
        "LTRIM": 1,
        "EXEC": 1,
        "HSET": 1,
        "XADD": 1,
        "EXPIRE": 2,
        "EXISTS": 1,
        "ZADD": 1,
        "DEL": 1,
    }
    assert proxy.billed() == 12
    assert Job.fetch(job.id, connection=rq_client).return_value() == 3


def test_a_batch_costs_four_commands_a_job_and_a_few_per_batch(counted, rq_client):
    enqueue_many(
        QUEUE, [JobSpec("tests.jobs.add", (i, 1)) for i in range(200)], client=rq_client
    )
    proxy, client = counted()
    execute(client)
    counts = proxy.snapshot()
    # 4 per job; per batch a 5-command claim and an EXISTS; the deferred
    # registry ZADDs ride on the next claim, one per batch.
    batches = counts["LTRIM"]
    assert counts["HSET"] == counts["XADD"] == 200
    assert counts["EXPIRE"] == 400
    assert counts["ZADD"] == batches
    assert proxy.billed() == 200 * 4 + batches * 7 + 1  # + the final DEL
    assert proxy.billed() / 200 <= 4.2
    assert FinishedJobRegistry(QUEUE, connection=rq_client).count == 200


def test_result_ttl_zero_costs_one_delete_a_job(counted, rq_client):
    enqueue_many(
        QUEUE,
        [JobSpec("tests.jobs.add", (i, 1), result_ttl=0) for i in range(50)],
        client=rq_client,
    )
    proxy, client = counted()
    execute(client)
    counts = proxy.snapshot()
    batches = counts["LTRIM"]
    assert counts["DEL"] == 50 + 1  # one per job, and the claim list
    assert "HSET" not in counts and "XADD" not in counts and "ZADD" not in counts
    assert proxy.billed() == 50 + batches * 6 + 1
    assert proxy.billed() / 50 <= 1.5
    assert rq_client.keys("rq:job:*") == []


def test_a_failing_job_costs_three_commands(counted, rq_client):
    job = enqueue(rq_client, "ops.jobs.fail")
    proxy, client = counted()
    lines = execute(client)
    # HSET (status, exc and fields merged), EXPIRE (job, failure_ttl), XADD (the
    # failed result: rq sets no TTL on it without an explicit failure_ttl);
    # the failed registry's ZADD after the batch.
    assert proxy.snapshot()["EXPIRE"] == 1
    assert proxy.billed() == 5 + 3 + 1 + 2
    assert proxy.snapshot()["ZADD"] == 1
    failed = Job.fetch(job.id, connection=rq_client)
    assert failed.get_status() == JobStatus.FAILED
    assert "CanaryFailure" in failed.exc_info
    assert failed.latest_result().type.name == "FAILED"
    assert job.id in FailedJobRegistry(QUEUE, connection=rq_client).get_job_ids()
    assert any(line.startswith("end ") and " failed " in line for line in lines)


def test_a_retried_job_runs_again_in_the_same_pass(counted, rq_client):
    job = enqueue(rq_client, "ops.jobs.fail", retry=Retry(max=1))
    proxy, client = counted()
    execute(client)
    # First run: the retry = HSET (status queued, retries_left) + RPUSH; a
    # second claim finds it; the second run fails it for good (3), then the
    # dependents check, the failed registry's ZADD and the claim list's DEL.
    counts = proxy.snapshot()
    assert counts["LTRIM"] == 2
    assert counts["RPUSH"] == 1
    assert proxy.billed() == 5 + 2 + 5 + 3 + 1 + 2
    failed = Job.fetch(job.id, connection=rq_client)
    assert failed.get_status() == JobStatus.FAILED
    assert failed.retries_left == 0


# --- rq's view of the outcome ---------------------------------------------------


def test_rq_sees_a_finished_job_as_rq_worker_leaves_it(rq_client):
    job = enqueue(rq_client, "tests.jobs.add", 2, 3, meta={"who": "test"})
    execute(rq_client)
    done = Job.fetch(job.id, connection=rq_client)
    assert done.get_status() == JobStatus.FINISHED
    assert done.return_value() == 5
    assert done.latest_result().type.name == "SUCCESSFUL"
    assert done.meta == {"who": "test"}
    assert done.started_at is not None and done.ended_at is not None
    assert done.worker_name == "lean-test"
    assert 0 < rq_client.ttl(job.key) <= 500  # rq's default result_ttl
    assert 0 < rq_client.ttl(f"rq:results:{job.id}") <= 500
    assert job.id in FinishedJobRegistry(QUEUE, connection=rq_client).get_job_ids()
    assert StartedJobRegistry(QUEUE, connection=rq_client).count == 0
    assert not rq_client.exists(claim_key_for("lean-test"))


def test_result_ttl_minus_one_keeps_the_job_for_ever(rq_client):
    job = enqueue(rq_client, "tests.jobs.add", 2, 3, result_ttl=-1)
    execute(rq_client)
    assert rq_client.ttl(job.key) == -1
    assert Job.fetch(job.id, connection=rq_client).return_value() == 5


def test_a_job_ttl_key_is_persisted_when_it_starts(rq_client):
    job = enqueue(rq_client, "tests.jobs.add", 2, 3, ttl=100, result_ttl=-1)
    assert rq_client.ttl(job.key) > 0
    execute(rq_client)
    assert rq_client.ttl(job.key) == -1


def test_a_retry_with_an_interval_is_scheduled(rq_client):
    job = enqueue(rq_client, "ops.jobs.fail", retry=Retry(max=2, interval=60))
    execute(rq_client)
    again = Job.fetch(job.id, connection=rq_client)
    assert again.get_status() == JobStatus.SCHEDULED
    assert again.retries_left == 1
    assert job.id in ScheduledJobRegistry(QUEUE, connection=rq_client).get_job_ids()


def test_a_timeout_fails_the_job_with_rqs_exception(rq_client):
    job = enqueue(
        rq_client, "tests.jobs.sleep_then_mark", 5_000, "/nonexistent", job_timeout=1
    )
    execute(rq_client)
    failed = Job.fetch(job.id, connection=rq_client)
    assert failed.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in failed.exc_info


def test_dependents_are_enqueued_and_run_on_their_own_queue(rq_client):
    parent = enqueue(rq_client, "tests.jobs.add", 1, 1)
    other = RQQueue("seed-jobs", connection=rq_client)
    child = other.enqueue("tests.jobs.add", 2, 2, depends_on=parent)
    assert child.get_status() == JobStatus.DEFERRED
    lines = execute(rq_client)
    assert "enqueued seed-jobs 1" in lines
    assert Job.fetch(child.id, connection=rq_client).get_status() == JobStatus.QUEUED
    assert DeferredJobRegistry("seed-jobs", connection=rq_client).count == 0
    execute(rq_client, "seed-jobs")
    assert Job.fetch(child.id, connection=rq_client).return_value() == 4


def test_callbacks_run_as_rq_runs_them(rq_client, tmp_path):
    marker = tmp_path / "ok"
    job = enqueue(
        rq_client,
        "tests.jobs.add",
        1,
        1,
        meta={"marker": str(marker)},
        on_success="tests.jobs.mark_success",
    )
    execute(rq_client)
    assert marker.read_text() == f"{job.id} 2"


def test_the_deadline_gives_unstarted_jobs_back_in_order(rq_client):
    jobs = [enqueue(rq_client, "tests.jobs.add", i, 0) for i in range(5)]
    lines: list[str] = []
    executor = LeanExecutor(
        client=rq_client,
        queue_name=QUEUE,
        worker_name="lean-test",
        claim_key=claim_key_for("lean-test"),
        report=lines.append,
        deadline=0.0,  # already passed: nothing may start
    )
    executor.run()
    assert "deadline" in lines
    queue = RQQueue(QUEUE, connection=rq_client)
    assert queue.get_job_ids() == [j.id for j in jobs]


def test_a_job_whose_hash_is_gone_is_dropped_like_rq_drops_it(rq_client):
    job = enqueue(rq_client, "tests.jobs.add", 1, 1)
    rq_client.delete(job.key)
    kept = enqueue(rq_client, "tests.jobs.add", 2, 2)
    execute(rq_client)
    assert RQQueue(QUEUE, connection=rq_client).count == 0
    assert Job.fetch(kept.id, connection=rq_client).return_value() == 4
