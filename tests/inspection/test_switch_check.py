"""The Redis switch check (runbook §6.3): the empty-drain streak, every job a
switch would abandon, live workers, and what the check costs on the wire.

Jobs are put in Redis with plain rq (no project code), as another service
sharing the Redis would."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import redis
import rq
from django.conf import settings
from django.utils import timezone
from rq.registry import FailedJobRegistry
from rq.worker import SimpleWorker

from ops import jobs
from ops.engine.leftovers import worker_stale_after
from ops.inspection.switch_check import QueuePending, switch_check
from ops.models import DrainRun, Queue, QuotaIncident, WorkerProcess

pytestmark = pytest.mark.django_db

QUEUES = ["batch-jobs", "dsar-jobs", "journey-jobs", "retrain-jobs", "seed-jobs"]
S = DrainRun.Status


def runs(*specs: tuple[str, int]) -> list[DrainRun]:
    """Drain runs from oldest to newest, each (status, total_processed)."""
    now = timezone.now()
    out = []
    for i, (status, processed) in enumerate(specs):
        started = now - timedelta(minutes=5 * (len(specs) - i))
        out.append(
            DrainRun.objects.create(
                trigger=DrainRun.Trigger.CRON,
                status=status,
                total_processed=processed,
                started=started,
                finished=started + timedelta(seconds=1),
            )
        )
    return out


def three_empty_drains() -> None:
    runs((S.SUCCEEDED, 0), (S.SUCCEEDED, 0), (S.SUCCEEDED, 0))


def worker_row(name: str, *, age: timedelta, **extra: object) -> WorkerProcess:
    return WorkerProcess.objects.create(
        name=name,
        role=WorkerProcess.Role.DEDICATED,
        host="worker-1.internal",
        pid=4242,
        queues=["batch-jobs"],
        state=extra.pop("state", WorkerProcess.State.IDLE),
        heartbeat=timezone.now() - age,
        **extra,
    )


def start_job(raw_redis: redis.Redis, queue: str) -> str:
    """A job a worker has picked up: its execution in StartedJobRegistry."""
    job = rq.Queue(queue, connection=raw_redis).enqueue("tests.jobs.add", 1, 2)
    raw_redis.lrem(f"rq:queue:{queue}", 0, job.id)
    raw_redis.zadd(f"rq:wip:{queue}", {f"{job.id}:exec-1": time.time() + 600})
    return job.id


# --- Jobs in Redis ------------------------------------------------------------


def test_queued_jobs_make_it_unsafe_and_it_says_which_queue_and_how_many(raw_redis):
    three_empty_drains()
    batch = rq.Queue("batch-jobs", connection=raw_redis)
    for _ in range(3):
        batch.enqueue("tests.jobs.add", 1, 2)

    check = switch_check()

    assert not check.safe
    assert check.reasons == ["batch-jobs: 3 queued jobs would be abandoned"]
    assert check.pending is not None
    assert check.pending["batch-jobs"].queued == 3
    assert check.consecutive_empty_drains == 3


def test_a_started_job_makes_it_unsafe(raw_redis):
    three_empty_drains()
    start_job(raw_redis, "dsar-jobs")

    check = switch_check()

    assert not check.safe
    assert check.reasons == ["dsar-jobs: 1 started job would be abandoned"]
    assert check.pending["dsar-jobs"] == QueuePending(
        enabled=True,
        queued=0,
        intermediate=0,
        scheduled=0,
        started=1,
        deferred=0,
        failed=0,
    )


def test_every_kind_of_pending_job_is_counted_and_named(raw_redis):
    three_empty_drains()
    journey = rq.Queue("journey-jobs", connection=raw_redis)
    journey.enqueue_in(timedelta(hours=6), "tests.jobs.add", 1, 2)  # scheduled
    parent = journey.enqueue("tests.jobs.add", 1, 2)  # queued
    journey.enqueue("tests.jobs.add", 3, 4, depends_on=parent)  # deferred
    # Popped by a consumer that died before registering it (rq's intermediate
    # queue; see ops/engine/recovery.py).
    raw_redis.lpush("rq:queue:journey-jobs:intermediate", "lost-job-id")

    check = switch_check()

    assert check.pending["journey-jobs"] == QueuePending(
        enabled=True,
        queued=1,
        intermediate=1,
        scheduled=1,
        started=0,
        deferred=1,
        failed=0,
    )
    assert check.reasons == [
        "journey-jobs: 1 queued job would be abandoned",
        "journey-jobs: 1 job in the intermediate list (popped, never registered) "
        "would be abandoned",
        "journey-jobs: 1 scheduled job would be abandoned",
        "journey-jobs: 1 deferred job (waiting for a dependency) would be abandoned",
    ]


def test_disabled_queues_are_checked_too(raw_redis):
    three_empty_drains()
    Queue.objects.filter(name="retrain-jobs").update(enabled=False)
    rq.Queue("retrain-jobs", connection=raw_redis).enqueue("tests.jobs.add", 1, 2)

    check = switch_check()

    assert list(check.pending) == QUEUES
    assert check.pending["retrain-jobs"].enabled is False
    assert check.reasons == ["retrain-jobs (disabled): 1 queued job would be abandoned"]


def test_failed_jobs_do_not_block_but_are_listed_as_left_behind(raw_redis):
    three_empty_drains()
    batch = rq.Queue("batch-jobs", connection=raw_redis)
    batch.enqueue(jobs.fail)
    batch.enqueue(jobs.fail)
    SimpleWorker([batch], connection=raw_redis).work(burst=True)
    assert FailedJobRegistry("batch-jobs", connection=raw_redis).count == 2
    raw_redis.delete("rq:workers")  # the burst worker's registration, if any

    check = switch_check()

    assert check.safe, check.reasons
    assert check.pending["batch-jobs"].failed == 2
    assert check.left_behind == [
        "batch-jobs: 2 failed jobs would be left behind in the old Redis"
    ]


def test_reading_changes_nothing_in_redis(raw_redis):
    # RQ's registry reads would move this long-expired started job to the
    # failed registry; the check must leave it where it is.
    job_id = start_job(raw_redis, "dsar-jobs")
    raw_redis.zadd("rq:wip:dsar-jobs", {f"{job_id}:exec-1": 1}, xx=True)

    check = switch_check()

    assert check.pending["dsar-jobs"].started == 1
    assert raw_redis.zcard("rq:wip:dsar-jobs") == 1
    assert raw_redis.zcard("rq:failed:dsar-jobs") == 0


# --- The empty-drain streak ---------------------------------------------------


def test_safe_after_three_empty_drains_with_nothing_pending():
    three_empty_drains()

    check = switch_check()

    assert check.safe
    assert check.reasons == []
    assert check.consecutive_empty_drains == 3
    assert check.required_empty_drains == 3
    assert check.streak_broken_by is None
    assert all(p.would_be_abandoned == 0 for p in check.pending.values())


def test_fewer_than_three_empty_drains_is_unsafe():
    runs((S.SUCCEEDED, 4), (S.SUCCEEDED, 0))

    check = switch_check()

    assert not check.safe
    assert check.consecutive_empty_drains == 1
    assert len(check.reasons) == 1
    assert check.reasons[0].startswith("only 1 of 3 consecutive empty drains (")
    assert "processed 4 jobs, which breaks the streak" in check.reasons[0]


def test_no_drain_at_all_is_unsafe():
    check = switch_check()

    assert not check.safe
    assert check.reasons == [
        "only 0 of 3 consecutive empty drains (no finished drain is recorded)"
    ]


@pytest.mark.parametrize(
    ("status", "words"),
    [(S.FAILED, "failed"), (S.ABANDONED, "was abandoned")],
)
def test_a_failed_or_abandoned_drain_breaks_the_streak(status, words):
    older = runs(
        (S.SUCCEEDED, 0),
        (S.SUCCEEDED, 0),
        (S.SUCCEEDED, 0),
        (status, 0),  # nothing processed, but it proves nothing either
        (S.SUCCEEDED, 0),
        (S.DEADLINE, 0),
    )

    check = switch_check()

    assert not check.safe
    assert check.consecutive_empty_drains == 2
    assert check.streak_broken_by == older[3]
    [reason] = check.reasons
    assert reason.startswith("only 2 of 3 consecutive empty drains (the drain of ")
    assert f"{words}, which breaks the streak" in reason


def test_skipped_and_running_drains_neither_count_nor_break_the_streak():
    runs(
        (S.SUCCEEDED, 2),
        (S.SUCCEEDED, 0),
        (S.SKIPPED, 0),
        (S.SUCCEEDED, 0),
        (S.RUNNING, 0),
        (S.SUCCEEDED, 0),
    )

    check = switch_check()

    assert check.safe, check.reasons
    assert check.consecutive_empty_drains == 3
    roles = [d.role for d in check.recent_drains]  # newest first
    assert roles == ["empty", "not counted", "empty", "not counted", "empty", "breaks"]


def test_the_required_streak_is_a_setting(settings):
    settings.REDIS_SWITCH_MIN_EMPTY_DRAINS = 5
    three_empty_drains()

    check = switch_check()

    assert not check.safe
    assert check.required_empty_drains == 5
    assert check.reasons[0].startswith("only 3 of 5 consecutive empty drains")


# --- Workers ------------------------------------------------------------------


def test_live_always_on_workers_make_it_unsafe():
    three_empty_drains()
    worker_row("kw.batch.1", age=timedelta(seconds=20))
    worker_row("kw.batch.2", age=timedelta(minutes=2), state=WorkerProcess.State.BUSY)

    check = switch_check()

    assert not check.safe
    assert [w.name for w in check.live_workers] == ["kw.batch.1", "kw.batch.2"]
    [reason] = check.reasons
    assert reason.startswith("2 always-on workers are still registered")
    assert "kw.batch.1 on worker-1.internal" in reason


def test_settled_stopped_worker_rows_do_not_count():
    three_empty_drains()
    settled = timezone.now()
    worker_row(
        "kw.gone.1",  # silent too long, and a drain recovered its jobs
        age=timedelta(minutes=11),
        state="crashed",
        recovered_at=settled,
    )
    worker_row(
        "kw.stopped.1",
        age=timedelta(seconds=5),
        state=WorkerProcess.State.STOPPED,
        stopped=timezone.now(),
        recovered_at=settled,
    )
    worker_row(
        "kw.crashed.1", age=timedelta(seconds=5), state="crashed", recovered_at=settled
    )

    check = switch_check()

    assert check.safe, check.reasons
    assert check.live_workers == []


def test_workers_in_rqs_registry_count_even_from_other_deployments(raw_redis):
    three_empty_drains()
    raw_redis.sadd("rq:workers", "rq:worker:other-deploy.1", "rq:worker:other.2")

    check = switch_check()

    assert not check.safe
    assert check.rq_registered_workers == 2
    [reason] = check.reasons
    assert reason.startswith("2 RQ workers are registered in Redis (rq:workers)")


# --- Cost and Redis trouble ---------------------------------------------------


def test_it_costs_six_commands_per_queue_plus_two_on_the_wire(raw_redis, wire):
    Queue.objects.create(name="extra-jobs", enabled=False, priority=999)
    rq.Queue("batch-jobs", connection=raw_redis).enqueue("tests.jobs.add", 1, 2)

    check = switch_check()

    queues = len(QUEUES) + 1
    assert check.pending is not None
    assert wire.snapshot() == {
        "AUTH": 1,  # the private server's password; not billed
        "LLEN": 2 * queues,
        "ZCARD": 4 * queues,
        "SCARD": 1,
        # rq:queues: batch-jobs is in it, and registered: nothing more to read.
        "SMEMBERS": 1,
    }
    assert wire.billed() == 6 * queues + 2
    assert check.redis_commands == check.expected_redis_commands == 6 * queues + 2


def test_redis_down_is_unsafe_with_a_reason_not_a_traceback():
    three_empty_drains()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # the autouse fixture restores it

    check = switch_check()

    assert not check.safe
    assert check.redis_unreachable
    assert check.pending is None
    assert check.rq_registered_workers is None
    assert check.reasons[0].startswith("Redis is unreachable (ConnectionError")
    assert check.reasons[0].endswith("so the jobs still in it could not be counted")


def test_an_exhausted_quota_is_unsafe_and_opens_an_incident(fault):
    three_empty_drains()
    fault.exhaust()

    check = switch_check()

    assert not check.safe
    assert not check.redis_unreachable
    assert check.reasons[0].startswith("the Redis command quota is exhausted")
    assert QuotaIncident.objects.filter(closed_at__isnull=True).exists()

    # While the incident is open and its probe cool-down runs, the next check
    # does not contact Redis at all.
    fault.reset_counts()
    again = switch_check()

    assert not again.safe
    assert again.redis_commands == 0
    assert sum(fault.forwarded.values()) + sum(fault.refused.values()) == 0
    assert again.reasons[0].startswith("The Redis command quota is exhausted")


def test_an_error_reply_is_unsafe_with_a_reason_not_a_traceback(raw_redis):
    three_empty_drains()
    # A wrong-type key makes one command of the pipeline fail for real.
    raw_redis.set("rq:deferred:seed-jobs", "not a sorted set")

    check = switch_check()

    assert not check.safe
    assert not check.redis_unreachable
    assert check.pending is None
    assert check.reasons[0].startswith("Redis answered with an error (ResponseError")
    assert "WRONGTYPE" in check.reasons[0]
    assert check.redis_commands == 6 * len(QUEUES) + 2


def test_a_drain_that_left_claims_unsettled_makes_the_switch_unsafe(db):
    DrainRun.objects.create(
        trigger=DrainRun.Trigger.CLI,
        status=DrainRun.Status.FAILED,
        unsettled_claims={"batch-jobs": None},
        has_unsettled_claims=True,
    )
    check = switch_check()
    assert not check.safe
    assert any("claimed jobs" in reason for reason in check.reasons)


# --- Queues RQ clients use that the Queues page does not list (issue 10) -------


def test_an_unregistered_queue_with_jobs_blocks_the_switch_and_is_named(raw_redis):
    """A queue only an RQ client knows (it is in rq:queues) is never drained:
    its jobs would be abandoned, so the check is not safe."""
    three_empty_drains()
    rq.Queue("billing-jobs", connection=raw_redis).enqueue("tests.jobs.add", 1, 2)

    check = switch_check()

    assert not check.safe
    assert check.unregistered == {
        "billing-jobs": QueuePending(False, 1, 0, 0, 0, 0, 0, registered=False)
    }
    assert check.reasons == [
        "billing-jobs (not on the Queues page: no drain runs it): 1 queued job "
        "would be abandoned"
    ]
    assert "billing-jobs" not in (check.pending or {})
    assert check.as_dict()["unregistered"]["billing-jobs"]["registered"] is False


def test_an_unregistered_queue_costs_six_more_commands_in_a_second_pipeline(
    raw_redis, wire
):
    three_empty_drains()
    rq.Queue("billing-jobs", connection=raw_redis).enqueue("tests.jobs.add", 1, 2)
    # Emptied since: still in rq:queues (rq never takes a queue out), so it is
    # read, but holds nothing and is neither listed nor blocking.
    rq.Queue("old-jobs", connection=raw_redis).enqueue("tests.jobs.add", 1, 2)
    raw_redis.delete("rq:queue:old-jobs")
    wire.reset()

    check = switch_check()

    queues = len(QUEUES)
    assert wire.snapshot() == {
        "AUTH": 1,
        "LLEN": 2 * (queues + 2),
        "ZCARD": 4 * (queues + 2),
        "SCARD": 1,
        "SMEMBERS": 1,
    }
    assert wire.billed() == 6 * queues + 2 + 6 * 2
    assert check.redis_commands == check.expected_redis_commands == wire.billed()
    assert list(check.unregistered or {}) == ["billing-jobs"]


def test_an_unregistered_queue_with_only_failed_jobs_is_left_behind_not_blocking(
    raw_redis,
):
    three_empty_drains()
    job = rq.Queue("billing-jobs", connection=raw_redis).enqueue(jobs.fail)
    SimpleWorker(["billing-jobs"], connection=raw_redis).work(burst=True)
    assert job.id in FailedJobRegistry("billing-jobs", connection=raw_redis)

    check = switch_check()

    assert check.safe, check.reasons
    assert check.left_behind == [
        "billing-jobs (not on the Queues page: no drain runs it): 1 failed job "
        "would be left behind in the old Redis"
    ]


def test_registering_a_queue_puts_it_on_the_queues_page(raw_redis):
    from django.core.exceptions import ValidationError

    from ops.inspection.switch_check import register_queue

    rq.Queue("billing-jobs", connection=raw_redis).enqueue("tests.jobs.add", 1, 2)
    queue = register_queue("billing-jobs", enabled=False)
    assert Queue.objects.get(name="billing-jobs").enabled is False
    check = switch_check()
    assert check.unregistered == {}
    assert check.pending is not None and check.pending["billing-jobs"].queued == 1
    with pytest.raises(ValidationError):
        register_queue(queue.name, enabled=True)  # already there
    with pytest.raises(ValidationError):
        register_queue("x" * 101, enabled=True)


# --- Processes that stopped holding jobs, not recovered yet (issue 10) -----------


def test_a_stale_worker_nobody_recovered_makes_it_unsafe_until_a_drain_does():
    """Its supervisor was killed: its heartbeat is older than the staleness
    threshold of ops/engine/leftovers.py and its jobs are not settled."""
    three_empty_drains()
    row = worker_row("kw.orphan.1", age=worker_stale_after() + timedelta(seconds=5))

    check = switch_check()

    assert not check.safe
    stale = [r for r in check.reasons if "stopped heartbeating" in r]
    assert len(stale) == 1
    assert "kw.orphan.1" in stale[0] and "run a drain" in stale[0]
    # Recovered (what the next drain does): nothing left to say about it.
    WorkerProcess.objects.filter(pk=row.pk).update(
        recovered_at=timezone.now(), state="crashed", stopped=timezone.now()
    )
    assert switch_check().safe


def test_a_worker_that_ended_unsettled_says_how_long_to_wait():
    three_empty_drains()
    worker_row("kw.unsettled.1", age=timedelta(seconds=30), state="crashed")

    check = switch_check()

    assert not check.safe
    [reason] = check.reasons
    assert "kw.unsettled.1" in reason
    wait = int(re.search(r"wait (\d+) s", reason).group(1))
    # 180 s of staleness less the 30 s already gone, give or take the test.
    assert worker_stale_after().total_seconds() - 35 <= wait <= 150


@pytest.mark.parametrize("status", [S.ABANDONED, S.FAILED])
def test_a_drain_that_needs_recovery_makes_it_unsafe(status):
    three_empty_drains()
    run = DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON, status=status, needs_recovery=True
    )

    check = switch_check()

    assert not check.safe
    [reason] = [r for r in check.reasons if "not recovered yet" in r]
    assert reason.startswith("1 drain died or failed holding jobs")
    assert "run a drain" in reason
    DrainRun.objects.filter(pk=run.pk).update(needs_recovery=False)
    assert not any("not recovered" in r for r in switch_check().reasons)


def test_a_running_drain_says_to_wait_and_a_dead_one_to_drain():
    three_empty_drains()
    alive = DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON,
        status=S.RUNNING,
        lease_expires=timezone.now() + timedelta(seconds=40),
    )
    DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON,
        status=S.RUNNING,
        lease_expires=timezone.now() - timedelta(seconds=5),  # its process died
    )

    check = switch_check()

    assert not check.safe
    [running] = [r for r in check.reasons if "running now" in r]
    wait = int(re.search(r"runs (\d+) s more", running).group(1))
    assert 30 <= wait <= 41
    [dead] = [r for r in check.reasons if "not recovered yet" in r]
    assert dead.startswith("1 drain died or failed")
    DrainRun.objects.filter(pk=alive.pk).update(status=S.SUCCEEDED)
    assert not any("running now" in r for r in switch_check().reasons)
