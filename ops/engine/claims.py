"""Claim lists: which jobs a lean consumer has taken off a queue, and putting
things right when that consumer dies.

The lean executor (ops/engine/lean_worker.py) claims a batch in one
transaction that copies the ids to `kaireon:claimed:<owner>` and trims them off
the queue, so a claimed job is always somewhere in Redis. Jobs run in claim
order, and each job's outcome is written before the next one starts. So when a
consumer dies, its claim list says exactly what it held:

* a job whose status is terminal (finished, failed, scheduled, ...) or whose
  hash is gone (result_ttl=0) is done; its registry entry, which the executor
  adds at the end of a batch, is added again (idempotent);
* a job back on its queue was retried by the executor: done;
* the job that was running — the engine knows it from the report, else it is
  the first unfinished one — is failed with AbandonedJobError, or retried if it
  has retries left, as RQ fails the job of a dead worker;
* the jobs after it never started: they go back to the front of their queue,
  in order, in the same transaction that drops the claim list.

Cost: 1 command (LRANGE) when the list is empty; else 2 round trips to read
(statuses, then LPOS for the unfinished ones) and one transaction to write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.utils import as_text, current_timestamp

from ops.engine.lean_worker import claim_key_for
from ops.engine.recovery import abandon
from ops.queues import rq_queue

log = logging.getLogger(__name__)


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


# `running=UNKNOWN`: nobody knows which claimed job was running (the whole
# drain died); the first unfinished one is taken to be it.
UNKNOWN = _Unknown()

_DONE = {
    JobStatus.FINISHED.value,
    JobStatus.FAILED.value,
    JobStatus.SCHEDULED.value,
    JobStatus.DEFERRED.value,
    JobStatus.STOPPED.value,
    JobStatus.CANCELED.value,
}


claim_key = claim_key_for


@dataclass
class Recovery:
    abandoned: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)


def recover(
    client: redis.Redis,
    queue_name: str | None,
    key: str,
    *,
    running: str | _Unknown | None,
    reason: str,
    worker_name: str = "",
) -> Recovery:
    """Settle the claim list `key` of a dead consumer of `queue_name` (None:
    the queue its jobs came from, for a worker serving several queues — a claim
    list only ever holds one queue's batch).

    `running`: the id of the job the consumer was running when it died, None
    when it was between jobs, UNKNOWN when nobody knows.
    """
    found = Recovery()
    ids = [as_text(i) for i in client.lrange(key, 0, -1)]
    if not ids:
        return found
    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(
                Job.key_for(job_id), "status", "result_ttl", "failure_ttl", "origin"
            )
        rows = pipe.execute()
    if queue_name is None:
        origins = [as_text(row[3]) for row in rows if row[3]]
        if not origins:  # every hash is gone: nothing left to settle
            client.delete(key)
            found.done = ids
            return found
        queue_name = origins[0]
    queue = rq_queue(queue_name, client)
    queued = [
        job_id
        for job_id, (status, *_) in zip(ids, rows, strict=True)
        if status is not None and as_text(status) not in _DONE
    ]
    on_queue: set[str] = set()
    if queued:
        with client.pipeline(transaction=False) as pipe:
            for job_id in queued:
                pipe.lpos(queue.key, job_id)
            on_queue = {
                j
                for j, pos in zip(queued, pipe.execute(), strict=True)
                if pos is not None
            }

    unfinished = [j for j in queued if j not in on_queue]
    if running is UNKNOWN:
        cut = 1 if unfinished else 0
    elif running is None or running not in unfinished:
        cut = 0
    else:
        cut = unfinished.index(running) + 1
    to_abandon, to_requeue = unfinished[:cut], unfinished[cut:]
    found.done = [j for j in ids if j not in unfinished]

    for job_id in to_abandon:
        try:
            job = Job.fetch(job_id, connection=client)
        except NoSuchJobError:
            continue
        abandon(client, queue, job, reason=reason, worker_name=worker_name)
        log.warning("job %s of %s: %s", job_id, queue_name, reason)
        found.abandoned.append(job_id)

    now = current_timestamp()
    finished = FinishedJobRegistry(queue_name, connection=client)
    failed = FailedJobRegistry(queue_name, connection=client)
    with client.pipeline(transaction=True) as pipe:
        # Registry entries the executor had not yet added (it adds them at the
        # end of each batch); ZADD again is harmless for those it had.
        for job_id, (status, result_ttl, failure_ttl, _) in zip(ids, rows, strict=True):
            state = as_text(status) if status is not None else None
            if state == JobStatus.FINISHED.value:
                ttl = int(result_ttl) if result_ttl else DEFAULT_RESULT_TTL
                if ttl != 0:
                    pipe.zadd(finished.key, {job_id: "+inf" if ttl < 0 else now + ttl})
            elif state == JobStatus.FAILED.value and job_id not in found.abandoned:
                ttl = int(failure_ttl) if failure_ttl else DEFAULT_FAILURE_TTL
                pipe.zadd(failed.key, {job_id: "+inf" if ttl < 0 else now + ttl})
        if to_requeue:
            pipe.lpush(queue.key, *reversed(to_requeue))
        pipe.delete(key)
        pipe.execute()
    found.requeued = to_requeue
    if to_requeue:
        log.warning(
            "%d job(s) of %s claimed by a dead consumer never started: requeued",
            len(to_requeue),
            queue_name,
        )
    return found
