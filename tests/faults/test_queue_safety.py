"""Issue 10, items 6-8, against a real redis-server and real processes, on both
executors: a helper process that outlives its job, an operator stopping a
running job from the console, dependents released onto another queue.

Every test asserts with a ledger the jobs write themselves (tests/jobs.py):
what ran, how often, and whether it got to its end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from ops.engine import stop
from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.models import DrainRun, JobRecord, JobStopRequest, Queue
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)

EXECUTORS = ["lean", "rq"]
BUDGET_S = 5
GRACE_S = 2
# Starting a fresh manage.py process (Django, RQ) and its checks; generous.
MARGIN_S = 3


def read_ledger(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def kill_helpers(ledger: Path) -> None:
    for line in read_ledger(ledger):
        if " helper " in line:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.rsplit(" ", 1)[1]), signal.SIGKILL)


def manage_env(executor: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DRAIN_EXECUTOR=executor,
        DRAIN_JOB_GRACE_MS=str(GRACE_S * 1000),
    )
    return env


def manage_drain(executor: str, budget_s: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(settings.BASE_DIR / "manage.py"),
            "drain",
            "--max-duration-ms",
            str(budget_s * 1000),
            "--json",
        ],
        env=manage_env(executor),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def in_process_drain(budget_s: int = BUDGET_S, **kwargs) -> DrainRun:
    return drain(
        trigger=DrainRun.Trigger.CLI,
        options=parse_options(max_duration_ms=budget_s * 1000),
        **kwargs,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ledger"
    yield path
    kill_helpers(path)


# --- Item 6: a helper that outlives its job holds the report pipe ---------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_helper_outliving_its_job_does_not_hold_the_drain_command(
    rq_client, ledger, executor
):
    """The job forks a helper that sleeps 30 s holding the report pipe's write
    end. `manage.py drain` (forked children) used to read that pipe until
    EOF: 25.7 s against a 5 s budget + 2 s grace."""
    job = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.fork_helper", str(ledger), "forker"
    )
    began = time.monotonic()
    proc = manage_drain(executor, BUDGET_S)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    took = time.monotonic() - began

    assert took < BUDGET_S + GRACE_S + MARGIN_S, f"the drain took {took:.1f} s"
    assert proc.returncode == 0
    result = json.loads(out)
    assert result["totalProcessed"] == 1
    assert [line.split()[:2] for line in read_ledger(ledger)] == [["ran", "forker"]]
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FINISHED
    run = DrainRun.objects.get()
    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.queue_results["batch-jobs"] == {
        "processed": 1,
        "failed": 0,
        "remaining": 0,
    }


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_helper_outliving_its_job_does_not_hold_a_spawning_drain(
    settings, rq_client, ledger, executor
):
    """The same with spawned children (the web server's way), whose report
    pipe a subprocess inherits even across exec."""
    settings.DRAIN_EXECUTOR = executor
    settings.DRAIN_JOB_GRACE_MS = GRACE_S * 1000
    queue = RQQueue("batch-jobs", connection=rq_client)
    first = queue.enqueue("tests.jobs.fork_helper", str(ledger), "forker")
    second = queue.enqueue("tests.jobs.count_run", str(ledger), "after")
    began = time.monotonic()
    run = in_process_drain(fork_children=False)
    took = time.monotonic() - began

    assert took < BUDGET_S + GRACE_S + MARGIN_S, f"the drain took {took:.1f} s"
    assert run.status == DrainRun.Status.SUCCEEDED, run.error
    assert run.total_processed == 2
    assert [line.split()[:2] for line in read_ledger(ledger)] == [
        ["ran", "forker"],
        ["after"],
    ]
    for job in (first, second):
        assert Job.fetch(job.id, connection=rq_client).get_status() == (
            JobStatus.FINISHED
        )
    assert StartedJobRegistry("batch-jobs", connection=rq_client).count == 0


# --- Item 7: an operator stops a running job from the console --------------------


@pytest.fixture
def operator() -> Client:
    user = User.objects.create_superuser("sre", password="pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("executor", EXECUTORS)
def test_the_consoles_stop_ends_a_running_job_as_stopped(
    rq_client, ledger, operator, executor
):
    job = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.ledger_sleep_marked",
        str(ledger),
        "long",
        30,
        job_timeout=600,
        retry=Retry(max=2),  # a stopped job is never retried
    )
    proc = manage_drain(executor, 20)
    try:
        wait_for(lambda: any(x.startswith("start") for x in read_ledger(ledger)))
        queue = Queue.objects.get(name="batch-jobs")
        url = reverse("admin:ops_queue_job_stop", args=[queue.pk])
        asked = time.monotonic()
        response = operator.post(url, {"job": job.id})
        assert response.status_code == 302
        out, _ = proc.communicate(timeout=20)
        took = time.monotonic() - asked
    finally:
        proc.kill()

    # The job's process looks once a second; the drain then ends at once.
    assert took < 6, f"stopping took {took:.1f} s"
    lines = read_ledger(ledger)
    assert len(lines) == 1 and lines[0].startswith("start long")  # never ended
    stopped = Job.fetch(job.id, connection=rq_client)
    assert stopped.get_status() == JobStatus.STOPPED
    assert stopped.retries_left == 2
    assert job.id in FailedJobRegistry("batch-jobs", connection=rq_client)
    assert StartedJobRegistry("batch-jobs", connection=rq_client).count == 0
    assert rq_client.llen("rq:queue:batch-jobs") == 0
    assert json.loads(out)["totalFailed"] == 1
    run = DrainRun.objects.get()
    assert run.status == DrainRun.Status.WITH_FAILURES
    record = JobRecord.objects.get(job_id=job.id)
    assert (record.status, record.exc_type) == ("failed", "JobStopped")
    request = JobStopRequest.objects.get(job_id=job.id)
    assert request.outcome == JobStopRequest.Outcome.STOPPED
    assert request.handled_by.startswith(run.worker_prefix)
    assert request.requested_by.username == "sre"
    entry = LogEntry.objects.get(object_id=str(queue.pk))
    assert f"Asked to stop job {job.id}" in entry.get_change_message()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_job_that_swallows_the_stop_still_ends_stopped_once(
    settings, rq_client, ledger, executor
):
    """The job catches the exception and runs to its end: the claim is final,
    so it still ends as stopped, and the request is handled exactly once."""
    settings.DRAIN_EXECUTOR = executor
    job = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.ledger_stubborn", str(ledger), "stubborn", 2.5, job_timeout=600
    )

    def ask() -> None:
        wait_for(lambda: any(x.startswith("start") for x in read_ledger(ledger)))
        stop.request_stop(job.id, "batch-jobs")
        from django.db import connection

        connection.close()

    asker = threading.Thread(target=ask)
    asker.start()
    run = in_process_drain(fork_children=True)
    asker.join()

    lines = read_ledger(ledger)
    assert lines[0].startswith("start stubborn")
    assert lines[1:] == ["swallowed stubborn", "end stubborn"]
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.STOPPED
    assert run.total_failed == 1
    assert JobStopRequest.objects.get().outcome == JobStopRequest.Outcome.STOPPED


# --- Item 8: a dependent on another queue runs in the same drain -----------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_dependents_on_other_queues_run_in_the_same_drain(
    settings, rq_client, ledger, executor
):
    """seed-jobs (drained last) releases a dependent onto batch-jobs (drained
    first, empty when the drain looked), which releases one onto dsar-jobs:
    `rq worker` runs all three at once; so does one drain."""
    settings.DRAIN_EXECUTOR = executor
    parent = RQQueue("seed-jobs", connection=rq_client).enqueue(
        "tests.jobs.count_run", str(ledger), "parent"
    )
    child = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.count_run", str(ledger), "child", depends_on=parent
    )
    grandchild = RQQueue("dsar-jobs", connection=rq_client).enqueue(
        "tests.jobs.count_run", str(ledger), "grandchild", depends_on=child
    )

    # Three rounds of children: a budget no loaded test machine runs out of.
    run = in_process_drain(budget_s=60)

    assert read_ledger(ledger) == ["parent", "child", "grandchild"]
    assert run.status == DrainRun.Status.SUCCEEDED, run.error
    assert run.total_processed == 3
    for job in (parent, child, grandchild):
        assert Job.fetch(job.id, connection=rq_client).get_status() == (
            JobStatus.FINISHED
        )
    assert {
        n: r["processed"] for n, r in run.queue_results.items() if r["processed"]
    } == {
        "seed-jobs": 1,
        "batch-jobs": 1,
        "dsar-jobs": 1,
    }
