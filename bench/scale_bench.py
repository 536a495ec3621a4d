"""Scale benchmark (issue 15): every console page over a year of history.

    .venv/bin/python -m bench.scale_bench [--runs 1000000] [--job-records 10000000]
        [--workers 5000] [--db postgres://postgres@127.0.0.1:5432/kaireon_scale]
        [--reuse] [--keep] [--no-prune] [--no-pages] [--prune-days 90]
        [--prune-batch N] [--idle-drain-in-thread] [--json]

Builds the data set on PostgreSQL with `INSERT … SELECT generate_series(…)`
(no ORM, no Python loop): `--runs` drain runs spread over the last 365 days
(status mix ~88% succeeded, 6% skipped, 3% with failures, 1.5% deadline, 1%
failed, 0.5% abandoned; triggers ~90% cron, 5% schedule, 3% admin, 2% CLI;
85% of the finished runs idle), a year of hourly usage rows per source,
`--workers` worker-process rows and `--job-records` job records (10 per run
in time order, 95% finished, 3% failed with an exception, the rest retried,
abandoned or requeued), then VACUUM ANALYZE. The database is dropped and
created unless `--reuse` finds one already holding those sizes; it is dropped
at the end unless `--keep` (or `--reuse`).

Then it measures, in-process through Django's test client (DEBUG off, the
production settings, a private redis-server for the pages that read Redis),
each page 5 times after one warm-up: the median server time, the query count,
the slowest query, and an EXPLAIN of every query of the page flagging a `Seq
Scan` on the history tables (ops_drainrun, ops_jobrecord, ops_commandusage,
ops_workerprocess). Pages: the admin index, each history list's default view,
its searches, each sort its headers offer (both directions), its filters, its
last page and a page past the end; detail pages; the quota page; the other
admin pages; GET /api/v1/cron/status; GET /api/v1/cron/metrics (its first
scrape, which folds the history once, timed apart); the alert-event check,
the drain's recovery lookups and the stop-request poll; `manage.py quota
--json`; `manage.py redis_switch_check --json`. Last (unless `--no-prune`), the prune
(ops/cron/retention.py) with HISTORY_RETENTION_DAYS=90, call after call until
complete, while another process (bench/idle_drainer.py; production never runs
a drain in the prune's process) runs an idle drain every 200 ms: each call's
time, the longest delete transaction, and the idle drains' latency, with the
slowest drains' slowest statements. `--idle-drain-in-thread` runs those drains
in a thread of the prune's process instead (the first method, for comparison:
they then wait for the prune's share of the interpreter lock too).

Target (printed PASS/FAIL): every page ≤ 150 ms median server time and no
sequential scan of a history table; prune transactions ≤ 1 s and idle drains
≤ 50 ms while it runs. Exit status 0 only when every target passes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from bench.redis_server import PrivateRedis

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/kaireon_scale"
ROUNDS = 5
TARGET_MS = 150.0
PRUNE_TX_TARGET_MS = 1000.0
IDLE_DRAIN_TARGET_MS = 50.0
BIG_TABLES = ("ops_drainrun", "ops_jobrecord", "ops_commandusage", "ops_workerprocess")
QUEUES = ["batch-jobs", "dsar-jobs", "journey-jobs", "retrain-jobs", "seed-jobs"]
SOURCES = ["drain-check", "drain-jobs", "worker", "enqueue", "console", "api", "other"]
CRON_SECRET = "scale-bench-cron-secret-0123456789"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------


def _admin_url(db_url: str) -> tuple[str, str]:
    base, _, name = db_url.rpartition("/")
    return f"{base}/postgres", name


def database_exists(db_url: str) -> bool:
    admin, name = _admin_url(db_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        return bool(
            conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [name]
            ).fetchone()
        )


def recreate_database(db_url: str, *, drop_only: bool = False) -> None:
    admin, name = _admin_url(db_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


RUNS_SQL = """
INSERT INTO ops_drainrun (
    public_id, trigger, requested_by_id, caller, params, status, started, finished,
    total_processed, total_failed, queue_results, redis_commands, deadline_hit,
    blocked_by, worker_prefix, lease_expires, recovered_jobs, credential,
    error_code, error, unsettled_claims, has_unsettled_claims, current_jobs,
    needs_recovery)
SELECT gen_random_uuid(), r.trigger, NULL,
    CASE r.trigger WHEN 'cron' THEN 'cron 10.0.' || (i % 7) || '.' || (i % 23 + 1)
                   WHEN 'admin' THEN 'admin operator' || (i % 5)
                   WHEN 'cli' THEN 'host' || (i % 3) || '/' || (1000 + i % 9000)
                   ELSE 'schedule' END,
    '{}'::jsonb, r.status, r.started,
    CASE WHEN r.status = 'running' THEN NULL
         ELSE r.started + (r.busy * 40 + 12) * interval '1 millisecond' END,
    r.busy, CASE WHEN r.status = 'with_failures' THEN 1 + i % 3 ELSE 0 END,
    '{}'::jsonb,
    CASE WHEN r.status = 'skipped' THEN 0 WHEN r.busy = 0 THEN 1 ELSE 19 + 5 * r.busy END,
    r.status = 'deadline', NULL, 'kdrain.' || md5(i::text), NULL, 0,
    CASE r.trigger WHEN 'cron' THEN 'CRON_SECRET' ELSE '' END,
    CASE WHEN r.status = 'failed' THEN 'redis_unavailable' ELSE '' END,
    CASE WHEN r.status = 'failed' THEN 'Error 111 connecting to redis' ELSE '' END,
    '{}'::jsonb, false, '{}'::jsonb, false
FROM (
    SELECT i,
        now() - interval '365 days' + (i::float8 / %(n)s) * interval '365 days' AS started,
        CASE WHEN u < 0.88 THEN 'succeeded' WHEN u < 0.94 THEN 'skipped'
             WHEN u < 0.97 THEN 'with_failures' WHEN u < 0.985 THEN 'deadline'
             WHEN u < 0.995 THEN 'failed' ELSE 'abandoned' END AS status,
        CASE WHEN t < 0.90 THEN 'cron' WHEN t < 0.95 THEN 'schedule'
             WHEN t < 0.98 THEN 'admin' ELSE 'cli' END AS trigger,
        CASE WHEN u >= 0.88 AND u < 0.94 THEN 0
             WHEN u >= 0.94 AND u < 0.985 THEN 1 + (i * 7919) % 300
             WHEN b < 0.85 THEN 0 ELSE 1 + (i * 7919) % 200 END AS busy
    FROM (SELECT i, random() AS u, random() AS t, random() AS b
          FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i) AS s
) AS r
"""  # noqa: E501

JOBS_SQL = """
INSERT INTO ops_jobrecord (
    job_id, queue, func, status, started, ended, duration_ms, exc_type,
    exc_message, run_id, worker, created)
SELECT md5('job' || j.i), j.queue, j.func, j.status, j.at,
    j.at + j.ms * interval '1 millisecond', j.ms,
    CASE WHEN j.status IN ('failed', 'retried') THEN 'ValueError'
         WHEN j.status = 'abandoned' THEN 'WorkHorseKilled' ELSE '' END,
    CASE WHEN j.status IN ('failed', 'retried')
              THEN 'order ' || (j.i % 100000) || ' could not be charged: card declined'
         WHEN j.status = 'abandoned' THEN 'its worker died (SIGKILL)' ELSE '' END,
    %(first_run)s + ((j.i - 1) * %(runs)s) / %(n)s, 'lean.host' || (j.i % 3) || '.' || (j.i % 97),
    j.at
FROM (
    SELECT i,
        now() - interval '365 days' + (i::float8 / %(n)s) * interval '365 days' AS at,
        (ARRAY['batch-jobs','dsar-jobs','journey-jobs','retrain-jobs','seed-jobs'])[
            1 + (i * 31) % 5] AS queue,
        (ARRAY['app.tasks.send_mail','app.tasks.charge','app.tasks.export',
               'app.tasks.retrain','ops.jobs.noop'])[1 + (i * 17) % 5] AS func,
        CASE WHEN u < 0.95 THEN 'finished' WHEN u < 0.98 THEN 'failed'
             WHEN u < 0.99 THEN 'retried' WHEN u < 0.995 THEN 'abandoned'
             ELSE 'requeued' END AS status,
        (i * 7919) % 5000 AS ms
    FROM (SELECT i, random() AS u FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i) AS s
) AS j
"""  # noqa: E501

USAGE_SQL = """
INSERT INTO ops_commandusage (hour, source, commands, unbilled)
SELECT date_trunc('hour', now()) - h * interval '1 hour', s.source,
       (random() * 300)::bigint, (random() * 10)::bigint
FROM generate_series(0, 365 * 24 - 1) AS h,
     unnest(%(sources)s::text[]) AS s(source)
"""

WORKERS_SQL = """
INSERT INTO ops_workerprocess (
    name, role, host, pid, supervisor_pid, queues, state, current_job, started,
    heartbeat, stopped, restarts, exit_status, processed, failed, recovered_at)
SELECT 'kaireon.host' || (i % 4) || '.' || i, 'dedicated', 'host' || (i % 4), 1000 + i,
    999, '["batch-jobs"]'::jsonb,
    CASE WHEN i > %(n)s - 4 THEN 'idle' ELSE 'stopped' END, '',
    now() - interval '365 days' + (i::float8 / %(n)s) * interval '365 days',
    now() - interval '365 days' + ((i + 1)::float8 / %(n)s) * interval '365 days',
    CASE WHEN i > %(n)s - 4 THEN NULL
         ELSE now() - interval '365 days' + ((i + 1)::float8 / %(n)s) * interval '365 days'
    END,
    0, 0, i % 500, i % 5,
    CASE WHEN i > %(n)s - 4 THEN NULL
         ELSE now() - interval '365 days' + ((i + 1)::float8 / %(n)s) * interval '365 days'
    END
FROM generate_series(1, %(n)s) AS i
"""  # noqa: E501

# The smaller histories: a year of provider readings (a daily one each hour
# from quota errors and the dashboard, a monthly one a day), handled stop
# requests (about 3 a day, one pending), alert markers (two quota thresholds
# a month, an incident a week), a quota incident a week.
EXTRAS_SQL = [
    """
INSERT INTO ops_providerusagereading (at, used, "limit", kind, origin, note)
SELECT now() - h * interval '1 hour', 1000 * (8760 - h), 500000,
       CASE WHEN h % 24 = 0 THEN 'monthly' ELSE 'daily' END,
       CASE WHEN h % 5 = 0 THEN 'manual' ELSE 'error' END, ''
FROM generate_series(0, 365 * 24 - 1) AS h
""",
    """
INSERT INTO ops_jobstoprequest (job_id, queue, requested_at, handled_at, outcome,
    handled_by)
SELECT md5('stop' || i), 'batch-jobs', now() - i * interval '8 hours',
       CASE WHEN i = 0 THEN NULL
            ELSE now() - i * interval '8 hours' + interval '1 s' END,
       CASE WHEN i = 0 THEN 'pending' ELSE 'stopped' END,
       CASE WHEN i = 0 THEN '' ELSE 'lean.host1.7' END
FROM generate_series(0, 3 * 365 - 1) AS i
""",
    """
INSERT INTO ops_alertstate (key, state, changed_at)
SELECT 'quota:' || to_char(now() - m * interval '1 month', 'YYYY-MM-01') || ':' || t,
       'sent', now() - m * interval '1 month'
FROM generate_series(1, 12) AS m, unnest(ARRAY[80, 95]) AS t
UNION ALL
SELECT 'incident:' || w || ':opened', 'sent', now() - w * interval '1 week'
FROM generate_series(1, 52) AS w
""",
    """
INSERT INTO ops_quotaincident (opened_at, last_seen_at, closed_at, open_marker,
    count, probes, source, last_error)
SELECT now() - w * interval '1 week', now() - w * interval '1 week' + interval '1 hour',
       now() - w * interval '1 week' + interval '2 hours', NULL, 3, 2, 'drain-jobs',
       'OOM command not allowed: quota exceeded'
FROM generate_series(1, 52) AS w
""",
]


def _sql(template: str) -> str:
    """A template with psycopg's %(name)s parameters and literal modulos."""
    return re.sub(r"%(?!\()", "%%", template)


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(total, lo + size - 1)) for lo in range(1, total + 1, size)]


def build(args: argparse.Namespace) -> dict[str, float]:
    from django.db import connection

    timings: dict[str, float] = {}
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        t0 = time.perf_counter()
        for lo, hi in _chunks(args.runs, 250_000):
            cursor.execute(_sql(RUNS_SQL), {"n": args.runs, "lo": lo, "hi": hi})
            log(f"drain runs {hi:,}/{args.runs:,}")
        timings["drainRuns"] = time.perf_counter() - t0
        cursor.execute("SELECT min(id) FROM ops_drainrun")
        first_run = cursor.fetchone()[0]
        t0 = time.perf_counter()
        for lo, hi in _chunks(args.job_records, 1_000_000):
            cursor.execute(
                _sql(JOBS_SQL),
                {
                    "n": args.job_records,
                    "lo": lo,
                    "hi": hi,
                    "runs": args.runs,
                    "first_run": first_run,
                },
            )
            log(f"job records {hi:,}/{args.job_records:,}")
        timings["jobRecords"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cursor.execute(_sql(USAGE_SQL), {"sources": SOURCES})
        cursor.execute(_sql(WORKERS_SQL), {"n": args.workers})
        build_extras()
        timings["usageAndWorkers"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for table in (*BIG_TABLES, "ops_queue"):
            cursor.execute(f"VACUUM ANALYZE {table}")
        timings["vacuumAnalyze"] = time.perf_counter() - t0
    return timings


def build_extras() -> None:
    """The smaller histories (also added to a kept data set built before
    they existed)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ops_providerusagereading")
        if cursor.fetchone()[0]:
            return
        for statement in EXTRAS_SQL:
            cursor.execute(statement)
        # Stopped worker rows were settled when they stopped.
        cursor.execute(
            "UPDATE ops_workerprocess SET recovered_at = stopped "
            "WHERE recovered_at IS NULL AND stopped IS NOT NULL"
        )
        for table in (
            "ops_providerusagereading",
            "ops_jobstoprequest",
            "ops_alertstate",
            "ops_quotaincident",
            "ops_workerprocess",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")


def sizes() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        out = {}
        for table in BIG_TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")
            out[table] = cursor.fetchone()[0]
        return out


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------


@dataclass
class Page:
    name: str
    median_ms: float
    status: int
    queries: int
    slowest_ms: float
    slowest_sql: str
    seq_scans: list[str] = field(default_factory=list)
    plan: str = ""

    @property
    def ok(self) -> bool:
        return self.median_ms <= TARGET_MS and not self.seq_scans and self.status < 400


def _seq_scans(sql: str) -> tuple[list[str], str]:
    from django.db import connection

    if not sql.lstrip().upper().startswith("SELECT"):
        return [], ""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return _unbounded_seq_scans(plan), plan


# Nodes that read all their input before returning a row: a Limit above one
# of them does not bound the scan below it.
BLOCKING = (
    "Sort",
    "Incremental Sort",
    "Hash",
    "Aggregate",
    "HashAggregate",
    "Materialize",
    "Unique",
    "Gather Merge",
)


def _unbounded_seq_scans(plan: str) -> list[str]:
    """History tables read by a Seq Scan that no Limit stops early (a Limit
    above it, with no sort or hash between, ends the scan)."""
    lines = plan.splitlines()
    found: set[str] = set()
    for i, line in enumerate(lines):
        match = re.search(r"Seq Scan on (\w+)", line)
        if not match or match.group(1) not in BIG_TABLES:
            continue
        depth = len(line) - len(line.lstrip(" ->"))
        bounded = False
        for parent in reversed(lines[:i]):
            parent_depth = len(parent) - len(parent.lstrip(" ->"))
            if parent_depth >= depth:
                continue
            depth = parent_depth
            node = parent.strip(" ->")
            if node.startswith("Limit"):
                bounded = True
                break
            if node.startswith(BLOCKING):
                break
        if not bounded:
            found.add(match.group(1))
    return sorted(found)


def _explain_analyze(sql: str) -> str:
    from django.db import connection

    if not sql.lstrip().upper().startswith("SELECT"):
        return ""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def measure(name: str, call: Any) -> Page:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    status = call()  # warm-up (and the status code)
    times = []
    captured: list[dict[str, Any]] = []
    for _ in range(ROUNDS):
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            status = call()
            times.append((time.perf_counter() - t0) * 1000)
        captured = list(ctx.captured_queries)
    seq: set[str] = set()
    for query in captured:
        found, _ = _seq_scans(query["sql"])
        seq.update(found)
    slowest = max(captured, key=lambda q: float(q["time"]), default=None)
    page = Page(
        name=name,
        median_ms=round(statistics.median(times), 1),
        status=status,
        queries=len(captured),
        slowest_ms=round(float(slowest["time"]) * 1000, 1) if slowest else 0.0,
        slowest_sql=slowest["sql"][:400] if slowest else "",
        seq_scans=sorted(seq),
        plan=_explain_analyze(slowest["sql"]) if slowest else "",
    )
    flag = "" if page.ok else "  <-- FAIL"
    log(
        f"{name}: {page.median_ms} ms, {page.queries} queries, slowest "
        f"{page.slowest_ms} ms"
        f"{' SEQ SCAN ' + ','.join(page.seq_scans) if page.seq_scans else ''}{flag}"
    )
    return page


def pages(client: Any, first_scrape_ms: list[int]) -> list[Page]:
    from django.core.management import call_command
    from django.urls import reverse

    from ops.engine import leftovers, stop
    from ops.inspection.switch_check import switch_check
    from ops.models import DrainRun, JobRecord, WorkerProcess
    from ops.scheduling import events

    def get(url: str, **extra: Any) -> Any:
        def call() -> int:
            response = client.get(url, **extra)
            if response.status_code >= 400:
                log(f"  {url}: HTTP {response.status_code}")
            return response.status_code

        return call

    out: list[Page] = []
    out.append(measure("admin index", get(reverse("admin:index"))))
    busy = DrainRun.objects.filter(total_processed__gt=0).order_by("-pk").first()
    some_job = JobRecord.objects.order_by("-pk").first()
    failed_job = JobRecord.objects.filter(status="failed").order_by("-pk").first()
    worker = WorkerProcess.objects.order_by("-pk").first()
    six_months = time.strftime("%Y-%m", time.localtime(time.time() - 182 * 86400))
    lists = {
        "drainrun": {
            "search caller": {"q": "10.0.3.2"},
            "search run id": {"q": str(busy.public_id) if busy else ""},
            "search rare caller": {"q": "operator3"},
            "search caller, month 6 ago": {
                "q": "10.0.3.2",
                "started_month": six_months,
            },
            "status failed": {"status__exact": "failed"},
            "trigger admin": {"trigger__exact": "admin"},
            "deadline hit": {"deadline_hit__exact": "1"},
            "month 6 ago": {"started_month": six_months},
            "past 7 days": {
                "started__gte": time.strftime(
                    "%Y-%m-%d", time.localtime(time.time() - 7 * 86400)
                ),
            },
        },
        "jobrecord": {
            "search job id": {"q": some_job.job_id if some_job else ""},
            "search exception": {"q": "could not be charged"},
            "search exception rare": {
                "q": (failed_job.exc_message[:12] if failed_job else "order 4242 ")
            },
            "status failed": {"status__exact": "failed"},
            "queue dsar-jobs": {"queue": "dsar-jobs"},
            "jobs of a run": {"run": str(busy.pk) if busy else "1"},
        },
        "commandusage": {"source worker": {"source__exact": "worker"}},
        "workerprocess": {
            "state idle": {"state__exact": "idle"},
            "search host": {"q": "host1"},
            "host host2": {"host": "host2"},
        },
    }
    for model, variants in lists.items():
        url = reverse(f"admin:ops_{model}_changelist")
        html = client.get(url).content.decode()
        out.append(measure(f"{model} list", get(url)))
        for label, params in variants.items():
            out.append(measure(f"{model} {label}", get(url, data=params)))
        for column in sorted(set(re.findall(r'href="\?o=(-?\d+)[".&]', html))):
            for order in (column.lstrip("-"), f"-{column.lstrip('-')}"):
                out.append(
                    measure(f"{model} sort o={order}", get(url, data={"o": order}))
                )
        out.append(measure(f"{model} last page", get(url, data={"p": "100"})))
        out.append(measure(f"{model} page 2000", get(url, data={"p": "2000"})))
    if busy:
        out.append(
            measure(
                "drainrun detail",
                get(reverse("admin:ops_drainrun_change", args=[busy.pk])),
            )
        )
    if some_job:
        out.append(
            measure(
                "jobrecord detail",
                get(reverse("admin:ops_jobrecord_change", args=[some_job.pk])),
            )
        )
    if worker:
        out.append(
            measure(
                "workerprocess detail",
                get(reverse("admin:ops_workerprocess_change", args=[worker.pk])),
            )
        )
    for name, url_name in [
        ("quota page", "admin:ops_commandusage_quota"),
        ("drain now page", "admin:ops_drainrun_drain"),
        ("queue list", "admin:ops_queue_changelist"),
        ("lease list", "admin:ops_lease_changelist"),
        ("quota incidents", "admin:ops_quotaincident_changelist"),
        ("redis switch page", "admin:ops_queue_redis_switch"),
        ("worker mode page", "admin:ops_workerprocess_mode"),
        ("cron tokens", "admin:ops_tokenversion_changelist"),
    ]:
        out.append(measure(name, get(reverse(url_name))))
    out.append(
        measure(
            "GET /api/v1/cron/status",
            get("/api/v1/cron/status", HTTP_X_CRON_TOKEN=CRON_SECRET),
        )
    )
    # The first scrape folds the whole history into MetricsCarry once (a
    # one-off, timed on its own); later scrapes read the last hour or two.
    t0 = time.perf_counter()
    scrape = get("/api/v1/cron/metrics", HTTP_X_CRON_TOKEN=CRON_SECRET)
    scrape()
    first_scrape_ms.append(round((time.perf_counter() - t0) * 1000))
    log(f"first metrics scrape (folds a year of runs): {first_scrape_ms[0]} ms")
    out.append(measure("GET /api/v1/cron/metrics", scrape))

    def alert_check() -> int:
        events.check()
        return 0

    def recovery_lookups() -> int:
        # What every drain does before it drains (ops/engine/leftovers.py):
        # runs left needing recovery (drainrun_recovery_idx), unsettled
        # workers with a stale heartbeat (workerprocess_unsettled_idx).
        list(DrainRun.objects.filter(needs_recovery=True).exclude(pk=0))
        leftovers.stale_workers()
        return 0

    def stop_poll() -> int:
        stop._open_request(some_job.job_id if some_job else "none")
        return 0

    out.append(measure("alert-event check (events.check)", alert_check))
    out.append(measure("drain recovery lookups", recovery_lookups))
    out.append(measure("job stop request poll", stop_poll))

    def command(*argv: str) -> Any:
        def call() -> int:
            try:
                call_command(*argv, stdout=io.StringIO(), stderr=io.StringIO())
            except SystemExit as exc:  # a verdict as exit status ("not safe")
                return int(exc.code or 0)
            return 0

        return call

    out.append(measure("manage.py quota --json", command("quota", "--json")))
    out.append(
        measure(
            "manage.py redis_switch_check --json",
            command("redis_switch_check", "--json"),
        )
    )

    def check() -> int:
        switch_check()
        return 0

    out.append(measure("switch_check()", check))
    return out


# --------------------------------------------------------------------------
# Prune
# --------------------------------------------------------------------------


LONGEST_OPEN_TX_SQL = """
SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) * 1000
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND state IN ('active', 'idle in transaction')
"""


def prune_phase(
    retention_days: int,
    db_url: str,
    batch: int | None = None,
    drain_in_thread: bool = False,
) -> dict[str, Any]:
    from django.conf import settings

    from ops.cron.retention import prune_history

    settings.HISTORY_RETENTION_DAYS = retention_days
    # Write out what the build (or the copy of a data set) left dirty first:
    # the checkpoints measured beside the prune are then the prune's own.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        checkpoints_before = _checkpoints(conn)
    stop = threading.Event()
    beside = _ThreadDrainer(stop) if drain_in_thread else _ProcessDrainer()
    beside.start()
    # The server's view: every 50 ms, the age of the oldest open transaction
    # of this database (the prune's, the idle drains', anyone's).
    open_tx_ms: list[float] = []

    def watch_transactions() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(LONGEST_OPEN_TX_SQL).fetchone()
                open_tx_ms.append(float(row[0]))
                stop.wait(0.05)

    watcher = threading.Thread(target=watch_transactions, daemon=True)
    watcher.start()
    from ops.cron import retention

    timed = _TimedTransactions()
    retention.transaction = timed  # type: ignore[assignment]
    calls: list[dict[str, Any]] = []
    longest_tx = 0.0
    t_all = time.perf_counter()
    try:
        while True:
            before = len(timed.times_ms)
            t0 = time.perf_counter()
            result = prune_history(batch=batch)
            wall = (time.perf_counter() - t0) * 1000
            # Each delete transaction, BEGIN to COMMIT, as the prune ran it.
            tx_ms = max(timed.times_ms[before:], default=0.0)
            longest_tx = max(longest_tx, tx_ms)
            calls.append(
                {
                    "ms": round(wall),
                    "deleted": result["deleted"],
                    "remaining": result["remaining"],
                    "batches": result["batches"],
                    "complete": result["complete"],
                    "longestTransactionMs": round(tx_ms, 1),
                }
            )
            log(
                f"prune call: {round(wall)} ms, {result['batches']} batches, "
                f"deleted {result['deleted']['drainRuns']:,} runs / "
                f"{result['deleted']['jobRecords']:,} jobs, left "
                f"{result['remaining']['drainRuns']:,}, longest tx {tx_ms:.0f} ms"
            )
            if result["complete"]:
                break
    finally:
        stop.set()
        before_idle, idle_ms, slowest = beside.stop()
        watcher.join()
        retention.transaction = timed._transaction  # type: ignore[assignment]
    total = (time.perf_counter() - t_all) * 1000
    with psycopg.connect(db_url, autocommit=True) as conn:
        checkpoints = _checkpoints(conn) - checkpoints_before
    return {
        "retentionDays": retention_days,
        "idleDrainIn": "a thread of the prune's process"
        if drain_in_thread
        else "a process of its own",
        "calls": calls,
        "totalMs": round(total),
        "longestTransactionMs": round(longest_tx, 1),
        "transactions": len(timed.times_ms),
        "transactionMedianMs": (
            round(statistics.median(timed.times_ms), 1) if timed.times_ms else None
        ),
        "longestOpenTransactionSeenMs": round(max(open_tx_ms, default=0.0), 1),
        # The server's checkpoints while the prune ran (its WAL triggers them):
        # each ends with an fsync of the files written, which the drains'
        # commits (WAL flushes to the same disk) may wait behind.
        "checkpointsDuring": checkpoints,
        "idleDrainBeforeMedianMs": round(statistics.median(before_idle), 1),
        "idleDrainDuringMs": {
            "count": len(idle_ms),
            "median": round(statistics.median(idle_ms), 1) if idle_ms else None,
            "p95": (
                round(statistics.quantiles(idle_ms, n=20)[-1], 1)
                if len(idle_ms) >= 20
                else None
            ),
            "max": round(max(idle_ms), 1) if idle_ms else None,
        },
        "slowestIdleDrains": slowest,
    }


def _checkpoints(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
    ).fetchone()
    return int(row[0]) if row else 0


class _ProcessDrainer:
    """Idle drains in a process of their own (bench/idle_drainer.py), as in
    production, where the prune and the drains are separate requests,
    commands or django-q workers: never threads of one interpreter."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[str] | None = None

    def start(self) -> None:
        # The environment main() set up: the same database and Redis.
        self.child = subprocess.Popen(
            [sys.executable, "-m", "bench.idle_drainer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.child.stdout is not None
        ready = self.child.stdout.readline().strip()
        if ready != "ready":
            self.child.kill()
            raise RuntimeError(f"bench.idle_drainer did not start: {ready!r}")

    def stop(self) -> tuple[list[float], list[float], list[dict[str, Any]]]:
        """(drains before the prune, drains beside it, the slowest of those)."""
        assert self.child is not None and self.child.stdin is not None
        out, _ = self.child.communicate(timeout=60)  # closes its stdin: it stops
        report = json.loads(out.strip().splitlines()[-1])
        return report["beforeMs"], report["duringMs"], report["slowest"]


class _ThreadDrainer:
    """Idle drains in a thread of the prune's own process (the first
    measurement's method, kept for comparison): the drain then also waits for
    the prune's share of the interpreter lock."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop_event = stop
        self.before: list[float] = []
        self.idle_ms: list[float] = []
        self.thread: threading.Thread | None = None

    def _one(self) -> float:
        from ops.engine.drain import drain
        from ops.engine.drain_options import parse_options
        from ops.models import DrainRun

        t0 = time.perf_counter()
        drain(
            trigger=DrainRun.Trigger.CLI, options=parse_options(), caller="bench idle"
        )
        return (time.perf_counter() - t0) * 1000

    def _loop(self) -> None:
        from django.db import connections

        try:
            while not self.stop_event.is_set():
                self.idle_ms.append(self._one())
                self.stop_event.wait(0.2)
        finally:
            connections.close_all()

    def start(self) -> None:
        for _ in range(5):  # warm the drain path before measuring
            self._one()
        self.before = [self._one() for _ in range(10)]
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stop(self) -> tuple[list[float], list[float], list[dict[str, Any]]]:
        assert self.thread is not None
        self.thread.join()
        return self.before, self.idle_ms, []


class _TimedTransactions:
    """Stands in for `django.db.transaction` inside ops/cron/retention.py:
    the same `atomic`, each block timed from its BEGIN to its COMMIT."""

    def __init__(self) -> None:
        from django.db import transaction

        self._transaction = transaction
        self.times_ms: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transaction, name)

    def atomic(self, *args: Any, **kwargs: Any) -> Any:
        import contextlib

        block = self._transaction.atomic(*args, **kwargs)

        @contextlib.contextmanager
        def timed() -> Any:
            t0 = time.perf_counter()
            with block:
                yield
            self.times_ms.append((time.perf_counter() - t0) * 1000)

        return timed()


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Scale benchmark {report['date']} on {report['machine']}",
        f"Data: {report['sizes']}; build {report['build']}",
        f"Load average (1, 5, 15 min): {report['loadAverage']}",
        f"First metrics scrape (folds the history once): "
        f"{report.get('firstMetricsScrapeMs')} ms",
        "",
        "| page | server ms (median of 5) | queries | slowest query ms "
        "| seq scan on history | target |",
        "|---|---:|---:|---:|---|---|",
    ]
    for page in report["pages"]:
        ok = (
            page["median_ms"] <= TARGET_MS
            and not page["seq_scans"]
            and page["status"] < 400
        )
        lines.append(
            f"| {page['name']} | {page['median_ms']} | {page['queries']} | "
            f"{page['slowest_ms']} | {', '.join(page['seq_scans']) or '-'} | "
            f"{'PASS' if ok else 'FAIL'} |"
        )
    prune = report.get("prune")
    if prune:
        lines += [
            "",
            f"Prune to {prune['retentionDays']} days: {len(prune['calls'])} calls, "
            f"{prune['totalMs']:,} ms in all; longest delete transaction "
            f"{prune['longestTransactionMs']} ms (target <= {PRUNE_TX_TARGET_MS:.0f}); "
            f"oldest open transaction seen in pg_stat_activity "
            f"{prune['longestOpenTransactionSeenMs']} ms; "
            f"{prune['checkpointsDuring']} checkpoints during the prune; "
            f"idle drain median {prune['idleDrainBeforeMedianMs']} ms before, during: "
            f"{prune['idleDrainDuringMs']} (target max <= {IDLE_DRAIN_TARGET_MS:.0f}), "
            f"the drains in {prune['idleDrainIn']}",
        ]
        for drain in prune["slowestIdleDrains"]:
            lines.append(f"  slow idle drain: {drain}")
        for call in prune["calls"]:
            lines.append(f"  {call}")
    lines += ["", "Slowest queries of the pages over the target (EXPLAIN ANALYZE):"]
    for page in report["pages"]:
        ok = page["median_ms"] <= TARGET_MS and not page["seq_scans"]
        if not ok:
            lines += [f"--- {page['name']}: {page['slowest_sql']}", page["plan"], ""]
    lines.append(f"Targets: {'ALL PASS' if report['pass'] else 'SOME FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_bench")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--job-records", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=5_000)
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument(
        "--reuse", action="store_true", help="keep an existing data set"
    )
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--no-prune", action="store_true")
    parser.add_argument(
        "--no-pages", action="store_true", help="measure the prune only"
    )
    parser.add_argument("--prune-days", type=int, default=90)
    parser.add_argument(
        "--prune-batch",
        type=int,
        default=None,
        help="rows per delete (default: ops/cron/retention.py's BATCH)",
    )
    parser.add_argument(
        "--idle-drain-in-thread",
        action="store_true",
        help="run the idle drains beside the prune in a thread of this process "
        "(the first method, for comparison) rather than in a process of their own",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    redis_server = PrivateRedis().start()
    os.environ.update(
        DATABASE_URL=args.db,
        DJANGO_SETTINGS_MODULE="kaireon.settings",
        SECRET_KEY=os.environ.get(
            "SECRET_KEY", "scale-bench-secret-key-0123456789abcdef"
        ),
        DEBUG="0",
        REDIS_URL=redis_server.url(),
        CRON_SECRET=CRON_SECRET,
        ALLOWED_HOSTS="testserver,127.0.0.1,localhost",
        METERING_FLUSH_INTERVAL_S="0",
    )
    reuse = args.reuse and database_exists(args.db)
    if not reuse:
        recreate_database(args.db)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from ops.models import Queue

    try:
        call_command("migrate", verbosity=0)
        build_times: dict[str, float] = {}
        if reuse:
            have = sizes()
            if (
                have["ops_drainrun"] < args.runs
                or have["ops_jobrecord"] < args.job_records
            ):
                log(f"--reuse: the database holds {have}: building again")
                reuse = False
        if not reuse:
            t0 = time.perf_counter()
            build_times = {k: round(v, 1) for k, v in build(args).items()}
            build_times["total"] = round(time.perf_counter() - t0, 1)
            log(f"built in {build_times}")
        build_extras()
        for priority, name in enumerate(QUEUES):
            Queue.objects.get_or_create(name=name, defaults={"priority": priority})
        user, _ = get_user_model().objects.get_or_create(
            username="bench", defaults={"is_staff": True, "is_superuser": True}
        )
        client = Client()
        client.force_login(user)
        first_scrape: list[int] = []
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            "command": "python -m bench.scale_bench "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "sizes": sizes(),
            "build": build_times,
        }
        report["loadAverage"] = {"beforePages": os.getloadavg()}
        report["pages"] = (
            [] if args.no_pages else [asdict(p) for p in pages(client, first_scrape)]
        )
        report["loadAverage"]["afterPages"] = os.getloadavg()
        report["firstMetricsScrapeMs"] = first_scrape
        ok = all(
            p["median_ms"] <= TARGET_MS and not p["seq_scans"] and p["status"] < 400
            for p in report["pages"]
        )
        if not args.no_prune:
            report["prune"] = prune_phase(
                args.prune_days,
                args.db,
                args.prune_batch,
                drain_in_thread=args.idle_drain_in_thread,
            )
            report["loadAverage"]["afterPrune"] = os.getloadavg()
            prune = report["prune"]
            ok = ok and prune["longestTransactionMs"] <= PRUNE_TX_TARGET_MS
            ok = ok and prune["longestOpenTransactionSeenMs"] <= PRUNE_TX_TARGET_MS
            during = prune["idleDrainDuringMs"]["max"]
            ok = ok and (during is None or during <= IDLE_DRAIN_TARGET_MS)
        report["pass"] = ok
        print(render(report))
        if args.json:
            print(json.dumps(report, default=str))
        return 0 if ok else 1
    finally:
        from django.db import connections

        from ops.usage.metering import recorder

        # The pages' metered Redis commands, written while the database is
        # still there (the flush at exit would find it dropped).
        recorder.flush()
        connections.close_all()
        redis_server.stop()
        if not (args.keep or args.reuse):
            recreate_database(args.db, drop_only=True)


if __name__ == "__main__":
    sys.exit(main())
