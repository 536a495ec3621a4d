"""A lean consumer killed at each step of its path loses no job and runs none
twice: the claim list (ops/engine/claims.py) says what it held.

Each test runs the executor in a forked child with its own Redis connection,
kills it (SIGKILL, or os._exit where the step is inside our code), then settles
its claim list as the engine does and runs the queue again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job, JobStatus

from ops.engine import claims
from ops.engine.lean_worker import LeanExecutor

pytestmark = pytest.mark.django_db

QUEUE = "batch-jobs"
OWNER = "crash-test"
KEY = claims.claim_key(OWNER)


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def executor(client: redis.Redis, report: Callable[[str], None]) -> LeanExecutor:
    return LeanExecutor(
        client=client,
        queue_name=QUEUE,
        worker_name=OWNER,
        claim_key=KEY,
        report=report,
    )


def in_child(
    redis_url: str, body: Callable[[LeanExecutor], None]
) -> tuple[int, Report]:
    """Fork; the child builds an executor on a fresh connection and runs
    `body(executor)`, reporting lines on a pipe. Returns (pid, lines so far)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        out = os.fdopen(writer, "w", buffering=1)
        try:
            client = redis.Redis.from_url(redis_url)
            body(executor(client, lambda line: out.write(line + "\n")))
        finally:
            os._exit(0)
    os.close(writer)
    return pid, _lines(reader)


class Report(list[str]):
    """The child's report lines, read in the background until it exits."""

    thread: threading.Thread


def _lines(reader: int) -> Report:
    lines = Report()
    stream = os.fdopen(reader, "r")

    def pump() -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    lines.thread = threading.Thread(target=pump, daemon=True)
    lines.thread.start()
    return lines


def wait_for(lines: list[str], prefix: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            if line.startswith(prefix):
                return line
        time.sleep(0.01)
    raise AssertionError(f"no line {prefix!r} in {lines}")


def kill(pid: int, lines: Report | None = None) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if lines is not None:
        # Every line the child wrote before it died, as the engine would read
        # them: the pipe ends when the child is gone.
        lines.thread.join(5)


def enqueue(rq_client, *args, **kwargs) -> Job:
    return RQQueue(QUEUE, connection=rq_client).enqueue(*args, **kwargs)


def drain_rest(rq_client) -> None:
    executor(rq_client, lambda line: None).run()


def test_killed_during_a_job_it_fails_that_job_and_requeues_the_rest(
    redis_server, rq_client, tmp_path
):
    counter = tmp_path / "runs"
    first = enqueue(rq_client, "tests.jobs.count_then_sleep", str(counter), 30_000)
    rest = [
        enqueue(rq_client, "tests.jobs.count_run", str(counter), "r") for _ in range(3)
    ]
    pid, lines = in_child(redis_server.url(), LeanExecutor.run)
    wait_for(lines, f"start {first.id}")
    while runs(counter) < 1:
        time.sleep(0.01)
    kill(pid, lines)

    settled = claims.recover(
        rq_client, QUEUE, KEY, running=first.id, reason="killed in a test"
    )
    assert settled.abandoned == [first.id]
    assert settled.requeued == [j.id for j in rest]
    failed = Job.fetch(first.id, connection=rq_client)
    assert failed.get_status() == JobStatus.FAILED
    assert "AbandonedJobError" in failed.exc_info
    assert RQQueue(QUEUE, connection=rq_client).get_job_ids() == [j.id for j in rest]
    assert not rq_client.exists(KEY)

    drain_rest(rq_client)
    assert runs(counter) == 4  # the sleeper once, each of the rest once


def test_killed_during_a_job_with_retries_left_it_is_retried(
    redis_server, rq_client, tmp_path
):
    counter = tmp_path / "runs"
    job = enqueue(
        rq_client,
        "tests.jobs.count_then_sleep",
        str(counter),
        30_000,
        retry=Retry(max=1),
    )
    pid, lines = in_child(redis_server.url(), LeanExecutor.run)
    wait_for(lines, f"start {job.id}")
    kill(pid, lines)
    claims.recover(rq_client, QUEUE, KEY, running=job.id, reason="killed in a test")
    again = Job.fetch(job.id, connection=rq_client)
    assert again.get_status() == JobStatus.QUEUED
    assert again.retries_left == 0
    assert RQQueue(QUEUE, connection=rq_client).get_job_ids() == [job.id]


def test_killed_after_the_claim_before_any_job_nothing_is_lost(
    redis_server, rq_client, tmp_path
):
    counter = tmp_path / "runs"
    jobs = [
        enqueue(rq_client, "tests.jobs.count_run", str(counter), str(i))
        for i in range(4)
    ]

    def claim_then_die(ex: LeanExecutor) -> None:
        ex._claim(10)
        os.kill(os.getpid(), signal.SIGKILL)

    pid, _ = in_child(redis_server.url(), claim_then_die)
    os.waitpid(pid, 0)
    assert RQQueue(QUEUE, connection=rq_client).count == 0  # all claimed
    assert rq_client.llen(KEY) == 4

    # The engine saw no "start" line: nothing was running.
    settled = claims.recover(rq_client, QUEUE, KEY, running=None, reason="test")
    assert settled.requeued == [j.id for j in jobs]
    assert RQQueue(QUEUE, connection=rq_client).get_job_ids() == [j.id for j in jobs]
    drain_rest(rq_client)
    assert runs(counter) == 4


def test_killed_after_a_job_ran_but_before_its_outcome_was_written_it_is_not_rerun(
    redis_server, rq_client, tmp_path
):
    counter = tmp_path / "runs"
    job = enqueue(rq_client, "tests.jobs.count_run", str(counter), "once")
    later = enqueue(rq_client, "tests.jobs.count_run", str(counter), "later")

    def die_before_writing(ex: LeanExecutor) -> None:
        ex._send = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        ex.run()

    pid, lines = in_child(redis_server.url(), die_before_writing)
    os.waitpid(pid, 0)
    assert runs(counter) == 1
    wait_for(lines, f"start {job.id}")
    # The job ran; its outcome never reached Redis. Like rq with a worker that
    # died, it is failed as abandoned, never run again.
    settled = claims.recover(rq_client, QUEUE, KEY, running=job.id, reason="test")
    assert settled.abandoned == [job.id]
    assert settled.requeued == [later.id]
    drain_rest(rq_client)
    assert runs(counter) == 2
    assert Job.fetch(job.id, connection=rq_client).get_status() == JobStatus.FAILED
    assert Job.fetch(later.id, connection=rq_client).get_status() == JobStatus.FINISHED


def test_killed_between_two_jobs_the_done_one_stays_done(
    redis_server, rq_client, tmp_path
):
    counter = tmp_path / "runs"
    done = enqueue(rq_client, "tests.jobs.count_run", str(counter), "done")
    sleeper = enqueue(rq_client, "tests.jobs.count_then_sleep", str(counter), 30_000)
    pid, lines = in_child(redis_server.url(), LeanExecutor.run)
    wait_for(lines, f"end {done.id}")
    kill(pid, lines)
    running = sleeper.id if f"start {sleeper.id}" in lines else None
    settled = claims.recover(rq_client, QUEUE, KEY, running=running, reason="test")
    assert done.id in settled.done
    finished = Job.fetch(done.id, connection=rq_client)
    assert finished.get_status() == JobStatus.FINISHED
    # Its finished-registry entry, deferred to the end of the batch, was
    # added by the recovery.
    assert done.id in finished.finished_job_registry.get_job_ids()
    drain_rest(rq_client)
    ran = counter.read_text().splitlines()
    assert ran.count("done") == 1
    # The sleeper ran once: after the recovery if it had not started, or it
    # was the running job and is failed as abandoned (then it may or may not
    # have begun before the kill; it is never run again).
    if running is None:
        assert ran.count("sleeper") == 1
    else:
        assert ran.count("sleeper") <= 1
        again = Job.fetch(sleeper.id, connection=rq_client)
        assert again.get_status() == JobStatus.FAILED


def test_a_dead_drain_with_no_report_takes_the_first_unfinished_job_as_running(
    redis_server, rq_client, tmp_path
):
    counter = tmp_path / "runs"
    done = enqueue(rq_client, "tests.jobs.count_run", str(counter), "done")
    sleeper = enqueue(rq_client, "tests.jobs.count_then_sleep", str(counter), 30_000)
    waiting = enqueue(rq_client, "tests.jobs.count_run", str(counter), "waiting")
    pid, lines = in_child(redis_server.url(), LeanExecutor.run)
    wait_for(lines, f"start {sleeper.id}")
    while runs(counter) < 2:  # the sleeper is running, not only announced
        time.sleep(0.01)
    kill(pid, lines)
    settled = claims.recover(
        rq_client, QUEUE, KEY, running=claims.UNKNOWN, reason="drain died"
    )
    assert settled.done == [done.id]
    assert settled.abandoned == [sleeper.id]
    assert settled.requeued == [waiting.id]
    drain_rest(rq_client)
    assert runs(counter) == 3


def test_recovery_of_an_empty_claim_list_costs_one_command(wire):
    client = redis.Redis.from_url(os.environ["REDIS_URL"], protocol=2, driver_info=None)
    wire.reset()
    assert claims.recover(client, QUEUE, KEY, running=None, reason="x").requeued == []
    assert wire.billed() == 1
    client.close()
