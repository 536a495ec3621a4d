from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
import redis
import rq
from django.conf import settings
from rq.worker import SimpleWorker

from ops import jobs
from ops.inspection.queue_stats import QueueDepth, queue_depths

# Reading depths asks the quota-incident gate first (a database read).
pytestmark = pytest.mark.django_db


def _arrange(raw_redis: redis.Redis) -> None:
    """Jobs in every state, put there with plain rq (no project code)."""
    batch = rq.Queue("batch-jobs", connection=raw_redis)
    dsar = rq.Queue("dsar-jobs", connection=raw_redis)

    # Two failed jobs on batch-jobs: run by a real RQ worker, in this process.
    batch.enqueue(jobs.fail)
    batch.enqueue(jobs.fail)
    SimpleWorker([batch], connection=raw_redis).work(burst=True)

    # Three queued and one scheduled on batch-jobs.
    for _ in range(3):
        batch.enqueue(jobs.noop)
    batch.enqueue_in(timedelta(hours=1), jobs.noop)

    # One started on dsar-jobs: what a worker records as it picks a job up.
    started = dsar.enqueue(jobs.noop)
    dsar.remove(started)
    SimpleWorker([dsar], connection=raw_redis).prepare_execution(started)

    # Two scheduled on dsar-jobs, nothing else.
    dsar.enqueue_in(timedelta(minutes=5), jobs.noop)
    dsar.enqueue_in(timedelta(minutes=10), jobs.noop)


def test_it_reads_the_depths_of_jobs_enqueued_with_plain_rq(raw_redis):
    _arrange(raw_redis)

    depths = queue_depths(["batch-jobs", "dsar-jobs", "seed-jobs"])

    assert depths.available, depths.error
    assert depths.get("batch-jobs") == QueueDepth(
        queued=3, scheduled=1, started=0, failed=2
    )
    assert depths.get("dsar-jobs") == QueueDepth(
        queued=0, scheduled=2, started=1, failed=0
    )
    assert depths.get("seed-jobs") == QueueDepth(
        queued=0, scheduled=0, started=0, failed=0
    )


def test_it_sends_exactly_four_commands_per_queue_on_the_wire(raw_redis, wire):
    _arrange(raw_redis)  # raw_redis bypasses the proxy: not counted

    depths = queue_depths(["batch-jobs", "dsar-jobs", "seed-jobs"])

    assert depths.available, depths.error
    assert wire.snapshot() == {"AUTH": 1, "LLEN": 3, "ZCARD": 9}
    assert wire.billed() == 4 * 3
    assert depths.redis_commands == 4 * 3


def test_it_changes_nothing_in_redis(raw_redis):
    # RQ's registry reads would move the expired started job to failed; a
    # read here must leave it where it is.
    queue = rq.Queue("dsar-jobs", connection=raw_redis)
    job = queue.enqueue(jobs.noop)
    queue.remove(job)
    SimpleWorker([queue], connection=raw_redis).prepare_execution(job)
    [execution] = raw_redis.zrange("rq:wip:dsar-jobs", 0, -1)
    raw_redis.zadd("rq:wip:dsar-jobs", {execution: 1}, xx=True)  # long expired

    depths = queue_depths(["dsar-jobs"])

    assert depths.get("dsar-jobs") == QueueDepth(
        queued=0, scheduled=0, started=1, failed=0
    )
    assert raw_redis.zcard("rq:wip:dsar-jobs") == 1
    assert raw_redis.zcard("rq:failed:dsar-jobs") == 0


def test_it_sends_nothing_for_no_queues(wire):
    depths = queue_depths([])

    assert depths.available
    assert depths.by_queue == {}
    assert depths.redis_commands == 0
    assert wire.snapshot() == {}


def test_it_reports_redis_unavailable_instead_of_raising():
    # Nothing listens on port 1; the autouse _clean_redis fixture restores it.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    depths = queue_depths(["batch-jobs"])

    assert not depths.available
    assert "ConnectionError" in depths.error
    assert depths.get("batch-jobs") is None


def test_it_reports_an_error_reply_instead_of_raising(raw_redis):
    # A wrong-type key makes the pipeline fail with a real ResponseError.
    raw_redis.set("rq:failed:batch-jobs", "not a sorted set")

    depths = queue_depths(["batch-jobs"])

    assert not depths.available
    assert "ResponseError" in depths.error
    assert "WRONGTYPE" in depths.error
    assert depths.redis_commands == 4


def test_it_says_when_the_redis_quota_is_exhausted():
    # What Upstash answers to every command once the month's quota is gone
    # (redis-py strips the "ERR " prefix); a local redis-server cannot say it.
    quota = redis.ResponseError(
        "max requests limit exceeded. Limit: 500000, Usage: 500000"
    )
    with mock.patch.object(redis.client.Pipeline, "execute", side_effect=quota):
        depths = queue_depths(["batch-jobs", "dsar-jobs"])

    assert not depths.available
    assert depths.error.startswith("the Redis command quota is exhausted")
    assert depths.by_queue == {}
