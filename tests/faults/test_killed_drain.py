"""A `manage.py drain` SIGKILLed while its queue workers stand at each step of a
job's path, on both executors; the next drain, once the dead drain's lease has
lapsed, recovers every job.

One drain, three queues, one worker each, killed when all three stand at
their step (one lease to wait for instead of three):

- batch-jobs, "claimed": Redis has handed the job to the worker (the lean
  executor's claim, RQ's started registration) and the worker has not heard
  back: the job never began. It has a Retry policy: the recovery puts it
  back, it runs once.
- dsar-jobs, "mid_job": the job's function is running. Retry(max=1): it runs
  again once, 2 runs in all.
- seed-jobs, "after_end": the function returned, its on_success callback runs,
  its outcome is not written. No Retry: it is failed as abandoned and never
  run again, 1 run.

Two more jobs wait behind each; each runs exactly once.
"""

from __future__ import annotations

from rq.job import Job, JobStatus

from ops.models import DrainRun
from tests.faults.harness import (
    alive,
    assert_books,
    children_of,
    enqueue,
    wait_lease_lapsed,
    wait_until,
)

CLAIMED, MID_JOB, AFTER_END = "batch-jobs", "dsar-jobs", "seed-jobs"
# The recovering drain has time for every job, even on a loaded machine.
ROOMY = ("--max-duration-ms", "10000", "--max-concurrent-queues", "3")

# The command whose reply is held to freeze a worker at "claimed": the lean
# executor's claim transaction (SORT ... STORE <claim list>), RQ's registration
# of a started job (the transaction that takes it off the intermediate list).
CLAIM = {
    "lean": ("SORT", b"STORE", CLAIMED.encode()),
    "rq": ("LREM", f"rq:queue:{CLAIMED}:intermediate".encode()),
}


def test_a_drain_killed_at_each_step_is_recovered_by_the_next_drain(
    executor, redis_faults, procs, ledger, gates, rq_client
):
    gate, callback_gate = gates.new("job"), gates.new("callback")
    hold = redis_faults.hold(*CLAIM[executor])
    claimed = enqueue(rq_client, CLAIMED, ledger, retry=1)
    mid_job = enqueue(rq_client, MID_JOB, ledger, gate=gate, retry=1)
    after_end = enqueue(rq_client, AFTER_END, ledger, callback_gate=callback_gate)
    rest = [enqueue(rq_client, q, ledger) for q in (CLAIMED, MID_JOB, AFTER_END) * 2]

    drain = procs.drain("--max-concurrent-queues", "3")
    hold.wait()
    ledger.wait_for("start", mid_job.id)
    ledger.wait_for("callback", after_end.id)
    # Killed where the test says, not at its own deadline.
    run = DrainRun.objects.get(status=DrainRun.Status.RUNNING)
    workers = children_of(drain.pid)
    assert drain.running() and len(workers) == 3
    assert ledger.runs(claimed.id) == 0
    procs.kill(drain)
    # The next drain starts now and waits, set up, for the lease to lapse.
    following = procs.drain_later(*ROOMY)
    wait_until(lambda: not any(alive(p) for p in workers), 10, "the workers to die")
    hold.release()
    gates.open(gate)
    gates.open(callback_gate)

    wait_lease_lapsed()
    after = following.release().finish()
    assert after.returncode == 0, after
    assert after.json["recoveredAbandonedJobs"] >= 3, after
    run.refresh_from_db()
    assert run.status == DrainRun.Status.ABANDONED

    assert_books(
        rq_client,
        ledger,
        [claimed, mid_job, after_end, *rest],
        runs={claimed.id: 1, mid_job.id: 2, after_end.id: 1},
    )
    for job in (claimed, mid_job):
        assert Job.fetch(job.id, connection=rq_client).get_status() == "finished"
    abandoned = Job.fetch(after_end.id, connection=rq_client)
    assert abandoned.get_status() == JobStatus.FAILED
    assert "AbandonedJobError" in abandoned.exc_info
