"""Promotion of due scheduled jobs without RQ's scheduler, and what it costs."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from rq import Queue as RQQueue

from ops.engine.scheduled import promote_due
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
