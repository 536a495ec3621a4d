"""The console's Stop on always-on workers (ops/workers/always_on_worker.py on
RQ's worker, ops/workers/lean_always_on.py on the lean executor): a long job
an always-on worker runs is stopped through a JobStopRequest, ends as
`stopped`, and the worker carries on. Real supervisor, real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from ops.engine import stop
from ops.inspection import jobs as inspection
from ops.models import JobStopRequest, WorkerProcess
from tests.workers.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("executor", ["lean", "rq"])
def test_an_always_on_worker_stops_its_running_job_on_request(
    supervisor, rq_client, tmp_path, executor
):
    supervisor("--role", "dedicated", DRAIN_EXECUTOR=executor)
    wait_for(lambda: WorkerProcess.objects.filter(state="idle").exists())
    ledger = tmp_path / "ledger"
    queue = RQQueue("batch-jobs", connection=rq_client)
    job = queue.enqueue(
        "tests.jobs.ledger_sleep_marked",
        str(ledger),
        "long",
        30,
        job_timeout=600,
        retry=Retry(max=2),  # a stopped job is never retried
    )
    wait_for(lambda: any(x.startswith("start long") for x in lines(ledger)))
    worker = wait_for(lambda: WorkerProcess.objects.filter(current_job=job.id).first())
    # The queue's started page lists it, whichever executor runs it.
    page = inspection.list_jobs("batch-jobs", "started", page=1)
    assert [row.id for row in page.jobs] == [job.id]
    assert page.jobs[0].worker == worker.name

    asked = stop.request_stop(job.id, "batch-jobs")
    assert asked.created
    wait_for(
        lambda: (
            Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.STOPPED
        ),
        timeout=15,
    )

    assert lines(ledger)[0].startswith("start long") and len(lines(ledger)) == 1
    request = JobStopRequest.objects.get()
    assert request.outcome == JobStopRequest.Outcome.STOPPED
    assert request.handled_by == worker.name
    stopped = Job.fetch(job.id, connection=rq_client)
    assert stopped.retries_left == 2
    assert job.id in FailedJobRegistry("batch-jobs", connection=rq_client)
    assert StartedJobRegistry("batch-jobs", connection=rq_client).count == 0
    # The worker carries on with the next job, the same process.
    after = queue.enqueue("tests.jobs.add", 1, 1)
    wait_for(
        lambda: (
            Job.fetch(after.id, connection=rq_client).get_status() == JobStatus.FINISHED
        ),
        timeout=15,
    )
    worker.refresh_from_db()
    assert worker.restarts == 0 and worker.state in ("idle", "busy")
