"""Failing the jobs a dead drain process left behind, the way RQ itself does.

RQ fails a job whose worker died only when a later worker's registry maintenance
finds its StartedJobRegistry entry expired (job timeout + 60 s later). A drain
knows sooner: when one of its child processes dies mid-job, or when the next
drain finds a dead drain's lease expired. Then the jobs started by that drain's
workers (their RQ worker names share the drain's prefix) are failed at once with
AbandonedJobError (or retried, if they were enqueued with Retry), so they show
in the failed registry instead of sitting "started" for minutes.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import redis
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.timeouts import UnixSignalDeathPenalty
from rq.utils import as_text, parse_composite_key
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from ops.queues import rq_queue

log = logging.getLogger(__name__)


def fail_started_jobs(
    client: redis.Redis,
    queue_name: str,
    *,
    worker_prefix: str,
    reason: str,
    exact: bool = False,
) -> list[str]:
    """Fail (or retry) every job of `queue_name` started by a worker whose name
    starts with `worker_prefix` (`exact`: is `worker_prefix` — an always-on
    worker's name "...0.1" is a prefix of its tenth successor's "...0.10").
    Returns the ids of the jobs it handled.

    Cost: 1 command when nothing was started, else 2 + ~8 per job.
    """
    registry = StartedJobRegistry(queue_name, connection=client)
    # ZRANGE directly: registry.get_job_ids() would run cleanup on read.
    entries = [as_text(e) for e in client.zrange(registry.key, 0, -1)]
    if not entries:
        return []
    parsed = [parse_composite_key(e) for e in entries]
    with client.pipeline(transaction=False) as pipe:
        for job_id, execution_id in parsed:
            pipe.hget(f"rq:execution:{job_id}:{execution_id}", "worker_name")
        worker_names = pipe.execute()

    queue = rq_queue(queue_name, client)
    handled: list[str] = []
    for entry, (job_id, _), worker in zip(entries, parsed, worker_names, strict=True):
        worker_name = as_text(worker) if worker else ""
        if worker_name != worker_prefix and (
            exact or not worker_name.startswith(worker_prefix)
        ):
            continue
        try:
            job = Job.fetch(job_id, connection=client)
        except NoSuchJobError:
            client.zrem(registry.key, entry)
            continue
        abandon(
            client,
            queue,
            job,
            reason=reason,
            worker_name=worker_name,
            remove=lambda pipe, entry=entry: pipe.zrem(registry.key, entry),
        )
        log.warning("job %s of %s: %s", job_id, queue_name, reason)
        handled.append(job_id)
    return handled


def abandon(
    client: redis.Redis,
    queue: Any,
    job: Job,
    *,
    reason: str,
    worker_name: str,
    remove: Callable[[Any], Any] | None = None,
) -> bool:
    """Fail `job`, whose worker died while running it, as RQ's registry
    maintenance does: its failure callback with AbandonedJobError, then a retry
    when it has retries left, else the failed registry and its dependents.
    `remove(pipe)` adds what takes the job off its holder's books to the same
    transaction. True when the job was retried."""
    try:
        job.execute_failure_callback(
            UnixSignalDeathPenalty,
            AbandonedJobError,
            AbandonedJobError(reason),
            traceback.extract_stack(),
        )
    except Exception:  # a user callback must not stop the recovery
        log.exception("failure callback of job %s raised", job.id)
    retry = bool(job.retries_left and job.retries_left > 0)
    with client.pipeline() as pipe:
        if retry:
            job.retry(queue, pipe)
        else:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job._handle_failure(
                f"Moved to FailedJobRegistry, due to AbandonedJobError: {reason}",
                pipe,
                worker_name=worker_name,
            )
        if remove is not None:
            remove(pipe)
        pipe.execute()
    if not retry:
        queue.enqueue_dependents(job, refresh_job_status=False)
    return retry


def forget_worker(
    client: redis.Redis, worker_name: str, queue_names: list[str]
) -> None:
    """Drop a dead worker's registration so the console does not list it."""
    key = f"rq:worker:{worker_name}"
    with client.pipeline(transaction=False) as pipe:
        pipe.srem(REDIS_WORKER_KEYS, key)
        for name in queue_names:
            pipe.srem(WORKERS_BY_QUEUE_KEY % name, key)
        pipe.delete(key)
        pipe.execute()


def forget_workers_named(
    client: redis.Redis, prefix: str, queue_names: list[str]
) -> list[str]:
    """Drop every registration in RQ's worker registry whose worker name
    starts with `prefix` (a dead drain's workers). 1 command when none."""
    key_prefix = f"rq:worker:{prefix}"
    names = [
        as_text(k)[len("rq:worker:") :]
        for k in client.smembers(REDIS_WORKER_KEYS)
        if as_text(k).startswith(key_prefix)
    ]
    for name in names:
        forget_worker(client, name, queue_names)
    return names


# RQ waits this long (between two sightings) before touching a job found in a
# queue's intermediate list, so a live worker between its LMOVE and the job's
# registration is never disturbed.
STRANDED_AFTER_S = 60


def requeue_stranded(client: redis.Redis, queue_name: str) -> list[str]:
    """Put back on its queue every job stranded in the queue's intermediate list.

    RQ moves a job to `rq:queue:<q>:intermediate` (LMOVE) before registering
    it as started. A consumer that dies or loses Redis in between leaves the job
    there: not queued, not started. Such a job never began to run, so it is
    requeued (at the front) rather than failed — RQ's own cleanup would fail
    it as "stuck" — once it has been seen there for STRANDED_AFTER_S.
    """
    queue = rq_queue(queue_name, client)
    intermediate = IntermediateQueue(queue.key, client)
    job_ids = [as_text(j) for j in client.lrange(intermediate.key, 0, -1)]
    if not job_ids:
        return []
    started_key = StartedJobRegistry(queue_name, connection=client).key
    running = {
        parse_composite_key(as_text(entry))[0]
        for entry in client.zrange(started_key, 0, -1)
    }
    requeued = []
    for job_id in job_ids:
        if job_id in running:
            continue  # registered: a worker is running it
        if intermediate.set_first_seen(job_id):
            continue  # first sighting: wait for the next drain
        if not intermediate.should_be_cleaned_up(job_id):
            continue
        with client.pipeline() as pipe:
            pipe.lrem(intermediate.key, 1, job_id)
            pipe.lpush(queue.key, job_id)
            pipe.delete(intermediate.get_first_seen_key(job_id))
            pipe.execute()
        log.warning(
            "job %s of %s was stranded between queue and worker: requeued",
            job_id,
            queue_name,
        )
        requeued.append(job_id)
    return requeued
