"""SIGKILL of the processes that run jobs, other than a whole drain: a drain's
queue worker (the drain goes on), an always-on worker (its supervisor goes
on), and an always-on supervisor with its worker (issue 10 item 4)."""

from __future__ import annotations

from rq.job import Job, JobStatus

from ops.engine import leftovers
from ops.models import WorkerProcess
from tests.faults.conftest import HEARTBEAT_S, STARTUP_S
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
    assert_books(rq_client, ledger, [job, *rest], runs={job.id: 2})
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


# docs/reliability.md: a SIGKILLed supervisor's jobs are recovered at the
# latest 3 heartbeats (ALWAYS_ON_HEARTBEAT_S, HEARTBEAT_S in this suite) after
# its last one, plus the time to the next drain tick or supervisor poll.
POLL_S = 1
SUPERVISOR_RECOVERY_S = 3 * HEARTBEAT_S + POLL_S


def busy_worker() -> WorkerProcess | None:
    return WorkerProcess.objects.filter(state=WorkerProcess.State.BUSY).first()


def test_a_killed_supervisor_leaves_no_job_started(
    executor, procs, ledger, gates, rq_client
):
    """Issue 10 item 4: the supervisor is SIGKILLed with its worker's job
    running; the worker dies with it. While the dead supervisor's heartbeat is
    fresh nobody takes its job; once it is stale, whoever looks first
    recovers it: a replacement supervisor's poll (lean) or the cron's next
    drain (rq). The job is retried once per its Retry, within the documented
    bound; the dead worker's registration is forgotten."""
    supervisor = procs.work("--queue", QUEUE)
    (worker,) = wait_until(idle_workers, 30, "an idle always-on worker")
    gate = gates.new("job")
    job = enqueue(rq_client, QUEUE, ledger, gate=gate, retry=1)
    rest = [enqueue(rq_client, QUEUE, ledger) for _ in range(2)]
    fresh = procs.drain_later("--queue", QUEUE)
    # rq: the cron's next drain, set up now, released once the row is stale.
    recovering = procs.drain_later("--queue", QUEUE) if executor == "rq" else None
    ledger.wait_for("start", job.id)
    fresh.wait_ready()
    procs.kill(supervisor)
    # Its worker dies with it (PR_SET_PDEATHSIG): no orphan runs the job on.
    wait_until(lambda: not alive(worker.pid), 10, "its worker to die with it")
    gates.open(gate)

    # While its heartbeat is fresh (stale 2 heartbeats later at the earliest),
    # a drain runs the other jobs and does not take it for dead.
    assert fresh.release().finish().returncode == 0
    assert ledger.runs(job.id) == 1
    held = Job.fetch(job.id, connection=rq_client).get_status()
    assert held not in (JobStatus.FINISHED, JobStatus.FAILED), held
    worker.refresh_from_db()
    assert worker.recovered_at is None

    if executor == "lean":
        # The container restarts: a new supervisor, whose poll notices. The
        # bound, plus the new supervisor's start.
        procs.work("--queue", QUEUE, "--poll-s", str(POLL_S))
        ledger.wait_for("end", count=3, timeout=SUPERVISOR_RECOVERY_S + STARTUP_S)
    else:
        # No supervisor comes back: the cron's next drain notices, once the
        # heartbeat is stale (within the bound).
        assert recovering is not None
        wait_until(
            lambda: worker.pk in [w.pk for w in leftovers.stale_workers()],
            SUPERVISOR_RECOVERY_S,
            "the dead supervisor's heartbeat to go stale",
        )
        assert recovering.release().finish().returncode == 0
    # The job's retry and the two others ended (its first run was killed).
    ledger.wait_for("end", count=3, timeout=STARTUP_S)
    wait_until(lambda: not busy_worker(), STARTUP_S, "no worker busy")
    assert_books(rq_client, ledger, [job, *rest], runs={job.id: 2})
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FINISHED
    worker.refresh_from_db()
    assert worker.recovered_at is not None
    assert worker.state == WorkerProcess.State.CRASHED
