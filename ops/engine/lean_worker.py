"""The lean executor: runs RQ jobs of one queue with the fewest billed commands.

It speaks the same report protocol as ops/engine/drain_worker.py (the RQ
executor), so the engine runs either, and it keeps RQ's data: what rq's public
API reads (status, results, exceptions, retries, registries, TTLs, meta) ends
up as `rq worker` would leave it. What it does not keep is RQ's bookkeeping of
*who* runs a job (worker keys, heartbeats, the started registry, executions,
worker statistics): that lives in the database and in the engine.

Per batch of up to MAX_BATCH jobs:

* **claim** — one transaction: `SORT <queue> BY nosort LIMIT 0 N GET # GET
  rq:job:*->field ...` (the ids and every job's fields in one command),
  `SORT ... STORE <claim list>` (a copy of the ids, so that a process killed
  from here on loses nothing: see ops/engine/claims.py) and `LTRIM` (takes
  them off the queue). MULTI + 3 + EXEC = 5 commands, no Lua.
* **run** each job in this process's main thread under RQ's SIGALRM timeout,
  with its callbacks, then write its outcome right away (one pipeline, one
  round trip), built by RQ's own methods and merged by ops/engine/coalesce.py:
  `HSET` + `XADD` + `EXPIRE` + `EXPIRE` for a success with the default
  result_ttl, a single `DEL` with result_ttl=0.
* **after the batch**: the registry `ZADD`s of all its jobs, merged (sent with
  the next claim), and one `EXISTS` over the batch's dependents keys; only jobs
  that have dependents pay for RQ's `enqueue_dependents`.

Differences from `rq worker`, deliberate (docs/benchmarks.md): a running job is
not in the started registry and its status stays `queued` until its outcome is
written; no worker key or heartbeat exists in Redis; a job's result reaches the
finished/failed registry at the end of its batch, not at once.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from rq.defaults import DEFAULT_RESULT_TTL
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from rq.utils import as_text, now

from ops.engine import children, stop
from ops.engine.coalesce import Command, coalesce
from ops.engine.records import exception_fields, record_line
from ops.logcontext import bind, scoped

# A consumer's claim list (ops/engine/claims.py settles it when the consumer
# dies). Here rather than there: this module is imported before Django is set up.
CLAIM_PREFIX = "kaireon:claimed:"


def claim_key_for(owner: str) -> str:
    """The claim list of one consumer (a drain's queue, an always-on worker)."""
    return f"{CLAIM_PREFIX}{owner}"


# The largest batch one claim takes. Larger batches cost fewer commands per job
# but hold more jobs away from the queue while they wait their turn.
MAX_BATCH = 100
# The first claim of a process, before it knows how long its jobs take.
FIRST_BATCH = 10

# Every hash field rq's Job.restore() reads (rq 2.12), fetched with SORT GET.
JOB_FIELDS = (
    "data",
    "created_at",
    "origin",
    "worker_name",
    "description",
    "enqueued_at",
    "started_at",
    "ended_at",
    "last_heartbeat",
    "group_id",
    "result",
    "timeout",
    "result_ttl",
    "failure_ttl",
    "status",
    "success_callback_name",
    "success_callback_timeout",
    "failure_callback_name",
    "failure_callback_timeout",
    "stopped_callback_name",
    "stopped_callback_timeout",
    "webhooks",
    "dependency_ids",
    "dependency_id",
    "allow_dependency_failures",
    "enqueue_at_front",
    "ttl",
    "meta",
    "number_of_retries",
    "retries_left",
    "retry_intervals",
    "enqueue_at_front_on_retry",
    "repeats_left",
    "repeat_intervals",
    "exc_info",
)
_GET = ["#", *(f"{Job.redis_job_namespace_prefix}*->{f}" for f in JOB_FIELDS)]

# Registries whose ZADDs wait for the end of the batch, merged across its jobs.
_DEFERRED_PREFIXES = ("rq:finished:", "rq:failed:")


def _deferred(args: tuple[Any, ...]) -> bool:
    key = args[1].decode() if isinstance(args[1], bytes) else str(args[1])
    return str(args[0]).upper() == "ZADD" and key.startswith(_DEFERRED_PREFIXES)


@dataclass
class Outcome:
    job_id: str
    ok: bool
    status: str  # a JobRecord status: finished, failed, retried
    exc_type: str = ""
    exc_message: str = ""


@dataclass
class LeanExecutor:
    """Runs the jobs of one queue in batches until it is empty or the deadline
    has passed. `report(line)` receives the protocol lines."""

    client: redis.Redis
    queue_name: str
    worker_name: str
    claim_key: str
    report: Callable[[str], None] = lambda line: None
    meter: Any = None
    deadline: float = float("inf")
    # Asked between jobs: True stops like the deadline (a warm stop).
    should_stop: Callable[[], bool] = lambda: False
    # Look for an operator's stop request while a job runs (database, once a
    # second: ops/engine/stop.py). Off where no database is set up.
    watch_stops: bool = False
    # Batch state.
    _deferred: list[Command] = field(default_factory=list)
    _seconds_per_job: float | None = None
    _last_asked: int = 0
    _dependents_here: bool = False
    dependents_enqueued: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queue = Queue(self.queue_name, connection=self.client)

    # --- the loop ---------------------------------------------------------

    def run(self) -> None:
        more = True
        try:
            while more:
                if self.should_stop():
                    break
                if time.time() >= self.deadline:
                    self.report("deadline")
                    break
                jobs = self._claim(self._batch_size())
                if not jobs:
                    break
                more = self._run_batch(jobs)
        finally:
            self._close()

    def _batch_size(self) -> int:
        if self._seconds_per_job is None:
            return FIRST_BATCH
        left = self.deadline - time.time()
        if left >= 3600:  # no deadline to speak of (always-on workers)
            return MAX_BATCH
        fits = int(left / max(self._seconds_per_job, 1e-4))
        return max(1, min(MAX_BATCH, fits))

    def _run_batch(self, jobs: list[Job | str]) -> bool:
        """Run a claimed batch; False when the deadline stopped it (the rest of
        the batch went back to the queue) and nothing more should be claimed."""
        started = time.monotonic()
        ran = 0
        retried = False  # a retry without interval is back on this queue
        terminal: list[Job] = []
        for index, job in enumerate(jobs):
            if isinstance(job, str):
                continue  # its hash is gone: dropped, as rq's dequeue drops it
            stop = self.should_stop()
            if stop or time.time() >= self.deadline:
                self._give_back(jobs[index:])
                if not stop:
                    self.report("deadline")
                self._after_batch(terminal)
                return False
            outcome = self._perform(job)
            ran += 1
            if outcome.status == "retried":
                retried = True
            else:
                terminal.append(job)
            line = f"end {job.id} {'ok' if outcome.ok else 'failed'}"
            self.report(f"{line} {self._billed()}")
        if ran:
            took = (time.monotonic() - started) / ran
            self._seconds_per_job = (
                took
                if self._seconds_per_job is None
                else 0.5 * self._seconds_per_job + 0.5 * took
            )
        self._after_batch(terminal)
        # A short batch means the queue was empty when it was claimed; another
        # claim would cost 5 commands to learn that again, unless dependents
        # were just put on this queue.
        return len(jobs) >= self._last_asked or self._dependents_here or retried

    # --- Redis: claim, give back, close ------------------------------------

    def _claim(self, n: int) -> list[Job | str]:
        self._last_asked = n
        self._dependents_here = False
        pipe = self.client.pipeline(transaction=True)
        self._flush_deferred_into(pipe)
        pipe.sort(self.queue.key, start=0, num=n, by="nosort", get=_GET)
        pipe.sort(self.queue.key, start=0, num=n, by="nosort", store=self.claim_key)
        pipe.ltrim(self.queue.key, n, -1)
        replies = pipe.execute()
        rows = replies[-3]
        width = len(_GET)
        jobs: list[Job | str] = []
        for i in range(0, len(rows), width):
            job_id = as_text(rows[i])
            raw = {
                name.encode(): value
                for name, value in zip(JOB_FIELDS, rows[i + 1 : i + width], strict=True)
                if value is not None
            }
            if b"data" not in raw:
                jobs.append(job_id)
                continue
            job = Job(job_id, connection=self.client)
            job.restore(raw)
            jobs.append(job)
        return jobs

    def _give_back(self, rest: list[Job | str]) -> None:
        """Put claimed jobs that never started back at the front, in order,
        and drop the claim list in the same transaction."""
        # A claimed id whose hash is gone is dropped, as rq's dequeue drops it.
        ids = [j.id for j in rest if not isinstance(j, str)]
        pipe = self.client.pipeline(transaction=True)
        self._flush_deferred_into(pipe)
        if ids:
            pipe.lpush(self.queue.key, *reversed(ids))
        pipe.delete(self.claim_key)
        pipe.execute()

    def _close(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._flush_deferred_into(pipe)
        pipe.delete(self.claim_key)
        pipe.execute()

    def _flush_deferred_into(self, pipe: Any) -> None:
        for args, options in coalesce(self._deferred):
            pipe.execute_command(*args, **options)
        self._deferred = []

    def _after_batch(self, terminal: list[Job]) -> None:
        """Dependents of the batch's finished and failed jobs, as RQ would
        enqueue them; 1 command when none has any."""
        if not terminal:
            return
        keys = [job.dependents_key for job in terminal]
        if not self.client.exists(*keys):
            return
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            flags = pipe.execute()
        for job, has in zip(terminal, flags, strict=True):
            if not has:
                continue
            before = {
                name: len(Queue(name, connection=self.client))
                for name in self._dependent_queues(job)
            }
            # The parent's outcome is in `job` already, and its hash may be gone
            # (result_ttl=0): do not re-read its status from Redis.
            self.queue.enqueue_dependents(job, refresh_job_status=False)
            if _deleted_on_success(job):
                # rq's Job.delete() drops the dependents set with the job.
                self.client.delete(job.dependents_key)
            for name, depth in before.items():
                added = len(Queue(name, connection=self.client)) - depth
                if added > 0:
                    self.dependents_enqueued[name] = (
                        self.dependents_enqueued.get(name, 0) + added
                    )
                    self.report(f"enqueued {name} {added}")
                    if name == self.queue_name:
                        self._dependents_here = True

    def _dependent_queues(self, job: Job) -> set[str]:
        ids = [as_text(i) for i in self.client.smembers(job.dependents_key)]
        origins = set()
        for dependent in Job.fetch_many(ids, connection=self.client):
            if dependent is not None:
                origins.add(dependent.origin)
        return origins

    # --- one job -------------------------------------------------------------

    @scoped
    def _perform(self, job: Job) -> Outcome:
        bind(job_id=job.id)
        self.report(f"start {job.id}")
        job.worker_name = self.worker_name
        job.started_at = now()
        job.last_heartbeat = job.started_at
        timeout = job.timeout or Queue.DEFAULT_TIMEOUT
        if job.ttl:
            # rq's Job.perform() PERSISTs every job key; only a key with a TTL
            # (set at enqueue) has anything to persist.
            self.client.persist(job.key)
        pipe = self.client.pipeline(transaction=False)
        try:
            with UnixSignalDeathPenalty(timeout, JobTimeoutException, job_id=job.id):
                value = self._execute_watched(job)
            job.ended_at = now()
            job._result = value
            if isinstance(value, Retry):
                outcome = self._returned_retry(job, value, pipe)
            else:
                job._status = JobStatus.FINISHED
                job.execute_success_callback(UnixSignalDeathPenalty, value)
                self._success(job, pipe)
                outcome = Outcome(job.id, True, "finished")
        except Exception:
            job._status = JobStatus.FAILED
            job.ended_at = now()
            exc_info = sys.exc_info()
            exc_string = "".join(traceback.format_exception(*exc_info))
            stopped = stop.was_stopped(exc_info[1])
            try:
                if stopped:  # as rq: the stopped callback, not the failure one
                    job.execute_stopped_callback(UnixSignalDeathPenalty)
                else:
                    job.execute_failure_callback(UnixSignalDeathPenalty, *exc_info)
            except Exception:
                exc_info = sys.exc_info()
                exc_string = "".join(traceback.format_exception(*exc_info))
            pipe = self.client.pipeline(transaction=False)  # drop half-built writes
            retried = self._failure(job, pipe, exc_string, stopped=stopped)
            exc_type, exc_message = exception_fields(exc_info[1])
            outcome = Outcome(
                job.id, False, "retried" if retried else "failed", exc_type, exc_message
            )
        self._send(job, pipe)
        self.report(
            record_line(
                job_id=job.id,
                queue=self.queue_name,
                func=_func_name(job),
                status=outcome.status,
                started=job.started_at,
                ended=job.ended_at,
                exc_type=outcome.exc_type,
                exc_message=outcome.exc_message,
            )
        )
        return outcome

    def _success(self, job: Job, pipe: Any) -> None:
        """rq's Worker.handle_job_success without the worker's bookkeeping."""
        result_ttl = job.get_result_ttl(DEFAULT_RESULT_TTL)
        if result_ttl != 0:
            job._handle_success(result_ttl, pipeline=pipe, worker_name=self.worker_name)
        if job.repeats_left is not None and job.repeats_left > 0:
            from rq.repeat import Repeat

            Repeat.schedule(job, self.queue, pipeline=pipe)
        elif result_ttl == 0:
            # rq's cleanup(0) deletes the job and removes it from the registry of
            # its status, where it never was: one DEL. The dependents key stays
            # until the batch's dependents are enqueued.
            keys = [job.key]
            if job._dependency_ids:
                keys.append(job.dependencies_key)
            pipe.delete(*keys)
            if job.group_id:
                # rq's Job.delete() also takes the job out of its group.
                from rq.group import Group

                pipe.srem(Group.get_key(job.group_id), job.id)
        else:
            job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)

    def _failure(
        self, job: Job, pipe: Any, exc_string: str, *, stopped: bool = False
    ) -> bool:
        """rq's Worker.handle_job_failure without the worker's bookkeeping.
        True when the job was retried. A stopped job is never retried: rq
        files it as `stopped` in the failed registry."""
        if job.should_retry and not stopped:
            job.retry(self.queue, pipe)
            return True
        status = JobStatus.STOPPED if stopped else JobStatus.FAILED
        job.set_status(status, pipeline=pipe)
        job._handle_failure(exc_string, pipe, worker_name=self.worker_name)
        return False

    def _returned_retry(self, job: Job, retry: Retry, pipe: Any) -> Outcome:
        """A job that returned rq.Retry: as rq's Worker.handle_job_retry."""
        if job.number_of_retries and job.number_of_retries >= retry.max:
            from rq.results import Result

            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job.failed_job_registry.add(
                job, ttl=job.failure_ttl, exc_string="", pipeline=pipe
            )
            Result.create_max_retries_exceeded(
                job,
                job.failure_ttl,
                return_value=retry,
                worker_name=self.worker_name,
                pipeline=pipe,
                execution_id="",
                execution_started_at=job.started_at,
                execution_ended_at=job.ended_at,
            )
            return Outcome(job.id, False, "failed", "Retry", "maximum retries exceeded")
        job._handle_retry_result(
            queue=self.queue,
            pipeline=pipe,
            retry=retry,
            worker_name=self.worker_name,
            execution_id="",
            execution_started_at=job.started_at,
            execution_ended_at=job.ended_at,
        )
        return Outcome(job.id, False, "retried", "Retry", "the job asked to be retried")

    def _execute_watched(self, job: Job) -> Any:
        """The job's own code, watched for a stop request when asked to."""
        if not self.watch_stops:
            return _execute(job)
        with stop.watching(job.id, self.worker_name):
            return _execute(job)

    def _send(self, job: Job, pipe: Any) -> None:
        """Write one job's outcome now (one round trip); registry ZADDs wait
        for the end of the batch."""
        stack = pipe.command_stack
        pipe.command_stack = []
        now_cmds = [c for c in stack if not _deferred(c[0])]
        self._deferred += [c for c in stack if _deferred(c[0])]
        absent = _absent_keys(job)
        for args, options in coalesce(now_cmds, absent=absent.__contains__):
            pipe.execute_command(*args, **options)
        pipe.execute()

    def _billed(self) -> str:
        if self.meter is None:
            return "0 0"
        return f"{self.meter.billed} {self.meter.total}"


def _deleted_on_success(job: Job) -> bool:
    """A finished job that _success deleted (result_ttl=0, no repeat left)."""
    return (
        job.get_status(refresh=False) == JobStatus.FINISHED
        and job.get_result_ttl(DEFAULT_RESULT_TTL) == 0
        and not (job.repeats_left or 0) > 0
    )


def _absent_keys(job: Job) -> set[str]:
    """Keys RQ's cleanup EXPIREs that do not exist for this job: its dependents
    set (handled after the batch) and, without dependencies, its dependencies
    set."""
    absent = {job.dependents_key}
    if not job._dependency_ids:
        absent.add(job.dependencies_key)
    return absent


def _execute(job: Job) -> Any:
    """rq's Job.perform() minus its PERSIST (see _perform): the job is on rq's
    job stack so that get_current_job() works inside it."""
    from rq.job import _job_stack

    _job_stack.push(job)
    try:
        job._result = job._execute()
    finally:
        _job_stack.pop()
    return job._result


def _func_name(job: Job) -> str:
    try:
        return job.func_name or ""
    except Exception:  # an unloadable payload still gets a record
        return ""


def drain_queue(
    queue: str,
    deadline: float,
    worker_name: str,
    report_fd: int,
    tally: children.SharedTally,
    claim_key: str | None = None,
) -> int:
    """Drain one queue until it is empty or the deadline passes (Django set up)."""
    bind(queue=queue, worker=worker_name)  # a child process: its context is its own
    report, meter, client = children.child_client(report_fd, "drain-jobs", tally)

    def emit(line: str) -> None:
        report.write(line + "\n")
        report.flush()

    # SIGTERM from the engine (it lost the drain lease): stop after the
    # running job, as at the deadline; the rest of the batch goes back.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    executor = LeanExecutor(
        client=client,
        queue_name=queue,
        worker_name=worker_name,
        claim_key=claim_key or claim_key_for(worker_name),
        report=emit,
        meter=meter,
        deadline=deadline,
        should_stop=stop.is_set,
        watch_stops=True,
    )
    executor.run()
    children.report_done(report, meter)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = children.child_parser("ops.engine.lean_worker", drain=True)
    parser.add_argument("--claim-key", default=None)
    args = parser.parse_args(argv)
    children.setup_child(args.parent_pid)
    return drain_queue(
        args.queue,
        args.deadline,
        args.worker_name,
        args.report_fd,
        children.SharedTally(args.tally_fd),
        args.claim_key,
    )


if __name__ == "__main__":
    sys.exit(main())
