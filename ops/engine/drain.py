"""The drain engine: the one function every interface calls to drain the queues.

An idle drain costs one Redis command: a single EXISTS over every selected
queue's list, scheduled registry and intermediate list. Only when that finds
work does the engine requeue stranded jobs, promote due scheduled jobs and start
child processes — the executor, behind the job-execution seam: the lean
executor (ops/engine/lean_worker.py, the default) or RQ's SimpleWorker
(ops/engine/drain_worker.py), per DRAIN_EXECUTOR — at most
`max_concurrent_queues` at a time, in priority order, until the queues are empty
or the time budget is spent. Dependents that a job releases onto another
selected queue (either executor reports them) run in the same drain while time
is left. A child is over when it exits, not when its report pipe closes: a
process its job forked may hold the pipe open for as long as it lives.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.db import connections, transaction
from rq.utils import as_text

from ops.engine import (
    children,
    claims,
    drain_worker,
    lean_worker,
    lease,
    leftovers,
    scheduled,
)
from ops.engine.drain_options import DrainOptions
from ops.engine.progress import ProgressWriter
from ops.engine.records import RecordWriter, parse_record, record_line
from ops.engine.recovery import fail_started_jobs, forget_worker, requeue_stranded
from ops.logcontext import bind, scoped
from ops.models import DrainRun, ScheduledHint, Source, lease_life
from ops.queues import (
    intermediate_key,
    list_key,
    pending_keys,
    scheduled_key,
)
from ops.usage import incidents
from ops.usage.metering import recorder
from ops.usage.quota_errors import is_quota_exhausted
from ops.usage.redis_client import CommandMeter, close_client, make_client

log = logging.getLogger(__name__)

EXECUTOR_MODULES = {"lean": "ops.engine.lean_worker", "rq": "ops.engine.drain_worker"}
# A child that reported `done` has nothing left to say; one still alive this
# long after it (a non-daemon thread a job left behind) is killed, its work
# counted as done.
DONE_EXIT_GRACE_S = 2.0
# A queue whose child keeps dying (a job that segfaults, say) is given up on
# for this drain after this many deaths; each death fails the job it ran.
MAX_CHILD_DEATHS_PER_QUEUE = 5


class ErrorCode:
    REDIS_UNAVAILABLE = "redis_unavailable"
    REDIS_QUOTA_EXHAUSTED = "redis_quota_exhausted"
    INTERRUPTED = "interrupted"
    INTERNAL = "internal_error"


@dataclass
class _Tally:
    processed: int = 0
    failed: int = 0
    remaining: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "processed": self.processed,
            "failed": self.failed,
            "remaining": self.remaining,
        }


@dataclass
class _Child:
    queue: str
    worker_name: str
    claim_key: str
    proc: subprocess.Popen[bytes] | children.ForkedChild
    reader: int
    tally: children.SharedTally
    buffer: bytes = b""
    current_job: str | None = None
    billed: int = 0
    total: int = 0
    done: bool = False
    # When `done` was read (monotonic); a child that lingers after it is ended.
    done_at: float | None = None
    stopped_at_deadline: bool = False
    killed: bool = False
    lingered: bool = False  # killed after `done`: its work is over


@dataclass
class _Outcome:
    tallies: dict[str, _Tally]
    records: RecordWriter
    progress: ProgressWriter
    deadline_hit: bool = False
    child_billed: int = 0
    errors: list[str] = field(default_factory=list)
    # Queues the lean executor put dependents on during this drain.
    enqueued: Counter[str] = field(default_factory=Counter)
    # Claim lists Redis did not let us settle: queue -> job running there.
    unsettled: dict[str, str | None] = field(default_factory=dict)
    # (error code, sentence) of the Redis failure that left a dead worker's
    # jobs unsettled: the drain failed, whatever its own commands did.
    redis_failure: tuple[str, str] | None = None
    # Queues whose last child ended cleanly, neither at the deadline nor dead:
    # it found its queue empty.
    emptied: set[str] = field(default_factory=set)
    # Keeps the lease alive; its `lost` stops the drain taking jobs.
    renewal: lease.Renewal | None = None
    lease_lost: bool = False
    # A worker was started: a failed run may have left jobs in Redis.
    spawned: bool = False


@scoped  # the run id below tags this drain's log lines, and its children's
def drain(
    *,
    trigger: str,
    options: DrainOptions,
    requested_by: Any = None,
    caller: str = "",
    credential: str = "",
    fork_children: bool | None = None,
    run: DrainRun | None = None,
) -> DrainRun:
    """Drain the selected queues once. Returns the finished DrainRun.

    Never raises for Redis trouble or job failures: the run records them. A
    second caller while a drain holds the lease gets a `skipped` run at once.
    `fork_children`: fork the queue workers (saves a fresh interpreter's
    ~0.7 s per queue) or spawn them; None (the default) forks when this
    process can be forked safely (see _can_fork), which holds in `manage.py
    drain`, a gunicorn sync worker and a qcluster worker.
    `run`: a row already created and claimed (running) by the caller, e.g. a
    console drain run in the background (ops/engine/background.py).
    """
    # The run's row and its claim on the lease in one transaction: an idle
    # tick writes three times in all (this, its verdict with the lease's
    # release, its usage), each one commit, so one WAL flush, which is what
    # it waits for beside a busy database (a prune: docs/benchmarks.md).
    with transaction.atomic():
        if run is None:
            run = DrainRun.objects.create(
                trigger=trigger,
                requested_by=requested_by
                if getattr(requested_by, "pk", None)
                else None,
                caller=caller[:200],
                credential=credential[:100],
                params=options.as_params(),
                worker_prefix=f"kdrain.{uuid.uuid4().hex[:12]}.",
            )
        claim = lease.acquire(run, lease_life(options.max_duration_ms))
    bind(run_id=run.public_id)
    if not claim.acquired:
        run.mark_skipped(blocked_by=claim.holder)
        return run

    quota_gate = incidents.gate()
    if not quota_gate.allowed:
        # A quota incident is open and another caller probed recently: do not
        # spend a command on an answer we already know.
        run.finish(
            status=DrainRun.Status.FAILED,
            error_code=ErrorCode.REDIS_QUOTA_EXHAUSTED,
            error=quota_gate.refusal(),
        )
        lease.release(run)
        return run

    meter = CommandMeter(Source.DRAIN_CHECK)
    client = make_client(meter)
    outcome = _Outcome(
        tallies={name: _Tally() for name in options.queues},
        records=RecordWriter(run=run),
        progress=ProgressWriter(run, lambda: meter.billed),
    )
    if fork_children is None:
        fork_children = _can_fork()
    # Renewed from a thread, unless the drain runs inside a transaction (a
    # test, an atomic request): a thread's own connection would not see the
    # lease row, so the drain's loop renews it.
    outcome.renewal = lease.Renewal(run)
    if not transaction.get_connection().in_atomic_block:
        outcome.renewal.start()
    recovered = 0
    status = DrainRun.Status.SUCCEEDED
    error_code = error = ""
    escaping: BaseException | None = None
    try:
        recovered = leftovers.recover(client, run)
        _drain_with_lease(run, options, client, meter, outcome, fork_children)
        if outcome.redis_failure is None:  # a worker's quota error: still open
            incidents.succeeded(quota_gate)
    except BaseException as exc:
        # Whatever happened, the run is finished and the lease released below:
        # never leave a run "running" behind us.
        status = DrainRun.Status.FAILED
        error_code, error = _classify(exc)
        if error_code == ErrorCode.REDIS_QUOTA_EXHAUSTED:
            incidents.note_quota_error(meter.source, exc)
        if error_code in (ErrorCode.INTERNAL, ErrorCode.INTERRUPTED):
            if error_code == ErrorCode.INTERNAL:
                log.exception("drain %s failed", run.public_id)
            escaping = exc if not isinstance(exc, Exception) else None
    finally:
        close_client(client)
        outcome.records.flush()
        outcome.renewal.stop()

    if status == DrainRun.Status.SUCCEEDED and outcome.redis_failure is not None:
        # Redis went away under a worker (the drain's own commands went
        # through): its jobs wait for the next drain that reaches Redis, and
        # the caller hears a Redis failure (503), not "succeeded".
        status = DrainRun.Status.FAILED
        error_code, error = outcome.redis_failure
        error = "; ".join([error, *outcome.errors])
    if status == DrainRun.Status.SUCCEEDED:
        if outcome.errors:
            error = "; ".join(outcome.errors)
        left = sum(t.remaining for t in outcome.tallies.values())
        # Failed or crashed jobs win over the deadline (DrainRun's docstring):
        # `deadline_hit` and the `remaining` counts still say it stopped early.
        if any(t.failed for t in outcome.tallies.values()):
            status = DrainRun.Status.WITH_FAILURES
        elif outcome.deadline_hit and left:
            status = DrainRun.Status.DEADLINE
    released = False
    try:
        # The verdict and the lease's release in one transaction (one commit).
        # Conditional: a drain that took over and marked this run abandoned
        # keeps its verdict (DrainRun.finish).
        with transaction.atomic():
            mine = run.finish(
                status=status,
                queue_results={n: t.as_dict() for n, t in outcome.tallies.items()},
                redis_commands=meter.billed + outcome.child_billed,
                deadline_hit=outcome.deadline_hit,
                recovered_jobs=recovered,
                error_code=error_code,
                error=error,
                unsettled_claims=outcome.unsettled,
                # Its workers may have left jobs started, claimed or registered.
                needs_recovery=status == DrainRun.Status.FAILED and outcome.spawned,
            )
            lease.release(run)
        released = True
        if not mine:
            log.warning("drain %s: another drain's verdict stands", run.public_id)
    finally:
        if not released:  # the verdict could not be written: let go all the same
            lease.release(run)
        recorder.flush()  # the run's cost is in the usage table when it returns
    if escaping is not None:
        raise escaping  # Ctrl-C / SystemExit go on once the books are closed
    return run


# Threads a forked child can do without: the usage recorder's flusher (its
# locks and counts are reset in the child by an at-fork hook), the lease
# renewal (an at-fork hook keeps it out of the database across the fork), and
# the stop watcher of a process that ran a job (ops/engine/stop.py: a forked
# child makes its own, and never touches the old one's lock or connection).
FORK_SAFE_THREADS = frozenset(
    {"kaireon-usage-flush", lease.RENEWAL_THREAD, "kaireon-stop-watch"}
)


def _can_fork() -> bool:
    """Forking copies one thread; another thread holding a lock at that moment
    would leave it held for ever in the child. So fork only from the main
    thread of a process whose other threads are known to be safe, and outside
    a database transaction (children.fork closes the connections first)."""
    main = threading.main_thread()
    if threading.current_thread() is not main:
        return False
    others = {t.name for t in threading.enumerate() if t is not main}
    if not others <= FORK_SAFE_THREADS:
        return False
    return not any(c.in_atomic_block for c in connections.all(initialized_only=True))


def _classify(exc: BaseException) -> tuple[str, str]:
    """(error code, human sentence) for what stopped a drain."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return ErrorCode.REDIS_UNAVAILABLE, f"Redis is unreachable: {exc}"
    if is_quota_exhausted(exc):
        return (
            ErrorCode.REDIS_QUOTA_EXHAUSTED,
            f"The Redis command quota is exhausted: {exc}",
        )
    if not isinstance(exc, Exception):
        return ErrorCode.INTERRUPTED, "The drain was interrupted."
    return ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"


def _drain_with_lease(
    run: DrainRun,
    options: DrainOptions,
    client: redis.Redis,
    meter: CommandMeter,
    outcome: _Outcome,
    fork_children: bool = False,
) -> None:
    names = list(options.queues)
    if not names:
        return
    now = time.time()
    listed_keys = [list_key(n) for n in names] + [intermediate_key(n) for n in names]
    # The idle check: one command for every queue, the floor of an idle tick.
    # While the last closer look's finding holds (only scheduled jobs, none
    # due before `earliest_due`), the registries it saw need no look: the one
    # EXISTS covers the lists and the other queues' registries, so a job queued
    # anywhere, or scheduled onto a queue that had none, is seen.
    hint_key = ",".join(sorted(names))
    hint_row = ScheduledHint.objects.filter(queues=hint_key).first()
    hint = _hint(hint_row, now)
    if hint is not None:
        seen = set(hint.scheduled_queues.split(","))
        unseen = [scheduled_key(n) for n in names if n not in seen]
        if client.exists(*listed_keys, *unseen) == 0:
            return
    elif client.exists(*pending_keys(names)) == 0:
        return
    found = _look(client, names, now, hint_key, scheduled_seen=hint_row is not None)
    if found is None:
        return  # only scheduled jobs, none due: remembered in a ScheduledHint
    meter.source = Source.DRAIN_JOBS  # from here on it is work, not checking
    depths, due, stranded = found
    for name in names:
        if stranded.get(name):
            depths[name] += len(requeue_stranded(client, name))
        if due.get(name):
            ids = [as_text(j) for j in due[name]]
            depths[name] += scheduled.promote(client, name, ids)
    outcome.progress.expect(depths)

    with_work = [name for name in names if depths[name] > 0]
    worked: set[str] = set(with_work)
    deadline = run.started.timestamp() + options.max_duration_ms / 1000
    while with_work:
        _run_children(run, options, with_work, deadline, client, outcome, fork_children)
        # Dependents the jobs just released onto a selected queue run in this
        # drain too, while time is left (both executors report them).
        with_work = [name for name in names if outcome.enqueued[name] > 0]
        worked.update(with_work)
        outcome.progress.expect(outcome.enqueued)
        outcome.enqueued.clear()
        if outcome.lease_lost:
            break
        if time.time() >= deadline:
            if with_work:
                outcome.deadline_hit = True
            break

    # What is left: only where a queue's last child did not finish it (the
    # deadline, a crash, never started). A queue with nothing at the look, or
    # drained empty, has nothing left of what this drain saw; what arrived
    # since is the next tick's.
    unfinished = [
        name for name in names if name in worked and name not in outcome.emptied
    ]
    if unfinished:
        with client.pipeline(transaction=False) as pipe:
            for name in unfinished:
                pipe.llen(list_key(name))
            for name, left in zip(unfinished, pipe.execute(), strict=True):
                outcome.tallies[name].remaining = left


def _look(
    client: redis.Redis,
    names: list[str],
    now: float,
    hint_key: str,
    *,
    scheduled_seen: bool,
) -> tuple[dict[str, int], dict[str, list[Any]], dict[str, int]] | None:
    """What there is to do: (depths, due scheduled ids, stranded counts) per
    queue, or None when only scheduled jobs exist and none is due (then a
    ScheduledHint remembers when the earliest is).

    Where scheduled jobs were seen before, a cheap look first (1 + 1 per
    queue: EXISTS over the lists, the earliest of each registry), then the
    depths of the lists and the due ids of the due registries only. Otherwise
    one pipeline: the lists' depths, every registry's due ids, and one EXISTS
    over the intermediate lists (2 per queue + 1)."""
    lists = [list_key(n) for n in names]
    intermediates = [intermediate_key(n) for n in names]
    due_names = names
    if scheduled_seen:
        with client.pipeline(transaction=False) as pipe:
            pipe.exists(*lists, *intermediates)
            for name in names:
                pipe.zrange(scheduled_key(name), 0, 0, withscores=True)
            listed, *earliest = pipe.execute()
        due_names = [
            n for n, e in zip(names, earliest, strict=True) if e and e[0][1] <= now
        ]
        if not listed and not due_names:
            _remember(hint_key, names, earliest, now)
            return None
        if not any(earliest):  # no scheduled job left: back to the plain look
            ScheduledHint.objects.filter(queues=hint_key).delete()
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(list_key(name))
        for name in due_names:
            pipe.zrangebyscore(scheduled_key(name), 0, now)
        pipe.exists(*intermediates)
        replies = pipe.execute()
    n = len(names)
    depths = dict(zip(names, replies[:n], strict=True))
    due = dict(zip(due_names, replies[n:-1], strict=True))
    stranded: dict[str, int] = {}
    if replies[-1]:
        # Rare: a consumer popped a job and died before registering it.
        with client.pipeline(transaction=False) as pipe:
            for key in intermediates:
                pipe.llen(key)
            stranded = dict(zip(names, pipe.execute(), strict=True))
    nothing = not any(depths.values()) and not any(due.values())
    if not scheduled_seen and nothing and not any(stranded.values()):
        # Only scheduled jobs, none due: their earliest times, once.
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zrange(scheduled_key(name), 0, 0, withscores=True)
            _remember(hint_key, names, pipe.execute(), now)
        return None
    return depths, due, stranded


def _remember(hint_key: str, names: list[str], earliest: list[Any], now: float) -> None:
    upcoming = {n: e[0][1] for n, e in zip(names, earliest, strict=True) if e}
    if not upcoming:
        ScheduledHint.objects.filter(queues=hint_key).delete()
        return
    ScheduledHint.objects.update_or_create(
        queues=hint_key,
        defaults={
            "scheduled_queues": ",".join(sorted(upcoming)),
            "earliest_due": datetime.fromtimestamp(min(upcoming.values()), UTC),
            "checked_at": datetime.fromtimestamp(now, UTC),
        },
    )


def _hint(hint: ScheduledHint | None, now: float) -> ScheduledHint | None:
    """The last look's finding while it stands: its earliest scheduled job not
    yet due, DRAIN_SCHEDULED_RECHECK_S not passed. The re-check bounds what the
    idle check cannot see while it stands: a job scheduled, due sooner, onto a
    registry that already held one."""
    recheck = settings.DRAIN_SCHEDULED_RECHECK_S
    if (
        recheck <= 0
        or hint is None
        or hint.earliest_due.timestamp() <= now
        or now - hint.checked_at.timestamp() >= recheck
    ):
        return None
    return hint


def _spawn(
    run: DrainRun, queue: str, attempt: int, deadline: float, fork: bool
) -> _Child:
    worker_name = f"{run.worker_prefix}{queue}.{attempt}"
    # One claim list per run and queue: a child that replaces a dead one finds
    # it settled (finish_child recovers it first).
    claim_key = claims.claim_key(f"{run.worker_prefix}{queue}")
    lean = settings.DRAIN_EXECUTOR == "lean"
    tally = children.SharedTally()
    proc: Any
    if fork:

        def target(fd: int, shared: children.SharedTally) -> int:
            if lean:
                return lean_worker.drain_queue(
                    queue, deadline, worker_name, fd, shared, claim_key
                )
            return drain_worker.drain_queue(queue, deadline, worker_name, fd, shared)

        proc, reader = children.fork(target, tally)
        os.set_blocking(reader, False)
    else:
        args = ["--queue", queue, "--deadline", repr(deadline)]
        args += ["--worker-name", worker_name]
        if lean:
            args += ["--claim-key", claim_key]
        proc, reader = children.spawn(
            EXECUTOR_MODULES[settings.DRAIN_EXECUTOR], args, tally
        )
        os.set_blocking(reader, False)
    return _Child(
        queue=queue,
        worker_name=worker_name,
        claim_key=claim_key,
        proc=proc,
        reader=reader,
        tally=tally,
    )


def _chunk(child: _Child) -> bytes | None:
    """What the child's pipe holds now (the pipe does not block): None when
    nothing, b"" at the end of the stream."""
    try:
        return os.read(child.reader, 65536)
    except BlockingIOError:
        return None


def _feed(child: _Child, data: bytes, tally: _Tally, outcome: _Outcome) -> None:
    child.buffer += data
    *lines, child.buffer = child.buffer.split(b"\n")
    for raw in lines:
        _handle_line(child, raw, tally, outcome)


def _read(child: _Child, tally: _Tally, outcome: _Outcome) -> bool:
    """Consume what the child reported. False at end of stream."""
    data = _chunk(child)
    if data is None:
        return True  # nothing more for now
    if not data:
        return False
    _feed(child, data, tally, outcome)
    return True


def _read_rest(child: _Child, tally: _Tally, outcome: _Outcome) -> None:
    """Everything an exited child wrote, never waiting for the end of the
    stream: a process its job forked may hold the pipe's write end for as long
    as it lives (a helper that outlives the job)."""
    while data := _chunk(child):
        _feed(child, data, tally, outcome)


def _handle_line(child: _Child, raw: bytes, tally: _Tally, outcome: _Outcome) -> None:
    parts = raw.decode("utf-8", "replace").split()
    if not parts:
        return
    kind = parts[0]
    if kind == "start" and len(parts) == 2:
        child.current_job = parts[1]
    elif kind == "end" and len(parts) == 5:
        child.current_job = None
        tally.processed += 1
        if parts[2] != "ok":
            tally.failed += 1
        child.billed, child.total = int(parts[3]), int(parts[4])
    elif kind == "deadline":
        child.stopped_at_deadline = True
    elif kind == "done" and len(parts) == 3:
        child.done = True
        child.done_at = time.monotonic()
        child.billed, child.total = int(parts[1]), int(parts[2])
    elif kind == "enqueued" and len(parts) == 3 and parts[2].isdecimal():
        outcome.enqueued[parts[1]] += int(parts[2])
    elif kind == "record":
        data = parse_record(raw.decode("utf-8", "replace")[len("record ") :])
        if data is not None:
            outcome.records.add(data, worker=child.worker_name)


def _record_settled(
    outcome: _Outcome, child: _Child, settled: claims.Recovery, reason: str
) -> None:
    """Job records for what the recovery of a dead child did."""
    for status, ids in (
        ("abandoned", settled.abandoned),
        ("requeued", settled.requeued),
    ):
        for job_id in ids:
            line = record_line(
                job_id=job_id,
                queue=child.queue,
                func="",
                status=status,
                started=None,
                ended=None,
                exc_type="AbandonedJobError" if status == "abandoned" else "",
                exc_message=reason if status == "abandoned" else "",
            )
            data = parse_record(line[len("record ") :])
            if data is not None:
                outcome.records.add(data, worker=child.worker_name)


def _note_unsettled(outcome: _Outcome, child: _Child, exc: redis.RedisError) -> None:
    """A dead worker's leftovers stay in Redis for the next drain: remember
    the job it ran there. A job already known to be running there is never
    overwritten with None (None would tell the recovery that nothing was
    running, and it would requeue a job that ran)."""
    known = outcome.unsettled.get(child.queue)
    outcome.unsettled[child.queue] = known or child.current_job
    if outcome.redis_failure is None:
        outcome.redis_failure = _classify(exc)


def _watch_lease(
    run: DrainRun, outcome: _Outcome, waiting: deque[str], active: dict[int, _Child]
) -> None:
    """Renew the lease when the loop does it, and once it is lost: start no
    more workers and tell the running ones to stop after their current job
    (SIGTERM: RQ's warm shutdown, the lean executor's should_stop)."""
    renewal = outcome.renewal
    if renewal is None:
        return
    renewal.tick()
    if outcome.lease_lost or not renewal.lost.is_set():
        return
    outcome.lease_lost = True
    outcome.errors.append("lost the drain lease: stopped taking jobs")
    log.error("drain %s lost its lease: stopping its workers", run.public_id)
    waiting.clear()
    for child in active.values():
        child.proc.send_signal(signal.SIGTERM)


def _run_children(
    run: DrainRun,
    options: DrainOptions,
    queues: list[str],
    deadline: float,
    client: redis.Redis,
    outcome: _Outcome,
    fork: bool = False,
) -> None:
    hard_deadline = deadline + settings.DRAIN_JOB_GRACE_MS / 1000
    waiting = deque(queues)
    attempts: Counter[str] = Counter()
    deaths: Counter[str] = Counter()
    active: dict[int, _Child] = {}
    selector = selectors.DefaultSelector()

    def finish_child(child: _Child) -> None:
        selector.unregister(child.reader)
        os.close(child.reader)
        del active[child.reader]
        returncode = child.proc.wait()
        # The shared tally is exact even when a job killed the process before
        # it could report its last counts.
        child.billed, child.total = child.tally.read()
        child.tally.close()
        outcome.child_billed += child.billed
        # The child does not write usage itself; its parent books it.
        recorder.add(Source.DRAIN_JOBS, child.billed, child.total - child.billed)
        if child.stopped_at_deadline:
            outcome.deadline_hit = True
        if child.done and (returncode == 0 or child.lingered):
            if child.stopped_at_deadline:
                outcome.emptied.discard(child.queue)
            else:
                outcome.emptied.add(child.queue)
            return
        outcome.emptied.discard(child.queue)
        # The child died: fail the job it was running (RQ's own cleanup would
        # do it only minutes later) and tidy its worker registration.
        tally = outcome.tallies[child.queue]
        if child.killed:
            reason = "killed at the drain's hard deadline (time budget + job grace)"
        else:
            reason = f"the drain's worker process died (exit status {returncode})"
        if settings.DRAIN_EXECUTOR == "lean":
            try:
                settled = claims.recover(
                    client,
                    child.queue,
                    child.claim_key,
                    running=child.current_job,
                    reason=reason,
                    worker_name=child.worker_name,
                )
            except redis.RedisError as exc:
                # Redis is what killed the child (an outage, the quota): its
                # claim list stays in Redis, and the run says so; the next
                # drain that reaches Redis settles it.
                if is_quota_exhausted(exc):
                    incidents.note_quota_error(Source.DRAIN_JOBS, exc)
                _note_unsettled(outcome, child, exc)
                handled = []
            else:
                handled = settled.abandoned
                _record_settled(outcome, child, settled, reason)
        else:
            try:
                handled = fail_started_jobs(
                    client, child.queue, worker_prefix=child.worker_name, reason=reason
                )
                forget_worker(client, child.worker_name, [child.queue])
            except redis.RedisError as exc:
                # As above: its started job and registration stay in Redis,
                # the run needs recovery, and the other queues' workers go on.
                if is_quota_exhausted(exc):
                    incidents.note_quota_error(Source.DRAIN_JOBS, exc)
                _note_unsettled(outcome, child, exc)
                handled = []
        if child.current_job and child.current_job in handled:
            tally.processed += 1
            tally.failed += 1
        deaths[child.queue] += 1
        log.warning("drain %s: worker for %s %s", run.public_id, child.queue, reason)
        if child.killed:
            outcome.deadline_hit = True
        elif outcome.lease_lost:
            pass  # stopped taking jobs: not replaced
        elif child.queue in outcome.unsettled:
            # Its claim list is still in Redis, and a new worker of this queue
            # would claim into the same list: leave the queue for the drain
            # that settles it.
            outcome.errors.append(f"{child.queue}: Redis failed its worker")
        elif deaths[child.queue] >= MAX_CHILD_DEATHS_PER_QUEUE:
            outcome.errors.append(
                f"{child.queue}: gave up after {deaths[child.queue]} worker deaths"
            )
        else:
            waiting.appendleft(child.queue)  # carry on with the rest of it

    try:
        while waiting or active:
            while waiting and len(active) < options.max_concurrent_queues:
                if time.time() >= deadline:
                    outcome.deadline_hit = True  # queues with work never started
                    waiting.clear()
                    break
                name = waiting.popleft()
                attempts[name] += 1
                outcome.spawned = True
                child = _spawn(run, name, attempts[name], deadline, fork)
                active[child.reader] = child
                selector.register(child.reader, selectors.EVENT_READ, child)
            if not active:
                break
            _watch_lease(run, outcome, waiting, active)
            wait = max(0.0, min(1.0, hard_deadline - time.time()))
            events = selector.select(timeout=wait)
            for key, _ in events:
                child = key.data
                if not _read(child, outcome.tallies[child.queue], outcome):
                    finish_child(child)
            for child in list(active.values()):
                # A child ends when it exits, not at the end of its stream: a
                # process its job forked may hold the pipe open for as long as
                # it lives (one that outlives the job would block us on it).
                if child.proc.poll() is None:
                    if child.done_at is None or (
                        time.monotonic() - child.done_at < DONE_EXIT_GRACE_S
                    ):
                        continue
                    child.lingered = True
                    child.proc.kill()
                    child.proc.wait()
                _read_rest(child, outcome.tallies[child.queue], outcome)
                finish_child(child)
            outcome.records.flush()
            if outcome.progress.due():  # at most one UPDATE a second
                outcome.progress.write(
                    {n: t.as_dict() for n, t in outcome.tallies.items()},
                    {c.queue: c.current_job for c in active.values()},
                    outcome.child_billed + sum(c.billed for c in active.values()),
                )
            if events and active:
                # Children report two lines per job; reading them in batches
                # instead of waking twice per job cuts the parent's CPU per job
                # by ~5x (docs/benchmarks.md). A pipe keeps what was written, so
                # nothing is lost; exits are seen at most 50 ms later.
                time.sleep(0.05)
            if time.time() >= hard_deadline:
                for child in list(active.values()):
                    child.killed = True
                    child.proc.kill()
                    child.proc.wait()
                    _read_rest(child, outcome.tallies[child.queue], outcome)
                    finish_child(child)
                waiting.clear()
    finally:
        # Interrupted (Ctrl-C, server shutdown): stop the children and fail
        # what they were running rather than leave it "started".
        for child in list(active.values()):
            child.killed = True
            child.proc.kill()
            try:
                finish_child(child)
            except Exception:
                log.exception("could not fail the jobs of %s", child.worker_name)
        selector.close()
