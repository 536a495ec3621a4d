"""What the home page shows, in one call: `gather(user)`.

Everything comes from the database except the backlog per queue, which costs
exactly one Redis command per queue (ops/inspection/backlog.py: one SORT each,
in one pipeline) and nothing when no queue exists. The page's footer shows the
total, as on every admin page.

Where something is wrong, a `Todo` says what to do next in one sentence, with
a link to the page where it is done. Links are given only to pages the user
may view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.admin.models import LogEntry
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from ops import runtime
from ops.humanize import duration as _duration
from ops.inspection import backlog as backlog_read
from ops.models import DrainRun, JobRecord, Queue, QuotaIncident, Source
from ops.scheduling import alarm, schedule
from ops.usage import incidents, quota
from ops.workers import consumers

FAILED_WINDOW = timedelta(hours=24)
FAILED_SHOWN = 5
RECENT_ACTIONS = 10
# The job records that count as "failed" on the home page.
FAILED_STATUSES = (JobRecord.Status.FAILED, JobRecord.Status.ABANDONED)
# Statuses of a last drain worth a sentence of their own.
DRAIN_PROBLEMS = (
    DrainRun.Status.FAILED,
    DrainRun.Status.ABANDONED,
    DrainRun.Status.DEADLINE,
)


@dataclass(frozen=True)
class Todo:
    """One sentence saying what to do, and where (url may be "" when the
    user may not open that page)."""

    text: str
    url: str = ""
    link_text: str = ""


@dataclass(frozen=True)
class QueueLine:
    name: str
    enabled: bool
    figures: backlog_read.QueueBacklog | None  # None: Redis was not read
    url: str  # the queue's queued jobs
    todo: Todo | None = None


@dataclass(frozen=True)
class Health:
    now: datetime
    alarm: alarm.AlarmReport
    alarm_url: str
    alarm_todo: Todo | None
    last_drain: DrainRun | None
    last_drain_url: str
    drain_todo: Todo | None
    # When the next drain is expected, and from what.
    next_tick_at: datetime | None
    next_tick_note: str
    queues: list[QueueLine]
    backlog: backlog_read.Backlog
    failed_count: int
    failed_jobs: list[JobRecord]
    failed_url: str
    failed_todo: Todo | None
    quota: quota.Glance  # the larger truth, as the banner and the quota page
    quota_url: str
    quota_todo: Todo | None
    incident: QuotaIncident | None
    incident_url: str
    incident_todo: Todo | None
    worker_mode: str
    live_workers: int
    workers_url: str
    worker_todos: list[Todo]
    recent_actions: list[LogEntry] = field(default_factory=list)

    @property
    def last_drain_ago_s(self) -> int | None:
        run = self.last_drain
        return None if run is None else int((self.now - run.started).total_seconds())

    @property
    def next_tick_in_s(self) -> int | None:
        """Seconds until the next expected drain; negative when overdue."""
        at = self.next_tick_at
        return None if at is None else int((at - self.now).total_seconds())

    @property
    def next_tick_overdue_s(self) -> int:
        return max(0, -(self.next_tick_in_s or 0))

    @property
    def todos(self) -> list[Todo]:
        """Everything wrong, most urgent first (the page's summary)."""
        found = [
            self.incident_todo,
            self.alarm_todo,
            self.drain_todo,
            self.failed_todo,
            *[line.todo for line in self.queues],
            *self.worker_todos,
            self.quota_todo,
        ]
        return [todo for todo in found if todo is not None]


def _url(user: Any, perm: str, name: str, *args: Any, query: str = "") -> str:
    if not user.has_perm(perm):
        return ""
    try:
        url = reverse(f"admin:{name}", args=args)
    except NoReverseMatch:
        return ""
    return f"{url}?{query}" if query else url


# --- The sections --------------------------------------------------------------


def _alarm_todo(report: alarm.AlarmReport, url: str) -> Todo | None:
    if report.state in (alarm.AlarmState.LATE, alarm.AlarmState.DOWN):
        if report.config.source == alarm.SOURCE_SCHEDULE:
            where = "check that manage.py qcluster runs (the built-in schedule)"
        else:
            where = "check the external scheduler's log and its token"
        since = report.since_last_drain or "ever"
        return Todo(
            f"Drains are not arriving (alarm {report.state}, last one {since} "
            f"ago): {where}.",
            url,
            "Schedule and alarm",
        )
    if report.state == alarm.AlarmState.OFF:
        return Todo(
            "No missed-tick alarm: a stopped scheduler would go unnoticed. Turn the "
            "built-in schedule on or set the external scheduler's interval.",
            url,
            "Schedule and alarm",
        )
    return None


def _cluster_todo(url: str, now: datetime) -> Todo | None:
    activity = schedule.cluster_activity(now)
    if activity.verdict != "not running":
        return None
    return Todo(activity.detail, url, "Schedule and alarm")


def _drain_todo(run: DrainRun | None, url: str) -> Todo | None:
    if run is None or run.status not in DRAIN_PROBLEMS:
        return None
    if run.status == DrainRun.Status.DEADLINE:
        left = sum(r.get("remaining", 0) for r in run.queue_results.values())
        return Todo(
            f"The last drain stopped at its time budget with {left} job(s) left: "
            "drain more often or give drains a longer budget.",
            url,
            "The run",
        )
    why = run.error_code or run.get_status_display().lower()
    return Todo(
        f"The last drain did not finish its work ({why}): open it for the error.",
        url,
        "The run",
    )


def _next_tick(
    report: alarm.AlarmReport, info: schedule.ScheduleInfo, mode: str
) -> tuple[datetime | None, str]:
    row = info.settings
    config = report.config
    if row.schedule_enabled:
        note = f"built-in schedule, every {row.schedule_minutes} min"
        if info.drain_row is not None and info.drain_row.next_run is not None:
            return info.drain_row.next_run, note
        # No Schedule row yet (`manage.py schedule --sync` runs at start).
        return None, note + ", not synced yet: run manage.py schedule --sync"
    if config.configured and report.reference is not None:
        interval = timedelta(minutes=config.interval_minutes or 0)
        return report.reference + interval, (
            f"expected from the external scheduler every {config.interval_minutes} min"
        )
    if mode == runtime.ALWAYS_ON:
        return None, "always-on workers take jobs as they arrive"
    return None, "no schedule known: drains run only when someone asks"


def _queue_lines(
    user: Any,
    queues: list[Queue],
    figures: backlog_read.Backlog,
    report: alarm.AlarmReport,
) -> list[QueueLine]:
    # Jobs older than a tick plus its grace should have been drained.
    config = report.config
    overdue_s = (
        ((config.interval_minutes or 0) + (config.grace_minutes or 0)) * 60
        if config.configured
        else None
    )
    drain_url = _url(user, "ops.drain_queues", "ops_drainrun_drain")
    lines = []
    for queue in queues:
        line = figures.by_queue.get(queue.name)
        todo = None
        if line is not None and line.depth and not queue.enabled:
            todo = Todo(
                f"{queue.name} is disabled and holds jobs no drain takes: enable "
                "it, or delete the jobs you do not want.",
                _url(user, "ops.view_queue", "ops_queue_change", queue.pk),
                f"Queue {queue.name}",
            )
        elif (
            line is not None
            and line.oldest_s is not None
            and overdue_s is not None
            and line.oldest_s > overdue_s
        ):
            todo = Todo(
                f"The oldest job on {queue.name} has waited "
                f"{_duration(line.oldest_s)}, longer than a drain interval and "
                "its grace: drain now, and check the schedule.",
                drain_url,
                "Drain now",
            )
        lines.append(
            QueueLine(
                name=queue.name,
                enabled=queue.enabled,
                figures=line,
                url=_url(user, "ops.view_queue", "ops_queue_jobs", queue.pk, "queued"),
                todo=todo,
            )
        )
    return lines


def _failed(user: Any, now: datetime) -> tuple[int, list[JobRecord], str, Todo | None]:
    # Served by jobrecord_status_idx (status over a time range).
    recent = JobRecord.objects.filter(
        status__in=FAILED_STATUSES, created__gte=now - FAILED_WINDOW
    )
    count = recent.count()
    shown = list(recent.order_by("-id")[:FAILED_SHOWN]) if count else []
    url = _url(
        user, "ops.view_jobrecord", "ops_jobrecord_changelist", query="status=failed"
    )
    todo = None
    if count:
        todo = Todo(
            f"{count} job(s) failed in the last 24 h: read the error, fix the "
            "cause, then requeue them from their queue's Failed tab.",
            url,
            "Failed jobs",
        )
    return count, shown, url, todo


def _quota_todo(head: quota.Glance, url: str) -> Todo | None:
    if head.exhausted:
        return Todo(
            "The Redis command budget of this period is spent: see the quota "
            "page's resolution paths.",
            url,
            "Quota",
        )
    if head.level == "ok":
        return None
    if head.runs_out_at is not None:
        when = f"runs out on {head.runs_out_at:%Y-%m-%d}"
    else:
        when = f"is {head.used_percent:.0f} % used"
    return Todo(
        f"At the current rate the Redis budget {when}: the quota page's advisor "
        "says which worker mode and interval cost less.",
        url,
        "Quota",
    )


def _worker_todos(user: Any, mode: str, live: int) -> list[Todo]:
    url = _url(user, "ops.view_workerprocess", "ops_workerprocess_mode")
    todos = []
    if mode == runtime.ALWAYS_ON and live == 0:
        todos.append(
            Todo(
                "The worker mode is always-on but no always-on worker is alive: "
                "start the console's supervisor or manage.py work, or switch the "
                "mode to cron-drain.",
                url,
                "Worker mode",
            )
        )
    todos += [
        Todo(text, url, "Worker mode")
        for text in consumers.double_consumption_warnings()
    ]
    return todos


# --- The one call ----------------------------------------------------------------


def gather(user: Any, *, now: datetime | None = None) -> Health:
    """The home page's figures for `user`: one Redis command per queue (the
    backlog), everything else from the database."""
    # The quota's figures take their own clock (quota.current_time) unless a
    # moment is given.
    quota_now = now
    now = now or timezone.now()
    row = runtime.console_settings()
    report = alarm.evaluate(now=now, row=row)
    info = schedule.schedule_info()
    mode = runtime.worker_mode(row)
    schedule_url = _url(
        user, "ops.view_consolesettings", "ops_consolesettings_schedule"
    )

    alarm_todo = _alarm_todo(report, schedule_url)
    if alarm_todo is None and row.schedule_enabled:
        alarm_todo = _cluster_todo(schedule_url, now)

    run = report.last_drain
    run_url = (
        _url(user, "ops.view_drainrun", "ops_drainrun_change", run.pk) if run else ""
    )
    next_at, next_note = _next_tick(report, info, mode)

    queues = list(Queue.objects.order_by("priority", "name"))
    figures = backlog_read.read_backlog(
        [queue.name for queue in queues], source=Source.CONSOLE, now=now
    )

    failed_count, failed_jobs, failed_url, failed_todo = _failed(user, now)

    head = quota.glance(quota_now)
    quota_url = _url(user, "ops.view_commandusage", "ops_commandusage_quota")
    incident = incidents.open_incident()
    incident_url = ""
    incident_todo = None
    if incident is not None:
        incident_url = _url(
            user, "ops.view_quotaincident", "ops_quotaincident_change", incident.pk
        )
        incident_todo = Todo(
            "Redis refuses commands (quota exhausted): drains stop until it is "
            "resolved; pick a resolution path.",
            incident_url or quota_url,
            "The incident",
        )

    live = consumers.live_workers().count()
    return Health(
        now=now,
        alarm=report,
        alarm_url=schedule_url,
        alarm_todo=alarm_todo,
        last_drain=run,
        last_drain_url=run_url,
        drain_todo=_drain_todo(run, run_url),
        next_tick_at=next_at,
        next_tick_note=next_note,
        queues=_queue_lines(user, queues, figures, report),
        backlog=figures,
        failed_count=failed_count,
        failed_jobs=failed_jobs,
        failed_url=failed_url,
        failed_todo=failed_todo,
        quota=head,
        quota_url=quota_url,
        quota_todo=_quota_todo(head, quota_url),
        incident=incident,
        incident_url=incident_url,
        incident_todo=incident_todo,
        worker_mode=mode,
        live_workers=live,
        workers_url=_url(user, "ops.view_workerprocess", "ops_workerprocess_mode"),
        worker_todos=_worker_todos(user, mode, live),
        recent_actions=list(
            LogEntry.objects.select_related("user", "content_type").order_by(
                "-action_time"
            )[:RECENT_ACTIONS]
        ),
    )
