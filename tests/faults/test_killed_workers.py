"""SIGKILL of the processes that run jobs, other than a whole drain: a drain's
queue worker (the drain goes on), an always-on worker (its supervisor goes
on), and an always-on supervisor with its worker (issue 10 item 4)."""

from __future__ import annotations

import contextlib

import pytest
from rq.job import Job

from ops.models import WorkerProcess
from tests.faults.harness import (
    alive,
    assert_books,
    children_of,
    enqueue,
    sigkill,
    wait_until,
)

QUEUE = "batch-jobs"


def idle_workers() -> list[WorkerProcess]:
    return list(WorkerProcess.objects.filter(state=WorkerProcess.State.IDLE))


def test_a_killed_queue_worker_fails_its_job_per_retry_and_the_drain_goes_on(
    executor, procs, ledger, gates, rq_client
):
    gate = gates.new("job")
    job = enqueue(rq_client, QUEUE, ledger, gate=gate, retry=1)
    rest = [enqueue(rq_client, QUEUE, ledger) for _ in range(2)]
    drain = procs.drain("--queue", QUEUE, "--max-duration-ms", "10000")
    (started,) = ledger.wait_for("start", job.id)
    assert started.pid in children_of(drain.pid)  # the queue worker, not the drain
    sigkill(started.pid)
    gates.open(gate)  # its retry may finish

    result = drain.finish()
    # The drain counts the killed run as a failed job, and carries on.
    assert result.returncode == 1, result
    assert result.json["status"] == "with_failures"
    assert result.json["queues"][QUEUE]["remaining"] == 0
    assert_books(rq_client, ledger, [job, *rest], runs={job.id: 2}, workers=True)
    assert Job.fetch(job.id, connection=rq_client).get_status() == "finished"


def test_a_killed_always_on_worker_is_recovered_by_its_supervisor(
    executor, procs, ledger, gates, rq_client
):
    procs.work()
    (first,) = wait_until(idle_workers, 30, "an idle always-on worker")
    gate = gates.new("job")
    job = enqueue(rq_client, QUEUE, ledger, gate=gate, retry=1)
    rest = [enqueue(rq_client, QUEUE, ledger) for _ in range(2)]
    (started,) = ledger.wait_for("start", job.id)
    assert started.pid == first.pid
    sigkill(first.pid)
    gates.open(gate)

    # The supervisor fails the job (Retry: back on its queue) and restarts
    # its worker, which runs the retry and the rest.
    ledger.wait_for("end", count=3, timeout=30)
    wait_until(
        lambda: (
            idle_workers()
            and not WorkerProcess.objects.filter(
                state=WorkerProcess.State.BUSY
            ).exists()
        ),
        30,
        "the restarted worker to be idle",
    )
    first.refresh_from_db()
    assert first.state == WorkerProcess.State.CRASHED
    assert_books(rq_client, ledger, [job, *rest], runs={job.id: 2})


# How long, after a replacement supervisor's worker is up, the jobs of a
# SIGKILLed supervisor may take to be recovered. Issue 10 asks the fix to
# state its bound in the docs; set this to it (with test settings that keep it
# short) when the fix lands.
SUPERVISOR_RECOVERY_S = 2.0


@pytest.mark.xfail(
    strict=True,
    reason="issue 10 item 4: a SIGKILLed supervisor's worker dies with it and "
    "nothing ever recovers the job it ran (RQ: left in the started registry; "
    "lean: left in the worker's claim list)",
)
def test_a_killed_supervisor_leaves_no_job_started(
    executor, procs, ledger, gates, rq_client
):
    supervisor = procs.work()
    (worker,) = wait_until(idle_workers, 30, "an idle always-on worker")
    gate = gates.new("job")
    job = enqueue(rq_client, QUEUE, ledger, gate=gate, retry=1)
    rest = [enqueue(rq_client, QUEUE, ledger) for _ in range(2)]
    ledger.wait_for("start", job.id)
    procs.kill(supervisor)
    wait_until(lambda: not alive(worker.pid), 10, "its worker to die with it")
    gates.open(gate)

    # The container restarts: a new supervisor; the cron's drain runs too.
    procs.work()
    procs.drain().finish()
    wait_until(
        lambda: [w for w in idle_workers() if w.pk != worker.pk],
        30,
        "the new supervisor's worker",
    )
    # The job's retry and the two others end (its first run was killed).
    with contextlib.suppress(AssertionError):  # the books say what is missing
        ledger.wait_for("end", count=3, timeout=SUPERVISOR_RECOVERY_S)
    assert_books(rq_client, ledger, [job, *rest], runs={job.id: 2})
