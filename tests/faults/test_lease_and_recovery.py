"""Fault scenarios for the drain lease and the recovery of what stopped
processes left behind (issue 10, items 2-4), on both executors.

Every scenario uses real processes (`manage.py drain`, `manage.py work`) against
the private redis-server, and asserts with a ledger the jobs write themselves
(tests/jobs.py: one line per run): each job ran exactly once (or as its Retry
allows), none is left started or claimed, no dead worker stays registered, and
every run row ends terminal with nothing left to recover.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db.models import F
from django.utils import timezone
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Callback, Job, JobStatus
from rq.registry import StartedJobRegistry

from bench.fault_proxy import FaultProxy
from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.models import DrainRun, Lease, WorkerProcess
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)

EXECUTORS = ["lean", "rq"]
QUEUE = "batch-jobs"
OTHER = "dsar-jobs"


# --- helpers -------------------------------------------------------------------


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def ran(ledger: Path) -> Counter[str]:
    """How often each job ran, as the jobs wrote it."""
    if not ledger.exists():
        return Counter()
    return Counter(line for line in ledger.read_text().splitlines() if line)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent to read its status.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


@pytest.fixture
def start(
    transactional_db, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `manage.py <args>` against the test database; killed at the end.
    Their stderr goes to <tmp_path>/<pid>.log (pytest shows it on failure)."""
    started: list[subprocess.Popen[bytes]] = []

    def run(*args: str, **env: str) -> subprocess.Popen[bytes]:
        full = dict(os.environ)
        full.update(DATABASE_URL=database_url(), METERING_FLUSH_INTERVAL_S="0")
        full.update(env)
        with open(tmp_path / f"{args[0]}-{len(started)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
                env=full,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for log in sorted(tmp_path.glob("*.log")):
        sys.stderr.write(f"--- {log.name}\n{log.read_text()[-3000:]}\n")


def drain_now(*queues: str) -> DrainRun:
    """A drain in this process (the "next drain"), spawning its workers."""
    return drain(
        trigger=DrainRun.Trigger.CLI,
        options=parse_options(
            max_duration_ms=20_000, queues=list(queues) if queues else None
        ),
    )


def assert_settled(client: redis.Redis, jobs: list[Job], queues: list[str]) -> None:
    """Nothing is left half-done: no job started or claimed, no dead worker
    registered, every run terminal, nothing left to recover."""
    for job in jobs:
        status = Job.fetch(job.id, connection=client).get_status()
        assert status in (JobStatus.FINISHED, JobStatus.FAILED), (job.id, status)
    for name in queues:
        started = StartedJobRegistry(name, connection=client)
        assert started.get_job_ids(cleanup=False) == []
        assert client.llen(f"rq:queue:{name}") == 0
    assert list(client.scan_iter("kaireon:claimed:*")) == []
    assert [w for w in client.smembers("rq:workers") if b":kdrain." in w] == []
    assert [w for w in client.smembers("rq:workers") if b":kwork." in w] == []
    assert not DrainRun.objects.filter(status=DrainRun.Status.RUNNING).exists()
    assert not DrainRun.objects.filter(needs_recovery=True).exists()


def failed_as_abandoned(client: redis.Redis, job: Job) -> bool:
    fetched = Job.fetch(job.id, connection=client)
    return fetched.get_status() == JobStatus.FAILED and "AbandonedJobError" in (
        fetched.exc_info or ""
    )


# --- item 2: the lease ---------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_drain_whose_clock_is_45_s_ahead_does_not_take_a_running_drains_lease(
    start, rq_client, tmp_path, monkeypatch, executor
):
    ledger = tmp_path / "ledger"
    job = RQQueue(QUEUE, connection=rq_client).enqueue(
        "tests.jobs.ledger_sleep", str(ledger), 2000
    )
    first = start(
        "drain",
        "--max-duration-ms",
        "5000",
        DRAIN_EXECUTOR=executor,
        DRAIN_JOB_GRACE_MS="1000",
        DRAIN_LEASE_MARGIN_MS="1500",  # a lease of 7.5 s, renewed every 0.5 s
    )
    wait_for(lambda: ran(ledger))

    # A second server whose clock runs 45 s ahead: by its clock, the first
    # drain's lease lapsed long ago.
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=45))
    second = drain_now(QUEUE)
    monkeypatch.undo()
    assert first.wait(30) == 0

    holder = DrainRun.objects.exclude(pk=second.pk).get()
    assert second.status == DrainRun.Status.SKIPPED
    assert second.blocked_by == holder.public_id
    assert holder.status == DrainRun.Status.SUCCEEDED
    assert ran(ledger) == {job.id: 1}
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FINISHED
    assert_settled(rq_client, [job], [QUEUE])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_slow_failure_callback_after_the_hard_deadline_keeps_the_lease(
    start, rq_client, tmp_path, executor
):
    """The job is killed at the hard deadline; its on_failure takes longer than
    the lease's margin. The drain still lives, renewing its lease: a drain
    started meanwhile is skipped, and the callback runs once."""
    ledger = tmp_path / "ledger"
    job = RQQueue(QUEUE, connection=rq_client).enqueue(
        "tests.jobs.ledger_sleep",
        str(ledger),
        20_000,
        on_failure=Callback("tests.jobs.ledger_slow_failure"),
        meta={"ledger": str(ledger), "callback_ms": 4500},
    )
    first = start(
        "drain",
        "--max-duration-ms",
        "1000",
        DRAIN_EXECUTOR=executor,
        DRAIN_JOB_GRACE_MS="500",
        DRAIN_LEASE_MARGIN_MS="1500",  # first life: 3 s
    )
    wait_for(lambda: ran(ledger)[f"callback {job.id}"])
    # Past the lease's first life (3 s from its claim), while the callback
    # still runs (it began at the hard deadline, 1.5 s in).
    acquired = Lease.objects.get().acquired_at
    wait_for(lambda: timezone.now() >= acquired + timedelta(seconds=3.5))
    assert first.poll() is None, "the callback should still be running"
    second = drain_now(QUEUE)
    assert first.wait(30) == 1  # a job failed

    holder = DrainRun.objects.exclude(pk=second.pk).get()
    assert second.status == DrainRun.Status.SKIPPED
    assert holder.status == DrainRun.Status.WITH_FAILURES
    assert ran(ledger) == {job.id: 1, f"callback {job.id}": 1}
    assert failed_as_abandoned(rq_client, job)
    assert_settled(rq_client, [job], [QUEUE])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_drain_that_lost_its_lease_stops_and_keeps_the_takers_verdict(
    start, rq_client, tmp_path, executor
):
    ledger = tmp_path / "ledger"
    queue = RQQueue(QUEUE, connection=rq_client)
    jobs = [
        queue.enqueue("tests.jobs.ledger_sleep", str(ledger), 700) for _ in range(6)
    ]
    holder_proc = start(
        "drain",
        "--max-duration-ms",
        "20000",
        DRAIN_EXECUTOR=executor,
        DRAIN_JOB_GRACE_MS="500",
        DRAIN_LEASE_MARGIN_MS="1500",  # renewed every 0.5 s
    )
    wait_for(lambda: ran(ledger))
    # Another drain takes the lease over and declares the holder dead.
    taker = uuid.uuid4()
    Lease.objects.update(holder=taker, expires_at=timezone.now() + timedelta(hours=1))
    holder = DrainRun.objects.get(status=DrainRun.Status.RUNNING)
    assert holder.mark_abandoned(note="taken over by the test")
    holder_proc.wait(30)

    holder.refresh_from_db()
    assert holder.status == DrainRun.Status.ABANDONED
    assert holder.error == "taken over by the test"
    # It stopped taking jobs: what it had not started is back on the queue.
    done = ran(ledger)
    assert 1 <= len(done) < len(jobs)
    assert set(done.values()) == {1}
    assert rq_client.llen(f"rq:queue:{QUEUE}") == len(jobs) - len(done)
    assert (
        StartedJobRegistry(QUEUE, connection=rq_client).get_job_ids(cleanup=False) == []
    )
    assert Lease.objects.get().holder == taker

    # The taker finishes; the next drain settles the rest.
    Lease.objects.update(holder=None, expires_at=timezone.now())
    drain_now(QUEUE)
    assert ran(ledger) == {job.id: 1 for job in jobs}
    assert_settled(rq_client, jobs, [QUEUE])


# --- item 3: Redis goes away mid-drain -----------------------------------------


class OutageProxy(FaultProxy):
    """The fault proxy, plus outages: while down, every connection is cut and
    every new one closed at once (what a client sees when Redis is gone)."""

    down = False

    def _serve(self, client: socket.socket) -> None:
        if self.down:
            client.close()
            return
        super()._serve(client)

    def outage(self, seconds: float) -> threading.Thread:
        self.down = True
        self.drop_connections()

        def end() -> None:
            time.sleep(seconds)
            self.down = False

        thread = threading.Thread(target=end, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def outage_proxy(redis_server) -> Iterator[OutageProxy]:
    proxy = OutageProxy(redis_server.port)
    url = proxy.url(redis_server.password)
    os.environ["REDIS_URL"] = url
    settings.REDIS_URL = url
    try:
        yield proxy
    finally:
        proxy.close()
        os.environ["REDIS_URL"] = settings.REDIS_URL = redis_server.url()


@pytest.mark.parametrize(("executor", "outage_s"), [("rq", 3), ("lean", 8)])
def test_a_redis_outage_mid_drain_leaves_no_job_started_after_the_next_drain(
    start, outage_proxy, rq_client, tmp_path, executor, outage_s
):
    ledger = tmp_path / "ledger"
    long_job = RQQueue(QUEUE, connection=rq_client).enqueue(
        "tests.jobs.ledger_sleep", str(ledger), 2000
    )
    short = RQQueue(OTHER, connection=rq_client)
    short_jobs = [
        short.enqueue("tests.jobs.ledger_sleep", str(ledger), 300) for _ in range(8)
    ]
    jobs = [long_job, *short_jobs]
    proc = start(
        "drain",
        "--max-duration-ms",
        "5000",
        "--queue",
        QUEUE,
        "--queue",
        OTHER,
        DRAIN_EXECUTOR=executor,
        DRAIN_JOB_GRACE_MS="1000",
        DRAIN_LEASE_MARGIN_MS="1500",
    )
    wait_for(lambda: long_job.id in ran(ledger) and len(ran(ledger)) >= 2)
    ended = outage_proxy.outage(outage_s)
    proc.wait(60)
    ended.join()

    # Redis is back: the next drains settle what the failed one left and run
    # the rest (the second finds it all done).
    drain_now(QUEUE, OTHER)
    drain_now(QUEUE, OTHER)

    assert ran(ledger) == {job.id: 1 for job in jobs}
    for job in jobs:  # finished, or failed as abandoned: never run twice
        status = Job.fetch(job.id, connection=rq_client).get_status()
        assert status == JobStatus.FINISHED or failed_as_abandoned(rq_client, job)
    assert_settled(rq_client, jobs, [QUEUE, OTHER])


# --- item 4: a killed supervisor --------------------------------------------


def busy_row() -> WorkerProcess | None:
    return WorkerProcess.objects.filter(state=WorkerProcess.State.BUSY).first()


@pytest.mark.parametrize(
    ("executor", "recoverer"), [("lean", "drain"), ("rq", "drain"), ("rq", "work")]
)
def test_a_killed_supervisors_job_is_retried_once_when_its_heartbeat_is_stale(
    start, rq_client, tmp_path, executor, recoverer
):
    ledger = tmp_path / "ledger"
    job = RQQueue(QUEUE, connection=rq_client).enqueue(
        "tests.jobs.ledger_sleep_first_run",
        str(ledger),
        60_000,
        retry=Retry(max=1),
    )
    supervisor = start(
        "work", "--role", "dedicated", "--queue", QUEUE, DRAIN_EXECUTOR=executor
    )
    wait_for(lambda: ran(ledger))
    row = wait_for(busy_row)
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait()
    # Its worker dies with it (PR_SET_PDEATHSIG): no orphan runs the job on.
    wait_for(lambda: not alive(row.pid), timeout=10)

    # While its heartbeat is fresh, nobody takes it for dead.
    drain_now(QUEUE)
    assert ran(ledger) == {job.id: 1}
    held = Job.fetch(job.id, connection=rq_client).get_status()
    assert held not in (JobStatus.FINISHED, JobStatus.FAILED)

    # Three heartbeats missed (as if 4 minutes had passed).
    WorkerProcess.objects.filter(pk=row.pk).update(
        heartbeat=F("heartbeat") - timedelta(minutes=4)
    )
    if recoverer == "drain":
        drain_now(QUEUE)
    else:  # another supervisor notices on start, and runs the retry itself
        other = start(
            "work", "--role", "dedicated", "--queue", QUEUE, DRAIN_EXECUTOR=executor
        )
        wait_for(lambda: ran(ledger)[job.id] == 2)
        wait_for(
            lambda: (
                Job.fetch(job.id, connection=rq_client).get_status()
                == JobStatus.FINISHED
            )
        )
        other.send_signal(signal.SIGTERM)
        assert other.wait(30) == 0

    # Retried per its Retry (max=1): twice in all, and never again.
    assert ran(ledger) == {job.id: 2}
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FINISHED
    row.refresh_from_db()
    assert row.recovered_at is not None
    assert row.state == WorkerProcess.State.CRASHED
    drain_now(QUEUE)
    assert ran(ledger) == {job.id: 2}
    assert_settled(rq_client, [job], [QUEUE])
