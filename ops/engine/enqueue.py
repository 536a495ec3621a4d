"""Putting jobs on queues through the project (canaries, demos, benchmarks)."""

from __future__ import annotations

from rq import Queue as RQQueue

from ops.jobs import KINDS
from ops.models import Source
from ops.queues import rq_queue
from ops.usage import incidents
from ops.usage.redis_client import CommandMeter, close_client, make_client

MAX_COUNT = 100_000
# enqueue_many sends one pipeline per batch: ~3 commands per job instead of ~8.
_BATCH = 500


def enqueue_canaries(
    queue_name: str,
    *,
    kind: str,
    count: int,
    sleep_ms: int = 100,
    timeout: int | None = None,
) -> list[str]:
    func = KINDS[kind]
    args = (sleep_ms,) if kind == "sleep" else ()
    client = make_client(CommandMeter(Source.ENQUEUE))
    try:
        with incidents.noting_quota_errors(Source.ENQUEUE):
            queue = rq_queue(queue_name, client)
            ids: list[str] = []
            for start in range(0, count, _BATCH):
                batch = [
                    RQQueue.prepare_data(func, args=args, timeout=timeout)
                    for _ in range(min(_BATCH, count - start))
                ]
                ids.extend(job.id for job in queue.enqueue_many(batch))
            return ids
    finally:
        close_client(client)
