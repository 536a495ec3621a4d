"""A queue's jobs by state, one job, requeue and delete (ops/inspection/jobs.py):
what they read and change, and what each costs on a real redis-server."""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime, timedelta

import pytest
import redis
import rq
from django.conf import settings
from django.utils import timezone
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.utils import utcformat
from rq.worker import SimpleWorker

from ops import jobs as canary
from ops.engine.claims import claim_key
from ops.engine.lean_worker import LeanExecutor
from ops.inspection import jobs as service
from ops.models import DrainRun, JobRecord, QuotaIncident, WorkerProcess

pytestmark = pytest.mark.django_db

QUEUE = "batch-jobs"
OTHER = "dsar-jobs"


def failed_with_rq(raw: redis.Redis, n: int, queue: str = QUEUE, **kw) -> list[str]:
    """`n` jobs failed by rq's own worker: the hash and the result stream as
    rq writes them."""
    q = rq.Queue(queue, connection=raw)
    ids = [q.enqueue(canary.fail, **kw).id for _ in range(n)]
    SimpleWorker([q], connection=raw).work(burst=True)
    return ids


def failed_by_hand(raw: redis.Redis, job_id: str, queue: str = QUEUE) -> Job:
    """A job that will succeed when run again (ops.jobs.noop), put in the failed
    registry as rq files a failure: status, registry entry, failed result."""
    q = rq.Queue(queue, connection=raw)
    job = q.enqueue(canary.noop, job_id=job_id)
    q.remove(job)
    job.set_status(JobStatus.FAILED)
    FailedJobRegistry(queue, connection=raw).add(job, exc_string="x")
    Result.create_failure(job, ttl=None, exc_string="Traceback...\nRuntimeError: boom")
    return job


def fake_failed(raw: redis.Redis, n: int, queue: str = QUEUE) -> None:
    """`n` failed-registry entries with their hashes, cheaply (one pipeline)."""
    now = time.time()
    stamp = utcformat(datetime.now(UTC))
    with raw.pipeline(transaction=False) as pipe:
        for i in range(n):
            job_id = f"bulk-{i:05d}"
            pipe.zadd(f"rq:failed:{queue}", {job_id: now + i})
            pipe.hset(
                f"rq:job:{job_id}",
                mapping={
                    "status": "failed",
                    "origin": queue,
                    "description": f"ops.jobs.fail({i})",
                    "created_at": stamp,
                    "enqueued_at": stamp,
                    "ended_at": stamp,
                },
            )
        pipe.execute()


# --- Pages --------------------------------------------------------------------


def arrange_every_state(raw: redis.Redis) -> dict[str, list[str]]:
    q = rq.Queue(QUEUE, connection=raw)
    ids: dict[str, list[str]] = {}
    ids["failed"] = failed_with_rq(raw, 2)
    finished = q.enqueue(canary.noop)
    SimpleWorker([q], connection=raw).work(burst=True)
    ids["finished"] = [finished.id]
    ids["queued"] = [q.enqueue(canary.noop).id for _ in range(3)]
    ids["scheduled"] = [q.enqueue_in(timedelta(hours=1), canary.noop).id]
    parent = q.enqueue_in(timedelta(hours=2), canary.noop)
    ids["scheduled"].append(parent.id)
    ids["deferred"] = [q.enqueue(canary.noop, depends_on=parent).id]
    started = q.enqueue(canary.noop)
    q.remove(started)
    SimpleWorker([q], connection=raw).prepare_execution(started)
    started.set_status(JobStatus.STARTED)
    ids["started"] = [started.id]
    return ids


def test_it_lists_every_state_of_jobs_enqueued_with_plain_rq(raw_redis):
    ids = arrange_every_state(raw_redis)

    pages = {s: service.list_jobs(QUEUE, s, page=1) for s in service.STATES}

    for state, page in pages.items():
        assert page.available, page.error
        shown = [row.id for row in page.jobs]
        expected = ids[state]
        if service.STATES[state].newest_first:
            # Scores are whole seconds: jobs that ended in the same second
            # come in Redis's order for equal scores (by id, reversed).
            key = service.STATES[state].key(QUEUE)
            expected = [i.decode() for i in raw_redis.zrevrange(key, 0, -1)]
            assert sorted(expected) == sorted(ids[state])
        assert shown == expected, state
        assert page.total == len(expected)
        assert all(row.exists and row.origin == QUEUE for row in page.jobs)
    failed = pages["failed"].jobs[0]
    assert failed.exc_type == "ops.jobs.CanaryFailure"
    assert failed.exc_message == "canary job failed on purpose"
    assert failed.description == "ops.jobs.fail()"
    assert failed.ended_at is not None
    assert pages["scheduled"].jobs[0].due_at is not None
    assert pages["scheduled"].jobs[0].due_at > datetime.now(UTC)
    assert pages["started"].jobs[0].status == "started"
    assert pages["queued"].jobs[0].enqueued_at is not None


@pytest.mark.parametrize("state", list(service.STATES))
def test_each_page_costs_exactly_what_page_cost_says(raw_redis, wire, state):
    arrange_every_state(raw_redis)

    page = service.list_jobs(QUEUE, state, page=1)

    assert page.available, page.error
    assert page.jobs
    assert (
        wire.billed() == page.redis_commands == service.page_cost(state, len(page.jobs))
    )
    commands = set(wire.snapshot())
    # Never RQ's cleanup, never a whole-registry read.
    assert not commands & {"ZREMRANGEBYSCORE", "ZRANGEBYSCORE", "KEYS", "SCAN"}


def test_a_page_of_25_failed_jobs_costs_the_same_out_of_10000_as_out_of_25(
    raw_redis, wire
):
    fake_failed(raw_redis, 25, queue=QUEUE)
    fake_failed(raw_redis, 10_000, queue=OTHER)

    small = service.list_jobs(QUEUE, "failed", page=1)
    small_cost = wire.billed()
    wire.reset()
    big = service.list_jobs(OTHER, "failed", page=1)
    big_cost = wire.billed()
    wire.reset()
    deep = service.list_jobs(OTHER, "failed", page=300)

    assert (small.total, big.total, deep.total) == (25, 10_000, 10_000)
    assert len(small.jobs) == len(big.jobs) == len(deep.jobs) == 25
    assert small_cost == big_cost == wire.billed() == 2 + 25
    # Newest first: the last one added leads page 1; page 300 is 7475..7451.
    assert big.jobs[0].id == "bulk-09999"
    assert deep.jobs[0].id == "bulk-02524"


def test_reading_leaves_expired_registry_entries_alone(raw_redis):
    # rq's registry.get_job_ids() would delete an entry whose score has passed.
    raw_redis.zadd("rq:failed:batch-jobs", {"gone": 1})

    page = service.list_jobs(QUEUE, "failed", page=1)

    assert [row.id for row in page.jobs] == ["gone"]
    assert page.jobs[0].exists is False
    assert raw_redis.zcard("rq:failed:batch-jobs") == 1


def test_paging_walks_the_queue_in_order_and_past_the_end_is_empty(raw_redis):
    q = rq.Queue(QUEUE, connection=raw_redis)
    ids = [q.enqueue(canary.noop).id for _ in range(7)]

    first = service.list_jobs(QUEUE, "queued", page=1, per_page=3)
    third = service.list_jobs(QUEUE, "queued", page=3, per_page=3)
    beyond = service.list_jobs(QUEUE, "queued", page=4, per_page=3)

    assert [r.id for r in first.jobs] == ids[:3]
    assert [r.id for r in third.jobs] == ids[6:]
    assert (first.num_pages, first.has_next, third.has_next) == (3, True, False)
    assert beyond.jobs == [] and beyond.total == 7


def test_unknown_states_and_pages_are_refused(raw_redis):
    with pytest.raises(service.UnknownState):
        service.list_jobs(QUEUE, "nope", page=1)
    with pytest.raises(ValueError):
        service.list_jobs(QUEUE, "failed", page=0)


def test_redis_down_is_a_message_not_an_exception(raw_redis, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    page = service.list_jobs(QUEUE, "failed", page=1)
    detail = service.job_detail("abc")
    done = service.requeue(QUEUE, ["abc"])

    assert "ConnectionError" in page.error
    assert "ConnectionError" in detail.error
    assert "ConnectionError" in done.error and done.done == []


def test_a_quota_error_is_a_message_and_opens_an_incident(raw_redis, fault):
    failed_with_rq(raw_redis, 1)
    fault.exhaust()

    page = service.list_jobs(QUEUE, "failed", page=1)

    assert "quota is exhausted" in page.error
    assert QuotaIncident.objects.get().is_open
    # While it is open, the next caller is refused without a command sent.
    fault.reset_counts()
    assert "quota is exhausted" in service.requeue(QUEUE, ["x"]).error
    assert sum(fault.forwarded.values()) + sum(fault.refused.values()) == 0


# --- One job ------------------------------------------------------------------


def test_one_job_costs_two_commands_and_shows_everything(raw_redis, wire, tmp_path):
    q = rq.Queue(QUEUE, connection=raw_redis)
    runs = str(tmp_path / "runs")
    job = q.enqueue(
        "tests.jobs.count_then_fail",
        runs,
        label="lbl",
        meta={"tenant": "acme"},
        retry=rq.Retry(max=3),
    )
    SimpleWorker([q], connection=raw_redis).work(burst=True)
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)
    JobRecord.objects.create(
        job_id=job.id,
        queue=QUEUE,
        status=JobRecord.Status.RETRIED,
        exc_type="CanaryFailure",
        run=run,
    )

    detail = service.job_detail(job.id)

    assert wire.billed() == detail.redis_commands == service.DETAIL_COMMANDS == 2
    assert dict(wire.snapshot()) == {"AUTH": 1, "HGETALL": 1, "XREVRANGE": 1}
    assert detail.found
    assert detail.func_name == "tests.jobs.count_then_fail"
    assert detail.args == repr((runs,))
    assert detail.kwargs == "{'label': 'lbl'}"
    assert "acme" in detail.meta
    # A Retry(max=3): the burst worker ran it 4 times, every retry used.
    assert detail.retries_left == 0
    assert "Traceback (most recent call last)" in detail.traceback
    assert detail.traceback.strip().endswith("ValueError: lbl failed on purpose")
    assert [r.run for r in detail.records] == [run]


def test_an_unloadable_payload_is_shown_as_such(raw_redis):
    failed_with_rq(raw_redis, 1)
    job_id = raw_redis.zrange("rq:failed:batch-jobs", 0, 0)[0].decode()
    raw_redis.hset(f"rq:job:{job_id}", "data", zlib.compress(b"not a pickle"))

    detail = service.job_detail(job_id)

    assert detail.found
    assert "cannot be loaded" in detail.payload_error
    assert detail.args == ""
    assert "canary job failed on purpose" in detail.traceback


def test_a_missing_job_is_not_found_but_its_records_still_show(raw_redis):
    JobRecord.objects.create(job_id="gone", queue=QUEUE, status="failed")

    detail = service.job_detail("gone")

    assert not detail.found and not detail.error
    assert len(detail.records) == 1


# --- Requeue ------------------------------------------------------------------


def test_requeue_puts_back_only_the_chosen_jobs_at_the_documented_cost(raw_redis, wire):
    ids = failed_with_rq(raw_redis, 3)
    wire.reset()

    result = service.requeue(QUEUE, [ids[2], ids[0]])

    assert result.done == [ids[2], ids[0]]
    assert result.skipped == {}
    assert wire.billed() == result.redis_commands == service.requeue_cost(2, 0) == 9
    assert [i.decode() for i in raw_redis.lrange("rq:queue:batch-jobs", 0, -1)] == [
        ids[2],
        ids[0],
    ]
    assert raw_redis.zrange("rq:failed:batch-jobs", 0, -1) == [ids[1].encode()]
    statuses = [Job.fetch(i, connection=raw_redis).get_status() for i in ids]
    assert statuses == [JobStatus.QUEUED, JobStatus.FAILED, JobStatus.QUEUED]
    assert "Requeued 2 failed jobs" in result.summary()
    assert "This cost 9 Redis commands" in result.summary()


def test_a_requeued_job_looks_as_rqs_own_requeue_leaves_it(raw_redis):
    ours, theirs = failed_with_rq(raw_redis, 2)

    service.requeue(QUEUE, [ours])
    FailedJobRegistry(QUEUE, connection=raw_redis).requeue(theirs)

    def fields(job_id: str) -> dict[bytes, bytes]:
        volatile = {b"enqueued_at", b"created_at", b"last_heartbeat", b"worker_name"}
        return {
            k: v
            for k, v in raw_redis.hgetall(f"rq:job:{job_id}").items()
            if k not in volatile
        }

    assert fields(ours) == fields(theirs)
    assert raw_redis.ttl(f"rq:job:{ours}") == pytest.approx(
        raw_redis.ttl(f"rq:job:{theirs}"), abs=2
    )


def test_a_requeued_job_runs_again_and_is_no_longer_failed(raw_redis):
    failed_by_hand(raw_redis, "again")

    service.requeue(QUEUE, ["again"])
    LeanExecutor(
        client=raw_redis,
        queue_name=QUEUE,
        worker_name="t",
        claim_key=claim_key("t"),
        report=lambda line: None,
    ).run()

    job = Job.fetch("again", connection=raw_redis)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "ok"
    assert raw_redis.zcard("rq:failed:batch-jobs") == 0


def test_a_job_in_a_running_drains_claim_list_is_not_requeued(raw_redis, wire):
    ids = failed_with_rq(raw_redis, 2)
    run = DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON,
        worker_prefix="kdrain.abc.",
        params={"queues": [QUEUE]},
    )
    raw_redis.rpush(claim_key(f"{run.worker_prefix}{QUEUE}"), ids[0])
    wire.reset()

    result = service.requeue(QUEUE, ids)

    assert result.done == [ids[1]]
    assert "claimed" in result.skipped[ids[0]]
    # One claim list read more than without a drain.
    assert wire.billed() == result.redis_commands == 2 + 1 + 1 + (1 + 3)
    assert raw_redis.zscore("rq:failed:batch-jobs", ids[0]) is not None
    assert Job.fetch(ids[0], connection=raw_redis).get_status() == JobStatus.FAILED


def test_claim_lists_cover_running_and_unsettled_drains_and_live_workers(db):
    DrainRun.objects.create(
        trigger="cron", worker_prefix="kdrain.a.", params={"queues": [QUEUE]}
    )
    DrainRun.objects.create(
        trigger="cron", worker_prefix="kdrain.b.", params={"queues": [OTHER]}
    )
    DrainRun.objects.create(
        trigger="cron",
        status=DrainRun.Status.FAILED,
        worker_prefix="kdrain.c.",
        unsettled_claims={QUEUE: None},
        has_unsettled_claims=True,
    )
    DrainRun.objects.create(
        trigger="cron", status=DrainRun.Status.SUCCEEDED, worker_prefix="kdrain.d."
    )
    # A run that died or failed holding jobs, not recovered yet.
    DrainRun.objects.create(
        trigger="cron",
        status=DrainRun.Status.ABANDONED,
        worker_prefix="kdrain.e.",
        params={"queues": [QUEUE]},
        needs_recovery=True,
    )
    for name, state, settled in (
        ("w-live", "busy", False),
        ("w-done", "stopped", True),
        # Stopped, but its supervisor could not settle its jobs.
        ("w-unsettled", "crashed", False),
    ):
        WorkerProcess.objects.create(
            name=name,
            role="dedicated",
            host="h",
            pid=1,
            queues=[QUEUE],
            state=state,
            recovered_at=timezone.now() if settled else None,
        )

    assert service.claim_lists(QUEUE) == [
        "kaireon:claimed:kdrain.a.batch-jobs",
        "kaireon:claimed:kdrain.c.batch-jobs",
        "kaireon:claimed:kdrain.e.batch-jobs",
        "kaireon:claimed:w-live",
        "kaireon:claimed:w-unsettled",
    ]
    live = {c.owner for c in service.consumer_claims(QUEUE) if c.live}
    assert live == {"kdrain.a.batch-jobs", "w-live"}


def test_a_job_that_changed_or_belongs_elsewhere_is_left_alone(raw_redis):
    mine, changed = failed_with_rq(raw_redis, 2)
    (elsewhere,) = failed_with_rq(raw_redis, 1, queue=OTHER)
    raw_redis.hset(f"rq:job:{changed}", "status", "queued")

    result = service.requeue(QUEUE, [mine, changed, elsewhere, "never-was"])

    assert result.done == [mine]
    assert result.skipped == {
        changed: "it is queued now, not failed",
        elsewhere: f"belongs to queue {OTHER}",
        "never-was": "no longer in Redis",
    }
    assert raw_redis.zscore("rq:failed:dsar-jobs", elsewhere) is not None
    assert raw_redis.llen("rq:queue:dsar-jobs") == 0


def test_only_the_caller_that_takes_the_job_off_the_registry_requeues_it(
    raw_redis, monkeypatch
):
    (job_id,) = failed_with_rq(raw_redis, 1)
    real = service._eligible

    def someone_else_first(*args, **kwargs):
        eligible = real(*args, **kwargs)
        # Another operator's requeue wins the race between our read and gate.
        raw_redis.zrem("rq:failed:batch-jobs", job_id)
        return eligible

    monkeypatch.setattr(service, "_eligible", someone_else_first)

    result = service.requeue(QUEUE, [job_id])

    assert result.done == []
    assert "taken meanwhile" in result.skipped[job_id]
    assert raw_redis.llen("rq:queue:batch-jobs") == 0


def test_requeue_all_takes_at_most_the_bulk_limit_oldest_first(
    raw_redis, wire, monkeypatch
):
    monkeypatch.setattr(service, "BULK_LIMIT", 5)
    fake_failed(raw_redis, 7)
    wire.reset()

    result = service.requeue_all_failed(QUEUE)

    assert result.done == [f"bulk-{i:05d}" for i in range(5)]
    assert result.remaining == 2
    assert wire.billed() == result.redis_commands == 3 * 5 + 3 + 2
    assert result.redis_commands == service.requeue_cost(5, 0, take_all=True)
    assert "2 more remain" in result.summary()


def test_nothing_chosen_costs_nothing(raw_redis, wire):
    result = service.requeue(QUEUE, [])
    assert (result.done, result.redis_commands, wire.billed()) == ([], 0, 0)


def test_requeue_is_only_for_failed_jobs_and_started_jobs_are_never_deleted():
    with pytest.raises(service.NotAllowed):
        service.delete(QUEUE, ["x"], "started")
    with pytest.raises(service.NotAllowed):
        service._act(service.REQUEUE, QUEUE, "queued", ["x"], take_all=False)
    with pytest.raises(ValueError):
        service.delete(QUEUE, ["bad id"], "failed")


# --- Delete -------------------------------------------------------------------


def test_delete_removes_only_the_chosen_jobs_and_every_key_of_them(raw_redis, wire):
    ids = failed_with_rq(raw_redis, 3)
    assert raw_redis.exists(Result.get_key(ids[0]))
    wire.reset()

    result = service.delete(QUEUE, ids[:2], "failed")

    assert result.done == ids[:2]
    assert wire.billed() == result.redis_commands == service.delete_cost(2, 0) == 5
    for job_id in ids[:2]:
        assert not any(raw_redis.exists(k) for k in service.job_keys(job_id))
    assert raw_redis.zrange("rq:failed:batch-jobs", 0, -1) == [ids[2].encode()]
    assert raw_redis.exists(f"rq:job:{ids[2]}", Result.get_key(ids[2])) == 2


def test_deleting_queued_jobs_leaves_a_claimed_one_and_the_rest_of_the_queue(
    raw_redis,
):
    q = rq.Queue(QUEUE, connection=raw_redis)
    ids = [q.enqueue(canary.noop).id for _ in range(4)]
    # A lean consumer took the first off the queue to run it: status queued.
    raw_redis.lrem("rq:queue:batch-jobs", 0, ids[0])
    DrainRun.objects.create(
        trigger="cron", worker_prefix="kdrain.x.", params={"queues": [QUEUE]}
    )
    raw_redis.rpush(claim_key(f"kdrain.x.{QUEUE}"), ids[0])

    result = service.delete(QUEUE, ids[:3], "queued")

    assert result.done == ids[1:3]
    assert "claimed" in result.skipped[ids[0]]
    assert raw_redis.exists(f"rq:job:{ids[0]}")
    assert [i.decode() for i in raw_redis.lrange("rq:queue:batch-jobs", 0, -1)] == [
        ids[3]
    ]


def test_a_queued_job_taken_by_a_consumer_meanwhile_is_not_deleted(
    raw_redis, monkeypatch
):
    q = rq.Queue(QUEUE, connection=raw_redis)
    job_id = q.enqueue(canary.noop).id
    real = service._eligible

    def consumer_claims_it(*args, **kwargs):
        eligible = real(*args, **kwargs)
        raw_redis.lrem("rq:queue:batch-jobs", 0, job_id)
        return eligible

    monkeypatch.setattr(service, "_eligible", consumer_claims_it)

    result = service.delete(QUEUE, [job_id], "queued")

    assert result.done == []
    assert raw_redis.exists(f"rq:job:{job_id}")


def test_delete_all_finished_jobs_costs_what_it_says(raw_redis, wire):
    q = rq.Queue(QUEUE, connection=raw_redis)
    for _ in range(3):
        q.enqueue(canary.noop)
    SimpleWorker([q], connection=raw_redis).work(burst=True)
    wire.reset()

    result = service.delete_all(QUEUE, "finished")

    assert len(result.done) == 3 and result.remaining == 0
    assert wire.billed() == result.redis_commands == 2 * 3 + 1 + 2
    assert result.redis_commands == service.delete_cost(3, 0, take_all=True)
    assert raw_redis.zcard("rq:finished:batch-jobs") == 0


def test_counting_for_the_queue_page_is_one_command_per_state(raw_redis, wire):
    arrange_every_state(raw_redis)
    wire.reset()

    counts = service.job_counts(QUEUE)

    assert counts.by_state == {
        "queued": 3,
        "scheduled": 2,
        "started": 1,
        "deferred": 1,
        "finished": 1,
        "failed": 2,
    }
    assert wire.billed() == counts.redis_commands == service.COUNT_COMMANDS == 6
    assert settings.REDIS_URL.startswith("redis://")
