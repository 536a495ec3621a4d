"""One always-on worker process: RQ's in-process worker, tuned to stay quiet.

Started and watched by ops/workers/supervisor.py (`manage.py work`). It reports to the
supervisor on --report-fd with the same line protocol as the drain's workers
(ops/engine/drain_worker.py) plus `idle <billed> <total>` after each wake-up, so the
supervisor keeps the worker's state and Redis usage in the database.

Why it is cheap when idle (docs/benchmarks.md has the measured figures):
* one process blocks on all its queues with a single BLPOP that lasts
  ALWAYS_ON_BLOCK_S (default ~1 h): a wake-up costs 3 commands (heartbeat HSET
  + EXPIRE, BLPOP) instead of RQ's default every ~7 minutes;
* no registry maintenance (51 commands per run over five queues, every ~13
  minutes in plain RQ): the supervisor fails a dead worker's jobs precisely
  (ops/engine/recovery.py) when it sees the worker die;
* no RQ scheduler (it polls every second): the supervisor promotes due
  scheduled jobs itself (ops/engine/scheduled.py).
"""

from __future__ import annotations

import sys
from typing import IO, Any

import redis
from rq.job import JobStatus
from rq.worker import SimpleWorker

from ops.engine import children, drain_worker
from ops.usage.quota_errors import is_quota_exhausted


class QuietWorker(SimpleWorker):
    def __init__(self, *args: Any, report: IO[str], meter: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report = report
        self.meter = meter

    def subscribe(self) -> None:
        """No RQ pubsub listener: the supervisor stops workers with signals, so
        the listener's connection, SUBSCRIBE and thread would buy nothing."""

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return False

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> Any:
        self._emit(f"idle {self.meter.billed} {self.meter.total}")
        try:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        except redis.ResponseError as exc:
            if is_quota_exhausted(exc):
                # RQ's loop will log this and quit; the supervisor opens the
                # incident and waits a cool-down before starting us again.
                self._emit(f"quota {exc}")
            raise

    def execute_job(self, job: Any, queue: Any) -> None:
        self._emit(f"start {job.id}")
        super().execute_job(job, queue)
        ok = job.get_status(refresh=False) == JobStatus.FINISHED
        outcome = "ok" if ok else "failed"
        self._emit(f"end {job.id} {outcome} {self.meter.billed} {self.meter.total}")

    def handle_job_failure(self, job: Any, queue: Any, *args: Any, **kw: Any) -> None:
        # The console's Stop (ops/engine/stop.py): end the job as rq does.
        drain_worker.mark_if_stopped(self, job, sys.exc_info())
        super().handle_job_failure(job, queue, *args, **kw)

    def _emit(self, line: str) -> None:
        try:
            self.report.write(line + "\n")
            self.report.flush()
        except (BrokenPipeError, ValueError):
            pass  # the supervisor is gone; PDEATHSIG ends us shortly


def main(argv: list[str] | None = None) -> int:
    parser = children.child_parser("ops.workers.always_on_worker", always_on=True)
    args = parser.parse_args(argv)
    report, meter, client = children.start_child(args, "worker")
    from ops.queues import rq_queue

    worker = QuietWorker(
        [rq_queue(name, client) for name in args.queues.split(",")],
        name=args.worker_name,
        connection=client,
        job_class=drain_worker.WatchedJob,
        report=report,
        meter=meter,
        # RQ blocks for worker_ttl - 15 s and keeps the worker key alive for
        # worker_ttl + 60 s: one long block instead of a wake-up every 7 min.
        worker_ttl=args.block_s + 15,
        **children.worker_kwargs(),
    )
    children.identify(worker)
    worker.work(burst=False, logging_level="WARNING")
    children.report_done(report, meter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
