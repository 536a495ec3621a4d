"""Live queue depths for the admin, at four Redis commands per queue.

RQ's own counters (`registry.count`, `get_job_ids()`, django-rq's stats page)
run registry cleanup on every read: ~15 commands per queue per page view on a
Redis billed per command. Here one pipeline sends exactly LLEN + three ZCARDs
per queue and nothing else: no cleanup, no handshake (see ops/usage/redis_client.py).
The numbers are what is in Redis right now; a started job whose worker died
stays counted as started until a drain (or an RQ worker) cleans it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rq.registry import FailedJobRegistry, StartedJobRegistry

from ops.models import Source
from ops.queues import list_key, scheduled_key
from ops.usage import incidents

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
    # Connection and timeout errors, but also a ResponseError such as the
    # provider's "max requests limit exceeded": the admin page must still
    # render (without numbers) when Redis is down or the quota is spent.
    calls = [
        call
        for name in names
        for call in (
            ("llen", list_key(name)),
            ("zcard", scheduled_key(name)),
            ("zcard", started_key(name)),
            ("zcard", failed_key(name)),
        )
    ]
    with incidents.guarded_read(source) as read:
        if read.client is not None:
            # One pipeline; as a quota incident's probe, 1 command first.
            replies = read.execute(calls)
    if read.problem():
        return QueueDepths(redis_commands=read.meter.billed, error=read.problem())
    per = COMMANDS_PER_QUEUE
    by_queue = {
        name: QueueDepth(*(int(n) for n in replies[i * per : (i + 1) * per]))
        for i, name in enumerate(names)
    }
    return QueueDepths(by_queue=by_queue, redis_commands=read.meter.billed)
