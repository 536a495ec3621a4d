"""The jobs of a queue, state by state, and putting failed ones right: read a
page, read one job, requeue, delete — each at a cost known in advance.

Where RQ keeps a queue's jobs: `queued` is the list `rq:queue:<q>` (next to run
first); `scheduled`, `started`, `deferred`, `finished` and `failed` are sorted
sets (`rq:scheduled:<q>`, `rq:wip:<q>`, …). RQ's registry methods
(`get_job_ids`, `count`, `requeue`) run a cleanup on every read: more commands,
and the thing being looked at changes while it is looked at. Nothing here calls
them; every command is sent by this module, through the metered client
(ops/usage/redis_client.py), under the quota-incident gate
(ops/usage/incidents.py).

Billed commands, as the tests measure them on a real redis-server:

* **A page** (`list_jobs`), whatever the size of the list or registry:

  - queued, deferred, finished: 2 — one `SORT <key> BY nosort LIMIT <offset>
    <count> GET # GET rq:job:*->description …` (the page's ids and the fields
    shown, every job of the page in one command; Redis walks a sorted set by
    rank for this, so the cost does not grow with the set) and one `LLEN` /
    `ZCARD`, in one round trip;
  - scheduled: 3 — the same, plus `ZRANGE … WITHSCORES` for when each is due;
  - failed: 2 + 1 per job shown — rq 2 keeps a failure's traceback only in the
    job's result stream, so each job of the page costs one `XREVRANGE
    rq:results:<id> + - COUNT 1` (a second round trip);
  - started: 2 + c + 1 per job shown — the started registry holds
    `<job id>:<execution id>`, which `SORT … GET` cannot follow, so `ZRANGE` +
    `ZCARD`, then one `HMGET` per job. The lean executor keeps its running
    jobs out of that registry: on the first page, each live lean consumer's
    claim list (c of them: the drains running now and the live always-on
    workers serving the queue, read from the database) costs one `SORT
    <claim list> BY nosort GET # GET rq:job:*->status …`, sent in the same
    round trip as the `ZRANGE`. c is 0 when nothing runs; no other page and
    no idle path pays for it.

* **One job** (`job_detail`): 2 — `HGETALL rq:job:<id>` and `XREVRANGE
  rq:results:<id> + - COUNT 1`, in one round trip: exactly what rq's
  `Job.fetch(id)` + `job.latest_result()` send (2 round trips there), parsed by
  rq's own `Job.restore` and `Result.restore`. Its records (JobRecord) come from
  the database: 0.

* **Requeue n failed jobs** (`requeue`): at most 3 x n + 3 + c, where c is the
  number of claim lists that could hold a job of this queue (the drains
  running now or holding unsettled claims, the live always-on workers on this
  queue; 0 when nothing runs):

  1. read (n + c): `HMGET rq:job:<id> status origin timeout` per job, `LRANGE`
     per claim list;
  2. gate (1 per job still eligible): `ZREM rq:failed:<q> <id>`, one per job —
     as in rq's `FailedJobRegistry.requeue`, the job is only requeued by the
     caller whose ZREM removed it, so two operators clicking at once cannot put
     it on the queue twice;
  3. write (1 per job won + 3): `MULTI`, `HSET` per job (status `queued`,
     `enqueued_at` now, `started_at`/`ended_at`/`exc_info` emptied, rq's default
     `timeout` if the job had none — the fields rq's requeue changes), one
     `RPUSH rq:queue:<q> <ids…>`, `EXEC`. A transaction: a job is never marked
     queued without being on the queue.

  rq's own `FailedJobRegistry.requeue` costs 8 billed commands per job
  (`HGETALL`, `ZREM`, `MULTI`, 3 x `HSET`, `RPUSH`, `EXEC`) plus an unbilled
  `INFO`, each job in 3 round trips.

* **Delete n jobs** (`delete`): at most 2 x n + 1 + c: the same read; the gate
  (`LREM rq:queue:<q> 0 <id>` or `ZREM <registry> <id>`, one per job: a queued
  job a consumer took meanwhile is not deleted under it); one `DEL` of every
  key of the jobs won (`rq:job:<id>`, its dependents and dependencies sets, its
  result stream and its executions). rq's `Job.delete` leaves the result stream
  behind; a failed result has no TTL, so it would stay forever.

* **…all** (`requeue_all_failed`, `delete_all`): 2 more commands, in the
  first round trip with the claim lists (`ZRANGE` / `LRANGE` of the ids and
  `ZCARD` / `LLEN`, to say how many are left), for at most BULK_LIMIT jobs per
  call, oldest first (the queue's head for `queued`): the cost of one click
  stays bounded however large the registry.

Safety: a job is requeued or deleted only if its status is still the state the
operator chose it from (`failed` also accepts `stopped`, which rq files in the
same registry), it belongs to this queue, it is in no claim list (a lean
consumer is running it or about to), and the gate above removed it. Jobs that
fail a check are skipped and listed with the reason; no other job is touched.
`started` jobs are never requeued or deleted here: a worker is running them, or
a drain's recovery will settle them.

Unpickling: `job_detail` shows args and kwargs as rq does, by unpickling the
job's payload in this process (the same trust as a worker running it). A
payload that will not load (a class this process cannot import, a corrupt
pickle) is shown as such, never a 500.
"""

from __future__ import annotations

import base64
import math
import pprint
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import redis
from django.db.models import Q
from rq.executions import ExecutionRegistry
from rq.job import Job
from rq.queue import Queue as RQQueue
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.utils import as_text, now, parse_composite_key, utcformat, utcparse

from ops.engine.claims import claim_key
from ops.models import DrainRun, JobRecord, Source, WorkerProcess
from ops.queues import list_key, scheduled_key
from ops.usage import incidents

# --- States -------------------------------------------------------------------

QUEUED = "queued"
SCHEDULED = "scheduled"
STARTED = "started"
DEFERRED = "deferred"
FINISHED = "finished"
FAILED = "failed"


@dataclass(frozen=True)
class StateInfo:
    name: str
    order_note: str
    # "list" (LRANGE/LLEN/LREM) or "zset" (ZRANGE/ZCARD/ZREM)
    kind: str = "zset"
    # Pages show the newest first (failed, finished); the queue and the others
    # in the order their jobs will be taken.
    newest_first: bool = False
    can_requeue: bool = False
    can_delete: bool = True
    # Statuses a job may have in this state's list or registry (default: the
    # state's own name).
    other_statuses: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @property
    def statuses(self) -> frozenset[str]:
        return self.other_statuses | {self.name}

    def key(self, queue: str) -> str:
        return _KEYS[self.name](queue)


STATES: dict[str, StateInfo] = {
    s.name: s
    for s in (
        StateInfo(QUEUED, "next to run first", kind="list"),
        StateInfo(SCHEDULED, "soonest due first"),
        # A worker is running them, or a drain's recovery will settle them:
        # never requeued or deleted from here.
        StateInfo(STARTED, "by heartbeat deadline", can_delete=False),
        StateInfo(DEFERRED, "oldest first"),
        StateInfo(FINISHED, "newest first", newest_first=True),
        # rq files stopped jobs in the failed registry too.
        StateInfo(
            FAILED,
            "newest first",
            newest_first=True,
            can_requeue=True,
            other_statuses=frozenset({"stopped"}),
        ),
    )
}

_KEYS = {
    QUEUED: list_key,
    SCHEDULED: scheduled_key,
    STARTED: StartedJobRegistry.key_template.format,
    DEFERRED: DeferredJobRegistry.key_template.format,
    FINISHED: FinishedJobRegistry.key_template.format,
    FAILED: FailedJobRegistry.key_template.format,
}

# The job fields a page shows: what SORT GETs (or HMGET reads) per job.
LIST_FIELDS = (
    "status",
    "origin",
    "description",
    "created_at",
    "enqueued_at",
    "started_at",
    "ended_at",
)
# Only a hash written by an older rq (or another client) has it; rq 2 keeps
# the traceback in the result stream. Free to ask for in the same SORT.
FAILED_FIELDS = (*LIST_FIELDS, "exc_info")
# Who runs a started job (rq's worker writes it when the job starts).
STARTED_FIELDS = (*LIST_FIELDS, "worker_name")
# A claimed job with one of these statuses has run (lean executor: the status
# stays `queued` until the job's outcome is written).
_RAN_STATUSES = frozenset(
    {"finished", "failed", "scheduled", "deferred", "stopped", "canceled"}
)

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
# The most jobs one requeue/delete call touches: its cost and its time stay
# bounded (3 x 1000 + 5 + c commands at most) whatever the registry holds.
BULK_LIMIT = 1000


class UnknownState(ValueError):
    pass


# rq 2 accepts [A-Za-z0-9_-]+ for new ids; older clients wrote others (uuid4
# with dashes, anything). Looser here, but never a space, a control character
# or an unbounded length in a key name.
JOB_ID_MAX = 200


def valid_job_id(job_id: str) -> bool:
    return (
        0 < len(job_id) <= JOB_ID_MAX
        and job_id.isprintable()
        and not any(c.isspace() for c in job_id)
    )


def state_info(state: str) -> StateInfo:
    try:
        return STATES[state]
    except KeyError:
        raise UnknownState(state) from None


def page_cost(state: str, shown: int, claim_lists: int = 0) -> int:
    """Billed commands of one page of `state` showing `shown` jobs (of the
    started registry, for `started`), with `claim_lists` live lean consumers
    read on the first started page."""
    info = state_info(state)
    if info.name == STARTED:
        return 2 + claim_lists + shown
    if info.name == FAILED:
        return 2 + shown
    if info.name == SCHEDULED:
        return 3
    return 2


@dataclass(frozen=True)
class ClaimList:
    """A lean consumer's claim list that can hold a job of one queue."""

    key: str
    owner: str  # the consumer: a drain's worker for the queue, a worker's name
    # A consumer running now (a running drain, a live always-on worker), as
    # opposed to a dead or failed one whose claims wait for recovery.
    live: bool
    # The job the database says it runs now (the drain's progress, the
    # supervisor's row; up to a second late), "" when it does not say.
    running: str = ""


_LIVE_WORKER_STATES = (
    WorkerProcess.State.STARTING,
    WorkerProcess.State.IDLE,
    WorkerProcess.State.BUSY,
)


def consumer_claims(queue: str) -> list[ClaimList]:
    """Every claim list that can hold a job of `queue` now (database only).

    A lean consumer takes a batch off the queue into its claim list
    (ops/engine/claims.py): each drain running now (one list per run and
    queue); each drain that left claims for a later drain to settle (Redis
    failed it at the end, it died, or it failed: `needs_recovery`); each
    always-on worker on this queue that is alive, or whose jobs nobody has
    settled yet (`recovered_at` empty: its supervisor is gone)."""
    found: dict[str, ClaimList] = {}
    runs = DrainRun.objects.filter(
        Q(status=DrainRun.Status.RUNNING)
        | Q(has_unsettled_claims=True)
        | Q(needs_recovery=True)
    ).only(
        "worker_prefix",
        "params",
        "status",
        "unsettled_claims",
        "needs_recovery",
        "current_jobs",
    )
    for run in runs:
        if not run.worker_prefix:
            continue
        selected = (run.params or {}).get("queues")
        picked = selected is None or queue in selected
        live = run.status == DrainRun.Status.RUNNING
        held = (live or run.needs_recovery) and picked
        if not (held or queue in (run.unsettled_claims or {})):
            continue
        owner = f"{run.worker_prefix}{queue}"
        running = ((run.current_jobs or {}).get(queue) or "") if live else ""
        found[claim_key(owner)] = ClaimList(claim_key(owner), owner, live, running)
    workers = WorkerProcess.objects.filter(
        Q(recovered_at__isnull=True) | Q(state__in=_LIVE_WORKER_STATES)
    ).only("name", "queues", "state", "current_job")
    for worker in workers:
        if queue not in (worker.queues or []):
            continue
        live = worker.state in _LIVE_WORKER_STATES
        running = worker.current_job if live else ""
        found[claim_key(worker.name)] = ClaimList(
            claim_key(worker.name), worker.name, live, running
        )
    return [found[key] for key in sorted(found)]


def claim_lists(queue: str) -> list[str]:
    """The keys of `consumer_claims(queue)` (database only)."""
    return [claim.key for claim in consumer_claims(queue)]


# What an "all" adds: the ids and the count, read with the claim lists.
ALL_EXTRA_COMMANDS = 2


def requeue_cost(jobs: int, claim_lists: int, *, take_all: bool = False) -> int:
    """The most `requeue` of `jobs` jobs can cost (every job eligible)."""
    extra = ALL_EXTRA_COMMANDS if take_all else 0
    return (3 * jobs + 3 + claim_lists if jobs else 0) + extra


def delete_cost(jobs: int, claim_lists: int, *, take_all: bool = False) -> int:
    """The most `delete` of `jobs` jobs can cost (every job eligible)."""
    extra = ALL_EXTRA_COMMANDS if take_all else 0
    return (2 * jobs + 1 + claim_lists if jobs else 0) + extra


# --- Reading a page -----------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    id: str
    # False: the id is in the list or registry but its hash is gone (expired
    # or deleted by hand); RQ's cleanup would drop it.
    exists: bool
    status: str = ""
    origin: str = ""
    description: str = ""
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # started: who runs it (rq's worker name, or the lean consumer)
    worker: str = ""
    # started, lean executor: the consumer whose claim list holds the job it
    # runs (its status stays `queued` and it has no started_at until it ends)
    claimed_by: str = ""
    # scheduled: when it is due
    due_at: datetime | None = None
    # failed: the last line of the traceback, split at the first ": "
    exc_type: str = ""
    exc_message: str = ""


@dataclass(frozen=True)
class JobPage:
    queue: str
    state: str
    page: int
    per_page: int
    total: int = 0
    jobs: list[JobRow] = field(default_factory=list)
    redis_commands: int = 0
    # Empty when the read worked; otherwise why there is nothing to show.
    error: str = ""
    # started, first page: the lean executor's running jobs, listed before
    # the registry's page and counted in `total`, not in the paging.
    lean_running: int = 0
    # started: every job id running (or claimed to run) on this queue when the
    # page was read, when the page saw them all (one page of the registry);
    # None otherwise. What closes stop requests for jobs that have ended.
    running_ids: frozenset[str] | None = None

    @property
    def available(self) -> bool:
        return not self.error

    @property
    def num_pages(self) -> int:
        return max(1, math.ceil((self.total - self.lean_running) / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.num_pages

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.per_page


@contextmanager
def _session(
    client: redis.Redis | None,
) -> Iterator[tuple[redis.Redis | None, incidents.GuardedRead | None]]:
    """The caller's client as is (its errors are the caller's), or a guarded,
    metered one of our own (errors kept, quota incidents noted)."""
    if client is not None:
        yield client, None
        return
    with incidents.guarded_read(Source.CONSOLE) as read:
        yield read.client, read


def list_jobs(
    queue: str,
    state: str,
    *,
    page: int,
    per_page: int = DEFAULT_PER_PAGE,
    client: redis.Redis | None = None,
) -> JobPage:
    """One page (1-based) of the jobs of `queue` in `state`, and how many there
    are; never raises for Redis trouble when it opens its own client. Cost:
    `page_cost(state, jobs shown)` (module docstring)."""
    info = state_info(state)
    if page < 1:
        raise ValueError("page starts at 1")
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    start = (page - 1) * per_page
    key = info.key(queue)
    rows: list[JobRow] = []
    total = 0
    sent = 0
    lean = 0
    running_ids: frozenset[str] | None = None
    # Read before Redis: the database's word on who runs what (free).
    claims = (
        [c for c in consumer_claims(queue) if c.live]
        if info.name == STARTED and page == 1
        else []
    )
    with _session(client) as (conn, guard):
        if conn is not None:
            if info.name == STARTED:
                started = _started_page(conn, key, start, per_page, claims)
                total, rows, sent = started.total, started.rows, started.sent
                lean = started.lean
                if page == 1 and total - lean <= per_page:
                    running_ids = started.running_ids
            else:
                total, rows, sent = _sorted_page(conn, info, key, start, per_page)
    if guard is not None:
        problem = guard.problem()
        if problem:
            return JobPage(
                queue,
                state,
                page,
                per_page,
                redis_commands=guard.meter.billed,
                error=problem,
            )
        sent = guard.meter.billed
    return JobPage(
        queue,
        state,
        page,
        per_page,
        total,
        rows,
        sent,
        lean_running=lean,
        running_ids=running_ids,
    )


def _sorted_page(
    conn: redis.Redis, info: StateInfo, key: str, start: int, count: int
) -> tuple[int, list[JobRow], int]:
    fields = FAILED_FIELDS if info.name == FAILED else LIST_FIELDS
    get = ["#", *(f"{Job.redis_job_namespace_prefix}*->{f}" for f in fields)]
    with conn.pipeline(transaction=False) as pipe:
        pipe.sort(
            key, by="nosort", start=start, num=count, get=get, desc=info.newest_first
        )
        if info.kind == "list":
            pipe.llen(key)
        else:
            pipe.zcard(key)
        if info.name == SCHEDULED:
            pipe.zrange(key, start, start + count - 1, withscores=True)
        replies = pipe.execute()
    sent = 3 if info.name == SCHEDULED else 2
    flat, total = replies[0], int(replies[1])
    width = len(get)
    chunks = [flat[i : i + width] for i in range(0, len(flat), width)]
    due = {as_text(m): s for m, s in replies[2]} if info.name == SCHEDULED else {}
    ids = [as_text(chunk[0]) for chunk in chunks]
    streams: list[Any] = []
    if info.name == FAILED and ids:
        with conn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
            streams = pipe.execute()
        sent += len(ids)
    rows = []
    for i, chunk in enumerate(chunks):
        values = dict(zip(fields, chunk[1:], strict=True))
        row = _row(ids[i], values, due.get(ids[i]))
        if info.name == FAILED:
            row = _with_exception(row, values.get("exc_info"), streams[i])
        rows.append(row)
    return total, rows, sent


@dataclass(frozen=True)
class _Started:
    total: int
    rows: list[JobRow]
    sent: int
    lean: int
    running_ids: frozenset[str]


def _started_page(
    conn: redis.Redis, key: str, start: int, count: int, claims: list[ClaimList]
) -> _Started:
    """The registry's page, and before it each lean consumer's running job.
    One round trip for the ids (ZRANGE, ZCARD, one SORT per claim list), one
    for the registry jobs' fields."""
    get = ["#", *(f"{Job.redis_job_namespace_prefix}*->{f}" for f in LIST_FIELDS)]
    with conn.pipeline(transaction=False) as pipe:
        pipe.zrange(key, start, start + count - 1)
        pipe.zcard(key)
        for claim in claims:
            pipe.sort(claim.key, by="nosort", get=get)
        members, total, *claimed = pipe.execute()
    ids = [parse_composite_key(as_text(m))[0] for m in members]
    hashes: list[Any] = []
    if ids:
        with conn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(Job.key_for(job_id), *STARTED_FIELDS)
            hashes = pipe.execute()
    rows: list[JobRow] = []
    running = set(ids)
    for claim, flat in zip(claims, claimed, strict=True):
        width = len(get)
        entries = [
            (
                as_text(flat[i]),
                dict(zip(LIST_FIELDS, flat[i + 1 : i + width], strict=True)),
            )
            for i in range(0, len(flat), width)
        ]
        # Claimed and not yet run: the running job and the rest of its batch.
        waiting = [
            (job_id, values)
            for job_id, values in entries
            if values.get("status") is not None
            and as_text(values["status"]) not in _RAN_STATUSES
        ]
        running |= {job_id for job_id, _ in waiting}
        if not waiting:
            continue
        # Jobs run in claim order: the first one waiting, unless the database
        # names another (a job the executor retried at once is back on the
        # queue, and still in the list before it).
        job_id, values = next(
            (entry for entry in waiting if entry[0] == claim.running), waiting[0]
        )
        row = _row(job_id, values, None)
        rows.append(replace(row, worker=claim.owner, claimed_by=claim.owner))
    lean = len(rows)
    for job_id, values in zip(ids, hashes, strict=True):
        fields = dict(zip(STARTED_FIELDS, values, strict=True))
        row = _row(job_id, fields, None)
        rows.append(replace(row, worker=as_text(fields.get("worker_name") or b"")))
    return _Started(
        int(total) + lean,
        rows,
        2 + len(claims) + len(ids),
        lean,
        frozenset(running),
    )


def _date(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return utcparse(as_text(value))
    except ValueError:
        return None


def _row(job_id: str, values: dict[str, Any], due: float | None) -> JobRow:
    # A hash has some of these fields or is gone (SORT GET and HMGET answer
    # nil for every field of a missing hash).
    if all(values.get(f) is None for f in LIST_FIELDS):
        return JobRow(job_id, exists=False)
    return JobRow(
        job_id,
        exists=True,
        status=as_text(values.get("status") or b""),
        origin=as_text(values.get("origin") or b""),
        description=as_text(values.get("description") or b""),
        created_at=_date(values.get("created_at")),
        enqueued_at=_date(values.get("enqueued_at")),
        started_at=_date(values.get("started_at")),
        ended_at=_date(values.get("ended_at")),
        due_at=None if due is None else datetime.fromtimestamp(due, UTC),
    )


def _stream_traceback(entries: Any) -> str:
    """The exc_string of the latest result entry, if it is a failure (as
    rq's Result.restore decodes it, without unpickling anything)."""
    if not entries:
        return ""
    _, payload = entries[0]
    raw = payload.get(b"exc_string")
    if not raw:
        return ""
    try:
        return zlib.decompress(base64.b64decode(raw)).decode("utf-8", "replace")
    except (ValueError, zlib.error):
        return ""


def _hash_traceback(raw: Any) -> str:
    if not raw:
        return ""
    try:
        return zlib.decompress(raw).decode("utf-8", "replace")
    except zlib.error:
        return as_text(raw)


def last_line(traceback: str) -> tuple[str, str]:
    """("ZeroDivisionError", "division by zero") from a traceback's last line."""
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    if not lines:
        return "", ""
    kind, sep, message = lines[-1].strip().partition(": ")
    if not sep and " " in kind:  # not "Type: message": show it as the message
        return "", kind
    return kind, message


def _with_exception(row: JobRow, exc_info: Any, stream: Any) -> JobRow:
    traceback = _stream_traceback(stream) or _hash_traceback(exc_info)
    kind, message = last_line(traceback)
    return replace(row, exc_type=kind, exc_message=message)


# --- Counts for the queue page -----------------------------------------------


@dataclass(frozen=True)
class JobCounts:
    by_state: dict[str, int] = field(default_factory=dict)
    redis_commands: int = 0
    error: str = ""


COUNT_COMMANDS = len(STATES)


def job_counts(queue: str) -> JobCounts:
    """How many jobs `queue` has in each state: one LLEN and five ZCARDs in one
    pipeline (6 billed commands), never raising for Redis trouble."""
    with incidents.guarded_read(Source.CONSOLE) as read:
        if read.client is not None:
            with read.client.pipeline(transaction=False) as pipe:
                for info in STATES.values():
                    key = info.key(queue)
                    if info.kind == "list":
                        pipe.llen(key)
                    else:
                        pipe.zcard(key)
                replies = pipe.execute()
    if read.problem():
        return JobCounts(redis_commands=read.meter.billed, error=read.problem())
    return JobCounts(
        by_state={name: int(n) for name, n in zip(STATES, replies, strict=True)},
        redis_commands=read.meter.billed,
    )


def count_jobs(queue: str, state: str) -> JobCounts:
    """How many jobs `queue` has in `state`: 1 billed command (what an "all"
    action's confirmation shows)."""
    info = state_info(state)
    key = info.key(queue)
    with incidents.guarded_read(Source.CONSOLE) as read:
        if read.client is not None:
            n = read.client.llen(key) if info.kind == "list" else read.client.zcard(key)
    if read.problem():
        return JobCounts(redis_commands=read.meter.billed, error=read.problem())
    return JobCounts(by_state={state: int(n)}, redis_commands=read.meter.billed)


# --- One job ------------------------------------------------------------------


@dataclass(frozen=True)
class JobDetail:
    id: str
    found: bool = False
    status: str = ""
    origin: str = ""
    description: str = ""
    func_name: str = ""
    args: str = ""
    kwargs: str = ""
    # Why args/kwargs could not be shown (an unloadable payload), else empty.
    payload_error: str = ""
    meta: str = ""
    retries_left: int | None = None
    number_of_retries: int | None = None
    timeout: int | None = None
    result_ttl: int | None = None
    failure_ttl: int | None = None
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    worker_name: str = ""
    # The latest result's type (Result.Type name) and when it was written.
    latest_result: str = ""
    latest_result_at: datetime | None = None
    traceback: str = ""
    return_value: str = ""
    records: list[JobRecord] = field(default_factory=list)
    redis_commands: int = 0
    error: str = ""

    @property
    def state(self) -> str:
        """The state page this job is listed on, from its status."""
        return FAILED if self.status == "stopped" else self.status


DETAIL_COMMANDS = 2


def job_records(job_id: str) -> list[JobRecord]:
    """Every attempt the drains recorded for this job, newest first, with the
    run (database only)."""
    return list(
        JobRecord.objects.filter(job_id=job_id).select_related("run").order_by("-id")
    )


def job_detail(job_id: str, *, client: redis.Redis | None = None) -> JobDetail:
    """Everything shown of one job: `HGETALL` + `XREVRANGE … COUNT 1` in one
    round trip (2 billed commands; rq's Job.fetch + latest_result send the
    same two), plus its JobRecord rows (database)."""
    records = job_records(job_id)
    detail = JobDetail(job_id, records=records)
    with _session(client) as (conn, guard):
        if conn is not None:
            with conn.pipeline(transaction=False) as pipe:
                pipe.hgetall(Job.key_for(job_id))
                pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
                raw, stream = pipe.execute()
            if raw:
                detail = _detail(conn, job_id, raw, stream, records)
    if guard is None:
        return replace(detail, redis_commands=DETAIL_COMMANDS)
    return replace(detail, redis_commands=guard.meter.billed, error=guard.problem())


def _safe_repr(value: Any) -> str:
    try:
        return pprint.pformat(value, width=100, compact=True)
    except Exception as exc:  # a __repr__ that raises
        return f"<unprintable {type(value).__name__}: {exc}>"


def _detail(
    conn: redis.Redis,
    job_id: str,
    raw: dict[bytes, bytes],
    stream: Any,
    records: list[JobRecord],
) -> JobDetail:
    # rq's own parsing, as Job.fetch + latest_result do it; no Redis command
    # is sent from here on.
    values: dict[str, Any] = {}
    try:
        job = Job(job_id, connection=conn)
        job.restore(raw)
    except Exception as exc:  # a hash rq itself could not load
        fields = {as_text(k): v for k, v in raw.items()}
        return JobDetail(
            job_id,
            found=True,
            status=as_text(fields.get("status") or b""),
            origin=as_text(fields.get("origin") or b""),
            description=as_text(fields.get("description") or b""),
            payload_error=f"rq cannot load this job: {type(exc).__name__}: {exc}",
            traceback=_stream_traceback(stream)
            or _hash_traceback(fields.get("exc_info")),
            records=records,
        )
    values["func_name"] = ""
    values["args"] = values["kwargs"] = ""
    values["payload_error"] = ""
    try:
        values["func_name"] = job.func_name
        values["args"] = _safe_repr(tuple(job.args))
        values["kwargs"] = _safe_repr(dict(job.kwargs))
    except Exception as exc:  # unpicklable payload, missing class, bad data
        cause = exc.__cause__ or exc
        values["payload_error"] = (
            f"The payload cannot be loaded here: {type(cause).__name__}: {cause}"
        )
    latest = ""
    latest_at = None
    traceback = ""
    return_value = ""
    if stream:
        result_id, payload = stream[0]
        try:
            result = Result.restore(
                job_id, as_text(result_id), payload, connection=conn
            )
        except Exception:  # an unloadable return value: keep the traceback
            traceback = _stream_traceback(stream)
        else:
            latest = result.type.name
            latest_at = result.created_at
            traceback = result.exc_string or ""
            if result.type == Result.Type.SUCCESSFUL:
                return_value = _safe_repr(result.return_value)
    if not traceback and job._exc_info:
        traceback = job._exc_info
    return JobDetail(
        job_id,
        found=True,
        status=job.get_status(refresh=False).value,
        origin=job.origin,
        description=job.description or "",
        meta=_safe_repr(job.meta) if job.meta else "",
        retries_left=job.retries_left,
        number_of_retries=job.number_of_retries,
        timeout=job.timeout,
        result_ttl=job.result_ttl,
        failure_ttl=job.failure_ttl,
        created_at=job.created_at,
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        worker_name=job.worker_name or "",
        latest_result=latest,
        latest_result_at=latest_at,
        traceback=traceback,
        return_value=return_value,
        records=records,
        **values,
    )


# --- Requeue and delete -------------------------------------------------------

REQUEUE = "requeue"
DELETE = "delete"


@dataclass
class ActionResult:
    action: str
    queue: str
    state: str
    # The jobs considered, in order (the chosen ones, or those an "all" found).
    asked: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    # job id -> why it was left alone
    skipped: dict[str, str] = field(default_factory=dict)
    # For an "all": jobs left in the list or registry after this call.
    remaining: int = 0
    redis_commands: int = 0
    error: str = ""

    def summary(self) -> str:
        verb = "Requeued" if self.action == REQUEUE else "Deleted"
        noun = "job" if len(self.done) == 1 else "jobs"
        text = f"{verb} {len(self.done)} {self.state} {noun} of {self.queue}"
        if self.done:
            text += f": {', '.join(self.done)}"
        text += "."
        if self.skipped:
            reasons = "; ".join(f"{j} ({why})" for j, why in self.skipped.items())
            text += f" Left alone: {reasons}."
        if self.remaining:
            text += f" {self.remaining} more remain in {self.state}."
        if self.error:
            text += f" Redis failed: {self.error}"
        cmds = self.redis_commands
        return f"{text} This cost {cmds} Redis command{'s' if cmds != 1 else ''}."


class NotAllowed(ValueError):
    """This action is not offered for this state."""


def requeue(queue: str, job_ids: Iterable[str]) -> ActionResult:
    """Put the chosen failed jobs of `queue` back on it, as rq's
    FailedJobRegistry.requeue does. Cost: at most `requeue_cost(n, c)`."""
    return _act(REQUEUE, queue, FAILED, list(job_ids), take_all=False)


def requeue_all_failed(queue: str) -> ActionResult:
    """Requeue the oldest BULK_LIMIT failed jobs of `queue` (all of them when
    there are fewer). Cost: at most `requeue_cost(n, c, take_all=True)`."""
    return _act(REQUEUE, queue, FAILED, [], take_all=True)


def delete(queue: str, job_ids: Iterable[str], state: str) -> ActionResult:
    """Delete the chosen jobs of `queue` that are still in `state`. Cost: at
    most `delete_cost(n, c)`."""
    return _act(DELETE, queue, state, list(job_ids), take_all=False)


def delete_all(queue: str, state: str) -> ActionResult:
    """Delete the first BULK_LIMIT jobs of `queue` in `state` (oldest first;
    the queue's head). Cost: at most `delete_cost(n, c, take_all=True)`."""
    return _act(DELETE, queue, state, [], take_all=True)


def action_allowed(action: str, state: str) -> bool:
    info = state_info(state)
    return info.can_requeue if action == REQUEUE else info.can_delete


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in ids if i))


def _act(
    action: str, queue: str, state: str, job_ids: list[str], *, take_all: bool
) -> ActionResult:
    info = state_info(state)
    if not action_allowed(action, state):
        raise NotAllowed(f"{action} is not offered for {state} jobs")
    ids = _unique(job_ids)
    if len(ids) > BULK_LIMIT:
        raise ValueError(f"at most {BULK_LIMIT} jobs at a time")
    if not all(valid_job_id(i) for i in ids):
        raise ValueError("not a job id")
    result = ActionResult(action, queue, state, asked=ids)
    if not ids and not take_all:
        return result
    keys = claim_lists(queue)
    with incidents.guarded_read(Source.CONSOLE) as read:
        if read.client is not None:
            _run_action(read.client, info, queue, action, keys, result, take_all)
    result.redis_commands = read.meter.billed
    result.error = read.problem()
    return result


def _run_action(
    conn: redis.Redis,
    info: StateInfo,
    queue: str,
    action: str,
    keys: list[str],
    result: ActionResult,
    take_all: bool,
) -> None:
    key = info.key(queue)
    claimed: set[str] = set()
    before = 0
    if take_all:
        # The ids, how many there are, and the claim lists: one round trip.
        with conn.pipeline(transaction=False) as pipe:
            if info.kind == "list":
                pipe.lrange(key, 0, BULK_LIMIT - 1)
                pipe.llen(key)
            else:
                pipe.zrange(key, 0, BULK_LIMIT - 1)
                pipe.zcard(key)
            for claim in keys:
                pipe.lrange(claim, 0, -1)
            replies = pipe.execute()
        result.asked = _unique(as_text(i) for i in replies[0])
        before = int(replies[1])
        claimed = {as_text(i) for reply in replies[2:] for i in reply}
        keys = []  # read already
        result.remaining = before
        if not result.asked:
            return
    # 1. Read: each job's status, queue and timeout, and the claim lists.
    asked = result.asked
    with conn.pipeline(transaction=False) as pipe:
        for job_id in asked:
            pipe.hmget(Job.key_for(job_id), "status", "origin", "timeout")
        for claim in keys:
            pipe.lrange(claim, 0, -1)
        replies = pipe.execute()
    claimed |= {as_text(i) for reply in replies[len(asked) :] for i in reply}
    eligible = _eligible(info, queue, asked, replies[: len(asked)], claimed, result)
    won: list[tuple[str, bool]] = []
    if eligible:
        # 2. The gate: only the caller that takes a job out of its list or
        # registry acts on it (rq's requeue has the same rule). A queued job a
        # consumer claimed meanwhile is no longer on the queue: LREM says 0.
        with conn.pipeline(transaction=False) as pipe:
            for job_id, _ in eligible:
                if info.kind == "list":
                    pipe.lrem(key, 0, job_id)
                else:
                    pipe.zrem(key, job_id)
            removed = pipe.execute()
        for (job_id, has_timeout), n in zip(eligible, removed, strict=True):
            if n:
                won.append((job_id, has_timeout))
            else:
                result.skipped[job_id] = f"no longer {info.name} (taken meanwhile)"
    if won:
        # 3. The write. Should it fail, these jobs are out of their list or
        # registry with their hash unchanged: say which.
        try:
            if action == REQUEUE:
                _write_requeue(conn, queue, won)
            else:
                _write_delete(conn, [job_id for job_id, _ in won])
        except redis.RedisError:
            result.skipped.update(
                {
                    job_id: f"taken off {info.name}, but the {action} did not "
                    "reach Redis"
                    for job_id, _ in won
                }
            )
            raise
        result.done = [job_id for job_id, _ in won]
    if take_all:
        result.remaining = max(0, before - len(result.done))


def _eligible(
    info: StateInfo,
    queue: str,
    asked: list[str],
    rows: list[Any],
    claimed: set[str],
    result: ActionResult,
) -> list[tuple[str, bool]]:
    """The jobs still as the operator saw them, as (id, has a timeout); the
    others go to result.skipped with the reason."""
    eligible = []
    for job_id, (status, origin, timeout) in zip(asked, rows, strict=True):
        if status is None:
            result.skipped[job_id] = "no longer in Redis"
        elif origin is not None and as_text(origin) != queue:
            result.skipped[job_id] = f"belongs to queue {as_text(origin)}"
        elif as_text(status) not in info.statuses:
            result.skipped[job_id] = f"it is {as_text(status)} now, not {info.name}"
        elif job_id in claimed:
            result.skipped[job_id] = "a drain or worker has claimed it to run"
        else:
            eligible.append((job_id, bool(timeout)))
    return eligible


def _write_requeue(conn: redis.Redis, queue: str, won: list[tuple[str, bool]]) -> None:
    # The fields rq's FailedJobRegistry.requeue changes (job.save() after
    # clearing started_at, ended_at and _exc_info, then Queue._enqueue_job:
    # status, enqueued_at, the queue's default timeout when the job has none).
    enqueued_at = utcformat(now())
    with conn.pipeline(transaction=True) as pipe:
        for job_id, has_timeout in won:
            mapping: dict[str, Any] = {
                "status": "queued",
                "enqueued_at": enqueued_at,
                "started_at": "",
                "ended_at": "",
                "exc_info": zlib.compress(b""),
            }
            if not has_timeout:
                mapping["timeout"] = RQQueue.DEFAULT_TIMEOUT
            pipe.hset(Job.key_for(job_id), mapping=mapping)
        pipe.rpush(list_key(queue), *(job_id for job_id, _ in won))
        pipe.execute()


def job_keys(job_id: str) -> list[str]:
    """Every key rq keeps for one job: the ones `delete` removes. (rq's
    dependencies key has the double colon: Job.dependencies_key.)"""
    return [
        Job.key_for(job_id),
        Job.dependents_key_for(job_id),
        f"{Job.redis_job_namespace_prefix}:{job_id}:dependencies",
        Result.get_key(job_id),
        ExecutionRegistry.key_template.format(job_id),
    ]


def _write_delete(conn: redis.Redis, ids: list[str]) -> None:
    conn.delete(*(key for job_id in ids for key in job_keys(job_id)))
