"""The missed-tick alarm: a dead man's switch on the drains.

Whatever schedules the drains (the built-in schedule, or an external cron
calling the endpoint), the console knows how often a drain should start. When
none has started for longer than that, the queues silently fill up: this module
says so.

* Expected interval: the built-in schedule's when it is on, else the
  `expected_interval_minutes` set by hand for an external scheduler, else there
  is no alarm ("off").
* Grace: `alarm_grace_minutes`, or one interval when empty.
* State, from the start of the last drain (any trigger, skipped runs excluded):
  "ok" within interval + grace, "late" within interval + 2 x grace, "down"
  beyond. "unknown" while no drain has started since the alarm was configured
  (ConsoleSettings.updated); that moment then counts as the last drain, so a
  scheduler that never calls still turns the alarm late, then down.

Evaluating the state reads the database only. The backlog age (how long the
oldest queued job of each enabled queue has waited) costs Redis commands, so it
is read only where a person or a notification needs it: at most 2 commands per
queue (one pipeline of LINDEX, one of HGET for the non-empty queues).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.utils import timezone
from rq.job import Job
from rq.utils import utcparse

from ops.humanize import duration as _duration
from ops.models import ConsoleSettings, DrainRun, Source
from ops.queues import enabled_queue_names, list_key
from ops.runtime import console_settings
from ops.usage import incidents


class AlarmState(models.TextChoices):
    # Values fit ConsoleSettings.alarm_state (8 characters).
    OK = "ok", "OK"
    LATE = "late", "Late"
    DOWN = "down", "Down"
    UNKNOWN = "unknown", "Unknown (no drain since the alarm was configured)"
    OFF = "off", "Not configured"


STATE_COLOURS = {
    AlarmState.OK: "#15803d",
    AlarmState.LATE: "#b45309",
    AlarmState.DOWN: "#b91c1c",
    AlarmState.UNKNOWN: "#6b7280",
    AlarmState.OFF: "#6b7280",
}

SOURCE_SCHEDULE = "schedule"
SOURCE_EXTERNAL = "external"


@dataclass(frozen=True)
class AlarmConfig:
    interval_minutes: int | None
    grace_minutes: int | None
    # "schedule" (the built-in schedule's interval), "external" (set by hand)
    # or "" (no alarm).
    source: str
    configured_at: datetime
    # False when the grace is the default of one interval.
    grace_minutes_set: bool = False

    @property
    def configured(self) -> bool:
        return self.interval_minutes is not None


def alarm_config(row: ConsoleSettings) -> AlarmConfig:
    if row.schedule_enabled and row.schedule_minutes:
        interval: int | None = row.schedule_minutes
        source = SOURCE_SCHEDULE
    elif row.expected_interval_minutes:
        interval = row.expected_interval_minutes
        source = SOURCE_EXTERNAL
    else:
        interval, source = None, ""
    grace = (row.alarm_grace_minutes or interval) if interval else None
    return AlarmConfig(
        interval_minutes=interval,
        grace_minutes=grace,
        source=source,
        configured_at=row.updated,
        grace_minutes_set=bool(row.alarm_grace_minutes),
    )


# --- Backlog age -------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """Age in seconds of the oldest queued job, per non-empty queue."""

    ages: dict[str, int] = field(default_factory=dict)
    redis_commands: int = 0
    # Empty when the read worked; otherwise why the ages are unknown.
    error: str = ""

    @property
    def known(self) -> bool:
        return not self.error

    @property
    def jobs_waiting(self) -> bool:
        return bool(self.ages)

    @property
    def oldest_s(self) -> int | None:
        return max(self.ages.values()) if self.ages else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def backlog_ages(
    names: list[str],
    *,
    source: str,
    now: datetime | None = None,
    empty: Iterable[str] = (),
) -> Backlog:
    """Ages of the oldest queued job of `names`; never raises for Redis trouble.

    `empty` names queues already known to be empty (e.g. from an LLEN the
    caller just sent): they cost nothing. Every other queue costs one LINDEX,
    and a non-empty one an HGET more: at most 2 commands per queue, in two
    pipelines. Index 0 is the next job a worker takes, which is the oldest
    unless a job was enqueued `at_front`.
    """
    skip = set(empty)
    names = [name for name in names if name not in skip]
    if not names:
        return Backlog()
    now = now or timezone.now()
    enqueued: list[Any] = []
    waiting: list[tuple[str, str]] = []
    with incidents.guarded_read(source) as read:
        if read.client is not None:
            # One pipeline; as a quota incident's probe, 1 command first.
            heads = read.execute([("lindex", list_key(name), 0) for name in names])
            waiting = [
                (name, _text(job_id))
                for name, job_id in zip(names, heads, strict=True)
                if job_id
            ]
            if waiting:
                enqueued = read.execute(
                    [
                        ("hget", Job.redis_job_namespace_prefix + job_id, "enqueued_at")
                        for _, job_id in waiting
                    ]
                )
    if read.problem():
        return Backlog(redis_commands=read.meter.billed, error=read.problem())
    ages: dict[str, int] = {}
    for (name, _), raw in zip(waiting, enqueued, strict=True):
        if not raw:
            # The job hash expired or was deleted under its id: the queue has
            # an id but no job to date. Counted as waiting since "now".
            ages[name] = 0
            continue
        try:
            at = utcparse(_text(raw))
        except ValueError:
            ages[name] = 0
            continue
        ages[name] = max(0, int((now - at).total_seconds()))
    return Backlog(ages=ages, redis_commands=read.meter.billed)


# --- Evaluation ----------------------------------------------------------------


@dataclass(frozen=True)
class AlarmReport:
    state: str
    config: AlarmConfig
    now: datetime
    last_drain: DrainRun | None
    # What the clock runs from: the last drain's start, or the moment the
    # alarm was configured when no drain has started since.
    reference: datetime | None
    late_at: datetime | None
    down_at: datetime | None
    # Read only on request (it costs Redis commands): None = not read.
    backlog: Backlog | None = None

    @property
    def label(self) -> str:
        return AlarmState(self.state).label

    @property
    def colour(self) -> str:
        return STATE_COLOURS[AlarmState(self.state)]

    @property
    def last_drain_at(self) -> datetime | None:
        return self.last_drain.started if self.last_drain else None

    @property
    def seconds_since_last_drain(self) -> int | None:
        at = self.last_drain_at
        return None if at is None else max(0, int((self.now - at).total_seconds()))

    @property
    def since_last_drain(self) -> str:
        # "47 min", for people (the JSON has seconds).
        seconds = self.seconds_since_last_drain
        return "" if seconds is None else _duration(seconds)

    @property
    def last_drain_caller(self) -> str:
        run = self.last_drain
        if run is None:
            return ""
        return run.requested_by.get_username() if run.requested_by else run.caller

    @property
    def cron_down_with_jobs_waiting(self) -> bool:
        return (
            self.state == AlarmState.DOWN
            and self.backlog is not None
            and self.backlog.jobs_waiting
        )

    @property
    def headline(self) -> str:
        """One sentence for a page, a log line or a notification."""
        interval = self.config.interval_minutes
        if self.state == AlarmState.OFF:
            return (
                "No missed-tick alarm: the built-in schedule is off and no expected "
                "interval is set for an external scheduler."
            )
        every = f"expected every {interval} min"
        assert self.reference is not None
        since = _duration((self.now - self.reference).total_seconds())
        if self.state == AlarmState.UNKNOWN:
            return (
                f"No drain has started since the alarm was configured {since} ago "
                f"({every}); it turns late if none starts by "
                f"{self.late_at:%Y-%m-%d %H:%M} UTC."
            )
        what = "the last drain started" if self.last_drain else "no drain yet"
        if self.state == AlarmState.OK:
            return f"Drains arrive on time: {what} {since} ago ({every})."
        if self.state == AlarmState.LATE:
            return f"Drains are late: {what} {since} ago ({every})."
        sentence = f"no drain for {since} ({every})"
        if self.cron_down_with_jobs_waiting:
            assert self.backlog is not None and self.backlog.oldest_s is not None
            return (
                f"Cron is down and jobs are waiting: {sentence}; the oldest queued "
                f"job has waited {_duration(self.backlog.oldest_s)}."
            )
        return f"Cron is down: {sentence}."

    def as_json(self) -> dict[str, Any]:
        """The "alarm" section of GET /api/v1/cron/status and of notifications."""
        backlog = self.backlog
        run = self.last_drain
        return {
            "state": self.state,
            "message": self.headline,
            "expectedIntervalMinutes": self.config.interval_minutes,
            "intervalSource": self.config.source or None,
            "graceMinutes": self.config.grace_minutes,
            "lastDrainAt": _iso(self.last_drain_at),
            "lastDrainTrigger": run.trigger if run else None,
            "lastDrainCaller": self.last_drain_caller if run else None,
            "lastDrainStatus": run.status if run else None,
            "secondsSinceLastDrain": self.seconds_since_last_drain,
            "lateAt": _iso(self.late_at),
            "downAt": _iso(self.down_at),
            "backlogKnown": backlog is not None and backlog.known,
            "oldestQueuedJobAgeS": backlog.oldest_s if backlog else None,
            "oldestQueuedJobAgeByQueue": dict(backlog.ages) if backlog else {},
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def last_drain() -> DrainRun | None:
    # Any trigger: the alarm watches whatever schedules the drains. A skipped
    # run did nothing; the drain it bumped into is the one that counts.
    # Served by drainrun_started_idx.
    return (
        DrainRun.objects.exclude(status=DrainRun.Status.SKIPPED)
        .select_related("requested_by")
        .order_by("-started")
        .first()
    )


def evaluate(
    *,
    now: datetime | None = None,
    row: ConsoleSettings | None = None,
    backlog: Backlog | None = None,
) -> AlarmReport:
    """The alarm's state now (database only; `backlog` is passed through)."""
    now = now or timezone.now()
    row = row or console_settings()
    config = alarm_config(row)
    run = last_drain()
    if not config.configured:
        return AlarmReport(
            state=AlarmState.OFF,
            config=config,
            now=now,
            last_drain=run,
            reference=None,
            late_at=None,
            down_at=None,
            backlog=backlog,
        )
    assert config.interval_minutes is not None and config.grace_minutes is not None
    # The start, not the end: a scheduler tick is when the drain was asked
    # for; a long drain still running has not missed its tick.
    if run is not None and run.started >= config.configured_at:
        reference, fresh = run.started, False
    else:
        reference, fresh = config.configured_at, True
    interval = timedelta(minutes=config.interval_minutes)
    grace = timedelta(minutes=config.grace_minutes)
    late_at = reference + interval + grace
    down_at = late_at + grace
    if now > down_at:
        state = AlarmState.DOWN
    elif now > late_at:
        state = AlarmState.LATE
    else:
        state = AlarmState.UNKNOWN if fresh else AlarmState.OK
    return AlarmReport(
        state=state,
        config=config,
        now=now,
        last_drain=run,
        reference=reference,
        late_at=late_at,
        down_at=down_at,
        backlog=backlog,
    )


def with_backlog(report: AlarmReport, *, source: str = Source.OTHER) -> AlarmReport:
    """The report with the backlog ages read (≤ 2 Redis commands per queue)."""
    backlog = backlog_ages(enabled_queue_names(), source=source, now=report.now)
    return dataclasses.replace(report, backlog=backlog)
