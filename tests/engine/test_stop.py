"""The stop watcher (ops/engine/stop.py): a database row stops the running job
it names, once, and nothing is looked at before a job has run POLL_S."""

from __future__ import annotations

import time

import pytest

from ops.engine import stop
from ops.models import JobStopRequest

pytestmark = pytest.mark.django_db(transaction=True)


def run_for(seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time.sleep(0.02)


def test_a_request_stops_the_job_it_names_once():
    stop.request_stop("job-1", "batch-jobs")
    began = time.monotonic()
    with pytest.raises(stop.JobStopped), stop.watching("job-1", "worker-a"):
        run_for(10)
    assert time.monotonic() - began < 3  # the first look is after POLL_S
    request = JobStopRequest.objects.get()
    assert (request.outcome, request.handled_by) == ("stopped", "worker-a")
    # The same id again (a retry, another worker): the request is spent.
    with stop.watching("job-1", "worker-b"):
        run_for(stop.POLL_S * 1.5)
    assert JobStopRequest.objects.get().handled_by == "worker-a"


def test_a_job_shorter_than_the_poll_is_never_looked_at():
    stop.request_stop("job-1", "batch-jobs")
    with stop.watching("job-1", "worker-a"):
        run_for(stop.POLL_S / 3)
    assert JobStopRequest.objects.get().outcome == "pending"


def test_a_request_for_another_job_leaves_this_one_alone():
    stop.request_stop("job-2", "batch-jobs")
    with stop.watching("job-1", "worker-a"):
        run_for(stop.POLL_S * 1.5)
    assert JobStopRequest.objects.get().outcome == "pending"


def test_a_second_request_while_one_is_open_returns_the_open_one():
    first = stop.request_stop("job-1", "batch-jobs")
    second = stop.request_stop("job-1", "batch-jobs")
    assert first.created and not second.created
    assert second.request.pk == first.request.pk
    assert JobStopRequest.objects.count() == 1
