"""Who consumes the queues: always-on workers and drains, and the double
consumption (two consumers on the same queues).

Everything here reads the database (WorkerProcess rows the supervisors keep
fresh). RQ's own worker registry is read only on demand — when an admin page
asks — never polled in the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import redis
from django.db.models import Q, QuerySet
from django.utils import timezone
from rq.utils import as_text
from rq.worker_registration import REDIS_WORKER_KEYS

from ops import runtime
from ops.models import DrainRun, WorkerProcess

# Supervisors refresh heartbeats every minute; three missed means gone.
LIVE_WITHIN = timedelta(minutes=3)
RECENT_DRAIN = timedelta(minutes=15)
OUR_WORKER_PREFIXES = ("kwork.", "kdrain.")


def live_workers() -> QuerySet[WorkerProcess]:
    return WorkerProcess.objects.filter(
        state__in=[
            WorkerProcess.State.STARTING,
            WorkerProcess.State.IDLE,
            WorkerProcess.State.BUSY,
        ],
        heartbeat__gte=timezone.now() - LIVE_WITHIN,
    )


def double_consumption_warnings() -> list[str]:
    """Plain sentences, empty when all is well. Database only."""
    warnings: list[str] = []
    live = list(live_workers())
    by_queue: dict[str, set[tuple[str, str]]] = {}
    for worker in live:
        for name in worker.queues:
            by_queue.setdefault(name, set()).add((worker.role, worker.host))
    for name, consumers in sorted(by_queue.items()):
        roles = {role for role, _ in consumers}
        if len(roles) > 1:
            hosts = ", ".join(sorted(f"{role} on {host}" for role, host in consumers))
            warnings.append(
                f"{name} is consumed both by the console's in-process workers and "
                f"by a dedicated worker ({hosts}): run WORKER_INPROCESS=0 on the "
                "console when a dedicated worker runs."
            )
    if live:
        # Only a drain that overlapped a live worker is a second consumer: one
        # that finished before the earliest of them started (a switch from
        # cron-drain to always-on) ran alone. Every live worker is alive now,
        # so overlapping means finishing after its start, or still running.
        first_start = min(worker.started for worker in live)
        recent = (
            DrainRun.objects.filter(started__gte=timezone.now() - RECENT_DRAIN)
            .filter(Q(finished__isnull=True) | Q(finished__gt=first_start))
            .exclude(status=DrainRun.Status.SKIPPED)
            .exclude(total_processed=0)
            .order_by("-started")
            .first()
        )
        if recent is not None:
            overlapping = sum(
                1
                for worker in live
                if recent.finished is None or recent.finished > worker.started
            )
            warnings.append(
                f"A drain ({recent.trigger}, {recent.started:%H:%M} UTC) processed "
                f"jobs while {overlapping} always-on worker process(es) were "
                "running: two consumers on the same queues. Stop the drains (cron, "
                "schedule) or the always-on workers."
            )
        settings_row = runtime.console_settings()
        if settings_row.schedule_enabled and any(
            w.role == WorkerProcess.Role.INPROCESS for w in live
        ):
            warnings.append(
                "The built-in drain schedule is on while in-process always-on "
                "workers run: turn one of them off."
            )
    return warnings


@dataclass(frozen=True)
class RegisteredWorkers:
    ours: list[str]
    foreign: list[str]  # RQ workers this console did not start
    redis_commands: int
    error: str = ""


def registered_rq_workers(client: redis.Redis) -> list[str]:
    """Names in RQ's worker registry: 1 command (SMEMBERS)."""
    prefix = "rq:worker:"
    return sorted(as_text(k)[len(prefix) :] for k in client.smembers(REDIS_WORKER_KEYS))


def split_ours(names: list[str]) -> tuple[list[str], list[str]]:
    ours = [n for n in names if n.startswith(OUR_WORKER_PREFIXES)]
    return ours, [n for n in names if n not in ours]
