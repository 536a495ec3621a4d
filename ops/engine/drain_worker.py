"""The job-execution seam of the drain engine: one child process drains one queue.

The drain engine (ops/engine/drain.py) starts `python -m ops.engine.drain_worker`
per queue and reads a line protocol from the file descriptor given by --report-fd:

    start <job_id>
    record <json>                 (the job's record: ops/engine/records.py)
    end <job_id> ok|failed <billed> <total>
    enqueued <queue> <n>          (dependents released onto another queue)
    deadline                      (stopped taking jobs: the time budget is spent)
    done <billed> <total>

`billed`/`total` are the Redis commands this process has sent so far. The
`record` line (status finished, failed or retried, times, exception) is built
from the job's fields in memory: it costs no Redis command. Any other
executor that keeps RQ's data format (a leaner per-job path) can replace this
module without touching the engine, the lease or the run records.

Why a child process: RQ enforces job timeouts with SIGALRM, which only works in
a main thread, and a drain may be called from a web request thread. Here the
job runs in the child's main thread, and a job that crashes the interpreter or
calls os._exit takes down only this process; the engine sees the exit, fails
the job it was running and carries on.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import defaultdict
from contextvars import ContextVar
from typing import IO, Any

from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.worker import SimpleWorker

from ops.engine import children, records, stop
from ops.logcontext import bind, scoped

# A failed job whose Retry put it back on its queue (or in its scheduled
# registry) ends with this status in memory.
_RETRIED = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED})


class WatchedJob(Job):
    """RQ's Job whose own code runs watched for an operator's stop request
    (ops/engine/stop.py): the executor's Redis writes around it never are."""

    def perform(self) -> Any:
        with stop.watching(self.id, self.worker_name or ""):
            return super().perform()


# The dependents one enqueue_dependents call releases: queue -> job ids (a set:
# RQ retries the whole release after a WatchError).
_released: ContextVar[dict[str, set[str]] | None] = ContextVar(
    "kaireon_released", default=None
)


class ReportingQueue(Queue):
    """RQ's Queue, noting which queues the dependents it releases go to, so
    that the drain starts another round for them (as the lean executor's
    `enqueued` lines do). No Redis command of its own."""

    report_released: Any = None  # called with (queue name, count)

    def enqueue_dependents(self, job: Any, *args: Any, **kwargs: Any) -> None:
        noted: dict[str, set[str]] = defaultdict(set)
        token = _released.set(noted)
        try:
            super().enqueue_dependents(job, *args, **kwargs)
        finally:
            _released.reset(token)
        if self.report_released is not None:
            for name, ids in noted.items():
                if name != self.name:  # this burst takes its own queue's
                    self.report_released(name, len(ids))

    def _enqueue_job(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        noted = _released.get()
        if noted is not None:
            noted[self.name].add(job.id)
        return super()._enqueue_job(job, *args, **kwargs)


class DrainWorker(SimpleWorker):
    """RQ's in-process worker with a wall-clock deadline and a progress report."""

    def __init__(
        self, *args: Any, deadline: float, report: IO[str], meter: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self.report = report
        self.meter = meter
        self._exc_info: records.ExcInfo | None = None  # of the job running now
        self._stop_taking_jobs = False

    def subscribe(self) -> None:
        """No RQ pubsub listener: the drain engine stops this process itself.
        The listener would cost a connection, SUBSCRIBE and UNSUBSCRIBE, and up
        to a second at exit waiting for its thread."""

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        # SIGTERM from the engine (it lost the drain lease): take no new job.
        # Not RQ's warm stop: that raises inside the dequeue, possibly between
        # its LMOVE and the job's registration, stranding the job for 60 s.
        signal.signal(signal.SIGTERM, self._stop_taking)

    def _stop_taking(self, signum: int, frame: Any) -> None:
        self._stop_taking_jobs = True

    @property
    def should_run_maintenance_tasks(self) -> bool:
        # Registry maintenance costs ~51 commands over five queues per run and
        # finds nothing on a healthy queue; the engine fails its own abandoned
        # jobs precisely instead (ops/engine/recovery.py).
        return False

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> Any:
        # RQ has no wall-clock limit for a burst: stop taking new jobs once the
        # deadline has passed (a job already running may overshoot it).
        if self._stop_taking_jobs:
            return None
        if time.time() >= self.deadline:
            self._emit("deadline")
            return None
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    @scoped
    def execute_job(self, job: Any, queue: Any) -> None:
        bind(job_id=job.id)
        self._emit(f"start {job.id}")
        self._exc_info = None
        super().execute_job(job, queue)
        status = job.get_status(refresh=False)
        outcome = "ok" if status == JobStatus.FINISHED else "failed"
        # One write for both lines: the engine reads them in the same batch.
        self._emit(
            f"{self._record(job, queue, status)}\n"
            f"end {job.id} {outcome} {self.meter.billed} {self.meter.total}"
        )

    def handle_exception(self, job: Any, *exc_info: Any) -> None:
        # RQ calls this with what the job raised (or its failure callback).
        self._exc_info = exc_info  # type: ignore[assignment]
        super().handle_exception(job, *exc_info)

    def handle_job_failure(self, job: Any, queue: Any, *args: Any, **kw: Any) -> None:
        mark_if_stopped(self, job, self._exc_info)
        super().handle_job_failure(job, queue, *args, **kw)

    def _record(self, job: Any, queue: Any, status: JobStatus) -> str:
        """The job's `record` line, from its fields in memory only."""
        if status == JobStatus.FINISHED:
            kind = records.FINISHED
        elif status in _RETRIED:
            kind = records.RETRIED
        else:
            kind = records.FAILED
        exc_type, exc_message = records.exception_fields(self._exc_info)
        self._exc_info = None
        try:
            func = job.func_name or ""
        except Exception:  # a job whose data cannot be deserialized
            func = ""
        return records.record_line(
            job_id=job.id,
            queue=queue.name,
            func=func,
            status=kind,
            started=job.started_at,
            ended=job.ended_at,
            exc_type=exc_type,
            exc_message=exc_message,
        )

    def _emit(self, line: str) -> None:
        self.report.write(line + "\n")
        self.report.flush()


def mark_if_stopped(worker: Any, job: Any, exc_info: Any) -> None:
    """A job an operator stopped ends as rq ends one: `stopped`, never
    retried (rq's handle_job_failure does that for `_stopped_job_id`), with its
    stopped callback."""
    if exc_info and stop.was_stopped(exc_info[1]):
        worker._stopped_job_id = job.id
        job.execute_stopped_callback(worker.death_penalty_class)


def drain_queue(
    queue: str,
    deadline: float,
    worker_name: str,
    report_fd: int,
    tally: children.SharedTally,
) -> int:
    """Drain one queue until it is empty or the deadline passes (Django set up)."""
    bind(queue=queue, worker=worker_name)  # a child process: its context is its own
    report, meter, client = children.child_client(report_fd, "drain-jobs", tally)

    def released(name: str, count: int) -> None:
        report.write(f"enqueued {name} {count}\n")
        report.flush()

    ReportingQueue.report_released = staticmethod(released)
    worker = DrainWorker(
        [ReportingQueue(queue, connection=client, job_class=WatchedJob)],
        name=worker_name,
        job_class=WatchedJob,
        queue_class=ReportingQueue,
        connection=client,
        deadline=deadline,
        report=report,
        meter=meter,
        **children.worker_kwargs(),
    )
    children.identify(worker)
    worker.work(burst=True, logging_level="WARNING")
    children.report_done(report, meter)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = children.child_parser("ops.engine.drain_worker", drain=True)
    args = parser.parse_args(argv)
    children.setup_child(args.parent_pid)
    return drain_queue(
        args.queue,
        args.deadline,
        args.worker_name,
        args.report_fd,
        children.SharedTally(args.tally_fd),
    )


if __name__ == "__main__":
    sys.exit(main())
