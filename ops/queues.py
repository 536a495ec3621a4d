"""The queues the console drains: names from ops.Queue rows, keys from RQ."""

from __future__ import annotations

import redis
from rq import Queue as RQQueue
from rq.intermediate_queue import IntermediateQueue
from rq.registry import ScheduledJobRegistry

from ops.models import Queue


def enabled_queue_names() -> list[str]:
    """Enabled queues in drain order (priority, then name)."""
    return list(
        Queue.objects.filter(enabled=True)
        .order_by("priority", "name")
        .values_list("name", flat=True)
    )


def all_queue_names() -> list[str]:
    return list(
        Queue.objects.order_by("priority", "name").values_list("name", flat=True)
    )


def rq_queue(name: str, client: redis.Redis) -> RQQueue:
    return RQQueue(name, connection=client)


def list_key(name: str) -> str:
    return RQQueue.redis_queue_namespace_prefix + name


def scheduled_key(name: str) -> str:
    return ScheduledJobRegistry.key_template.format(name)


def intermediate_key(name: str) -> str:
    return IntermediateQueue.get_intermediate_queue_key(list_key(name))


def pending_keys(names: list[str]) -> list[str]:
    """The keys whose existence means "there is work": each queue's list, its
    scheduled-job registry, and its intermediate list (jobs a consumer popped
    but never registered; see ops/engine/recovery.py). Redis deletes an empty list or
    sorted set, so one EXISTS over all of them is the whole idle check."""
    return (
        [list_key(n) for n in names]
        + [scheduled_key(n) for n in names]
        + [intermediate_key(n) for n in names]
    )
