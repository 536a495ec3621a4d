"""The drain lease (issue 10 item 2), on both executors: its times come from the
database, it is renewed while the drain runs, and a drain that lost it stops
taking jobs and keeps the verdict of whoever took over."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone
from rq.job import Job, JobStatus

from ops.models import DrainRun, Lease
from tests.faults.conftest import BUDGET_MS, GRACE_MS, MARGIN_MS
from tests.faults.harness import assert_books, enqueue, wait_until

QUEUE = "batch-jobs"


def test_a_drain_on_a_host_with_a_fast_clock_does_not_take_a_running_drains_lease(
    executor, procs, ledger, gates, tmp_path, rq_client
):
    """A second server whose clock runs 45 s ahead (issue 10 item 2): by its
    clock the running drain's lease lapsed long ago; the lease's times come
    from the database, so it is skipped, and the running job is neither
    failed as abandoned nor run twice."""
    gate = gates.new("job")
    job = enqueue(rq_client, QUEUE, ledger, gate=gate, retry=1)
    first = procs.drain("--queue", QUEUE, "--max-duration-ms", "4000")
    ahead = procs.drive(
        "drain",
        "--json",
        "--queue",
        QUEUE,
        skew_s=45,
        barrier=str(tmp_path / "barrier"),
        ready=str(tmp_path / "ready"),
    )
    ledger.wait_for("start", job.id)
    wait_until((tmp_path / "ready").exists, 30, "the skewed drain set up")
    (tmp_path / "barrier").touch()
    # Skipped at once, or (the bug) it ran the job a second time.
    wait_until(
        lambda: not ahead.running() or ledger.runs(job.id) > 1,
        15,
        "the second drain to be skipped or to take the job",
    )
    gates.open(gate)
    first_result, ahead_result = first.finish(), ahead.finish()
    assert ahead_result.returncode == 3, ahead_result
    assert ahead_result.json["runningRunId"] == first_result.json["runId"]
    assert first_result.returncode == 0, first_result
    run = DrainRun.objects.get(public_id=first_result.json["runId"])
    assert run.status == DrainRun.Status.SUCCEEDED
    assert_books(rq_client, ledger, [job])


def test_a_slow_failure_callback_after_the_hard_deadline_keeps_the_lease(
    executor, procs, ledger, gates, rq_client
):
    """The job outlives the budget and is killed at the hard deadline (budget
    + grace); its on_failure then takes 2.5 s: longer than the lease's margin
    and past the lease's first life (budget + grace + margin). The drain
    renews its lease meanwhile: a drain started then is skipped, and the
    callback runs once."""
    job = enqueue(rq_client, QUEUE, ledger, gate=gates.new("never"), failure_ms=2500)
    first = procs.drain("--queue", QUEUE)  # the suite's 1 s budget
    second = procs.drain_later("--queue", QUEUE)
    ledger.wait_for("failure", job.id)
    acquired = Lease.objects.get().acquired_at
    first_life = timedelta(milliseconds=BUDGET_MS + GRACE_MS + MARGIN_MS + 200)
    wait_until(
        lambda: timezone.now() >= acquired + first_life, 10, "the first life to end"
    )
    second.wait_ready()
    assert first.running(), "the callback should still be running"
    skipped = second.release().finish()
    assert first.running(), "the callback should still be running"
    held = first.finish()

    assert skipped.returncode == 3, skipped
    assert skipped.json["runningRunId"] == held.json["runId"]
    assert held.returncode == 1, held  # a job failed
    run = DrainRun.objects.get(public_id=held.json["runId"])
    assert run.status == DrainRun.Status.WITH_FAILURES
    assert len(ledger.of(job.id, "failure")) == 1
    failed = Job.fetch(job.id, connection=rq_client)
    assert failed.get_status() == JobStatus.FAILED
    assert "AbandonedJobError" in failed.exc_info
    assert_books(rq_client, ledger, [job])


def test_a_drain_that_lost_its_lease_stops_and_keeps_the_takers_verdict(
    executor, procs, ledger, rq_client
):
    jobs = [enqueue(rq_client, QUEUE, ledger, ms=300) for _ in range(6)]
    following = procs.drain_later("--queue", QUEUE, "--max-duration-ms", "10000")
    holder_proc = procs.drain("--queue", QUEUE, "--max-duration-ms", "10000")
    ledger.wait_for("start")
    # Another drain takes the lease over and declares the holder dead.
    taker = uuid.uuid4()
    Lease.objects.update(holder=taker, expires_at=timezone.now() + timedelta(hours=1))
    holder = DrainRun.objects.get(status=DrainRun.Status.RUNNING)
    assert holder.mark_abandoned(note="taken over by the test")
    holder_proc.finish()

    holder.refresh_from_db()
    assert holder.status == DrainRun.Status.ABANDONED
    assert holder.error == "taken over by the test"
    # It stopped taking jobs: what it had not started is back on the queue.
    done = ledger.starts()
    assert 1 <= len(done) < len(jobs)
    assert set(done.values()) == {1}
    assert len(ledger.entries()) == 2 * len(done)  # each run it began ended
    assert rq_client.llen(f"rq:queue:{QUEUE}") == len(jobs) - len(done)
    assert Lease.objects.get().holder == taker

    # The taker finishes; the next drain recovers the holder's run and runs
    # the rest.
    Lease.objects.update(holder=None, expires_at=timezone.now())
    after = following.release().finish()
    assert after.returncode == 0, after
    assert_books(rq_client, ledger, jobs)
