"""Database state of the console: queues, drain runs, the jobs they ran and the
drain lease."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone


class Queue(models.Model):
    """An RQ queue the console drains. These rows are the list of queues."""

    name = models.CharField(
        max_length=100,
        unique=True,
        # The admin renders help text as HTML: "<name>" must be escaped to show.
        help_text="The RQ queue name (its Redis list is rq:queue:&lt;name&gt;).",
    )
    enabled = models.BooleanField(
        default=True, help_text="Disabled queues are skipped by every drain."
    )
    priority = models.PositiveIntegerField(
        default=100, help_text="Drain order: lower numbers are drained first."
    )
    description = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["priority", "name"]
        permissions = [("drain_queues", "Can start a drain from the console")]

    def __str__(self) -> str:
        return self.name


class DrainRun(models.Model):
    """One drain: who asked, with which options, and what it did.

    Its status, once finished (ops/engine/drain.py decides it, in this order):

    - `failed`: the drain itself did not finish its work (Redis unreachable,
      the quota, an internal error, an interruption); `error_code` says why.
    - `with_failures`: the drain ran, and at least one job it ran failed or
      crashed (`total_failed > 0`: a job that raised, timed out, failed an
      attempt its Retry requeued, or whose worker process died or was killed
      at the hard deadline — that job is recorded as abandoned with the reason).
      Failed jobs win over the deadline: a run that also stopped at its time
      budget with jobs left is `with_failures` too, and says so in
      `deadline_hit` (the endpoint's `deadlineHit`) and the per-queue
      `remaining` counts.
    - `deadline`: no job failed, but the time budget ran out with jobs left.
    - `succeeded`: every job it ran ended well (or there was nothing to do).
    - `skipped`: another drain held the lease; this one did nothing.
    - `abandoned`: its process died while it ran (set by the next drain).

    A drain started from the console is created `queued` and run by a
    background process (ops/engine/background.py), which moves it to `running`
    once; while it runs, the engine writes its progress to the row
    (ops/engine/progress.py: the result columns, `current_jobs`, `progress_at`).
    """

    class Trigger(models.TextChoices):
        CRON = "cron", "Cron endpoint"
        ADMIN = "admin", "Admin"
        CLI = "cli", "manage.py drain"
        SCHEDULE = "schedule", "Built-in schedule"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued (its background process is starting)"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        WITH_FAILURES = "with_failures", "Finished with failed jobs"
        DEADLINE = "deadline", "Stopped at the time budget"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (another drain was running)"
        ABANDONED = "abandoned", "Abandoned (its process died)"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    caller = models.CharField(
        max_length=200,
        blank=True,
        help_text="Who asked, when not a console user: host/pid, IP, credential.",
    )
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.RUNNING
    )
    started = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)
    total_processed = models.PositiveIntegerField(default=0)
    total_failed = models.PositiveIntegerField(default=0)
    # name -> {"processed": n, "failed": n, "remaining": n}
    queue_results = models.JSONField(default=dict, blank=True)
    redis_commands = models.PositiveIntegerField(
        default=0, help_text="Billable Redis commands this drain sent."
    )
    deadline_hit = models.BooleanField(default=False)
    blocked_by = models.UUIDField(
        null=True, blank=True, help_text="The running drain that made this one skip."
    )
    # Identifies this drain's RQ workers ("kdrain.<hex>.<queue>.<n>"), so that
    # jobs a dead drain left in StartedJobRegistry can be found and failed.
    worker_prefix = models.CharField(max_length=64, blank=True)
    # Set when this run took the drain lease: past it, a run still "running"
    # is dead, and the next drain marks it abandoned.
    lease_expires = models.DateTimeField(null=True, blank=True)
    recovered_jobs = models.PositiveIntegerField(
        default=0,
        help_text="Jobs of dead drains this run moved to the failed registry.",
    )
    credential = models.CharField(
        max_length=100,
        blank=True,
        help_text="Which credential let a cron call in (a variable name or a "
        "token version), never its value.",
    )
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    # Queues whose claim lists (ops/engine/claims.py) this run could not settle
    # because Redis failed it at the end: queue -> the id of the job that was
    # running there, or None. A later drain settles them and empties this.
    unsettled_claims = models.JSONField(default=dict, blank=True)
    has_unsettled_claims = models.BooleanField(default=False)
    # While it runs: queue -> the id of the job running there now (the
    # progress writer's; emptied when the run finishes).
    current_jobs = models.JSONField(default=dict, blank=True)
    progress_at = models.DateTimeField(
        null=True, blank=True, help_text="When the running drain last wrote progress."
    )
    # This run may have left work in Redis that nobody settled: jobs started
    # in RQ's registry, a claim list, worker registrations. Set when it died
    # (mark_abandoned) or ended "failed" after starting workers, or when a
    # dead worker's recovery failed; the next drain that reaches Redis settles
    # it (ops/engine/recovery.py) and clears it. Never set on a healthy run.
    needs_recovery = models.BooleanField(default=False)
    # The drain that claimed that recovery (a conditional UPDATE), and when it
    # finished it.
    recovered_by = models.UUIDField(null=True, blank=True)
    recovered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started"]
        indexes = [
            # Admin list (newest first) and "latest runs" queries.
            models.Index(fields=["-started"], name="drainrun_started_idx"),
            # Every drain with work looks for runs that left claims unsettled.
            models.Index(
                fields=["id"],
                condition=models.Q(has_unsettled_claims=True),
                name="drainrun_unsettled_idx",
            ),
            # Admin filters by status / trigger, newest first; the lease
            # recovery looks up running runs; Drain now, queued ones
            # (ops/engine/background.py).
            models.Index(fields=["status", "-started"], name="drainrun_status_idx"),
            models.Index(fields=["trigger", "-started"], name="drainrun_trigger_idx"),
            # Scale (issue 15). The admin list's sortable columns: the change
            # list (ops/console/admin/lists.py) breaks ties by id in the sort's
            # direction, so one (column, id) index serves both directions.
            models.Index(
                fields=["total_processed", "id"], name="drainrun_processed_idx"
            ),
            models.Index(fields=["total_failed", "id"], name="drainrun_failed_idx"),
            models.Index(fields=["redis_commands", "id"], name="drainrun_commands_idx"),
            # The admin's "deadline hit: yes" filter, newest first (a few runs).
            models.Index(
                fields=["-started", "-id"],
                condition=models.Q(deadline_hit=True),
                name="drainrun_deadline_idx",
            ),
            # The switch check's newest busy drain (ops/inspection/
            # switch_check.py), however long ago it was: an index range, not a
            # walk back through every empty drain since.
            models.Index(
                fields=["-started", "-id"],
                condition=models.Q(total_processed__gt=0),
                name="drainrun_busy_idx",
            ),
            # The mode advisor's 30-day and 7-day aggregates (ops/usage/
            # advisor.py): every column they read is in the index, so
            # PostgreSQL answers them with an index-only range scan.
            models.Index(
                fields=["started", "status", "total_processed", "redis_commands"],
                name="drainrun_window_idx",
            ),
            # The admin search reads the caller among the newest runs through
            # this started index (no trigram index: migration 0020).
            # Every drain looks for runs whose leftovers need recovering
            # (ops/engine/recovery.py: runs_to_recover): almost always none.
            models.Index(
                fields=["id"],
                condition=models.Q(needs_recovery=True),
                name="drainrun_recovery_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"drain {self.public_id} ({self.status})"

    @property
    def duration_ms(self) -> int | None:
        if self.finished is None:
            return None
        return int((self.finished - self.started).total_seconds() * 1000)

    def finish(
        self,
        *,
        status: str,
        queue_results: dict[str, dict[str, int]] | None = None,
        redis_commands: int = 0,
        deadline_hit: bool = False,
        recovered_jobs: int = 0,
        error_code: str = "",
        error: str = "",
        unsettled_claims: dict[str, str | None] | None = None,
        needs_recovery: bool = False,
    ) -> bool:
        """Close the run with its verdict, only if it is still running: a
        drain that lost its lease must not overwrite the "abandoned" of the
        drain that took over. Then only its counts are written (and its need
        for recovery added), the status stays. True when the verdict is ours."""
        results = queue_results or {}
        counts: dict[str, object] = {
            "queue_results": results,
            "total_processed": sum(r.get("processed", 0) for r in results.values()),
            "total_failed": sum(r.get("failed", 0) for r in results.values()),
            "redis_commands": redis_commands,
            "deadline_hit": deadline_hit,
            "recovered_jobs": recovered_jobs,
            "current_jobs": {},  # nothing runs any more
        }
        verdict: dict[str, object] = {
            "status": status,
            "finished": timezone.now(),
            "error_code": error_code,
            "error": error,
            "unsettled_claims": unsettled_claims or {},
            "has_unsettled_claims": bool(unsettled_claims),
        }
        leftovers = needs_recovery or bool(unsettled_claims)
        if leftovers:
            verdict["needs_recovery"] = True
        mine = (
            DrainRun.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
                **counts, **verdict
            )
            == 1
        )
        if not mine:
            late = dict(counts)
            if leftovers:
                # What it could not settle still has to be settled; the
                # recovery of a list already settled finds it empty.
                late.update(
                    unsettled_claims=unsettled_claims or {},
                    has_unsettled_claims=bool(unsettled_claims),
                    needs_recovery=True,
                )
            DrainRun.objects.filter(pk=self.pk).update(**late)
        self.refresh_from_db()
        return mine

    def mark_recovery_claimed(self, by: uuid.UUID) -> bool:
        """Claim the recovery of this run's leftovers for drain `by`. The
        drain lease already makes the lease holder the only recoverer; this
        records who, and makes a second pass over the same rows a no-op."""
        return (
            DrainRun.objects.filter(pk=self.pk, needs_recovery=True)
            .exclude(recovered_by=by)
            .update(recovered_by=by)
            == 1
        )

    def mark_recovered(self, by: uuid.UUID) -> bool:
        """Leftovers settled by drain `by`: nothing more to recover."""
        return (
            DrainRun.objects.filter(
                pk=self.pk, needs_recovery=True, recovered_by=by
            ).update(
                needs_recovery=False,
                has_unsettled_claims=False,
                unsettled_claims={},
                recovered_at=Now(),
            )
            == 1
        )

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    def claim_queued(self, life: timedelta) -> bool:
        """Queued -> running, once: a second process given the same run gets
        False. The time budget counts from now, not from the click. `life`
        bounds it as the lease does (lease_life), so that a process dying
        before it takes the lease leaves a run the next drain recovers."""
        now = timezone.now()
        taken = DrainRun.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.RUNNING, started=now, lease_expires=now + life
        )
        if taken == 1:
            self.status, self.started = self.Status.RUNNING, now
            self.lease_expires = now + life
        else:
            self.refresh_from_db()
        return taken == 1

    def fail_to_start(self, *, error_code: str, error: str) -> bool:
        """Queued -> failed: its background process could not start or never
        claimed it. Only while still queued (the process may claim it first)."""
        failed = DrainRun.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.FAILED,
            finished=timezone.now(),
            error_code=error_code,
            error=error,
        )
        if failed == 1:
            self.refresh_from_db()
        return failed == 1

    def note_progress(
        self,
        *,
        queue_results: dict[str, dict[str, int]],
        redis_commands: int,
        current_jobs: dict[str, str],
    ) -> bool:
        """A running drain's counts so far: one UPDATE, only while it runs
        (finish() writes the final ones)."""
        now = timezone.now()
        written = DrainRun.objects.filter(
            pk=self.pk, status=self.Status.RUNNING
        ).update(
            queue_results=queue_results,
            total_processed=sum(r["processed"] for r in queue_results.values()),
            total_failed=sum(r["failed"] for r in queue_results.values()),
            redis_commands=redis_commands,
            current_jobs=current_jobs,
            progress_at=now,
        )
        if written:
            self.progress_at = now  # finish() saves every field: keep it
        return written == 1

    def mark_skipped(self, *, blocked_by: uuid.UUID | None) -> None:
        self.status = self.Status.SKIPPED
        self.blocked_by = blocked_by
        self.finished = timezone.now()
        self.save(update_fields=["status", "blocked_by", "finished"])

    def mark_abandoned(self, *, note: str) -> bool:
        """Running -> abandoned, only if still running (another recoverer may race)."""
        updated = DrainRun.objects.filter(
            pk=self.pk, status=self.Status.RUNNING
        ).update(
            status=self.Status.ABANDONED,
            finished=timezone.now(),
            error=note,
            # Whatever it held in Redis is settled by the drain that noticed.
            needs_recovery=True,
        )
        return updated == 1


class JobRecord(models.Model):
    """One job a drain ran, and how it ended.

    Written by the drain engine from its executors' `record` report lines
    (ops/engine/records.py), so reading a job's history costs no Redis command.
    Deleted with its run (CASCADE); rows without a run by the retention prune.
    """

    class Status(models.TextChoices):
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"
        RETRIED = "retried", "Failed, retried (requeued or scheduled by its Retry)"
        ABANDONED = "abandoned", "Abandoned (its worker died)"
        REQUEUED = "requeued", "Requeued (claimed but never started)"

    job_id = models.CharField(max_length=128, help_text="The RQ job id.")
    queue = models.CharField(max_length=100)
    func = models.CharField(
        max_length=255, blank=True, help_text="The RQ job's function name."
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    exc_type = models.CharField(max_length=200, blank=True)
    # Truncated to 2000 characters (ops/engine/records.py).
    exc_message = models.TextField(blank=True)
    run = models.ForeignKey(
        DrainRun,
        null=True,
        blank=True,
        on_delete=models.CASCADE,  # pruning a run takes its jobs with it
        related_name="jobs",
        # The (run, id) index below leads with run: a second one is a waste.
        db_index=False,
    )
    worker = models.CharField(
        max_length=200, blank=True, help_text="The RQ worker that ran it."
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        # Newest first by primary key: rows are written in the order jobs end.
        ordering = ["-id"]
        verbose_name = "job record"
        verbose_name_plural = "job records"
        # Requeueing and deleting RQ jobs from the console (the queue's job
        # pages); looking at them needs only ops.view_queue.
        permissions = [("manage_jobs", "Can requeue and delete jobs")]
        indexes = [
            # A run's jobs in order (the run page); rows without a run (the
            # retention prune looks them up by run IS NULL).
            models.Index(fields=["run", "id"], name="jobrecord_run_idx"),
            # Lookups by RQ job id (every attempt of one job).
            models.Index(fields=["job_id"], name="jobrecord_job_id_idx"),
            # "Failed jobs in the last 24 h": a status over a time range.
            models.Index(fields=["status", "created"], name="jobrecord_status_idx"),
            # Scale (issue 15): the admin list's status and queue filters,
            # newest (highest id) first, and its one sortable column besides
            # the default (duration, ties by id: ops/console/admin/lists.py).
            models.Index(fields=["status", "id"], name="jobrecord_status_id_idx"),
            models.Index(fields=["queue", "id"], name="jobrecord_queue_idx"),
            models.Index(fields=["duration_ms", "id"], name="jobrecord_duration_idx"),
            # The admin search reads exc_message among the newest records
            # through the primary key (no trigram index: migration 0020).
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} ({self.status})"


class Lease(models.Model):
    """A named lease, held by one drain at a time across processes and hosts.

    Claimed with a conditional UPDATE (see ops/engine/lease.py): no lock is held while
    jobs run, and a holder that dies simply lets the lease expire.
    """

    name = models.CharField(max_length=50, primary_key=True)
    holder = models.UUIDField(null=True, blank=True)
    # Set and compared with the database's clock (ops/engine/lease.py), so
    # every host agrees on when a lease lapses.
    expires_at = models.DateTimeField(default=timezone.now)
    acquired_at = models.DateTimeField(null=True, blank=True)
    # The holder's last renewal (it renews while it runs).
    renewed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name

    def is_held(self, now: datetime | None = None) -> bool:
        return self.holder is not None and self.expires_at > (now or timezone.now())


class ScheduledHint(models.Model):
    """What the last closer look of a drain found when only scheduled jobs
    existed, none due: which registries held them and when the earliest is
    due. Until then (and at most DRAIN_SCHEDULED_RECHECK_S) a tick's one EXISTS
    leaves those registries out (ops/engine/drain.py)."""

    # The selected queues, sorted and comma-joined: a drain of other queues
    # checks other keys.
    queues = models.CharField(max_length=1000, primary_key=True)
    # The queues whose scheduled registries held those jobs (comma-joined).
    scheduled_queues = models.CharField(max_length=1000)
    earliest_due = models.DateTimeField()
    checked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.queues}: next due {self.earliest_due:%Y-%m-%d %H:%M:%S}"


def lease_life(max_duration_ms: int) -> timedelta:
    return timedelta(
        milliseconds=max_duration_ms
        + settings.DRAIN_JOB_GRACE_MS
        + settings.DRAIN_LEASE_MARGIN_MS
    )


class TokenVersion(models.Model):
    """A console-managed cron token. The token itself is never stored: only a
    display prefix and HMAC(SECRET_KEY, token) (see ops/cron/tokens.py)."""

    class Scope(models.TextChoices):
        DRAIN = "drain", "Drain only (/api/v1/cron/drain-queues)"
        CRON = "cron", "All cron endpoints (/api/v1/cron/*)"

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        GRACE = "grace", "In grace period"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    version = models.PositiveIntegerField()
    label = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=32, help_text="Shown to tell tokens apart.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when a newer version replaced it."
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    use_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["scope", "-version"]
        verbose_name = "cron token"
        verbose_name_plural = "cron tokens"
        permissions = [("rotate_tokenversion", "Can rotate and revoke cron tokens")]
        constraints = [
            # Rotation numbers versions per scope: v1, v2, ...
            models.UniqueConstraint(
                fields=["scope", "version"], name="tokenversion_scope_version_uniq"
            ),
        ]
        # `digest` is unique, so the authentication lookup by digest is indexed.

    def __str__(self) -> str:
        return f"{self.scope} v{self.version} ({self.prefix}…)"

    def state(self, now: datetime | None = None) -> str:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return self.State.REVOKED
        if self.expires_at is not None:
            return self.State.GRACE if self.expires_at > now else self.State.EXPIRED
        return self.State.ACTIVE

    def is_valid(self, now: datetime | None = None) -> bool:
        return self.state(now) in (self.State.ACTIVE, self.State.GRACE)

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def record_use(self, ip: str | None) -> None:
        TokenVersion.objects.filter(pk=self.pk).update(
            last_used_at=timezone.now(),
            last_used_ip=ip,
            use_count=models.F("use_count") + 1,
        )


class RateBucket(models.Model):
    """Rate-limit state of one client on one endpoint, as a GCRA "theoretical
    arrival time" (epoch seconds): one row, changed by one conditional UPDATE,
    so the limit holds across processes and hosts without Redis."""

    key = models.CharField(max_length=200, primary_key=True)
    tat = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return self.key


class Source(models.TextChoices):
    """What a Redis command was spent on."""

    DRAIN_CHECK = "drain-check", "Drain idle checks"
    DRAIN_JOBS = "drain-jobs", "Work done while draining"
    WORKER = "worker", "Always-on workers"
    ENQUEUE = "enqueue", "Enqueueing through the project"
    CONSOLE = "console", "Admin page views"
    API = "api", "Cron API (other than drains)"
    OTHER = "other", "Other"
    # The application's own traffic, where it goes through a metered client:
    # django-rq's connections (RQ_QUEUES in kaireon/settings.py) and redis-py
    # clients made with ops.usage.redis_client.metered_redis.
    DJANGO_RQ = "django-rq", "Application: django-rq"
    APP = "app", "Application: metered clients"


class CommandUsage(models.Model):
    """Redis commands this project's processes sent, per source and hour.

    Written by ops/usage/metering.py (batched increments, no Redis involved).
    """

    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    source = models.CharField(max_length=16, choices=Source.choices)
    commands = models.BigIntegerField(
        default=0, help_text="Billable commands (everything but AUTH, INFO, PING, …)."
    )
    unbilled = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-hour", "source"]
        constraints = [
            # The flush increments "this hour, this source": one row each.
            models.UniqueConstraint(
                fields=["hour", "source"], name="usage_hour_source_uniq"
            ),
        ]
        indexes = [
            # Period totals and daily charts scan a time range.
            models.Index(fields=["hour"], name="usage_hour_idx"),
            # The usage admin's source filter, newest hour first (issue 15).
            models.Index(fields=["source", "-hour"], name="usage_source_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.source} {self.commands}"


class QuotaIncident(models.Model):
    """Redis answered "quota exhausted". At most one is open."""

    opened_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    # "open" while open, NULL once closed: the unique constraint below then
    # allows any number of closed incidents but a single open one.
    open_marker = models.CharField(max_length=4, null=True, blank=True, default="open")
    count = models.PositiveIntegerField(default=1, help_text="Quota errors seen.")
    source = models.CharField(max_length=16, choices=Source.choices)
    last_error = models.TextField(blank=True)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    probes = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["open_marker"], name="quotaincident_one_open"
            ),
        ]

    def __str__(self) -> str:
        state = "open" if self.closed_at is None else "closed"
        return f"quota incident {self.opened_at:%Y-%m-%d %H:%M} ({state})"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class ConsoleSettings(models.Model):
    """Run-time settings changed from the admin (one row, pk=1). Environment
    variables give the defaults at first start; after that this row rules."""

    class WorkerMode(models.TextChoices):
        DEFAULT = "", "As WORKER_INPROCESS says"
        ALWAYS_ON = "always-on", "Always-on workers"
        CRON_DRAIN = "cron-drain", "Cron drain only"

    worker_mode = models.CharField(
        max_length=16, choices=WorkerMode.choices, blank=True, default=""
    )
    schedule_enabled = models.BooleanField(default=False)
    schedule_minutes = models.PositiveIntegerField(default=5)
    # When drains come from an external scheduler: how often they should come.
    expected_interval_minutes = models.PositiveIntegerField(null=True, blank=True)
    # Late after interval + grace; down after interval + 2 x grace. Empty: one interval.
    alarm_grace_minutes = models.PositiveIntegerField(null=True, blank=True)
    alarm_state = models.CharField(max_length=8, default="unknown")
    alarm_changed_at = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = "console settings"
        verbose_name_plural = "console settings"
        permissions = [("change_worker_mode", "Can switch the worker mode")]

    def __str__(self) -> str:
        return "console settings"


class WorkerProcess(models.Model):
    """An always-on worker process, as its supervisor last reported it.

    Kept in the database so that showing workers and detecting double
    consumption costs no Redis command."""

    class Role(models.TextChoices):
        INPROCESS = "inprocess", "Inside the console (WORKER_INPROCESS=1)"
        DEDICATED = "dedicated", "Dedicated (manage.py work)"

    class State(models.TextChoices):
        STARTING = "starting", "Starting"
        IDLE = "idle", "Idle"
        BUSY = "busy", "Busy"
        STOPPED = "stopped", "Stopped"
        CRASHED = "crashed", "Crashed"

    name = models.CharField(max_length=120, unique=True, help_text="RQ worker name.")
    role = models.CharField(max_length=16, choices=Role.choices)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    supervisor_pid = models.PositiveIntegerField(null=True, blank=True)
    queues = models.JSONField(default=list)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.STARTING
    )
    current_job = models.CharField(max_length=100, blank=True)
    started = models.DateTimeField(default=timezone.now)
    heartbeat = models.DateTimeField(default=timezone.now)
    stopped = models.DateTimeField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    exit_status = models.IntegerField(null=True, blank=True)
    processed = models.PositiveIntegerField(default=0, help_text="Jobs run to an end.")
    failed = models.PositiveIntegerField(default=0)
    # When what this process held in Redis was settled: by its supervisor when
    # it saw the process end, or by whoever found its heartbeat stale (its
    # supervisor was killed; ops/engine/recovery.py). NULL while it runs.
    recovered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started"]
        verbose_name_plural = "worker processes"
        indexes = [
            # "Which workers are alive?" (admin, checks, double-consumption guard).
            models.Index(fields=["state", "heartbeat"], name="workerprocess_live_idx"),
            # The admin list, newest first (issue 15: a row per process start).
            models.Index(fields=["-started", "-id"], name="workerprocess_started_idx"),
            # Drains and supervisors look for unsettled rows whose heartbeat
            # went stale (ops/engine/recovery.py: stale_workers).
            models.Index(
                fields=["heartbeat"],
                condition=models.Q(recovered_at__isnull=True),
                name="workerprocess_unsettled_idx",
            ),
            # The advisor's jobs of the last 7 days counts the processes that
            # heartbeat in the window, stopped ones included
            # (ops/usage/advisor.py: jobs_last_7d): a range, not a scan.
            models.Index(fields=["heartbeat"], name="workerprocess_heartbeat_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class AlertEvent(models.TextChoices):
    """What an alert channel can be told about (ops/scheduling/alerts.py)."""

    MISSED_TICK = "missed_tick", "Missed tick (the drain alarm turns late/down/ok)"
    QUOTA_THRESHOLD = "quota_threshold", "Quota threshold crossed (80 %, 95 %)"
    QUOTA_INCIDENT = "quota_incident", "Quota incident opened or closed"
    FAILED_JOBS = "failed_jobs", "Failed jobs over the hourly threshold"


class AlertChannel(models.Model):
    """Where alerts go: a webhook (generic JSON or Slack-compatible) or email.

    The environment's ALARM_WEBHOOK_URL / ALARM_EMAILS are implicit channels
    on top of these rows (ops/scheduling/alerts.py)."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (generic JSON)"
        SLACK = "slack", "Slack-compatible webhook"
        EMAIL = "email", "Email"

    name = models.CharField(max_length=100, help_text="Shown in lists and messages.")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    target = models.CharField(
        max_length=1000,
        help_text="The webhook's http(s) URL, or comma-separated email addresses.",
    )
    enabled = models.BooleanField(default=True)
    # A list of AlertEvent values.
    events = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "alert channel"
        verbose_name_plural = "alert channels"
        # A handful of rows, read whole by every dispatch: no index needed.

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def record_result(self, error: str, *, at: datetime | None = None) -> None:
        """The outcome of one send: when it went out, and why it failed ("" if
        it did not). One UPDATE, so a concurrent edit of the row stands."""
        at = at or timezone.now()
        self.last_sent_at, self.last_error = at, error[:2000]
        AlertChannel.objects.filter(pk=self.pk).update(
            last_sent_at=at, last_error=error[:2000]
        )


class AlertState(models.Model):
    """What the alert check already sent, so each alert fires once across
    processes: a row per fired alert ("quota:<period>:80", "incident:7:opened")
    inserted by the one evaluator that wins the unique key, or a toggled state
    ("failed_jobs": "firing"/"ok") changed by a conditional UPDATE."""

    key = models.CharField(max_length=120, primary_key=True)
    state = models.CharField(max_length=16, default="sent")
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.key}: {self.state}"


class MetricsCarry(models.Model):
    """Totals of the drain runs the metrics endpoint has folded in (pk=1),
    so that its counters keep counting after the retention prune deletes the
    runs (ops/monitoring/metrics.py). Runs started before `watermark` are in
    `totals`; later ones are counted from their rows. pk=2 carries the Redis
    command counters the same way: usage hours before its watermark."""

    watermark = models.DateTimeField(null=True, blank=True)
    totals = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"metrics carried up to {self.watermark}"


class ProviderUsageReading(models.Model):
    """The provider's own count of billed commands at a moment: parsed from a
    quota error (`… Limit: 500000, Usage: 500000.`) or entered by an SRE from
    the provider's dashboard. History: appended, never edited (the admin
    shows it read-only). ops/usage/quota.py compares it with what the meters
    recorded to estimate the commands no meter saw."""

    class Kind(models.TextChoices):
        MONTHLY = "monthly", "Monthly (this billing period)"
        DAILY = "daily", "Daily (today, UTC)"

    class Origin(models.TextChoices):
        ERROR = "error", "A quota error"
        MANUAL = "manual", "Entered from the provider's dashboard"

    at = models.DateTimeField(
        default=timezone.now, help_text="When the provider's figure was true."
    )
    used = models.BigIntegerField(help_text="Billed commands, as the provider counts.")
    limit = models.BigIntegerField(
        null=True, blank=True, help_text="The provider's limit, when it said."
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    origin = models.CharField(max_length=8, choices=Origin.choices)
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    note = models.CharField(
        max_length=300, blank=True, help_text="The error text, or the SRE's note."
    )

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "provider usage reading"
        verbose_name_plural = "provider usage readings"
        indexes = [
            # "The latest monthly (or daily) reading": ops/usage/quota.py.
            models.Index(fields=["kind", "-at"], name="providerreading_kind_at_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(used__gte=0), name="providerreading_used_gte_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.used:,} at {self.at:%Y-%m-%d %H:%M} ({self.origin})"


class JobStopRequest(models.Model):
    """An operator's request that a running job stop (the console's Stop).

    The database carries it, not Redis: the process running the job looks for
    a request for its current job once a second while the job runs
    (ops/engine/stop.py), so nothing costs a Redis command, idle or not. RQ's
    own `send_stop_job_command` (pubsub) is not listened to (docs/executor.md).
    Kept as history: never edited from the UI, deleted only with retention.
    """

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending (the job's process has not seen it yet)"
        STOPPED = "stopped", "Stopped (the job was interrupted and failed as stopped)"
        # A request applies only to the run of the job that was going on when
        # it was made (ops/engine/stop.py): a later run (a retry of the same
        # job id) that finds it closes it instead of stopping.
        OBSOLETE = (
            "obsolete",
            "Obsolete (that run had ended; a later run of the job was not stopped)",
        )
        NOT_RUNNING = (
            "not_running",
            "Not running (no process was running the job: it had ended, "
            "or its worker does not watch for stops)",
        )

    job_id = models.CharField(max_length=200, help_text="The RQ job id.")
    queue = models.CharField(max_length=100)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    requested_at = models.DateTimeField(default=timezone.now)
    handled_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=16, choices=Outcome.choices, default=Outcome.PENDING
    )
    handled_by = models.CharField(
        max_length=200,
        blank=True,
        help_text="The worker that stopped the job, or who closed the request "
        "unused and why.",
    )

    class Meta:
        ordering = ["-requested_at", "-id"]
        verbose_name = "job stop request"
        verbose_name_plural = "job stop requests"
        # Stopping a running job from the console (the queue's started-jobs
        # page); looking needs only ops.view_queue.
        permissions = [("stop_jobs", "Can stop running jobs")]
        constraints = [
            # At most one open request per job. Also the index of the running
            # job's poll: WHERE job_id = %s AND handled_at IS NULL.
            models.UniqueConstraint(
                fields=["job_id"],
                condition=models.Q(handled_at__isnull=True),
                name="jobstoprequest_one_open",
            ),
        ]
        indexes = [
            # Closing requests nobody took (ops/engine/stop.py close_stale):
            # WHERE handled_at IS NULL AND requested_at < %s — a few open rows.
            models.Index(
                fields=["requested_at"],
                condition=models.Q(handled_at__isnull=True),
                name="jobstoprequest_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"stop {self.job_id} ({self.outcome})"

    def mark_stopped(self, worker: str) -> bool:
        """Claim the request for the process that stops the job: True for
        exactly one caller (a conditional UPDATE), even with two processes
        running the same job id."""
        now = timezone.now()
        updated = JobStopRequest.objects.filter(
            pk=self.pk, handled_at__isnull=True
        ).update(handled_at=now, outcome=self.Outcome.STOPPED, handled_by=worker[:200])
        if updated:
            self.handled_at, self.outcome, self.handled_by = (
                now,
                self.Outcome.STOPPED,
                worker[:200],
            )
        return updated == 1

    def close_unused(self, outcome: str, by: str) -> bool:
        """Close the request without stopping anything (`obsolete`,
        `not_running`): True for the one caller whose conditional UPDATE
        closed it; False when a worker took it (or someone closed it) first."""
        updated = JobStopRequest.objects.filter(
            pk=self.pk, handled_at__isnull=True
        ).update(handled_at=Now(), outcome=outcome, handled_by=by[:200])
        if updated:
            self.refresh_from_db(fields=["handled_at", "outcome", "handled_by"])
        return updated == 1
