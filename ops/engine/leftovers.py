"""Settling what processes that stopped holding jobs left in Redis.

Every way a consumer can stop while it holds jobs ends here, found from the
database (0 Redis commands when there is nothing to settle):

* a drain that died (its lease lapsed while its run was "running"): its run is
  marked abandoned and needs recovery;
* a drain that ended "failed" after it had started workers (Redis went away
  mid-drain, the quota, an internal error), or whose dead worker's jobs Redis
  did not let it settle: `DrainRun.needs_recovery`;
* an always-on worker whose supervisor was killed: its WorkerProcess row's
  heartbeat (written with the database's clock) went stale.

What is settled, either executor: jobs in RQ's started registry started by the
dead consumer's workers (failed with AbandonedJobError, or retried per their
Retry, as RQ's own cleanup does), the lean executor's claim lists
(ops/engine/claims.py: the running job abandoned, the never-started requeued),
and the dead workers' registrations in RQ's worker registry.

Exactly once: the drain lease makes its holder the only drain that recovers
runs, and each recovery is claimed with a conditional UPDATE on the run's or
worker's row; a recovery cut short (Redis gone again, the process killed) is
picked up again, and settling what is already settled finds nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from django.conf import settings
from django.db.models.functions import Now

from ops.engine import claims
from ops.engine.lease import dead_runs, from_now
from ops.engine.recovery import fail_started_jobs, forget_worker, forget_workers_named
from ops.models import DrainRun, WorkerProcess

log = logging.getLogger(__name__)

# Supervisors refresh their live workers' rows every ALWAYS_ON_HEARTBEAT_S
# (with the database's clock); a row this many refreshes late belongs to a
# supervisor that is gone.
MISSED_HEARTBEATS = 3


def worker_stale_after() -> timedelta:
    """How late a worker row's heartbeat is when its supervisor is gone."""
    return timedelta(seconds=MISSED_HEARTBEATS * settings.ALWAYS_ON_HEARTBEAT_S)


LIVE_STATES = (
    WorkerProcess.State.STARTING,
    WorkerProcess.State.IDLE,
    WorkerProcess.State.BUSY,
)


def recover(client: redis.Redis, current: DrainRun) -> int:
    """Everything a drain recovers before it looks at the queues: dead runs,
    runs that need recovery, workers whose supervisor is gone. Returns the
    jobs failed, retried or requeued. Only database queries when nothing is
    there."""
    for dead in dead_runs(current):
        note = (
            f"Its process died: it still held the drain lease when the lease "
            f"lapsed at {dead.lease_expires:%Y-%m-%d %H:%M:%S} UTC. "
            f"Recovered by drain {current.public_id}."
        )
        dead.mark_abandoned(note=note)  # False: another drain marked it first
    recovered = 0
    for prior in DrainRun.objects.filter(needs_recovery=True).exclude(
        status=DrainRun.Status.RUNNING
    ):
        recovered += recover_run(client, prior, current.public_id)
    recovered += recover_stale_workers(client)
    return recovered


def recover_run(client: redis.Redis, prior: DrainRun, by: object) -> int:
    """Settle what run `prior` left in Redis, once; `by` is the recovering
    drain's public id."""
    if not prior.mark_recovery_claimed(by):  # type: ignore[arg-type]
        return 0
    if prior.status == DrainRun.Status.ABANDONED:
        reason = f"drain {prior.public_id} died while running it"
    else:
        reason = f"drain {prior.public_id} lost Redis while running it"
    queues = list(prior.params.get("queues", []))
    unsettled = prior.unsettled_claims or {}
    recovered = 0
    for name in queues:
        # Either executor may have run it: RQ's started registry and the lean
        # executor's claim list (1 command each when empty).
        recovered += len(
            fail_started_jobs(
                client, name, worker_prefix=prior.worker_prefix, reason=reason
            )
        )
        running = unsettled.get(name, claims.UNKNOWN)
        settled = claims.recover(
            client,
            name,
            claims.claim_key(f"{prior.worker_prefix}{name}"),
            running=running,
            reason=reason,
        )
        recovered += len(settled.abandoned) + len(settled.requeued)
    if prior.worker_prefix:
        forget_workers_named(client, prior.worker_prefix, queues)
    prior.mark_recovered(by)  # type: ignore[arg-type]
    if recovered:
        log.warning("recovered %d job(s) of drain %s", recovered, prior.public_id)
    return recovered


def stale_workers(
    *, exclude_supervisor: tuple[str, int] | None = None
) -> list[WorkerProcess]:
    """Worker rows nobody settled whose heartbeat is stale by the database's
    clock. `exclude_supervisor` (host, pid): a live supervisor's own rows."""
    rows = WorkerProcess.objects.filter(
        recovered_at__isnull=True, heartbeat__lt=from_now(-worker_stale_after())
    )
    if exclude_supervisor is not None:
        host, pid = exclude_supervisor
        rows = rows.exclude(host=host, supervisor_pid=pid)
    return list(rows)


def recover_stale_workers(
    client: redis.Redis, *, exclude_supervisor: tuple[str, int] | None = None
) -> int:
    recovered = 0
    for row in stale_workers(exclude_supervisor=exclude_supervisor):
        recovered += recover_worker(client, row)
    return recovered


def recover_worker(client: redis.Redis, row: WorkerProcess) -> int:
    """Settle the jobs of always-on worker `row`, whose supervisor stopped
    heartbeating, once. The claim (a conditional UPDATE) refreshes its
    heartbeat: no one else takes it for worker_stale_after(); a recovery that
    fails puts the old heartbeat back, so the next look retries."""
    was = row.heartbeat
    claimed = (
        WorkerProcess.objects.filter(
            pk=row.pk,
            recovered_at__isnull=True,
            heartbeat__lt=from_now(-worker_stale_after()),
        ).update(heartbeat=Now())
        == 1
    )
    if not claimed:
        return 0
    reason = f"its always-on worker {row.name} stopped heartbeating (supervisor gone)"
    try:
        running = row.current_job or claims.UNKNOWN
        recovered = settle_worker(client, row.name, list(row.queues), running, reason)
    except BaseException:
        WorkerProcess.objects.filter(pk=row.pk).update(heartbeat=was)
        raise
    live = row.state in LIVE_STATES
    WorkerProcess.objects.filter(pk=row.pk).update(
        recovered_at=Now(),
        current_job="",
        state=WorkerProcess.State.CRASHED if live else row.state,
        stopped=row.stopped or was,
    )
    log.warning("recovered %d job(s) of stale worker %s", recovered, row.name)
    return recovered


def settle_worker(
    client: redis.Redis,
    name: str,
    queues: list[str],
    running: str | claims._Unknown | None,
    reason: str,
) -> int:
    """What an always-on worker `name` held: its lean claim list, its jobs in
    RQ's started registries, its RQ registration. Both executors' places are
    looked at: 1 + 1 per queue + 1 round trip when it held nothing."""
    settled = claims.recover(
        client,
        None,
        claims.claim_key(name),
        running=running,
        reason=reason,
        worker_name=name,
    )
    recovered = len(settled.abandoned) + len(settled.requeued)
    for queue in queues:
        recovered += len(
            fail_started_jobs(
                client, queue, worker_prefix=name, reason=reason, exact=True
            )
        )
    forget_worker(client, name, queues)
    return recovered
