"""Races, on both executors: two promoters of scheduled jobs waking at the same
instant (issue 10 item 1, fixed), two drains released together, and a drain on
a host whose clock runs ahead (issue 10 item 2)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from rq.registry import ScheduledJobRegistry

from ops.models import DrainRun, WorkerProcess
from tests.faults.harness import assert_books, enqueue, wait_until

QUEUE = "batch-jobs"
TRIALS = 2
JOBS_PER_TRIAL = 20


def settled(client, workers: int) -> bool:
    """Nothing left to promote, queued or running on `workers` supervisors'
    workers: no further run can come."""
    rows = list(WorkerProcess.objects.all())
    return (
        client.llen(f"rq:queue:{QUEUE}") == 0
        and client.zcard(ScheduledJobRegistry(QUEUE, connection=client).key) == 0
        and len(rows) == workers
        and all(r.state == WorkerProcess.State.IDLE for r in rows)
    )


def test_two_supervisors_promoting_at_the_same_instant_run_each_job_once(
    executor, procs, ledger, rq_client
):
    """Two `manage.py work --role dedicated` replicas; each trial schedules 20
    jobs due at one instant, which both supervisors wake for (a scan every
    second, and exactly at the earliest due time)."""
    for _ in range(2):
        procs.work(env={"ALWAYS_ON_SCHEDULED_SCAN_S": "1"})
    wait_until(
        lambda: (
            WorkerProcess.objects.filter(state=WorkerProcess.State.IDLE).count() == 2
        ),
        30,
        "two idle always-on workers",
    )
    jobs = []
    for trial in range(1, TRIALS + 1):
        due = datetime.fromtimestamp(time.time() + 1.2, UTC)
        jobs += [
            enqueue(rq_client, QUEUE, ledger, at=due) for _ in range(JOBS_PER_TRIAL)
        ]
        ledger.wait_for("end", count=JOBS_PER_TRIAL * trial, timeout=30)
        wait_until(lambda: settled(rq_client, 2), 15, "the workers to settle")
        assert sum(ledger.starts().values()) == JOBS_PER_TRIAL * trial
    assert_books(rq_client, ledger, jobs)


def test_two_drains_released_together_run_one_and_skip_the_other(
    executor, procs, ledger, gates, tmp_path, rq_client
):
    gate = gates.new("first")
    jobs = [enqueue(rq_client, QUEUE, ledger, gate=gate)]
    jobs += [enqueue(rq_client, QUEUE, ledger) for _ in range(3)]
    barrier = str(tmp_path / "barrier")
    pair = [
        procs.drive(
            "drain",
            "--json",
            "--max-duration-ms",
            "10000",
            barrier=barrier,
            ready=str(tmp_path / f"ready{i}"),
        )
        for i in range(2)
    ]
    wait_until(
        lambda: all((tmp_path / f"ready{i}").exists() for i in range(2)),
        30,
        "both drains set up",
    )
    (tmp_path / "barrier").touch()
    # The first job holds the winner inside its drain until the loser is out.
    loser = wait_until(
        lambda: [p for p in pair if not p.running()], 15, "one drain to finish"
    )[0]
    skipped = loser.finish()
    assert skipped.returncode == 3, skipped
    assert skipped.json["status"] == "skipped"
    gates.open(gate)
    (winner,) = [p for p in pair if p is not loser]
    ran = winner.finish()
    assert ran.returncode == 0, ran
    assert ran.json["totalProcessed"] == len(jobs)
    assert skipped.json["runningRunId"] == ran.json["runId"]
    assert_books(rq_client, ledger, jobs, workers=True)


@pytest.mark.xfail(
    strict=True,
    reason="issue 10 item 2: the lease compares application-server clocks and "
    "is never renewed: a drain on a host 45 s ahead takes the lease of a "
    "running drain, fails its running job as abandoned, retries it and runs it "
    "concurrently; the first drain's verdict then overwrites 'abandoned'",
)
def test_a_drain_on_a_host_with_a_fast_clock_does_not_take_a_running_drains_lease(
    executor, procs, ledger, gates, rq_client
):
    gate = gates.new("job")
    job = enqueue(rq_client, QUEUE, ledger, gate=gate, retry=1)
    first = procs.drain("--queue", QUEUE, "--max-duration-ms", "4000")
    ledger.wait_for("start", job.id)
    ahead = procs.drive("drain", "--json", "--queue", QUEUE, skew_s=45)
    # Skipped at once (fixed), or it ran the job a second time (today).
    wait_until(
        lambda: not ahead.running() or ledger.runs(job.id) > 1,
        15,
        "the second drain to be skipped or to take the job",
    )
    gates.open(gate)
    first_result, ahead_result = first.finish(), ahead.finish()
    assert ahead_result.returncode == 3, ahead_result
    assert first_result.returncode == 0, first_result
    run = DrainRun.objects.get(public_id=first_result.json["runId"])
    assert run.status == DrainRun.Status.SUCCEEDED
    assert_books(rq_client, ledger, [job])
