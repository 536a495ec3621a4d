"""Always-on workers under their supervisor (`manage.py work`), as real processes
against the private redis-server."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from rq import Queue as RQQueue
from rq.job import Job, JobStatus

from ops.models import CommandUsage, ConsoleSettings, WorkerProcess
from tests.workers.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def job_status(job: Job, client) -> str:
    return Job.fetch(job.id, connection=client).get_status()


def idle_worker() -> WorkerProcess | None:
    return WorkerProcess.objects.filter(state=WorkerProcess.State.IDLE).first()


def test_inprocess_workers_run_a_job_within_seconds_without_a_drain(
    supervisor, rq_client
):
    supervisor("--role", "inprocess", WORKER_INPROCESS="1")
    wait_for(idle_worker)
    job = RQQueue("batch-jobs", connection=rq_client).enqueue("tests.jobs.add", 2, 3)
    wait_for(lambda: job_status(job, rq_client) == JobStatus.FINISHED, timeout=15)
    assert Job.fetch(job.id, connection=rq_client).return_value() == 5
    # The supervisor counts it for the quota advisor's job volume.
    wait_for(lambda: WorkerProcess.objects.filter(processed=1, failed=0).exists())


def test_with_worker_inprocess_0_nothing_consumes_until_a_drain(supervisor, rq_client):
    proc = supervisor("--role", "inprocess", "--poll-s", "0.5", WORKER_INPROCESS="0")
    job = RQQueue("batch-jobs", connection=rq_client).enqueue("tests.jobs.add", 2, 3)
    time.sleep(4)
    assert proc.poll() is None
    assert not WorkerProcess.objects.exists()
    assert job_status(job, rq_client) == JobStatus.QUEUED
    from ops.engine.drain import drain
    from ops.engine.drain_options import parse_options

    assert drain(trigger="cli", options=parse_options()).total_processed == 1


def test_switching_the_mode_in_the_admin_starts_and_stops_workers(
    supervisor, rq_client
):
    supervisor("--role", "inprocess", "--poll-s", "0.5", WORKER_INPROCESS="0")
    from ops.runtime import console_settings

    row = console_settings()
    row.worker_mode = ConsoleSettings.WorkerMode.ALWAYS_ON
    row.save()
    wait_for(idle_worker)
    job = RQQueue("seed-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 1)
    wait_for(lambda: job_status(job, rq_client) == JobStatus.FINISHED, timeout=15)
    row.worker_mode = ConsoleSettings.WorkerMode.CRON_DRAIN
    row.save()
    wait_for(
        lambda: WorkerProcess.objects.filter(state=WorkerProcess.State.STOPPED).exists()
    )
    assert not WorkerProcess.objects.filter(
        state__in=[WorkerProcess.State.IDLE, WorkerProcess.State.BUSY]
    ).exists()


def test_a_killed_worker_is_restarted_and_its_job_failed(
    supervisor, rq_client, tmp_path
):
    supervisor("--role", "dedicated")
    first = wait_for(idle_worker)
    marker = tmp_path / "started"
    job = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.mark_started", str(marker), 30_000, job_timeout=600
    )
    wait_for(marker.exists)
    os.kill(first.pid, signal.SIGKILL)
    second = wait_for(
        lambda: (
            WorkerProcess.objects.filter(state=WorkerProcess.State.IDLE)
            .exclude(pk=first.pk)
            .first()
        )
    )
    assert second.restarts == 1
    first.refresh_from_db()
    assert first.state == WorkerProcess.State.CRASHED
    failed = Job.fetch(job.id, connection=rq_client)
    assert failed.get_status() == JobStatus.FAILED
    assert "AbandonedJobError" in failed.exc_info
    # And the new worker consumes.
    after = RQQueue("batch-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 1)
    wait_for(lambda: job_status(after, rq_client) == JobStatus.FINISHED, timeout=15)


def test_sigterm_lets_the_running_job_finish(supervisor, rq_client, tmp_path):
    proc = supervisor("--role", "dedicated")
    wait_for(idle_worker)
    marker = tmp_path / "done"
    job = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.sleep_then_mark", 1500, str(marker)
    )
    wait_for(
        lambda: WorkerProcess.objects.filter(state=WorkerProcess.State.BUSY).exists()
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert marker.exists()
    assert job_status(job, rq_client) == JobStatus.FINISHED
    assert WorkerProcess.objects.get().state == WorkerProcess.State.STOPPED


def test_due_scheduled_jobs_are_promoted_without_rqs_scheduler(supervisor, rq_client):
    supervisor("--role", "dedicated", ALWAYS_ON_SCHEDULED_SCAN_S="1")
    wait_for(idle_worker)
    job = RQQueue("dsar-jobs", connection=rq_client).enqueue_in(
        timedelta(seconds=2), "tests.jobs.add", 4, 4
    )
    wait_for(lambda: job_status(job, rq_client) == JobStatus.FINISHED, timeout=20)


@pytest.mark.parametrize(
    ("executor", "args", "per_wake"),
    [
        # RQ's worker: heartbeat HSET + EXPIRE, and its BLPOP.
        ("rq", [], {"BLPOP": 1, "HSET": 1, "EXPIRE": 1}),
        # The lean worker on five queues: one BLMPOP, nothing else.
        ("lean", [], {"BLMPOP": 1}),
        # One queue per process: one BLMOVE, which never takes the job.
        ("lean", ["--per-queue"], {"BLMOVE": 1}),
    ],
    ids=["rq", "lean", "lean-per-queue"],
)
def test_idle_workers_spend_few_commands_per_wake_up(
    supervisor, wire, executor, args, per_wake
):
    """Each wake-up of an idle worker's blocking wait costs the same few
    commands; the scheduled-job scan costs one EXISTS. Measured here with a 2 s
    block, it gives the hourly cost at the defaults (block 3585 s, scan every
    300 s)."""
    proc = supervisor(
        "--role",
        "dedicated",
        *args,
        ALWAYS_ON_BLOCK_S="2",
        ALWAYS_ON_SCHEDULED_SCAN_S="3600",
        DRAIN_EXECUTOR=executor,
    )
    blocking = next(iter(per_wake))
    processes = 5 if args else 1
    # Every process has connected and blocked once (a process marks itself
    # idle before its first command: on a loaded machine its AUTH can come
    # later), so the window below holds wake-ups only.
    wait_for(
        lambda: (
            WorkerProcess.objects.filter(state=WorkerProcess.State.IDLE).count()
            == processes
            and wire.snapshot()[blocking] >= processes
        )
    )
    before = wire.snapshot()
    time.sleep(6.5)
    during = wire.snapshot() - before
    wakes = during[blocking]
    assert wakes >= 2
    assert during == {name: n * wakes for name, n in per_wake.items()}
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    per_wake_total = sum(during.values()) / wakes
    # At the defaults: at most two wake-ups an hour a process, a scan every 300 s.
    per_hour_at_defaults = per_wake_total * 2 * processes + 3600 / 300
    assert per_hour_at_defaults <= 60  # the budget: one a minute
    # The supervisor booked what its worker sent under "worker".
    booked = sum(
        u.commands + u.unbilled for u in CommandUsage.objects.filter(source="worker")
    )
    assert booked == wire.total


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "boss"], "--role must be one of inprocess, dedicated"),
        (["--queue", "nope"], "unknown queue nope"),
        (["--stop-grace-s", "x"], "--stop-grace-s must be a number"),
        (["--poll-s", "0"], "--poll-s must be at least 0.1"),
    ],
)
def test_bad_input_is_a_command_error(args, message):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=message):
        call_command("work", *args)


def test_a_job_on_a_lean_always_on_worker_costs_14_billed_commands(
    supervisor, wire, rq_client
):
    """One job waking an idle lean worker on five queues: LPUSH (the woken
    BLMPOP's job back), the claim (MULTI, SORT, SORT, LTRIM, EXEC), the job
    (HSET, XADD, EXPIRE, EXPIRE), the dependents' EXISTS, the closing ZADD +
    DEL, and the next BLMPOP = 14, against rq's ~52."""
    proc = supervisor(
        "--role",
        "dedicated",
        ALWAYS_ON_BLOCK_S="60",
        ALWAYS_ON_SCHEDULED_SCAN_S="3600",
        DRAIN_EXECUTOR="lean",
    )
    wait_for(idle_worker)
    time.sleep(1)
    before = wire.snapshot()
    job = RQQueue("batch-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 1)
    wait_for(lambda: job_status(job, rq_client) == JobStatus.FINISHED, timeout=15)
    time.sleep(0.5)
    during = wire.snapshot() - before
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert during == {
        "LPUSH": 1,
        "MULTI": 1,
        "SORT": 2,
        "LTRIM": 1,
        "EXEC": 1,
        "HSET": 1,
        "XADD": 1,
        "EXPIRE": 2,
        "EXISTS": 1,
        "ZADD": 1,
        "DEL": 1,
        "BLMPOP": 1,
    }
