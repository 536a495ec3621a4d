"""The stop watcher (ops/engine/stop.py): a database row stops the running job
it names, once, and nothing is looked at before a job has run POLL_S. A
request applies only to the run going on when it was made: a later run of the
same job id closes it as obsolete; requests nobody takes end closed."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job, JobStatus

from ops.engine import stop
from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.models import DrainRun, JobStopRequest

pytestmark = pytest.mark.django_db(transaction=True)


def run_for(seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time.sleep(0.02)


def age(request: JobStopRequest, seconds: float) -> None:
    """Make a request as old as if it had been made `seconds` ago."""
    JobStopRequest.objects.filter(pk=request.pk).update(
        requested_at=request.requested_at - timedelta(seconds=seconds)
    )


def test_a_request_stops_the_job_it_names_once():
    began = time.monotonic()
    with pytest.raises(stop.JobStopped), stop.watching("job-1", "worker-a"):
        stop.request_stop("job-1", "batch-jobs")  # while it runs
        run_for(10)
    assert time.monotonic() - began < 3  # the first look is after POLL_S
    request = JobStopRequest.objects.get()
    assert (request.outcome, request.handled_by) == ("stopped", "worker-a")
    # The same id again (a retry, another worker): the request is spent.
    with stop.watching("job-1", "worker-b"):
        run_for(stop.POLL_S * 1.5)
    assert JobStopRequest.objects.get().handled_by == "worker-a"


def test_a_job_shorter_than_the_poll_is_never_looked_at():
    with stop.watching("job-1", "worker-a"):
        stop.request_stop("job-1", "batch-jobs")
        run_for(stop.POLL_S / 3)
    assert JobStopRequest.objects.get().outcome == "pending"


def test_a_request_for_another_job_leaves_this_one_alone():
    with stop.watching("job-1", "worker-a"):
        stop.request_stop("job-2", "batch-jobs")
        run_for(stop.POLL_S * 1.5)
    assert JobStopRequest.objects.get().outcome == "pending"


def test_a_second_request_while_one_is_open_returns_the_open_one():
    first = stop.request_stop("job-1", "batch-jobs")
    second = stop.request_stop("job-1", "batch-jobs")
    assert first.created and not second.created
    assert second.request.pk == first.request.pk
    assert JobStopRequest.objects.count() == 1


# --- Stale requests: only the run going on when it was made ---------------------


def test_a_request_made_before_the_run_began_does_not_stop_it():
    """Asked while an earlier run was ending: the run that follows (a retry of
    the same id) closes it as obsolete and runs on; a request made during
    this run still stops it."""
    stop.request_stop("job-1", "batch-jobs")  # the run it was meant for ended
    # Well before the next run: a request made within one database round
    # trip of a run's start is taken for that run (_before_this_run).
    time.sleep(0.3)
    with pytest.raises(stop.JobStopped), stop.watching("job-1", "worker-b"):
        run_for(stop.POLL_S * 2.5)
        old = JobStopRequest.objects.get()
        assert old.outcome == "obsolete"  # seen, closed, and the job ran on
        assert old.handled_by.startswith("worker-b: ")
        assert stop.request_stop("job-1", "batch-jobs").created
        run_for(10)
    outcomes = dict(JobStopRequest.objects.values_list("pk", "outcome"))
    assert sorted(outcomes.values()) == ["obsolete", "stopped"]


def test_a_request_nobody_takes_is_closed_as_not_running():
    asked = stop.request_stop("job-1", "batch-jobs").request
    fresh = stop.request_stop("job-2", "batch-jobs").request
    age(asked, stop.STALE_AFTER_S + 1)

    assert stop.close_stale() == 1
    asked.refresh_from_db()
    fresh.refresh_from_db()
    assert asked.outcome == "not_running" and asked.handled_at is not None
    assert "30 s" in asked.handled_by
    assert fresh.outcome == "pending"  # younger: its job may be running
    assert stop.close_stale() == 0


def test_a_stale_request_does_not_hide_a_new_one():
    asked = stop.request_stop("job-1", "batch-jobs").request
    age(asked, stop.STALE_AFTER_S + 1)

    again = stop.request_stop("job-1", "batch-jobs")

    assert again.created
    asked.refresh_from_db()
    assert asked.outcome == "not_running"


def test_requests_for_jobs_not_running_are_closed_by_who_lists_them():
    one = stop.request_stop("job-1", "batch-jobs").request
    two = stop.request_stop("job-2", "batch-jobs").request
    other = stop.request_stop("job-3", "dsar-jobs").request
    seen = stop.open_requests_of_queue("batch-jobs")

    assert stop.close_not_running(seen, running={"job-2"}) == 1
    for row in (one, two, other):
        row.refresh_from_db()
    assert (one.outcome, two.outcome, other.outcome) == (
        "not_running",
        "pending",
        "pending",
    )
    # Closing is a conditional UPDATE: a request a worker took meanwhile keeps
    # its outcome.
    assert two.mark_stopped("worker-a")
    assert stop.close_not_running([two], running=set()) == 0
    two.refresh_from_db()
    assert two.outcome == "stopped"


# --- Through real drains, both executors ----------------------------------------


@pytest.mark.parametrize("executor", ["lean", "rq"])
def test_a_request_for_a_finished_run_does_not_stop_its_retry(
    settings, rq_client, tmp_path: Path, executor
):
    """The first run fails (its Retry brings it back a second later); the
    operator's Stop arrives after it ended. The retry runs to its end and
    the request ends obsolete."""
    settings.DRAIN_EXECUTOR = executor
    ledger = tmp_path / "ledger"
    job = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.fail_first_then_sleep",
        str(ledger),
        "retried",
        stop.POLL_S * 2.5,
        retry=Retry(max=1, interval=1),
        job_timeout=600,
    )
    options = parse_options(max_duration_ms=20_000)
    drain(trigger=DrainRun.Trigger.CLI, options=options, fork_children=True)
    assert Job.fetch(job.id, connection=rq_client).get_status() == (
        JobStatus.SCHEDULED  # its retry, a second later
    )
    assert ledger.read_text().splitlines() == ["failed retried"]
    stop.request_stop(job.id, "batch-jobs")

    time.sleep(1.1)  # the retry's interval
    second = drain(trigger=DrainRun.Trigger.CLI, options=options, fork_children=True)

    lines = ledger.read_text().splitlines()
    assert lines[0] == "failed retried"
    assert lines[1].startswith("start retried") and lines[2] == "end retried"
    assert second.total_processed == 1 and second.total_failed == 0
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FINISHED
    request = JobStopRequest.objects.get()
    assert request.outcome == JobStopRequest.Outcome.OBSOLETE
    assert request.handled_by.startswith(second.worker_prefix)
