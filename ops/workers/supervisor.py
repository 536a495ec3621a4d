"""The always-on workers' supervisor (`manage.py work`).

It starts worker processes (ops/workers/always_on_worker.py), restarts a crashed one
with exponential backoff after failing the job it was running, promotes due
scheduled jobs, keeps each worker's state in the database (WorkerProcess: no
Redis heartbeats for the console to poll), books the workers' Redis commands
under the source "worker", and on SIGTERM stops them warmly: a job in progress
finishes (or, past the stop grace, is killed and failed — never silently lost).

Role "inprocess" runs beside the console and follows the worker mode (the
admin's stored choice, else WORKER_INPROCESS), re-read every poll; role
"dedicated" is the runbook's separate worker container and always runs.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections
from django.db.models.functions import Now
from django.utils import timezone

from ops import runtime
from ops.engine import children, claims, leftovers, scheduled
from ops.engine.records import RecordWriter, parse_record
from ops.engine.recovery import fail_started_jobs, forget_worker
from ops.models import Source, WorkerProcess
from ops.queues import enabled_queue_names
from ops.usage import incidents
from ops.usage.metering import recorder
from ops.usage.quota_errors import is_quota_exhausted
from ops.usage.redis_client import CommandMeter, close_client, make_client

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
HEALTHY_AFTER_S = 600.0  # a worker up this long gets its backoff reset
# Live rows' heartbeats are written every ALWAYS_ON_HEARTBEAT_S with the
# database's clock: a row late by leftovers.worker_stale_after() belongs to a
# supervisor that is gone, and whoever notices first (a drain, another
# supervisor, this one restarted) settles its worker's jobs.


@dataclass
class Slot:
    """One worker position: a set of queues and the process serving it."""

    queues: list[str]
    index: int
    proc: subprocess.Popen[bytes] | None = None
    reader: int = -1
    buffer: bytes = b""
    row: WorkerProcess | None = None
    started_at: float = 0.0
    attempt: int = 0
    backoff_s: float = 0.0
    restart_at: float = 0.0
    billed: int = 0  # last reported cumulative counts of the current process
    total: int = 0
    current_job: str | None = None
    stopping: bool = False
    quota_error: str = ""
    gate: Any = None
    tally: Any = None  # children.SharedTally of the current process


@dataclass
class Supervisor:
    role: str
    queues: list[str] | None = None  # None: every enabled queue
    per_queue: bool = False
    block_s: int = 0
    poll_s: float = 30.0
    stop_grace_s: float = 60.0
    scan_s: float = 300.0
    slots: list[Slot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.block_s = self.block_s or settings.ALWAYS_ON_BLOCK_S
        self.scan_s = settings.ALWAYS_ON_SCHEDULED_SCAN_S
        self.host = socket.gethostname()
        self.selector = selectors.DefaultSelector()
        self.stop_requested = False
        self.meter = CommandMeter(Source.WORKER)
        self.client = make_client(self.meter)
        self.next_scan = 0.0
        self.next_db_heartbeat = 0.0
        self.records = RecordWriter()

    # --- the loop -----------------------------------------------------------
    def run(self, *, until: float | None = None) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        next_poll = 0.0
        wanted = False
        try:
            while not self.stop_requested and (until is None or time.time() < until):
                now = time.time()
                if now >= next_poll:
                    close_old_connections()
                    self._recover_stale()
                    wanted = self.wanted()
                    self._reconcile(wanted)
                    next_poll = now + self.poll_s
                if wanted:
                    self._restart_due(now)
                    self._promote(now)
                self._db_heartbeat(now)
                timeout = max(
                    0.05, min(next_poll, self.next_scan or next_poll) - time.time()
                )
                for key, _ in self.selector.select(timeout=min(timeout, 1.0)):
                    self._read(key.data)
                self.records.flush()
        finally:
            self.stop_all()
            close_client(self.client)
            recorder.flush()
            self.records.flush()

    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stop_requested = True

    def wanted(self) -> bool:
        if self.role == WorkerProcess.Role.DEDICATED:
            return True
        return runtime.worker_mode() == runtime.ALWAYS_ON

    def _queue_sets(self) -> list[list[str]]:
        names = self.queues or enabled_queue_names()
        if not names:
            return []
        return [[n] for n in names] if self.per_queue else [names]

    def _reconcile(self, wanted: bool) -> None:
        sets = self._queue_sets() if wanted else []
        current = [s.queues for s in self.slots]
        if sets == current:
            return
        if self.slots:
            log.info("worker set changes: %s -> %s", current, sets)
            self.stop_all()
        self.slots = [Slot(queues=q, index=i) for i, q in enumerate(sets)]
        for slot in self.slots:
            self._start(slot)

    # --- processes ------------------------------------------------------------
    def _start(self, slot: Slot) -> None:
        slot.gate = incidents.gate()
        if not slot.gate.allowed:
            # A quota incident is open: do not spend commands on a worker
            # start; try again after the cool-down.
            slot.restart_at = time.time() + settings.QUOTA_PROBE_COOLDOWN_S
            return
        slot.attempt += 1
        name = (
            f"kwork.{self.role}.{self.host}.{os.getpid()}.{slot.index}.{slot.attempt}"
        )
        slot.tally = children.SharedTally()
        module = (
            "ops.workers.lean_always_on"
            if settings.DRAIN_EXECUTOR == "lean"
            else "ops.workers.always_on_worker"
        )
        slot.proc, reader = children.spawn(
            module,
            [
                "--queues",
                ",".join(slot.queues),
                "--worker-name",
                name,
                "--block-s",
                str(self.block_s),
            ],
            slot.tally,
        )
        slot.reader = reader
        slot.buffer = b""
        slot.billed = slot.total = 0
        slot.current_job = None
        slot.stopping = False
        slot.quota_error = ""
        slot.started_at = time.time()
        slot.row = WorkerProcess.objects.create(
            name=name,
            role=self.role,
            host=self.host,
            pid=slot.proc.pid,
            supervisor_pid=os.getpid(),
            queues=slot.queues,
            restarts=slot.attempt - 1,
            heartbeat=Now(),  # the database's clock, as every heartbeat
        )
        self.selector.register(reader, selectors.EVENT_READ, slot)

    def _read(self, slot: Slot) -> None:
        data = os.read(slot.reader, 65536)
        if not data:
            self._exited(slot)
            return
        slot.buffer += data
        *lines, slot.buffer = slot.buffer.split(b"\n")
        for raw in lines:
            parts = raw.decode("utf-8", "replace").split(maxsplit=1)
            if parts:
                self._handle(slot, parts[0], parts[1] if len(parts) > 1 else "")

    def _handle(self, slot: Slot, kind: str, rest: str) -> None:
        fields = rest.split()
        row = slot.row
        assert row is not None
        if kind == "idle" and len(fields) == 2:
            self._book(slot, int(fields[0]), int(fields[1]))
            if slot.gate is not None:
                incidents.succeeded(slot.gate)  # it talked to Redis: quota is back
                slot.gate = None
            slot.current_job = None
            if row.state != WorkerProcess.State.IDLE:
                self._save(row, state=WorkerProcess.State.IDLE, current_job="")
        elif kind == "start" and fields:
            slot.current_job = fields[0]
            self._save(row, state=WorkerProcess.State.BUSY, current_job=fields[0])
        elif kind == "end" and len(fields) == 4:
            slot.current_job = None
            self._book(slot, int(fields[2]), int(fields[3]))
            # Job counts feed the quota advisor's job volume (drains count
            # theirs in DrainRun).
            self._save(
                row,
                state=WorkerProcess.State.IDLE,
                current_job="",
                processed=row.processed + 1,
                failed=row.failed + (fields[1] != "ok"),
            )
        elif kind == "record":
            data = parse_record(rest)
            if data is not None:
                self.records.add(data, worker=row.name)
        elif kind == "quota":
            slot.quota_error = rest
        elif kind == "done" and len(fields) == 2:
            self._book(slot, int(fields[0]), int(fields[1]))

    def _book(self, slot: Slot, billed: int, total: int) -> None:
        """Book the commands a worker reported since its last report."""
        delta_billed, delta_total = billed - slot.billed, total - slot.total
        slot.billed, slot.total = billed, total
        if delta_total > 0:
            recorder.add(Source.WORKER, delta_billed, delta_total - delta_billed)

    def _save(self, row: WorkerProcess, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(row, key, value)
        WorkerProcess.objects.filter(pk=row.pk).update(**changes, heartbeat=Now())

    def _exited(self, slot: Slot) -> None:
        self.selector.unregister(slot.reader)
        os.close(slot.reader)
        assert slot.proc is not None and slot.row is not None
        status = slot.proc.wait()
        # Book what the reports missed (a job that killed the process).
        if slot.tally is not None:
            self._book(slot, *slot.tally.read())
            slot.tally.close()
            slot.tally = None
        row, proc_stopping = slot.row, slot.stopping
        slot.proc = None
        if slot.quota_error:
            incidents.note_quota_error(Source.WORKER, RuntimeError(slot.quota_error))
        clean = proc_stopping and status == 0 and slot.current_job is None
        settled = True
        if not clean:
            reason = (
                "its always-on worker was stopped at the supervisor's stop grace"
                if proc_stopping
                else f"its always-on worker process died (exit status {status})"
            )
            try:
                if settings.DRAIN_EXECUTOR == "lean":
                    claims.recover(
                        self.client,
                        None,
                        claims.claim_key(row.name),
                        running=slot.current_job,
                        reason=reason,
                        worker_name=row.name,
                    )
                else:
                    for name in slot.queues:
                        fail_started_jobs(
                            self.client,
                            name,
                            worker_prefix=row.name,
                            reason=reason,
                            exact=True,
                        )
                    forget_worker(self.client, row.name, slot.queues)
            except redis.RedisError as exc:
                if is_quota_exhausted(exc):
                    incidents.note_quota_error(Source.WORKER, exc)
                # The row stays unsettled: once its heartbeat is stale, the
                # next drain or supervisor look settles it (leftovers.py).
                settled = False
                log.warning("could not tidy up after %s: %s", row.name, exc)
        self._save(
            row,
            state=WorkerProcess.State.STOPPED
            if proc_stopping
            else WorkerProcess.State.CRASHED,
            current_job="",
            stopped=timezone.now(),
            exit_status=status,
            **({"recovered_at": timezone.now()} if settled else {}),
        )
        if proc_stopping or self.stop_requested:
            return
        # Crashed: restart with exponential backoff (reset after a healthy run).
        lived = time.time() - slot.started_at
        slot.backoff_s = (
            1.0
            if lived >= HEALTHY_AFTER_S or not slot.backoff_s
            else min(slot.backoff_s * 2, MAX_BACKOFF_S)
        )
        slot.restart_at = time.time() + slot.backoff_s
        log.warning(
            "worker %s died (status %s); restart in %.0f s",
            row.name,
            status,
            slot.backoff_s,
        )

    def _restart_due(self, now: float) -> None:
        for slot in self.slots:
            if slot.proc is None and slot.restart_at and now >= slot.restart_at:
                slot.restart_at = 0.0
                self._start(slot)

    def stop_all(self) -> None:
        """Warm stop: SIGTERM lets a running job finish; past the grace, kill."""
        running = [s for s in self.slots if s.proc is not None]
        for slot in running:
            slot.stopping = True
            slot.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.time() + self.stop_grace_s
        while any(s.proc is not None for s in running) and time.time() < deadline:
            for key, _ in self.selector.select(timeout=0.5):
                self._read(key.data)
        for slot in running:
            if slot.proc is not None:
                slot.proc.kill()
                while slot.proc is not None:
                    self._read(slot)
        self.slots = []

    # --- periodic chores ------------------------------------------------------
    def _promote(self, now: float) -> None:
        """Move due scheduled jobs onto their queues: 1 command per scan when
        nothing is scheduled; a scan at most every ALWAYS_ON_SCHEDULED_SCAN_S,
        or exactly when the earliest known scheduled job falls due."""
        if now < self.next_scan or not self.slots:
            return
        names = sorted({q for s in self.slots for q in s.queues})
        gate = incidents.gate()
        if not gate.allowed:
            self.next_scan = now + settings.QUOTA_PROBE_COOLDOWN_S
            return
        try:
            _, next_due = scheduled.promote_due(self.client, names, now)
            incidents.succeeded(gate)
        except redis.RedisError as exc:
            if is_quota_exhausted(exc):
                incidents.note_quota_error(Source.WORKER, exc)
            log.warning("could not promote scheduled jobs: %s", exc)
            next_due = None
        self.next_scan = now + self.scan_s
        if next_due is not None:
            self.next_scan = min(self.next_scan, max(next_due, now + 1))

    def _db_heartbeat(self, now: float) -> None:
        if now < self.next_db_heartbeat:
            return
        self.next_db_heartbeat = now + settings.ALWAYS_ON_HEARTBEAT_S
        live = [
            s.row.pk for s in self.slots if s.proc is not None and s.row is not None
        ]
        if live:
            WorkerProcess.objects.filter(pk__in=live).update(heartbeat=Now())
        recorder.flush()

    def _recover_stale(self) -> None:
        """Settle the jobs of workers whose supervisor is gone (killed, host
        lost): a database query, no Redis command when there are none. This
        supervisor's own rows are never taken for stale."""
        if not leftovers.stale_workers(exclude_supervisor=(self.host, os.getpid())):
            return
        gate = incidents.gate()
        if not gate.allowed:
            return
        try:
            leftovers.recover_stale_workers(
                self.client, exclude_supervisor=(self.host, os.getpid())
            )
            incidents.succeeded(gate)
        except redis.RedisError as exc:
            if is_quota_exhausted(exc):
                incidents.note_quota_error(Source.WORKER, exc)
            log.warning("could not settle stale workers: %s", exc)
