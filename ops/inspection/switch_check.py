"""Is it safe to move to another Redis now?

Switching Redis instances abandons every job still in the old database: queued,
popped but never registered (the intermediate list), scheduled, started and
deferred. The rule is "wait until drains return totalProcessed: 0 for
several consecutive ticks"; this check applies it and also looks at Redis
itself, because an empty streak says nothing about a job scheduled for
tomorrow or one enqueued a second ago.

Cost: one pipeline of 6 commands per queue (LLEN + LLEN + four ZCARDs, no
MULTI/EXEC) plus one SCARD of RQ's worker registry and one SMEMBERS of RQ's
queue registry (`rq:queues`, every queue any RQ client enqueued to): 6 x
queues + 2 billed commands. A queue in `rq:queues` that is not on the Queues
page is never drained: each one costs 6 more (a second pipeline, the same
six reads), and one that holds jobs blocks the switch and is listed, so that
an operator can register it. None of this runs on a drain tick: only this
check (the page, `manage.py redis_switch_check`) pays for it. RQ's
registry methods are not used: they clean up on every read,
which costs more and changes what is being looked at (see
ops/inspection/queue_stats.py).
Drains and always-on workers are read from the database, for free: a drain
running now, a drain or always-on worker that stopped holding jobs not yet
recovered (ops/engine/leftovers.py), each makes the switch unsafe, with what
to do (wait, or run a drain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from rq.queue import Queue as RQQueue
from rq.registry import DeferredJobRegistry
from rq.worker import Worker

from ops.engine.leftovers import worker_stale_after
from ops.inspection.queue_stats import failed_key, started_key
from ops.models import DrainRun, Queue, Source, WorkerProcess
from ops.queues import intermediate_key, list_key, scheduled_key
from ops.usage import incidents
from ops.usage.quota_errors import is_quota_exhausted

COMMANDS_PER_QUEUE = 6
EXTRA_COMMANDS = 2  # SCARD rq:workers, SMEMBERS rq:queues
COST_FORMULA = (
    f"{COMMANDS_PER_QUEUE} per queue + {EXTRA_COMMANDS}, + {COMMANDS_PER_QUEUE} "
    "per queue in rq:queues that is not on the Queues page"
)

# A supervisor reports its workers every minute; a row silent for longer than
# this belongs to a process (or host) that is gone without saying so. Wider than
# the console's own "live" window (ops/workers/consumers.py, 3 minutes) on purpose:
# calling a slow-reporting worker dead here would call an unsafe switch safe.
LIVE_WORKER_WINDOW = timedelta(minutes=10)

# How many of the latest drains the page and the JSON show.
RECENT_DRAINS = 10

# Finished drains that prove something about the queues. Skipped drains never
# looked; running ones have not finished looking. A run with failed jobs ran
# jobs: it is never empty, it breaks the streak.
EMPTY_STATUSES = (DrainRun.Status.SUCCEEDED, DrainRun.Status.DEADLINE)
FINISHED_STATUSES = (
    *EMPTY_STATUSES,
    DrainRun.Status.WITH_FAILURES,
    DrainRun.Status.FAILED,
    DrainRun.Status.ABANDONED,
)


def deferred_key(name: str) -> str:
    return DeferredJobRegistry.key_template.format(name)


class RedisProblem:
    """Why Redis could not be read (empty string: it was read)."""

    NONE = ""
    UNREACHABLE = "unreachable"  # connection refused, timeout, DNS, ...
    QUOTA = "quota"  # the provider's "max requests limit exceeded", or an open incident
    ERROR = "error"  # any other error reply (a key of the wrong type, ...)


@dataclass(frozen=True)
class QueuePending:
    """What one queue still holds in Redis."""

    enabled: bool
    queued: int
    intermediate: int
    scheduled: int
    started: int
    deferred: int
    failed: int
    # False: in rq:queues but not on the Queues page (no drain ever runs it).
    registered: bool = True

    # Everything a switch would abandon; failed jobs are history, not work.
    ABANDONED_FIELDS = ("queued", "intermediate", "scheduled", "started", "deferred")

    @property
    def would_be_abandoned(self) -> int:
        return sum(getattr(self, name) for name in self.ABANDONED_FIELDS)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "registered": self.registered,
            "queued": self.queued,
            "intermediate": self.intermediate,
            "scheduled": self.scheduled,
            "started": self.started,
            "deferred": self.deferred,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class DrainInStreak:
    """One of the latest drains, and what it means for the empty streak."""

    run: DrainRun
    role: str  # "empty", "breaks", "not counted", "before"
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "runId": str(self.run.public_id),
            "status": self.run.status,
            "started": self.run.started.isoformat(),
            "totalProcessed": self.run.total_processed,
            "role": self.role,
            "note": self.note,
        }


@dataclass(frozen=True)
class SwitchCheck:
    safe: bool
    reasons: list[str]
    # Failed jobs stay in the old Redis's failed registries: not a blocker.
    left_behind: list[str]
    consecutive_empty_drains: int
    required_empty_drains: int
    # The newest finished drain that was not empty (None: every one was).
    streak_broken_by: DrainRun | None
    recent_drains: list[DrainInStreak]
    # None when Redis could not be read: unknown is not the same as empty.
    pending: dict[str, QueuePending] | None
    # Queues in rq:queues, not on the Queues page, that hold jobs (failed
    # ones included); None when Redis could not be read.
    unregistered: dict[str, QueuePending] | None
    live_workers: list[WorkerProcess]
    rq_registered_workers: int | None
    redis_commands: int
    expected_redis_commands: int
    redis_problem: str = RedisProblem.NONE
    redis_error: str = ""
    checked_at: datetime = field(default_factory=timezone.now)
    # Queues the check read: on the Queues page, and in rq:queues only.
    registered_queues: int = 0
    unknown_queues: int = 0

    @property
    def redis_unreachable(self) -> bool:
        return self.redis_problem == RedisProblem.UNREACHABLE

    @property
    def verdict(self) -> str:
        return "safe" if self.safe else "not safe"

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `manage.py redis_switch_check --json` (camelCase, like
        the cron endpoints)."""
        return {
            "safe": self.safe,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "leftBehind": self.left_behind,
            "consecutiveEmptyDrains": self.consecutive_empty_drains,
            "requiredEmptyDrains": self.required_empty_drains,
            "streakBrokenBy": (
                None
                if self.streak_broken_by is None
                else {
                    "runId": str(self.streak_broken_by.public_id),
                    "status": self.streak_broken_by.status,
                    "started": self.streak_broken_by.started.isoformat(),
                    "totalProcessed": self.streak_broken_by.total_processed,
                }
            ),
            "recentDrains": [d.as_dict() for d in self.recent_drains],
            "pending": (
                None
                if self.pending is None
                else {name: p.as_dict() for name, p in self.pending.items()}
            ),
            "unregistered": (
                None
                if self.unregistered is None
                else {name: p.as_dict() for name, p in self.unregistered.items()}
            ),
            "workers": {
                "alwaysOn": [_worker_dict(w) for w in self.live_workers],
                "alwaysOnLive": len(self.live_workers),
                "rqRegistered": self.rq_registered_workers,
            },
            "redisCommands": self.redis_commands,
            "expectedRedisCommands": self.expected_redis_commands,
            "redisCommandsFormula": COST_FORMULA,
            "redisProblem": self.redis_problem or None,
            "redisError": self.redis_error or None,
            "checkedAt": self.checked_at.isoformat(),
        }


def _worker_dict(worker: WorkerProcess) -> dict[str, Any]:
    return {
        "name": worker.name,
        "role": worker.role,
        "host": worker.host,
        "pid": worker.pid,
        "state": worker.state,
        "queues": worker.queues,
        "heartbeat": worker.heartbeat.isoformat(),
    }


def _plural(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


# --- Drains (database) --------------------------------------------------------


def _is_empty(run: DrainRun) -> bool:
    return run.status in EMPTY_STATUSES and run.total_processed == 0


def _why_it_breaks(run: DrainRun) -> str:
    when = timezone.localtime(run.started).strftime("%Y-%m-%d %H:%M:%S")
    if run.status == DrainRun.Status.FAILED:
        return f"the drain of {when} failed, which breaks the streak"
    if run.status == DrainRun.Status.ABANDONED:
        return f"the drain of {when} was abandoned, which breaks the streak"
    return (
        f"the drain of {when} processed "
        f"{_plural(run.total_processed, 'job')}, which breaks the streak"
    )


# A streak is counted up to this many drains (issue 15): the check needs
# REDIS_SWITCH_MIN_EMPTY_DRAINS of them, and when the last busy drain is a year
# old an exact count would read every run since.
STREAK_COUNT_CAP = 10_000


def _streak() -> tuple[int, DrainRun | None]:
    """(empty finished drains newer than the newest non-empty one, up to
    STREAK_COUNT_CAP; that one).

    Index ranges whatever the history's length: the newest run of each
    breaking status (the (status, started) index), the newest busy run (the
    partial index of runs that processed jobs), then a bounded count."""
    breakers = [
        DrainRun.objects.filter(status=status).order_by("-started", "-pk").first()
        for status in FINISHED_STATUSES
        if status not in EMPTY_STATUSES
    ]
    breakers.append(
        DrainRun.objects.filter(status__in=EMPTY_STATUSES, total_processed__gt=0)
        .order_by("-started", "-pk")
        .first()
    )
    breaker = max(
        (run for run in breakers if run is not None),
        key=lambda run: (run.started, run.pk),
        default=None,
    )
    streak = DrainRun.objects.filter(status__in=EMPTY_STATUSES, total_processed=0)
    if breaker is not None:
        streak = streak.filter(
            Q(started__gt=breaker.started)
            | Q(started=breaker.started, pk__gt=breaker.pk)
        )
    cap = max(STREAK_COUNT_CAP, settings.REDIS_SWITCH_MIN_EMPTY_DRAINS)
    return streak.order_by()[:cap].count(), breaker


def _recent() -> list[DrainInStreak]:
    runs = list(DrainRun.objects.order_by("-started", "-pk")[:RECENT_DRAINS])
    out: list[DrainInStreak] = []
    broken = False
    for run in runs:
        if run.status == DrainRun.Status.SKIPPED:
            out.append(DrainInStreak(run, "not counted", "skipped: it never looked"))
        elif run.status == DrainRun.Status.RUNNING:
            out.append(DrainInStreak(run, "not counted", "still running"))
        elif broken:
            out.append(DrainInStreak(run, "before", "before the streak"))
        elif _is_empty(run):
            out.append(DrainInStreak(run, "empty", "empty: counts"))
        else:
            broken = True
            out.append(DrainInStreak(run, "breaks", _why_it_breaks(run)))
    return out


def unrecovered_reasons() -> list[str]:
    """What processes that stopped holding jobs left for recovery
    (ops/engine/leftovers.py), and what runs now: database only, the
    database's clock. Each holds jobs that are in no queue a switch check
    reads (a lean claim list, a started job), so each makes the switch unsafe.
    """
    reasons: list[str] = []
    runs = list(
        DrainRun.objects.filter(
            Q(status=DrainRun.Status.RUNNING)
            | Q(needs_recovery=True)
            | Q(has_unsettled_claims=True)
        )
        .annotate(db_now=Now())
        .only("status", "lease_expires", "needs_recovery", "has_unsettled_claims")
    )
    running = [r for r in runs if r.status == DrainRun.Status.RUNNING]
    alive = [r for r in running if r.lease_expires and r.lease_expires > r.db_now]
    # A "running" run whose lease lapsed died; the next drain marks it
    # abandoned and recovers it. A run without a lease never took it.
    died = [r for r in running if r.lease_expires and r.lease_expires <= r.db_now]
    unrecovered = [r for r in runs if r.status != DrainRun.Status.RUNNING] + died
    if alive:
        wait = max(_seconds(r.lease_expires - r.db_now) for r in alive)
        reasons.append(
            f"{_plural(len(alive), 'drain')} running now, holding the jobs it "
            f"runs: wait for it to end (its lease runs {wait} s more, renewed "
            "while it runs), then check again"
        )
    if unrecovered:
        reasons.append(
            f"{_plural(len(unrecovered), 'drain')} died or failed holding jobs "
            "that are not recovered yet (started jobs, claimed jobs, worker "
            "registrations): run a drain (Drain now), which recovers them, then "
            "check again"
        )
    workers = list(
        WorkerProcess.objects.filter(recovered_at__isnull=True)
        .annotate(db_now=Now())
        .only("name", "state", "heartbeat")
    )
    stale_after = worker_stale_after()
    stale = [w for w in workers if w.heartbeat < w.db_now - stale_after]
    if stale:
        reasons.append(
            f"{_plural(len(stale), 'always-on worker')} stopped heartbeating "
            f"more than {_seconds(stale_after)} s ago (its supervisor is "
            f"gone) and its jobs are not recovered yet: "
            f"{', '.join(w.name for w in stale)}; run a drain (Drain now), "
            "which recovers them, then check again"
        )
    # Ended without its supervisor settling its jobs (Redis failed it then):
    # recovered once its heartbeat is stale.
    ended = [
        w
        for w in workers
        if w not in stale
        and w.state in (WorkerProcess.State.STOPPED, WorkerProcess.State.CRASHED)
    ]
    if ended:
        wait = max(_seconds(w.heartbeat + stale_after - w.db_now) for w in ended)
        reasons.append(
            f"{_plural(len(ended), 'always-on worker')} ended without its jobs "
            f"being settled: {', '.join(w.name for w in ended)}; wait {wait} s "
            "(until it counts as stale), run a drain, then check again"
        )
    return reasons


def _seconds(delta: timedelta) -> int:
    return max(0, math.ceil(delta.total_seconds()))


def live_workers(now: datetime | None = None) -> list[WorkerProcess]:
    """Always-on workers whose supervisor says they run, heard from lately."""
    since = (now or timezone.now()) - LIVE_WORKER_WINDOW
    return list(
        WorkerProcess.objects.filter(stopped__isnull=True, heartbeat__gte=since)
        .exclude(state__in=[WorkerProcess.State.STOPPED, WorkerProcess.State.CRASHED])
        .order_by("name")
    )


# --- Redis --------------------------------------------------------------------


@dataclass(frozen=True)
class _RedisRead:
    pending: dict[str, QueuePending] | None
    rq_workers: int | None
    commands: int
    problem: str = RedisProblem.NONE
    error: str = ""
    unregistered: dict[str, QueuePending] | None = None
    # How many queues of rq:queues are not on the Queues page (each cost 6).
    unknown_queues: int = 0


def _counts(name: str) -> list[tuple[str, str]]:
    """The six reads of one queue, in QueuePending's field order."""
    return [
        ("llen", list_key(name)),
        ("llen", intermediate_key(name)),
        ("zcard", scheduled_key(name)),
        ("zcard", started_key(name)),
        ("zcard", deferred_key(name)),
        ("zcard", failed_key(name)),
    ]


def _raise_first(replies: list[Any]) -> None:
    errors = [r for r in replies if isinstance(r, redis.ResponseError)]
    if errors:
        raise next((e for e in errors if is_quota_exhausted(e)), errors[0])


def _queue_name(member: Any) -> str:
    text = member.decode("utf-8", "replace") if isinstance(member, bytes) else member
    prefix = list_key("")
    return text[len(prefix) :] if text.startswith(prefix) else text


def _read_redis(queues: list[Queue], source: str) -> _RedisRead:
    with incidents.guarded_read(source) as read:
        if read.client is not None:
            calls: list[tuple[str, str]] = []
            for queue in queues:
                calls += _counts(queue.name)
            # Every RQ worker registers here, whichever deployment runs it.
            calls.append(("scard", Worker.redis_workers_keys))
            # Every queue an RQ client enqueued to (rq's Queue.all() reads it).
            calls.append(("smembers", RQQueue.redis_queues_keys))
            # One pipeline (as a quota incident's probe, 1 command first).
            # raise_on_error=False: redis-py rewords the first error of a
            # pipeline it raises ("Command # 1 (LLEN ...) of pipeline caused
            # error: ..."), which hides the provider's quota wording.
            replies = read.execute(calls, raise_on_error=False)
            _raise_first(replies)
            known = {queue.name for queue in queues}
            unknown = sorted({_queue_name(m) for m in replies[-1]} - known)
            unknown_replies: list[Any] = []
            if unknown:
                # Rare: a second round trip, the same six reads per queue.
                more = [call for name in unknown for call in _counts(name)]
                unknown_replies = read.execute(more, raise_on_error=False)
                _raise_first(unknown_replies)
    if read.refusal:
        # During a quota incident only the probe may talk to Redis.
        return _RedisRead(None, None, 0, RedisProblem.QUOTA, read.refusal)
    exc = read.exc
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return _RedisRead(
            None,
            None,
            read.meter.billed,
            RedisProblem.UNREACHABLE,
            f"Redis is unreachable ({type(exc).__name__}: {exc}), so the jobs "
            "still in it could not be counted",
        )
    if exc is not None:
        if read.quota_exhausted:
            problem = RedisProblem.QUOTA
            error = (
                f"the Redis command quota is exhausted ({exc}), so the jobs still "
                "in it could not be counted"
            )
        else:
            problem = RedisProblem.ERROR
            error = (
                f"Redis answered with an error ({type(exc).__name__}: {exc}), so "
                "the jobs still in it could not be counted"
            )
        return _RedisRead(None, None, read.meter.billed, problem, error)
    per = COMMANDS_PER_QUEUE
    pending = {
        queue.name: QueuePending(
            queue.enabled, *(int(n) for n in replies[i * per : (i + 1) * per])
        )
        for i, queue in enumerate(queues)
    }
    found = {
        name: QueuePending(
            False,
            *(int(n) for n in unknown_replies[i * per : (i + 1) * per]),
            registered=False,
        )
        for i, name in enumerate(unknown)
    }
    # An entry of rq:queues whose queue is empty everywhere is nothing to see.
    unregistered = {
        name: p for name, p in found.items() if p.would_be_abandoned or p.failed
    }
    return _RedisRead(
        pending,
        int(replies[-2]),
        read.meter.billed,
        unregistered=unregistered,
        unknown_queues=len(unknown),
    )


# --- The check ----------------------------------------------------------------


def expected_commands(queues: int, unknown_queues: int = 0) -> int:
    """What one check costs: COST_FORMULA."""
    return COMMANDS_PER_QUEUE * (queues + unknown_queues) + EXTRA_COMMANDS


# (field, how one reads in a sentence)
_KINDS = (
    ("queued", "queued job", "queued jobs"),
    (
        "intermediate",
        "job in the intermediate list (popped, never registered)",
        "jobs in the intermediate list (popped, never registered)",
    ),
    ("scheduled", "scheduled job", "scheduled jobs"),
    ("started", "started job", "started jobs"),
    (
        "deferred",
        "deferred job (waiting for a dependency)",
        "deferred jobs (waiting for dependencies)",
    ),
)


def _queue_label(name: str, pending: QueuePending) -> str:
    if not pending.registered:
        return f"{name} (not on the Queues page: no drain runs it)"
    return name if pending.enabled else f"{name} (disabled)"


def switch_check(*, source: str = Source.CONSOLE) -> SwitchCheck:
    """Everything that would be lost by switching Redis now, and the verdict.

    Never raises for Redis trouble: an unreadable Redis makes the check unsafe
    with that reason. `source` is what the commands are billed to."""
    required = settings.REDIS_SWITCH_MIN_EMPTY_DRAINS
    # Every queue, disabled ones too: a switch abandons their jobs just the same.
    queues = list(Queue.objects.order_by("priority", "name"))
    streak, breaker = _streak()
    recent = _recent()
    workers = live_workers()
    read = _read_redis(queues, source)

    reasons: list[str] = []
    if read.problem:
        reasons.append(read.error)
    if streak < required:
        reason = f"only {streak} of {required} consecutive empty drains"
        if breaker is not None:
            reason += f" ({_why_it_breaks(breaker)})"
        elif streak == 0:
            reason += " (no finished drain is recorded)"
        reasons.append(reason)

    left_behind: list[str] = []
    everything = {**(read.pending or {}), **(read.unregistered or {})}
    for name, pending in everything.items():
        label = _queue_label(name, pending)
        for field_name, one, many in _KINDS:
            n = getattr(pending, field_name)
            if n:
                reasons.append(
                    f"{label}: {n} {one if n == 1 else many} would be abandoned"
                )
        if pending.failed:
            left_behind.append(
                f"{label}: {_plural(pending.failed, 'failed job')} would be left "
                "behind in the old Redis"
            )

    reasons += unrecovered_reasons()
    if workers:
        names = ", ".join(f"{w.name} on {w.host}" for w in workers)
        verb = "is" if len(workers) == 1 else "are"
        reasons.append(
            f"{_plural(len(workers), 'always-on worker')} {verb} still registered "
            f"(heartbeat in the last {int(LIVE_WORKER_WINDOW.total_seconds() // 60)} "
            f"minutes): {names}"
        )
    if read.rq_workers:
        verb = "is" if read.rq_workers == 1 else "are"
        reasons.append(
            f"{_plural(read.rq_workers, 'RQ worker')} {verb} registered in Redis "
            "(rq:workers), from this deployment or another: stop them first, or "
            "they keep consuming the old Redis"
        )

    return SwitchCheck(
        safe=not reasons,
        reasons=reasons,
        left_behind=left_behind,
        consecutive_empty_drains=streak,
        required_empty_drains=required,
        streak_broken_by=breaker,
        recent_drains=recent,
        pending=read.pending,
        unregistered=read.unregistered,
        live_workers=workers,
        rq_registered_workers=read.rq_workers,
        redis_commands=read.commands,
        expected_redis_commands=expected_commands(len(queues), read.unknown_queues),
        redis_problem=read.problem,
        redis_error=read.error,
        registered_queues=len(queues),
        unknown_queues=read.unknown_queues,
    )


def register_queue(name: str, *, enabled: bool) -> Queue:
    """Put a queue that RQ clients use on the Queues page (0 Redis commands).
    Raises ValidationError for a bad or already registered name."""
    queue = Queue(name=name, enabled=enabled)
    # The model's own rules (length, uniqueness); priority keeps its default,
    # after the runbook's queues.
    queue.full_clean()
    queue.save()
    return queue
