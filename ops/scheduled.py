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
    """Move these due jobs of queue `name` onto it, as RQ's scheduler does.

    Cost: 1 (fetch) + a MULTI/EXEC pipeline of ~3 commands per job."""
    queue = rq_queue(name, client)
    registry = ScheduledJobRegistry(name, connection=client)
    jobs = Job.fetch_many(job_ids, connection=client)
    with client.pipeline() as pipe:
        for job in jobs:
            if job is not None:
                queue._enqueue_job(
                    job, pipeline=pipe, at_front=job.should_enqueue_at_front()
                )
        for job_id in job_ids:
            registry.remove(job_id, pipeline=pipe)
        pipe.execute()
    return sum(1 for job in jobs if job is not None)


def promote_due(
    client: redis.Redis, names: list[str], now: float | None = None
) -> tuple[int, float | None]:
    """Promote every due job of `names`; return (promoted, next due time or None).

    Cost: 1 command (EXISTS) when nothing is scheduled; else one pipeline of
    2 per queue (due ids, earliest remaining) plus the promotions."""
    now = time.time() if now is None else now
    keys = [scheduled_key(n) for n in names]
    if not names or client.exists(*keys) == 0:
        return 0, None
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zrangebyscore(key, 0, now)
        replies = pipe.execute()
    promoted = 0
    for name, due in zip(names, replies, strict=True):
        if due:
            promoted += promote(client, name, [as_text(j) for j in due])
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zrange(key, 0, 0, withscores=True)
        firsts = pipe.execute()
    upcoming = [entries[0][1] for entries in firsts if entries]
    return promoted, (min(upcoming) if upcoming else None)
