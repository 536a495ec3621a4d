"""The built-in drain schedule: django-q2 Schedule rows kept in step with
ConsoleSettings.

Two rows, both owned by this module (edits made to them in django-q2's own
admin are undone by the next `sync()`):

* "kaireon-drain" runs ops.tasks.scheduled_drain every `schedule_minutes` while
  `schedule_enabled`;
* "kaireon-alarm" runs ops.tasks.check_alarm every minute while the missed-tick
  alarm has an expected interval, so that notifications go out even when
  nobody looks at the console.

django-q2 runs them with its database broker: scheduling, queueing and its
cluster bookkeeping send no Redis command; only the drain itself does
(docs/redis-billing.md, tests/scheduling/test_qcluster.py). Q_CLUSTER["catch_up"]
is off, so after downtime a missed slot runs once, not once per missed slot.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule, Task

from ops.models import ConsoleSettings, DrainRun
from ops.runtime import console_settings
from ops.scheduling.alarm import alarm_config
from ops.scheduling.routine_logs import ALARM_FUNC, ALARM_SCHEDULE

DRAIN_SCHEDULE = "kaireon-drain"
DRAIN_FUNC = "ops.tasks.scheduled_drain"
ALARM_CHECK_MINUTES = 1
MIN_MINUTES = 1
MAX_MINUTES = 1440

# django-q2's cluster looks for due schedules every ~30 s and its ORM broker
# polls every Q_CLUSTER["poll"] s: a due schedule or a queued task older than
# this means no cluster is running.
CLUSTER_SLACK = timedelta(seconds=90)


@dataclass(frozen=True)
class SyncResult:
    # "created", "updated", "unchanged", "deleted" or "absent", per row.
    drain: str
    alarm: str
    # Set by update_settings when turning the schedule off kept the alarm: the
    # interval it now expects from an external scheduler.
    kept_alarm_minutes: int | None = None

    @property
    def cluster_needed(self) -> bool:
        """Whether a qcluster has anything to run."""
        present = {"created", "updated", "unchanged"}
        return self.drain in present or self.alarm in present

    def __str__(self) -> str:
        return f"{DRAIN_SCHEDULE}: {self.drain}, {ALARM_SCHEDULE}: {self.alarm}"


def _wanted(func: str, minutes: int) -> dict[str, Any]:
    return {
        "func": func,
        "schedule_type": Schedule.MINUTES,
        "minutes": minutes,
        "repeats": -1,
        "args": None,
        "kwargs": None,
        "hook": None,
        "cron": None,
        # None: the default cluster (Q_CLUSTER["name"]) runs it.
        "cluster": None,
        "intended_date_kwarg": None,
    }


def _sync_one(name: str, func: str, minutes: int | None, now: datetime) -> str:
    rows = list(Schedule.objects.select_for_update().filter(name=name).order_by("pk"))
    if minutes is None:
        if not rows:
            return "absent"
        Schedule.objects.filter(pk__in=[row.pk for row in rows]).delete()
        return "deleted"
    wanted = _wanted(func, minutes)
    if not rows:
        Schedule.objects.create(
            name=name, next_run=now + timedelta(minutes=minutes), **wanted
        )
        return "created"
    row, extra = rows[0], rows[1:]
    if extra:
        # Two rows of one name would drain twice per interval.
        Schedule.objects.filter(pk__in=[r.pk for r in extra]).delete()
    changed = [key for key, value in wanted.items() if getattr(row, key) != value]
    if not changed and row.next_run is not None and not extra:
        # Untouched, next_run included: restarting the cluster (which syncs)
        # must not push the next drain further out every time.
        return "unchanged"
    for key in changed:
        setattr(row, key, wanted[key])
    if "minutes" in changed or row.next_run is None:
        row.next_run = now + timedelta(minutes=minutes)
    row.save()
    return "updated"


def sync(*, now: datetime | None = None) -> SyncResult:
    """Create, update or delete both Schedule rows to match ConsoleSettings.

    Idempotent; safe to call from several processes (the rows are locked)."""
    now = now or timezone.now()
    with transaction.atomic():
        row = console_settings()
        minutes = row.schedule_minutes if row.schedule_enabled else None
        drain = _sync_one(DRAIN_SCHEDULE, DRAIN_FUNC, minutes, now)
        alarm_minutes = ALARM_CHECK_MINUTES if alarm_config(row).configured else None
        alarm = _sync_one(ALARM_SCHEDULE, ALARM_FUNC, alarm_minutes, now)
    return SyncResult(drain=drain, alarm=alarm)


def update_settings(
    *,
    enabled: bool,
    minutes: int,
    expected_interval_minutes: int | None,
    alarm_grace_minutes: int | None,
    alarm_off: bool = False,
    by: Any = None,
) -> SyncResult:
    """Change the schedule and alarm settings, then sync the Schedule rows.

    The schedule and the missed-tick alarm are separate choices: with the
    schedule off, the alarm watches an external scheduler at
    `expected_interval_minutes`, and it is turned off only by `alarm_off`.
    Turning the schedule off with no interval given keeps the alarm at the
    interval it watched until then (`kept_alarm_minutes` in the result).
    With the schedule on, the alarm watches the schedule; `alarm_off` then
    only clears the external interval.

    `updated` moves only when a value changed: it is when the alarm was last
    configured, and its "unknown" clock starts there."""
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be {MIN_MINUTES}..{MAX_MINUTES}")
    kept: int | None = None
    with transaction.atomic():
        console_settings()  # the row exists from here on
        row = ConsoleSettings.objects.select_for_update().get(pk=1)
        if alarm_off:
            expected_interval_minutes = None
        elif not enabled and expected_interval_minutes is None:
            kept = alarm_config(row).interval_minutes
            expected_interval_minutes = kept
        values = {
            "schedule_enabled": enabled,
            "schedule_minutes": minutes,
            "expected_interval_minutes": expected_interval_minutes,
            "alarm_grace_minutes": alarm_grace_minutes,
        }
        changed = [key for key, value in values.items() if getattr(row, key) != value]
        if changed:
            for key in changed:
                setattr(row, key, values[key])
            row.updated = timezone.now()
            row.updated_by = by if getattr(by, "pk", None) else None
            row.save(update_fields=[*changed, "updated", "updated_by"])
        result = sync()
    return dataclasses.replace(result, kept_alarm_minutes=kept)


# --- What the admin shows ------------------------------------------------------


@dataclass(frozen=True)
class ClusterActivity:
    # "running", "not running" or "unknown"
    verdict: str
    detail: str
    last_task_at: datetime | None
    waiting_tasks: int


def cluster_activity(now: datetime | None = None) -> ClusterActivity:
    """Is a qcluster running our schedules? Inferred from the database only.

    django-q2's own answer (Stat.get_all) lives in the Django cache, which is
    per-process here (no CACHES configured: local memory), so a web process
    never sees the cluster's entry. The schedules themselves tell: a cluster
    moves a due schedule's next_run forward within ~30 s and takes a queued
    task within a poll; the alarm check (every minute) leaves a finished task.
    """
    now = now or timezone.now()
    names = [DRAIN_SCHEDULE, ALARM_SCHEDULE]
    last = (
        Task.objects.filter(group__in=names)
        .order_by("-stopped")
        .values_list("stopped", flat=True)
        .first()
    )
    waiting = OrmQ.objects.filter(key=Conf.CLUSTER_NAME)
    stuck = waiting.filter(lock__lt=now - CLUSTER_SLACK).count()
    overdue = (
        Schedule.objects.filter(name__in=names, next_run__lt=now - CLUSTER_SLACK)
        .order_by("next_run")
        .values_list("next_run", flat=True)
        .first()
    )
    count = waiting.count()
    if overdue is not None or stuck:
        since = f"since {overdue:%Y-%m-%d %H:%M} UTC " if overdue else ""
        return ClusterActivity(
            verdict="not running",
            detail=f"No qcluster has picked up a due schedule {since}"
            f"({stuck} queued task(s) waiting). Start one: manage.py qcluster.",
            last_task_at=last,
            waiting_tasks=count,
        )
    if last is not None and now - last <= timedelta(
        minutes=ALARM_CHECK_MINUTES, seconds=90
    ):
        return ClusterActivity(
            verdict="running",
            detail=f"A scheduled task finished at {last:%Y-%m-%d %H:%M:%S} UTC.",
            last_task_at=last,
            waiting_tasks=count,
        )
    return ClusterActivity(
        verdict="unknown",
        detail="Nothing was due yet to show whether a qcluster is running.",
        last_task_at=last,
        waiting_tasks=count,
    )


@dataclass(frozen=True)
class ScheduleInfo:
    settings: ConsoleSettings
    drain_row: Schedule | None
    alarm_row: Schedule | None
    # django-q2's record of the last scheduled drain task (Success or Failure).
    last_task: Task | None
    last_run: DrainRun | None


def schedule_info() -> ScheduleInfo:
    """Database only: what the Schedule page shows about the schedule."""
    rows = {
        row.name: row
        for row in Schedule.objects.filter(name__in=[DRAIN_SCHEDULE, ALARM_SCHEDULE])
    }
    return ScheduleInfo(
        settings=console_settings(),
        drain_row=rows.get(DRAIN_SCHEDULE),
        alarm_row=rows.get(ALARM_SCHEDULE),
        last_task=Task.objects.filter(group=DRAIN_SCHEDULE)
        .order_by("-started")
        .first(),
        last_run=DrainRun.objects.filter(trigger=DrainRun.Trigger.SCHEDULE)
        .order_by("-started")
        .first(),
    )
