"""Drains started from the console, run in a background process.

The console's "Drain now" and the scheduler-setup page's test drain must answer
at once, so they do not drain inside the request: `start` records the run as
`queued` (the page they redirect to exists from the first moment) and starts a
detached `manage.py drain --run-id <id>` (`run_queued`), which outlives the
request and the gunicorn worker that served it (a worker may be recycled at any
time; a django-q2 cluster is not always running). That process claims the row
once (queued -> running) and drains through the one drain service, writing its
progress to the row as it goes (ops/engine/progress.py).

One drain at a time: `start` refuses while a drain holds the lease or a queued
one is starting, and the lease still decides between two clicks that race. A
process that cannot start, or never claims its run, leaves the run `failed`
with the reason, never `queued` for ever. All of it is database work: 0 Redis
commands.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ops.engine.drain import drain
from ops.engine.drain_options import DrainOptions
from ops.engine.lease import DRAIN_LEASE
from ops.models import DrainRun, Lease, lease_life

log = logging.getLogger(__name__)

# A queued run whose process has not claimed it after this long never will
# (the process died at start-up): it is recorded as failed. Start-up takes
# about a second.
START_TIMEOUT_S = 60
NOT_STARTED = "not_started"  # the run's error_code then

# The interpreter that runs manage.py (module level so a test can break it).
PYTHON = sys.executable
# Started processes, polled (reaped) at the next start: no zombie piles up in a
# long-lived gunicorn worker, and no thread waits on them.
_started: list[subprocess.Popen[bytes]] = []


class NotQueued(Exception):
    """`run_queued` was given a run that is not waiting to run."""


@dataclass(frozen=True)
class Start:
    """What `start` did: `run` is the new queued run, or None when a drain was
    already running; then `running` is that drain (None if its lease holder is
    not recorded)."""

    run: DrainRun | None
    running: DrainRun | None = None

    @property
    def started(self) -> bool:
        return self.run is not None


def start(
    *, trigger: str, options: DrainOptions, requested_by: Any, caller: str
) -> Start:
    """Record a queued run and start its process, unless a drain is running."""
    busy, running = running_drain()
    if busy:
        return Start(run=None, running=running)
    run = DrainRun.objects.create(
        trigger=trigger,
        status=DrainRun.Status.QUEUED,
        requested_by=requested_by if getattr(requested_by, "pk", None) else None,
        caller=caller[:200],
        params=options.as_params(),
        worker_prefix=f"kdrain.{uuid.uuid4().hex[:12]}.",
    )
    # After the commit: the process must find the row.
    transaction.on_commit(lambda: launch(run))
    return Start(run=run)


def launch(run: DrainRun) -> bool:
    """Start `manage.py drain --run-id` for a queued run, detached (a session
    of its own: neither the request's end nor a worker restart stops it). Its
    stderr is the server's, so its errors land in the server's log."""
    _started[:] = [proc for proc in _started if proc.poll() is None]
    args = [PYTHON, str(settings.BASE_DIR / "manage.py"), "drain"]
    args += ["--run-id", str(run.pk)]
    try:
        proc = subprocess.Popen(
            args,
            cwd=settings.BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        log.error("drain %s: could not start its process: %s", run.public_id, exc)
        run.fail_to_start(
            error_code=NOT_STARTED,
            error=f"Its background process could not start: {exc}",
        )
        return False
    _started.append(proc)
    return True


def running_drain() -> tuple[bool, DrainRun | None]:
    """(busy, run): whether a drain is running or starting now, and its run
    when recorded. Database only."""
    fail_stale()
    lease = Lease.objects.filter(name=DRAIN_LEASE).first()
    if lease is not None and lease.is_held():
        return True, DrainRun.objects.filter(public_id=lease.holder).first()
    queued = (
        DrainRun.objects.filter(status=DrainRun.Status.QUEUED).order_by("-started")
    ).first()
    return queued is not None, queued


def fail_stale(run: DrainRun | None = None) -> None:
    """Record queued runs whose process never claimed them as failed (all of
    them, or just `run`)."""
    cutoff = timezone.now() - timedelta(seconds=START_TIMEOUT_S)
    stale = DrainRun.objects.filter(status=DrainRun.Status.QUEUED, started__lt=cutoff)
    if run is not None:
        stale = stale.filter(pk=run.pk)
    for row in stale:
        row.fail_to_start(
            error_code=NOT_STARTED,
            error=f"Its background process did not start within {START_TIMEOUT_S} s "
            "(the server's log says why).",
        )
    if run is not None and stale:
        run.refresh_from_db()


def run_queued(run_id: int, *, fork_children: bool = True) -> DrainRun:
    """Run a queued run: claim it (once), then drain. Raises NotQueued for a
    run that does not exist or is not queued (it runs once)."""
    run = DrainRun.objects.filter(pk=run_id).first()
    if run is None:
        raise NotQueued(f"there is no drain run {run_id}")
    try:
        options = _options(run.params)
    except (KeyError, TypeError, ValueError) as exc:
        run.fail_to_start(
            error_code=NOT_STARTED, error=f"Its recorded options are unreadable: {exc}"
        )
        raise NotQueued(f"drain run {run_id} has unreadable options: {exc}") from None
    if not run.claim_queued(lease_life(options.max_duration_ms)):
        raise NotQueued(
            f"drain run {run_id} is {run.status}, not queued: a run runs once"
        )
    return drain(
        trigger=run.trigger, options=options, run=run, fork_children=fork_children
    )


def _options(params: dict[str, Any]) -> DrainOptions:
    # Validated by parse_options when the run was queued; applied as recorded.
    return DrainOptions(
        max_duration_ms=int(params["maxDurationMs"]),
        max_concurrent_queues=int(params["maxConcurrentQueues"]),
        queues=tuple(params["queues"]),
        clamped=params.get("clamped") or {},
    )
