"""Live queue depths for the admin, at four Redis commands per queue.

RQ's own counters (`registry.count`, `get_job_ids()`, django-rq's stats page)
run registry cleanup on every read: ~15 commands per queue per page view on a
Redis billed per command. Here one pipeline sends exactly LLEN + three ZCARDs
per queue and nothing else: no cleanup, no handshake (see ops/redis_client.py).
The numbers are what is in Redis right now; a started job whose worker died
stays counted as started until a drain (or an RQ worker) cleans it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from rq.registry import FailedJobRegistry, StartedJobRegistry

from ops import incidents
from ops.models import Source
from ops.queues import list_key, scheduled_key
from ops.quota_errors import is_quota_exhausted
from ops.redis_client import CommandMeter, close_client, make_client

COMMANDS_PER_QUEUE = 4


def started_key(name: str) -> str:
    return StartedJobRegistry.key_template.format(name)


def failed_key(name: str) -> str:
    return FailedJobRegistry.key_template.format(name)


@dataclass(frozen=True)
class QueueDepth:
    queued: int
    scheduled: int
    started: int
    failed: int


@dataclass(frozen=True)
class QueueDepths:
    by_queue: dict[str, QueueDepth] = field(default_factory=dict)
    # Billable commands this read sent (what the page cost on the Redis bill).
    redis_commands: int = 0
    # Empty when the read worked; otherwise why there are no numbers.
    error: str = ""

    @property
    def available(self) -> bool:
        return not self.error

    def get(self, name: str) -> QueueDepth | None:
        return self.by_queue.get(name)


def queue_depths(names: list[str], *, source: str = Source.CONSOLE) -> QueueDepths:
    """Depths of `names` in one pipeline; never raises for Redis trouble.

    `source` is what the commands are billed to in the usage table (admin pages:
    console; the cron status endpoint: api)."""
    if not names:
        return QueueDepths()  # no connection at all: nothing to read
    quota_gate = incidents.gate()
    if not quota_gate.allowed:
        return QueueDepths(error=quota_gate.refusal())
    meter = CommandMeter(source)
    client = make_client(meter)
    try:
        # transaction=False: a MULTI/EXEC pair would add two billed commands.
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(list_key(name))
                pipe.zcard(scheduled_key(name))
                pipe.zcard(started_key(name))
                pipe.zcard(failed_key(name))
            replies = pipe.execute()
    except redis.RedisError as exc:
        # Connection and timeout errors, but also a ResponseError such as the
        # provider's "max requests limit exceeded": the admin page must still
        # render (without numbers) when Redis is down or the quota is spent.
        if is_quota_exhausted(exc):
            incidents.note_quota_error(source, exc)
            error = f"the Redis command quota is exhausted ({exc})"
        else:
            error = f"{type(exc).__name__}: {exc}"
        return QueueDepths(redis_commands=meter.billed, error=error)
    finally:
        close_client(client)
    incidents.succeeded(quota_gate)
    per = COMMANDS_PER_QUEUE
    by_queue = {
        name: QueueDepth(*(int(n) for n in replies[i * per : (i + 1) * per]))
        for i, name in enumerate(names)
    }
    return QueueDepths(by_queue=by_queue, redis_commands=meter.billed)
