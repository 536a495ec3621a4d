"""Promotion of due scheduled jobs without RQ's scheduler, and what it costs."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from rq import Queue as RQQueue

from ops.engine.scheduled import promote, promote_due
from ops.usage.redis_client import CommandMeter, close_client, make_client

NAMES = ["batch-jobs", "dsar-jobs", "journey-jobs", "retrain-jobs", "seed-jobs"]


@pytest.fixture
def client():
    meter = CommandMeter(record_usage=False)
    c = make_client(meter)
    yield c, meter
    close_client(c)


def test_a_scan_with_nothing_scheduled_costs_one_command(client):
    c, meter = client
    assert promote_due(c, NAMES) == (0, None)
    assert meter.billed == 1


def test_a_scan_with_a_job_not_yet_due_costs_one_plus_one_per_queue(client, rq_client):
    c, meter = client
    job = RQQueue("dsar-jobs", connection=rq_client).enqueue_in(
        timedelta(minutes=10), "tests.jobs.add", 1, 1
    )
    promoted, next_due = promote_due(c, NAMES)
    assert promoted == 0
    assert abs(next_due - (time.time() + 600)) < 5
    assert meter.billed == 1 + len(NAMES)
    assert rq_client.zscore("rq:scheduled:dsar-jobs", job.id) is not None


def test_due_jobs_are_moved_onto_their_queue_and_the_next_due_is_reported(
    client, rq_client
):
    c, _ = client
    queue = RQQueue("seed-jobs", connection=rq_client)
    due = queue.enqueue_in(timedelta(seconds=1), "tests.jobs.add", 1, 1)
    later = queue.enqueue_in(timedelta(minutes=5), "tests.jobs.add", 2, 2)
    promoted, next_due = promote_due(c, NAMES, now=time.time() + 2)
    assert promoted == 1
    assert rq_client.lrange("rq:queue:seed-jobs", 0, -1) == [due.id.encode()]
    assert rq_client.zscore("rq:scheduled:seed-jobs", later.id) == pytest.approx(
        next_due
    )


# --- one promoter wins -------------------------------------------------------------


def _due_jobs(rq_client, n: int) -> list[str]:
    queue = RQQueue("dsar-jobs", connection=rq_client)
    past = timedelta(seconds=-5)
    return [queue.enqueue_in(past, "tests.jobs.add", i, 1).id for i in range(n)]


def test_a_promoter_with_stale_ids_enqueues_nothing_again(rq_client):
    ids = _due_jobs(rq_client, 5)
    first, second = (make_client(CommandMeter(record_usage=False)) for _ in "ab")
    try:
        # Both read the same due ids; the first promotes them, the second comes
        # late with what it read.
        assert promote(first, "dsar-jobs", ids) == 5
        assert promote(second, "dsar-jobs", ids) == 0
    finally:
        close_client(first)
        close_client(second)
    queued = [j.decode() for j in rq_client.lrange("rq:queue:dsar-jobs", 0, -1)]
    assert sorted(queued) == sorted(ids)


def _promote_after(start: threading.Barrier, ids: list[str], out: list[int]) -> None:
    c = make_client(CommandMeter(record_usage=False))
    try:
        start.wait()
        out.append(promote(c, "dsar-jobs", ids))
    finally:
        close_client(c)


def test_concurrent_promoters_enqueue_each_job_once(rq_client):
    """Two supervisors (or a supervisor and a drain) wake at the same due time:
    20 jobs, promoted from two connections at once, 5 times over."""
    for _ in range(5):
        rq_client.flushall()
        ids = _due_jobs(rq_client, 20)
        start = threading.Barrier(2)
        counts: list[int] = []

        threads = [
            threading.Thread(target=_promote_after, args=(start, ids, counts))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        queued = [j.decode() for j in rq_client.lrange("rq:queue:dsar-jobs", 0, -1)]
        assert sorted(queued) == sorted(ids)
        assert sum(counts) == 20


def test_a_promotion_costs_watch_zmscore_the_fetch_and_the_transaction(wire, rq_client):
    ids = _due_jobs(rq_client, 2)
    c = make_client(CommandMeter(record_usage=False))
    wire.reset()
    try:
        assert promote(c, "dsar-jobs", ids) == 2
    finally:
        close_client(c)
    counts = wire.snapshot()
    # The exclusion: WATCH and ZMSCORE, once per promotion. The rest is what
    # promotion cost before: HGETALL per job (the fetch) and RQ's own enqueue
    # writes in the transaction, and a ZREM per job.
    assert (counts["WATCH"], counts["ZMSCORE"], counts["ZREM"]) == (1, 1, 2)
    assert wire.billed() == 16
