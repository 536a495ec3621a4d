"""Promoting due scheduled jobs (rq:scheduled:<q>) onto their queues without
RQ's scheduler process, which polls Redis every second (~900 commands a minute).
Used by the drain engine and by the always-on workers' supervisor."""

from __future__ import annotations

import time

import redis
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.utils import as_text

from ops.queues import rq_queue, scheduled_key


def promote(client: redis.Redis, name: str, job_ids: list[str]) -> int:
    """Move these due jobs of queue `name` onto it, as RQ's scheduler does, and
    only the ones still in the registry: two processes promoting the same jobs
    at the same moment (two supervisors, a supervisor and a drain) enqueue
    each job once.

    Exclusion without Lua: WATCH the registry, keep the ids it still holds
    (ZMSCORE), then enqueue them and take them off in one transaction; if
    another promoter changed the registry meanwhile, EXEC fails and the ids are
    looked at again. Cost: WATCH + ZMSCORE + 1 (fetch) + a MULTI/EXEC pipeline
    of ~3 commands per job; one more round when it lost a race."""
    queue = rq_queue(name, client)
    registry = ScheduledJobRegistry(name, connection=client)
    for _ in range(5):
        with client.pipeline() as pipe:
            try:
                pipe.watch(registry.key)
                scores = pipe.zmscore(registry.key, job_ids) if job_ids else []
                held = [
                    j for j, s in zip(job_ids, scores, strict=True) if s is not None
                ]
                if not held:
                    pipe.unwatch()
                    return 0
                jobs = Job.fetch_many(held, connection=client)
                pipe.multi()
                for job in jobs:
                    if job is not None:
                        queue._enqueue_job(
                            job, pipeline=pipe, at_front=job.should_enqueue_at_front()
                        )
                for job_id in held:
                    registry.remove(job_id, pipeline=pipe)
                pipe.execute()
            except redis.WatchError:
                continue  # another promoter moved some of them: look again
        return sum(1 for job in jobs if job is not None)
    return 0


def promote_due(
    client: redis.Redis, names: list[str], now: float | None = None
) -> tuple[int, float | None]:
    """Promote every due job of `names`; return (promoted, next due time or None).

    Cost: 1 command (EXISTS) when nothing is scheduled; 1 + one per queue (the
    earliest entry of each registry) when something is scheduled but not due;
    plus, for queues with due jobs, their ids, the promotion and a re-read."""
    now = time.time() if now is None else now
    keys = [scheduled_key(n) for n in names]
    if not names or client.exists(*keys) == 0:
        return 0, None
    earliest = _earliest(client, names)
    due_names = [n for n in names if earliest[n] is not None and earliest[n] <= now]
    promoted = 0
    if due_names:
        with client.pipeline(transaction=False) as pipe:
            for name in due_names:
                pipe.zrangebyscore(scheduled_key(name), 0, now)
            replies = pipe.execute()
        for name, due in zip(due_names, replies, strict=True):
            if due:
                promoted += promote(client, name, [as_text(j) for j in due])
        earliest.update(_earliest(client, due_names))
    upcoming = [t for t in earliest.values() if t is not None]
    return promoted, (min(upcoming) if upcoming else None)


def _earliest(client: redis.Redis, names: list[str]) -> dict[str, float | None]:
    """Score of the earliest scheduled job per queue: one pipeline, 1 per queue."""
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zrange(scheduled_key(name), 0, 0, withscores=True)
        firsts = pipe.execute()
    return {
        name: (entries[0][1] if entries else None)
        for name, entries in zip(names, firsts, strict=True)
    }
