"""`manage.py drain`: options, output, exit statuses, cost of a fresh process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone
from rq import Queue as RQQueue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from ops.engine import claims
from ops.models import DrainRun, Lease
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def drain_cmd(*args: str) -> tuple[int, str]:
    """call_command, returning (exit status, stdout)."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("drain", *args, stdout=out, stderr=StringIO())
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def test_a_fresh_process_idle_drain_costs_one_command_on_the_wire(wire, manage_py):
    result = manage_py("drain", "--json")
    assert result.returncode == 0, result.stderr
    # No HELLO, CLIENT SETINFO/SETNAME, no worker registration: AUTH (the
    # private server's password, not billed) and the one EXISTS.
    assert wire.snapshot() == {"AUTH": 1, "EXISTS": 1}
    body = json.loads(result.stdout)
    assert body["redisCommands"] == 1
    assert body["status"] == "succeeded"
    assert body["totalProcessed"] == 0
    assert set(body["queues"]) == {
        "batch-jobs",
        "dsar-jobs",
        "journey-jobs",
        "retrain-jobs",
        "seed-jobs",
    }


def test_json_output_has_the_result_fields(rq_client):
    RQQueue("batch-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 2)
    code, out = drain_cmd("--json", "--queue", "batch-jobs")
    body = json.loads(out)
    assert code == 0
    for key in (
        "runId",
        "status",
        "totalProcessed",
        "totalFailed",
        "queues",
        "durationMs",
        "deadlineHit",
        "redisCommands",
    ):
        assert key in body
    assert body["totalProcessed"] == 1
    assert list(body["queues"]) == ["batch-jobs"]
    assert DrainRun.objects.get(public_id=body["runId"]).trigger == "cli"


def test_it_prints_a_one_line_summary():
    code, out = drain_cmd()
    assert code == 0
    assert out.count("\n") == 1
    assert "succeeded: 0 processed, 0 failed, 0 left" in out
    assert "1 Redis commands" in out


def test_it_exits_1_when_jobs_failed(rq_client):
    RQQueue("dsar-jobs", connection=rq_client).enqueue("ops.jobs.fail")
    code, out = drain_cmd()
    assert code == 1
    assert "1 failed" in out


def test_it_exits_3_when_another_drain_holds_the_lease():
    holder = uuid.uuid4()
    Lease.objects.filter(name="drain").update(
        holder=holder, expires_at=timezone.now() + timedelta(minutes=5)
    )
    code, out = drain_cmd("--json")
    assert code == 3
    body = json.loads(out)
    assert body["status"] == "skipped"
    assert body["runningRunId"] == str(holder)
    assert body["redisCommands"] == 0


def test_it_exits_4_when_redis_is_unreachable(settings):
    from bench.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    code, out = drain_cmd("--json")
    assert code == 4
    assert json.loads(out)["error"] == "redis_unavailable"


def test_it_exits_5_when_the_redis_quota_is_exhausted(fault):
    fault.exhaust()
    code, out = drain_cmd("--json")  # the quota error opens an incident
    assert code == 5
    assert json.loads(out)["error"] == "redis_quota_exhausted"
    code, out = drain_cmd("--json")  # refused by the open incident, 0 commands
    assert code == 5
    assert json.loads(out)["redisCommands"] == 0


def test_an_over_cap_duration_is_clamped_and_said():
    code, out = drain_cmd("--json", "--max-duration-ms", "900000")
    body = json.loads(out)
    assert code == 0
    assert body["maxDurationMs"] == 600_000
    assert body["clamped"] == {
        "maxDurationMs": {"requested": 900000, "applied": 600000}
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--max-duration-ms", "abc"],
            "--max-duration-ms: must be an integer, got 'abc'",
        ),
        (["--max-duration-ms", "0"], "--max-duration-ms: must be at least 1, got 0"),
        (["--max-duration-ms", "-5"], "--max-duration-ms: must be at least 1, got -5"),
        (["--max-duration-ms", "1.5"], "--max-duration-ms: must be an integer"),
        (
            ["--max-concurrent-queues", "x"],
            "--max-concurrent-queues: must be an integer",
        ),
        (
            ["--max-concurrent-queues", "0"],
            "--max-concurrent-queues: must be at least 1",
        ),
        (["--max-concurrent-queues", "6"], "must be between 1 and 5"),
        (
            ["--queue", "nope"],
            "unknown queue nope; valid queues: batch-jobs, dsar-jobs",
        ),
        # Digits str.isdigit() accepts and int() refuses, and too many digits.
        (["--max-duration-ms", "²"], "--max-duration-ms: must be an integer, got '²'"),
        (["--max-concurrent-queues", "٣"], "--max-concurrent-queues: must be an"),
        (["--max-duration-ms", "1" * 5000], "--max-duration-ms: must be at most"),
    ],
)
def test_it_rejects_bad_input_with_a_precise_error(args, message):
    before = DrainRun.objects.count()
    with pytest.raises(CommandError) as excinfo:
        call_command("drain", *args)
    assert message in str(excinfo.value)
    assert excinfo.value.returncode == 2
    assert DrainRun.objects.count() == before


@pytest.mark.parametrize("value", ["soon", "²"])
def test_bad_input_from_the_shell_is_a_message_not_a_traceback(manage_py, value):
    result = manage_py("drain", "--max-duration-ms", value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"--max-duration-ms: must be an integer, got '{value}'" in result.stderr


@pytest.mark.parametrize("executor", ["lean", "rq"])
def test_a_killed_drain_is_marked_abandoned_and_its_job_failed(
    rq_client, tmp_path, executor
):
    """SIGKILL the drain process mid-job: its child dies with it, the run stays
    "running" until its lease lapses, and the next drain marks it abandoned and
    moves the job to the failed registry with AbandonedJobError. The job was
    held in RQ's started registry (rq executor) or the drain's claim list (lean
    executor)."""
    started = tmp_path / "started"
    job = RQQueue("batch-jobs", connection=rq_client).enqueue(
        "tests.jobs.mark_started", str(started), 20_000, job_timeout=600
    )
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DRAIN_JOB_GRACE_MS="500",
        DRAIN_LEASE_MARGIN_MS="2000",
        DRAIN_EXECUTOR=executor,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            str(settings.BASE_DIR / "manage.py"),
            "drain",
            "--max-duration-ms",
            "4000",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the job never started"
    child_pid = int(started.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # The child died with its parent (PR_SET_PDEATHSIG): nothing runs the job.
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid)

    dead = DrainRun.objects.get(status=DrainRun.Status.RUNNING)
    started_ids = StartedJobRegistry("batch-jobs", connection=rq_client).get_job_ids(
        cleanup=False
    )
    claim = claims.claim_key(f"{dead.worker_prefix}batch-jobs")
    claimed = [j.decode() for j in rq_client.lrange(claim, 0, -1)]
    if executor == "rq":
        assert (started_ids, claimed) == ([job.id], [])
    else:
        assert (started_ids, claimed) == ([], [job.id])

    # Before the lease lapses, a new drain is skipped...
    code, out = drain_cmd("--json")
    assert code == 3
    assert json.loads(out)["runningRunId"] == str(dead.public_id)

    # ...after it, the new drain recovers the dead one.
    while timezone.now() <= dead.lease_expires:
        time.sleep(0.1)
    code, out = drain_cmd("--json")
    body = json.loads(out)
    assert code == 0
    assert body["recoveredAbandonedJobs"] == 1
    dead.refresh_from_db()
    assert dead.status == DrainRun.Status.ABANDONED
    assert dead.finished is not None
    assert "process died" in dead.error
    failed = Job.fetch(job.id, connection=rq_client)
    assert failed.get_status() == JobStatus.FAILED
    assert "AbandonedJobError" in failed.exc_info
    assert job.id in FailedJobRegistry("batch-jobs", connection=rq_client).get_job_ids()
    assert (
        StartedJobRegistry("batch-jobs", connection=rq_client).get_job_ids(
            cleanup=False
        )
        == []
    )
    assert not rq_client.exists(claim)
    # The job ran once: it is failed, not run again.
    assert rq_client.llen("rq:queue:batch-jobs") == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent, init, reaps it later).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_the_cli_forks_its_queue_workers_and_still_counts_and_isolates(
    wire, manage_py, rq_client
):
    """`manage.py drain` forks its queue workers (no fresh interpreter): a job
    that kills its process is still failed, the rest still run, a timeout still
    fires, and every command the forked workers sent is in the run's count."""
    queue = RQQueue("seed-jobs", connection=rq_client)
    crash = queue.enqueue("ops.jobs.crash")
    slow = queue.enqueue("ops.jobs.sleep", 20_000, job_timeout=1)
    ok = [queue.enqueue("tests.jobs.add", i, 1) for i in range(3)]
    RQQueue("dsar-jobs", connection=rq_client).enqueue("tests.jobs.add", 5, 5)
    wire.reset()
    result = manage_py("drain", "--json")
    body = json.loads(result.stdout)
    assert result.returncode == 1  # jobs failed
    assert body["queues"]["seed-jobs"] == {"processed": 5, "failed": 2, "remaining": 0}
    assert body["queues"]["dsar-jobs"]["processed"] == 1
    assert body["redisCommands"] == wire.billed()
    assert "AbandonedJobError" in Job.fetch(crash.id, connection=rq_client).exc_info
    assert "JobTimeoutException" in Job.fetch(slow.id, connection=rq_client).exc_info
    for job in ok:
        assert (
            Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FINISHED
        )
