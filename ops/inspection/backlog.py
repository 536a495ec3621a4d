"""Backlog per queue for the home page: depth and age of the oldest queued job,
at one Redis command per queue.

Depth alone is an LLEN, the age of the head job a LINDEX and an HGET
(ops/scheduling/alarm.py's `backlog_ages`): three commands a queue. One SORT
does both — `SORT rq:queue:<q> BY nosort LIMIT 0 <cap + 1> GET
rq:job:*->enqueued_at` returns, in list order, the enqueue time of the first
`cap + 1` jobs: the first is the head (the oldest, the next a worker takes),
and their number is the depth up to the cap. A deeper queue reads as "more
than `cap`" (its exact depth is on the Queues page, 4 commands a queue). The
lean executor claims with the same SORT form (docs/executor.md). SORT only
reads here: no STORE.

The reply carries at most `cap + 1` timestamps per queue (~30 KB at the
default cap): a bounded read, whatever the backlog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone
from rq.job import Job
from rq.utils import utcparse

from ops.queues import list_key
from ops.usage import incidents

COMMANDS_PER_QUEUE = 1
# Depths up to this are exact; beyond, "more than DEPTH_CAP".
DEPTH_CAP = 1000
ENQUEUED_AT = Job.redis_job_namespace_prefix + "*->enqueued_at"


@dataclass(frozen=True)
class QueueBacklog:
    depth: int
    # True when the queue holds more than `depth` (= DEPTH_CAP) jobs.
    more: bool
    # Seconds the head job has waited; None when the queue is empty. 0 when
    # its hash is gone or undated (an id with no job behind it).
    oldest_s: int | None


@dataclass(frozen=True)
class Backlog:
    by_queue: dict[str, QueueBacklog] = field(default_factory=dict)
    redis_commands: int = 0
    # Empty when the read worked; otherwise why there are no figures.
    error: str = ""

    @property
    def available(self) -> bool:
        return not self.error


def _age(raw: object, now: datetime) -> int:
    if not raw:
        return 0
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        at = utcparse(text)
    except ValueError:
        return 0
    return max(0, int((now - at).total_seconds()))


def read_backlog(
    names: list[str], *, source: str, now: datetime | None = None
) -> Backlog:
    """Depth (exact up to DEPTH_CAP) and oldest-job age of `names`, one SORT
    per queue in one pipeline. Never raises for Redis trouble."""
    if not names:
        return Backlog()
    now = now or timezone.now()
    calls = [
        ("sort", list_key(name), 0, DEPTH_CAP + 1, "nosort", [ENQUEUED_AT])
        for name in names
    ]
    replies: list[list[object]] = []
    with incidents.guarded_read(source) as read:
        if read.client is not None:
            # One pipeline; as a quota incident's probe, 1 command first.
            replies = read.execute(calls)
    if read.problem():
        return Backlog(redis_commands=read.meter.billed, error=read.problem())
    by_queue = {}
    for name, stamps in zip(names, replies, strict=True):
        more = len(stamps) > DEPTH_CAP
        by_queue[name] = QueueBacklog(
            depth=min(len(stamps), DEPTH_CAP),
            more=more,
            oldest_s=_age(stamps[0], now) if stamps else None,
        )
    return Backlog(by_queue=by_queue, redis_commands=read.meter.billed)
