"""The mode advisor: which worker mode to pick, from figures.

For each way of running the jobs — always-on RQ workers, or a cron drain every
1, 5, 15 or 30 minutes — what a month would cost in Redis commands at today's
job volume, the worst-case wait before a job starts, and whether that fits the
budget. Costs are measured from this deployment's DrainRun rows once there are
enough of them, else taken from the benchmark figures below. Reading them costs
database queries only, never a Redis command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from ops.models import CommandUsage, DrainRun, Source, WorkerProcess
from ops.usage import provider
from ops.usage.period import billing_period

# --- Benchmark figures: the one place they live -------------------------------
# From docs/benchmarks.md (bench/drain_bench.py, run of 2026-11-29; redis 7.0.15,
# rq 2.12, redis-py 8.1) and docs/redis-billing.md. Update them here
# when the benchmark is re-run; they are used until this deployment has
# measured its own costs from its DrainRun rows (see below).
#
# An idle drain tick: one EXISTS over every queue's list and scheduled set
# (docs/benchmarks.md §1: 1 billable command, fresh process and in-process).
BENCH_IDLE_TICK = 1.0
BENCH_IDLE_TICK_NOTE = "benchmark: 1 EXISTS per idle tick (docs/benchmarks.md §1)"
# One job on the drain path, by executor (DRAIN_EXECUTOR).
# lean (docs/benchmarks.md, run of 2026-11-30): 8,160 billed for 2,000 jobs in
# one drain = 4.08 a job (HSET + XADD + 2 EXPIRE, and a claim per batch of up
# to 100). Its fixed part per drain with work, beyond the idle check, is 19
# (tests/engine/test_drain_engine.py: a drain with one job costs exactly 24 =
# 1 + 19 + 4): the look (the lists' depths, the due scheduled ids, one EXISTS
# over the intermediate lists), the child's claim and closing.
# rq: RQ's own job life cycle in the drain's SimpleWorker child, 52 a job
# (§2 of the run of 2026-11-29: 10,453 commands for 200 jobs = 200 x 52 + 53
# fixed, i.e. 52 beyond the idle check).
# At cron batch sizes of a job or two the fixed part is as big as the jobs, so
# the advisor counts it per busy drain, not per job.
BENCH_PER_JOB = {"lean": 4.08, "rq": 52.0}
BENCH_PER_JOB_NOTE = {
    "lean": "benchmark: lean executor, 4.08 per job (docs/benchmarks.md)",
    "rq": "benchmark: RQ job life cycle, 52 per job (docs/benchmarks.md)",
}
BENCH_BUSY_DRAIN_OVERHEAD = {"lean": 19.0, "rq": 52.0}
BENCH_BUSY_DRAIN_NOTE = {
    "lean": "tests: 19 fixed per drain with work beyond the idle check "
    "(docs/benchmarks.md)",
    "rq": "benchmark: 53 fixed per drain with work, less the idle check "
    "(docs/benchmarks.md)",
}
# The console's always-on workers (`manage.py work`, one process for the five
# queues) idle: one ~1 h blocking wait and a scheduled-job scan every 300 s
# (1 command). The wait costs 1 command a wake-up on the lean worker (BLMPOP)
# and 3 on RQ's (heartbeat HSET + EXPIRE, BLPOP): 13 and 15 an hour
# (tests/workers/test_always_on_workers.py; a plain `rq worker` spends ~4.2 a
# minute).
ALWAYS_ON_IDLE_PER_MINUTE = {"lean": 13 / 60, "rq": 15 / 60}
ALWAYS_ON_IDLE_NOTE = {
    "lean": "tests: lean `manage.py work` idle 13/h per process",
    "rq": "benchmark: `manage.py work` idle 15.0/h per process (docs/benchmarks.md)",
}
# A job on those workers: 14 on the lean worker for a job that wakes it
# (tests/workers/test_always_on_workers.py), 52 on RQ's.
ALWAYS_ON_PER_JOB = {"lean": 14.0, "rq": 52.0}
ALWAYS_ON_PER_JOB_NOTE = {
    "lean": "tests: 14 per job on a lean always-on worker",
    "rq": "benchmark: 52 per job (docs/benchmarks.md)",
}


# --- Measuring this deployment's own costs -------------------------------------
# Below these counts the benchmark figures are used: a handful of runs says
# little (a drain that also recovered a dead run's jobs costs more, say).
MIN_IDLE_SAMPLES = 20
MIN_JOB_SAMPLES = 50
MEASURE_WINDOW = timedelta(days=30)
# At most this many of the newest runs are measured (a 5-minute cron makes
# 8,640 in the window; a 1-minute cron over several environments 80,000+,
# whose aggregate took 55 ms of the quota page, docs/benchmarks.md).
MEASURE_MAX_RUNS = 20_000
VOLUME_WINDOW = timedelta(days=7)

# --- The table -----------------------------------------------------------------
# A month is 30 days here, as in the runbook (a 5-minute cron = 8,640 ticks).
MONTH_DAYS = 30
MONTH_MINUTES = MONTH_DAYS * 24 * 60
CRON_INTERVALS_MIN = (1, 5, 15, 30)
# The runbook's default cron interval, and the budget of the tier it names
# (Upstash free tier: 500,000 commands a month).
RUNBOOK_INTERVAL_MIN = 5
FREE_TIER_COMMANDS = 500_000
ALWAYS_ON = "always-on"
# Sources that cost the same whatever the mode: added to every row's total.
OTHER_SOURCES = (Source.CONSOLE, Source.API, Source.OTHER)
# The application's own traffic where a meter sees it (provider.APPLICATION_SOURCES)
# is added to every row too, with what the provider's figure says no meter saw.
APPLICATION_SOURCES = provider.APPLICATION_SOURCES
HOURS_PER_MONTH = MONTH_DAYS * 24


@dataclass(frozen=True)
class Figure:
    value: float
    note: str  # where it comes from, shown beside it
    samples: int = 0

    @property
    def measured(self) -> bool:
        return self.samples > 0


@dataclass(frozen=True)
class Costs:
    idle_tick: Figure  # one cron drain tick that finds nothing
    per_job: Figure  # one job on the drain path
    always_on_idle_per_minute: Figure  # one always-on worker process, idle
    always_on_per_job: Figure
    # Paid by each drain that finds work, beyond its idle check. 0 when the
    # per-job figure is measured: it then already carries this overhead,
    # spread over the batch sizes this deployment actually drains.
    busy_drain_overhead: Figure = Figure(0.0, "included in the per-job figure")


@dataclass(frozen=True)
class ModeRow:
    key: str  # "always-on" or "cron-5"
    label: str
    interval_minutes: int | None  # None for always-on
    latency_seconds: int  # worst case before a queued job starts
    idle_commands: int  # a month of doing nothing
    job_commands: int  # a month of today's jobs
    other_commands: int  # the console's pages and API (every row)
    total: int
    percent_of_budget: float
    fits: bool
    fits_with_margin: bool
    basis: str  # the arithmetic, so a reader can check it
    recommended: bool = False
    # The application's own Redis traffic (every row), measured or configured.
    application_commands: int = 0

    @property
    def latency_label(self) -> str:
        if self.interval_minutes is None:
            return "≈ 0 s"
        return f"≤ {self.interval_minutes} min"

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.key,
            "label": self.label,
            "intervalMinutes": self.interval_minutes,
            "latencySeconds": self.latency_seconds,
            "idleCommands": self.idle_commands,
            "jobCommands": self.job_commands,
            "otherCommands": self.other_commands,
            "applicationCommands": self.application_commands,
            "commandsPerMonth": self.total,
            "percentOfBudget": round(self.percent_of_budget, 2),
            "fits": self.fits,
            "fitsWithMargin": self.fits_with_margin,
            "recommended": self.recommended,
            "basis": self.basis,
        }


@dataclass(frozen=True)
class Advice:
    rows: list[ModeRow]
    recommended: ModeRow | None
    reason: str
    budget: int
    margin_percent: int
    jobs_last_7d: int
    jobs_per_month: float
    other_per_month: float
    workers: int
    costs: Costs
    application: Figure = Figure(0.0, "no application traffic measured or assumed")

    def figures(self) -> list[tuple[str, str, str]]:
        """(what, value, where from) for the page and the command."""
        c = self.costs
        return [
            ("Idle drain tick", f"{c.idle_tick.value:,.2f} commands", c.idle_tick.note),
            (
                "Job on the drain path",
                f"{c.per_job.value:,.1f} commands",
                c.per_job.note,
            ),
            (
                "Always-on worker, idle",
                f"{c.always_on_idle_per_minute.value:,.1f} commands/min per process",
                c.always_on_idle_per_minute.note,
            ),
            (
                "Job on an always-on worker",
                f"{c.always_on_per_job.value:,.1f} commands",
                c.always_on_per_job.note,
            ),
            (
                "Job volume",
                f"{self.jobs_per_month:,.0f} jobs/month",
                f"drains of the last 7 days: {self.jobs_last_7d:,} jobs x 30/7",
            ),
            (
                "Other Redis use",
                f"{self.other_per_month:,.0f} commands/month",
                "console, api, other of the last 7 days x 30/7",
            ),
            (
                "Application traffic",
                f"{self.application.value:,.0f} commands/month",
                self.application.note,
            ),
        ]

    def as_json(self) -> list[dict[str, Any]]:
        return [row.as_json() for row in self.rows]

    def summary_json(self) -> dict[str, Any]:
        return {
            "recommended": self.recommended.key if self.recommended else None,
            "reason": self.reason,
            "marginPercent": self.margin_percent,
            "jobsLast7d": self.jobs_last_7d,
            "jobsPerMonth": round(self.jobs_per_month, 1),
            "otherPerMonth": round(self.other_per_month, 1),
            "applicationPerMonth": round(self.application.value, 1),
            "applicationSource": self.application.note,
            "workers": self.workers,
            "figures": [
                {"what": what, "value": value, "source": source}
                for what, value, source in self.figures()
            ],
        }


# --- Measured inputs -------------------------------------------------------------


def measured_costs(now: datetime | None = None) -> Costs:
    """Per idle tick and per job from this deployment's drains (two queries)."""
    now = now or timezone.now()
    executor = settings.DRAIN_EXECUTOR
    idle = Q(status=DrainRun.Status.SUCCEEDED, total_processed=0)
    # A drain stopped at its deadline, or whose jobs failed, still did (and
    # paid for) its jobs.
    busy = Q(
        status__in=[
            DrainRun.Status.SUCCEEDED,
            DrainRun.Status.WITH_FAILURES,
            DrainRun.Status.DEADLINE,
        ],
        total_processed__gt=0,
    )
    # COUNT(started), not COUNT(id): every column read is in drainrun_window_idx
    # (started, status, total_processed, redis_commands), so the month is an
    # index-only range scan; the id would send it to the table (43 ms at a
    # year of history, docs/benchmarks.md).
    since = now - MEASURE_WINDOW
    # The start of the MEASURE_MAX_RUNS-th newest run, when later than the
    # window's: an OFFSET into drainrun_started_idx, a few milliseconds.
    cap = (
        DrainRun.objects.filter(started__gte=since, started__lte=now)
        .order_by("-started")
        .values_list("started", flat=True)[MEASURE_MAX_RUNS - 1 : MEASURE_MAX_RUNS]
        .first()
    )
    agg = DrainRun.objects.filter(
        started__gte=max(since, cap) if cap else since, started__lte=now
    ).aggregate(
        idle_runs=Count("started", filter=idle),
        idle_commands=Sum("redis_commands", filter=idle),
        busy_runs=Count("started", filter=busy),
        busy_commands=Sum("redis_commands", filter=busy),
        busy_jobs=Sum("total_processed", filter=busy),
    )
    idle_runs = agg["idle_runs"] or 0
    if idle_runs >= MIN_IDLE_SAMPLES:
        idle_tick = Figure(
            (agg["idle_commands"] or 0) / idle_runs,
            f"measured here: {idle_runs:,} idle drains",
            idle_runs,
        )
    else:
        idle_tick = Figure(BENCH_IDLE_TICK, BENCH_IDLE_TICK_NOTE)

    jobs = agg["busy_jobs"] or 0
    busy_runs = agg["busy_runs"] or 0
    if jobs >= MIN_JOB_SAMPLES:
        # Each busy run began with the same check an idle tick makes: that part
        # is tick cost, not job cost.
        work = (agg["busy_commands"] or 0) - busy_runs * idle_tick.value
        per_job = Figure(
            max(0.0, work) / jobs,
            f"measured here: {jobs:,} jobs in {busy_runs:,} drains",
            jobs,
        )
        overhead = Figure(0.0, "measured: included in the per-job figure")
    else:
        per_job = Figure(BENCH_PER_JOB[executor], BENCH_PER_JOB_NOTE[executor])
        overhead = Figure(
            BENCH_BUSY_DRAIN_OVERHEAD[executor], BENCH_BUSY_DRAIN_NOTE[executor]
        )
    return Costs(
        idle_tick=idle_tick,
        per_job=per_job,
        always_on_idle_per_minute=Figure(
            ALWAYS_ON_IDLE_PER_MINUTE[executor], ALWAYS_ON_IDLE_NOTE[executor]
        ),
        always_on_per_job=Figure(
            ALWAYS_ON_PER_JOB[executor], ALWAYS_ON_PER_JOB_NOTE[executor]
        ),
        busy_drain_overhead=overhead,
    )


def jobs_last_7d(now: datetime) -> int:
    """Jobs drained, plus jobs run by always-on worker processes alive in the
    window (their whole count: a process's jobs are not dated one by one)."""
    drained = (
        DrainRun.objects.filter(
            started__gte=now - VOLUME_WINDOW, started__lte=now
        ).aggregate(jobs=Sum("total_processed"))["jobs"]
        or 0
    )
    by_workers = (
        WorkerProcess.objects.filter(
            heartbeat__gte=now - VOLUME_WINDOW, started__lte=now
        ).aggregate(jobs=Sum("processed"))["jobs"]
        or 0
    )
    return drained + by_workers


def other_commands_last_7d(now: datetime) -> int:
    return (
        CommandUsage.objects.filter(
            hour__gte=now - VOLUME_WINDOW, hour__lte=now, source__in=OTHER_SOURCES
        ).aggregate(total=Sum("commands"))["total"]
        or 0
    )


def application_per_month(now: datetime) -> Figure:
    """The application's Redis commands in a 30-day month: what its metered
    clients sent in the last 7 days, plus what the latest provider figure
    says no meter saw (at its hourly rate); with neither, the SRE's assumption
    QUOTA_APP_COMMANDS_PER_DAY (an application request costs ~5-8 commands)."""
    week_to_month = MONTH_DAYS / 7
    metered = (
        CommandUsage.objects.filter(
            hour__gte=now - VOLUME_WINDOW,
            hour__lte=now,
            source__in=APPLICATION_SOURCES,
        ).aggregate(total=Sum("commands"))["total"]
        or 0
    )
    period = billing_period(now)
    unseen = provider.unseen(now, period.start, period.end)
    parts = []
    if metered:
        parts.append(
            f"metered {metered:,} in the last 7 days x 30/7 "
            f"({', '.join(APPLICATION_SOURCES)})"
        )
    if unseen.per_hour > 0:
        parts.append(
            f"{unseen.per_hour:,.1f}/h unseen x {HOURS_PER_MONTH} h ({unseen.basis()})"
        )
    if parts:
        value = metered * week_to_month + unseen.per_hour * HOURS_PER_MONTH
        return Figure(value, "; ".join(parts), samples=metered + unseen.commands)
    assumed = settings.QUOTA_APP_COMMANDS_PER_DAY
    if assumed:
        return Figure(
            assumed * MONTH_DAYS,
            f"assumed: QUOTA_APP_COMMANDS_PER_DAY={assumed:,} x {MONTH_DAYS} days "
            "(nothing measured yet)",
        )
    return Figure(
        0.0,
        "none measured: no metered application traffic in 7 days and no provider "
        "figure this period (set QUOTA_APP_COMMANDS_PER_DAY to assume one)",
    )


def advice_now(now: datetime | None = None, *, workers: int = 1) -> Advice:
    """The advisor table from the database (a few queries, no Redis)."""
    now = now or timezone.now()
    week_to_month = MONTH_DAYS / 7
    jobs = jobs_last_7d(now)
    return advise(
        budget=settings.QUOTA_MONTHLY_BUDGET,
        jobs_last_7d=jobs,
        jobs_per_month=jobs * week_to_month,
        other_per_month=other_commands_last_7d(now) * week_to_month,
        application=application_per_month(now),
        costs=measured_costs(now),
        margin_percent=min(settings.QUOTA_WARN_THRESHOLDS),
        workers=workers,
    )


# --- The table and the recommendation (pure) -------------------------------------


def advise(
    *,
    budget: int,
    jobs_per_month: float,
    costs: Costs,
    jobs_last_7d: int | None = None,
    other_per_month: float = 0.0,
    application: Figure | None = None,
    margin_percent: int = 80,
    workers: int = 1,
) -> Advice:
    """One row per mode, and the recommended one.

    "Fits with margin" means the month stays under `margin_percent` of the
    budget (the first warning threshold: following the advice should not set
    off the console's own warning). Among those rows:

    * with job traffic, the lowest-latency row (the runbook's "paid Redis +
      active traffic → WORKER_INPROCESS=1", decided by the measured costs
      rather than by the budget's size);
    * without jobs in the last 7 days, the runbook's 5-minute cron drain, or
      the fastest slower cron that fits when it does not;
    * when nothing fits with margin, the cheapest row that still fits; when
      nothing fits at all, no recommendation (upgrade or move).
    """
    jobs_last_7d = (
        round(jobs_per_month * 7 / MONTH_DAYS) if jobs_last_7d is None else jobs_last_7d
    )
    other = round(other_per_month)
    application = application or Figure(0.0, "no application traffic given")
    app = round(application.value)
    rows: list[ModeRow] = []

    def row(
        key: str, label: str, interval: int | None, idle: float, job: float, basis: str
    ) -> ModeRow:
        idle_i, job_i = round(idle), round(job)
        total = idle_i + job_i + other + app
        return ModeRow(
            key=key,
            label=label,
            interval_minutes=interval,
            latency_seconds=0 if interval is None else interval * 60,
            idle_commands=idle_i,
            job_commands=job_i,
            other_commands=other,
            application_commands=app,
            total=total,
            percent_of_budget=100.0 * total / budget if budget else 0.0,
            fits=total <= budget,
            fits_with_margin=total * 100 <= budget * margin_percent,
            basis=basis,
        )

    per_min = costs.always_on_idle_per_minute.value
    rows.append(
        row(
            ALWAYS_ON,
            f"Always-on workers ({workers} process{'es' if workers != 1 else ''})",
            None,
            workers * per_min * MONTH_MINUTES,
            jobs_per_month * costs.always_on_per_job.value,
            f"{workers} x {per_min:g}/min x {MONTH_MINUTES:,} min + "
            f"{jobs_per_month:,.0f} jobs x {costs.always_on_per_job.value:g}",
        )
    )
    overhead = costs.busy_drain_overhead.value
    for minutes in CRON_INTERVALS_MIN:
        ticks = MONTH_MINUTES // minutes
        busy = busy_drains(jobs_per_month, ticks) if overhead else 0.0
        basis = (
            f"{ticks:,} ticks x {costs.idle_tick.value:g} + "
            f"{jobs_per_month:,.0f} jobs x {costs.per_job.value:.4g}"
        )
        if overhead:
            basis += f" + {busy:,.0f} busy drains x {overhead:g}"
        rows.append(
            row(
                f"cron-{minutes}",
                f"Cron drain every {minutes} min",
                minutes,
                ticks * costs.idle_tick.value,
                jobs_per_month * costs.per_job.value + busy * overhead,
                basis,
            )
        )

    chosen, reason = _recommend(rows, budget, jobs_last_7d, margin_percent)
    if chosen is not None:
        chosen = replace(chosen, recommended=True)
        rows = [chosen if r.key == chosen.key else r for r in rows]
    return Advice(
        rows=rows,
        recommended=chosen,
        reason=reason,
        budget=budget,
        margin_percent=margin_percent,
        jobs_last_7d=jobs_last_7d,
        jobs_per_month=jobs_per_month,
        other_per_month=other_per_month,
        workers=workers,
        costs=costs,
        application=application,
    )


def busy_drains(jobs_per_month: float, ticks: int) -> float:
    """Expected ticks a month that find at least one job, for jobs arriving
    independently of each other (a Poisson process): each tick is busy with
    probability 1 - e^(-jobs per tick). Jobs enqueued in bursts fill fewer
    ticks, so this errs on the costly side."""
    if jobs_per_month <= 0:
        return 0.0
    return ticks * -math.expm1(-jobs_per_month / ticks)


def _recommend(
    rows: list[ModeRow], budget: int, jobs_last_7d: int, margin: int
) -> tuple[ModeRow | None, str]:
    by_latency = sorted(rows, key=lambda r: r.latency_seconds)
    roomy = [r for r in by_latency if r.fits_with_margin]
    if jobs_last_7d > 0 and roomy:
        # The runbook keeps free tiers on a 5-minute cron because its always-on
        # workers cost ~30 commands a minute idle. Measured figures decide here:
        # when always-on (or a fast cron) fits with margin, latency is free.
        return roomy[0], (
            f"With job traffic: the lowest-latency mode whose month stays under "
            f"{margin} % of the budget, at the measured costs in the table."
        )
    paid = budget > FREE_TIER_COMMANDS
    slow_enough = [
        r
        for r in roomy
        if r.interval_minutes is not None and r.interval_minutes >= RUNBOOK_INTERVAL_MIN
    ]
    why = (
        "a free-tier budget"
        if not paid
        else "no jobs in the last 7 days, so always-on latency buys nothing"
    )
    if slow_enough:
        first = slow_enough[0]
        if first.interval_minutes == RUNBOOK_INTERVAL_MIN:
            return first, (
                f"With {why}: a cron drain every {RUNBOOK_INTERVAL_MIN} "
                f"min (WORKER_INPROCESS=0), which stays under {margin} % of the "
                f"budget. Faster modes spend idle commands a small budget needs "
                f"for jobs."
            )
        return first, (
            f"With {why}: a {RUNBOOK_INTERVAL_MIN}-minute cron would pass {margin} % "
            f"of the budget; the fastest slower interval that stays under it."
        )
    fitting = sorted((r for r in rows if r.fits), key=lambda r: r.total)
    if fitting:
        return fitting[0], (
            f"No mode stays under {margin} % of the budget at this job volume: the "
            f"cheapest one that still fits, with little room to spare. Plan an "
            f"upgrade (pay-as-you-go or a larger plan)."
        )
    return None, (
        "No mode fits the budget at this job volume: upgrade to pay-as-you-go, "
        "move to a different Redis or reduce the job volume."
    )
