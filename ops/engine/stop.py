"""Stopping a running job on an operator's request, with no Redis command.

The console writes a `JobStopRequest` row (`request_stop`). The process running
a job (a drain's child on either executor, an always-on worker) arms a
`StopWatcher` for that job: one daemon thread per process that, while a job
runs, asks the database once every POLL_S seconds whether an open request
names it. The first look is POLL_S after the job starts, so jobs shorter than
that cost nothing at all; a long job costs one indexed SELECT per second, and
never a Redis command (RQ's `send_stop_job_command` would need a pubsub
connection per worker: SUBSCRIBE on every start, billed per message).

When a request names the running job, the watcher claims it (a conditional
UPDATE: one process wins, once) and interrupts the job: it sends STOP_SIGNAL
to the main thread, whose handler raises `JobStopped` inside the job — as
RQ's StopRequested is raised in a worker. The executors then end the job as
RQ ends a stopped one: status `stopped`, in the failed registry, no retry,
its `on_stopped` callback run. A job that catches the exception and carries
on is still ended as stopped when it returns (the claim is final).

A request applies only to the run of the job that was going on when it was
made. `requested_at` is written with the database's clock, and the watcher
dates the start of the run it watches with the same clock (the database's now
in its poll, less how long the job has run): a request older than the run was
meant for an earlier one — one that ended before its process looked, say — and
the watcher closes it as `obsolete` instead of stopping a retry of the same
job id.

Requests that stop nothing end closed, when seen, with an outcome the admin
shows:

* `obsolete`: a later run of the job found it (above);
* `not_running`: the queue's started page found the job running nowhere (its
  listing is complete), or the request is older than STALE_AFTER_S — a running
  job's process sees a request within about POLL_S, so one nobody took by then
  was for a job that had ended, or that runs where no watcher is (a plain `rq
  worker`). Closed by the console's pages (`close_stale`), and by
  `request_stop` first, so that a stale request never hides a new one.

This module is imported by the executors before Django is set up: the models
are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# How often a running job's process asks the database (and how long a job
# runs before the first look).
POLL_S = 1.0
# Not used by RQ (SIGALRM is its death penalty) nor by our supervisors.
STOP_SIGNAL = signal.SIGUSR1
STOPPED_MESSAGE = "Job stopped by user (a stop request from the console)."
# A running job's process takes a request within about POLL_S (plus a query);
# one still open this long after it was made will never stop anything. Wide
# on purpose: a watcher that could not reach the database for a few polls
# still takes a request made for its job.
STALE_AFTER_S = 30.0


class JobStopped(Exception):
    """Raised inside a job an operator asked to stop."""

    def __init__(self, message: str = STOPPED_MESSAGE) -> None:
        super().__init__(message)


@dataclass
class _Armed:
    job_id: str
    worker: str
    since: float  # the last look (monotonic)
    started: float  # when the job's run began (monotonic)
    stopped: bool = False
    raised: bool = False
    closing: bool = False


class StopWatcher:
    """One per process: a thread that looks for stop requests for the job the
    main thread is running. Use `watching(job_id, worker)`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: _Armed | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._main = threading.main_thread().ident
        self._db_open = False  # the watching thread has a connection

    # -- main thread --

    def arm(self, job_id: str, worker: str) -> _Armed:
        if self._thread is None:
            # The handler stays for the life of the process: a signal that
            # arrives after the job ended must find a no-op, never the
            # default action (which kills the process).
            signal.signal(STOP_SIGNAL, self._on_signal)
            self._thread = threading.Thread(
                target=self._loop, name="kaireon-stop-watch", daemon=True
            )
            self._thread.start()
        began = time.monotonic()
        armed = _Armed(job_id, worker, began, began)
        with self._cond:
            self._armed = armed
            self._cond.notify()
        return armed

    def disarm(self, armed: _Armed) -> None:
        armed.closing = True  # from here on the handler never raises
        with self._cond:
            if self._armed is armed:
                self._armed = None
            self._cond.notify()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        armed = self._armed
        if armed is None or armed.closing or not armed.stopped or armed.raised:
            return
        armed.raised = True
        raise JobStopped()

    # -- the watching thread --

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._armed is None:
                        if self._db_open:
                            # No job to watch: hold no database connection
                            # (one per long job, closed when it ends).
                            _close_db()
                            self._db_open = False
                        self._cond.wait()
                    armed = self._armed
                    if armed.stopped:  # done with this job: wait for the next
                        self._cond.wait()
                        continue
                    wait = armed.since + POLL_S - time.monotonic()
                    if wait > 0:
                        self._cond.wait(wait)
                        continue  # re-read: the job may have ended meanwhile
                    armed.since = time.monotonic()  # the next look in POLL_S
                    self._look(armed)
        finally:
            _close_db()

    def _look(self, armed: _Armed) -> None:
        """Under the lock, so that the job cannot end between the claim and
        the signal: a claimed request always stops the job it names."""
        self._db_open = True
        try:
            request = _open_request(armed.job_id, with_db_now=True)
            if request is None:
                return
            if _before_this_run(request, time.monotonic() - armed.started):
                request.close_unused(
                    OBSOLETE,
                    f"{armed.worker}: asked for an earlier run of the job",
                )
                return  # keep watching: a request for this run may come
            if not request.mark_stopped(armed.worker):
                return
        except Exception:
            # The database is unreachable: the job runs on; the next look may
            # work. Never let the watcher take the job down.
            log.exception("stop watcher: could not read stop requests")
            _close_db()
            return
        armed.stopped = True
        signal.pthread_kill(self._main, STOP_SIGNAL)  # type: ignore[arg-type]


OBSOLETE = "obsolete"
NOT_RUNNING = "not_running"


def _open_request(job_id: str, *, with_db_now: bool = False) -> Any:
    from ops.models import JobStopRequest

    rows = JobStopRequest.objects.filter(job_id=job_id, handled_at__isnull=True)
    if with_db_now:
        from django.db.models.functions import Now

        # The database's now, in the same query: no clock of this host.
        rows = rows.annotate(db_now=Now())
    return rows.first()


def _before_this_run(request: Any, ran_s: float) -> bool:
    """Was `request` made before the run that has gone on for `ran_s`? Both
    sides on the database's clock. `ran_s` is taken after the query came back,
    so the run's start is dated at most one round trip early: a request made
    in those few milliseconds before the run still stops it."""
    return bool(request.requested_at < request.db_now - timedelta(seconds=ran_s))


def _close_db() -> None:
    with contextlib.suppress(Exception):
        from django.db import connections

        connections.close_all()  # this thread's connections only


_watcher: StopWatcher | None = None


def watcher() -> StopWatcher:
    """This process's watcher (a forked child gets its own)."""
    global _watcher
    if _watcher is None or _watcher._pid != os.getpid():
        _watcher = StopWatcher()
    return _watcher


@contextlib.contextmanager
def watching(job_id: str, worker: str) -> Iterator[None]:
    """Run the block (the job's own code, nothing of the executor's) while
    watching for a stop request; raises JobStopped when one stopped it,
    also when the job swallowed the exception or ended at the same moment.
    Outside a main thread (no signal can reach the job) it only runs it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    w = watcher()
    armed = w.arm(job_id, worker)
    try:
        yield
    finally:
        w.disarm(armed)
    if armed.stopped:  # the job swallowed the exception, or ended meanwhile
        raise JobStopped()


def was_stopped(exc: BaseException | None) -> bool:
    return isinstance(exc, JobStopped)


# --- the console's side --------------------------------------------------------


@dataclass(frozen=True)
class StopRequested:
    request: Any  # JobStopRequest
    created: bool  # False: an open request for this job existed already


def request_stop(job_id: str, queue: str, user: Any = None) -> StopRequested:
    """Ask the process running `job_id` to stop it (database only, 0 Redis
    commands). A second request while one is open returns the open one."""
    from django.db import IntegrityError, transaction
    from django.db.models.functions import Now

    from ops.models import JobStopRequest

    # A stale open request would pass for this one ("already asked"), and be
    # closed as obsolete by the run it was meant to stop.
    close_stale()
    existing = _open_request(job_id)
    if existing is not None:
        return StopRequested(existing, created=False)
    try:
        with transaction.atomic():
            request = JobStopRequest.objects.create(
                job_id=job_id,
                queue=queue,
                requested_by=user if getattr(user, "pk", None) else None,
                # The database's clock: the watcher dates the run it watches
                # with it (_before_this_run).
                requested_at=Now(),
            )
            request.refresh_from_db(fields=["requested_at"])
    except IntegrityError:  # another operator asked a moment ago
        existing = _open_request(job_id)
        if existing is None:
            raise
        return StopRequested(existing, created=False)
    return StopRequested(request, created=True)


def open_requests(job_ids: list[str]) -> dict[str, Any]:
    """Open requests for these jobs, by job id (one query)."""
    from ops.models import JobStopRequest

    if not job_ids:
        return {}
    rows = JobStopRequest.objects.filter(job_id__in=job_ids, handled_at__isnull=True)
    return {row.job_id: row for row in rows}


def open_requests_of_queue(queue: str) -> list[Any]:
    """The open requests for jobs of `queue` (one query): read before the
    queue's running jobs are, for `close_not_running`."""
    from ops.models import JobStopRequest

    return list(JobStopRequest.objects.filter(queue=queue, handled_at__isnull=True))


def close_not_running(requests: Iterable[Any], running: set[str]) -> int:
    """Close as `not_running` those of `requests` (open before the running
    jobs were read) whose job was not among `running` — the complete set of
    the queue's running jobs, read after them: the run each was made for has
    ended. Returns how many were closed (one UPDATE each, only for those)."""
    closed = 0
    for request in requests:
        if request.job_id not in running and request.close_unused(
            NOT_RUNNING, "console: not among the queue's running jobs"
        ):
            closed += 1
    return closed


def close_stale() -> int:
    """Close as `not_running` every request open for longer than
    STALE_AFTER_S (database clock, one UPDATE on a partial index): no process
    running its job took it, so none ever will."""
    from django.db.models.functions import Now

    from ops.engine.lease import from_now
    from ops.models import JobStopRequest

    return JobStopRequest.objects.filter(
        handled_at__isnull=True,
        requested_at__lt=from_now(-timedelta(seconds=STALE_AFTER_S)),
    ).update(
        handled_at=Now(),
        outcome=NOT_RUNNING,
        handled_by=f"not taken by a running job's process within {STALE_AFTER_S:g} s",
    )


def close_unused(seen: Iterable[Any], running: set[str] | frozenset[str] | None) -> int:
    """What the started page does once it has read a queue's running jobs:
    close the requests open before (`seen`) whose job is not `running` (None:
    the page did not see them all), and every stale one."""
    closed = close_stale()
    if running is not None:
        closed += close_not_running(seen, set(running))
    return closed
