"""The drain lease under real concurrency (run on PostgreSQL too, by .ci/run)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from ops.engine import lease
from ops.models import DrainRun, Lease

pytestmark = pytest.mark.django_db(transaction=True)


def new_run() -> DrainRun:
    return DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)


def test_exactly_one_of_many_simultaneous_claims_wins():
    contenders = 8
    barrier = threading.Barrier(contenders)
    claims: list[lease.Claim] = []
    errors: list[BaseException] = []
    runs = [new_run() for _ in range(contenders)]

    def contend(run: DrainRun) -> None:
        try:
            barrier.wait(timeout=10)
            claims.append(lease.acquire(run, timedelta(minutes=1)))
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=contend, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    winners = [c for c in claims if c.acquired]
    assert len(winners) == 1
    winner = winners[0].holder
    # Every loser was told who holds it.
    assert all(c.holder == winner for c in claims)
    assert Lease.objects.get(name=lease.DRAIN_LEASE).holder == winner


def test_a_released_lease_can_be_claimed_again():
    first, second = new_run(), new_run()
    assert lease.acquire(first, timedelta(minutes=1)).acquired
    assert not lease.acquire(second, timedelta(minutes=1)).acquired
    lease.release(first)
    assert lease.acquire(second, timedelta(minutes=1)).acquired


def test_releasing_someone_elses_lease_does_nothing():
    holder, other = new_run(), new_run()
    lease.acquire(holder, timedelta(minutes=1))
    lease.release(other)
    assert Lease.objects.get(name=lease.DRAIN_LEASE).holder == holder.public_id


def test_an_expired_lease_is_taken_over_and_its_run_reported_dead():
    dead = new_run()
    assert lease.acquire(dead, timedelta(milliseconds=1)).acquired
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    DrainRun.objects.filter(pk=dead.pk).update(
        lease_expires=timezone.now() - timedelta(seconds=1)
    )
    fresh = new_run()
    assert lease.acquire(fresh, timedelta(minutes=1)).acquired
    assert [r.pk for r in lease.dead_runs(fresh)] == [dead.pk]


def test_a_run_is_marked_abandoned_only_once():
    dead = new_run()
    assert dead.mark_abandoned(note="gone") is True
    assert dead.mark_abandoned(note="gone again") is False
    dead.refresh_from_db()
    assert dead.status == DrainRun.Status.ABANDONED
    assert dead.error == "gone"


# --- the database's clock, renewal, a lost lease (issue 10, item 2) ----------


@pytest.fixture
def app_clock_ahead(monkeypatch: pytest.MonkeyPatch):
    """This process's clock 45 s ahead of the database's (a second app server
    whose clock drifted)."""
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + timedelta(seconds=45))


def test_an_app_server_clock_ahead_does_not_take_a_live_lease(app_clock_ahead):
    holder, skewed = new_run(), new_run()
    assert lease.acquire(holder, timedelta(seconds=30)).acquired
    claim = lease.acquire(skewed, timedelta(seconds=30))
    assert not claim.acquired
    assert claim.holder == holder.public_id
    assert lease.dead_runs(skewed) == []


def test_a_renewal_pushes_the_lease_past_its_first_life():
    holder = new_run()
    assert lease.acquire(holder, timedelta(milliseconds=300)).acquired
    assert lease.renew(holder, timedelta(minutes=1)) is True
    time.sleep(0.4)  # the first life is over; the renewal holds
    assert not lease.acquire(new_run(), timedelta(minutes=1)).acquired
    assert lease.dead_runs(new_run()) == []
    holder.refresh_from_db()
    row = Lease.objects.get(name=lease.DRAIN_LEASE)
    assert row.renewed_at is not None
    # The run row follows, so it is not taken for dead either.
    assert holder.lease_expires >= row.acquired_at + timedelta(seconds=59)
    assert row.expires_at >= row.acquired_at + timedelta(seconds=59)


def test_a_renewal_never_shortens_the_lease():
    holder = new_run()
    lease.acquire(holder, timedelta(minutes=10))
    before = Lease.objects.get(name=lease.DRAIN_LEASE).expires_at
    assert lease.renew(holder, timedelta(seconds=1)) is True
    assert Lease.objects.get(name=lease.DRAIN_LEASE).expires_at == before


def test_renewing_a_lease_someone_took_over_says_it_is_lost():
    holder = new_run()
    lease.acquire(holder, timedelta(minutes=1))
    Lease.objects.update(holder=uuid.uuid4())
    assert lease.renew(holder, timedelta(minutes=1)) is False
    renewal = lease.Renewal(holder, timedelta(seconds=1.5))
    renewal._next = 0.0  # due now
    renewal.tick()
    assert renewal.lost.is_set()


def test_the_renewal_thread_renews_while_the_drain_runs():
    holder = new_run()
    lease.acquire(holder, timedelta(milliseconds=500))
    renewal = lease.Renewal(holder, timedelta(seconds=1.5))  # every 0.5 s
    renewal.start()
    try:
        time.sleep(2.0)  # four times the first life
        assert not lease.acquire(new_run(), timedelta(minutes=1)).acquired
    finally:
        renewal.stop()
    assert not renewal.lost.is_set()


def test_a_run_marked_abandoned_keeps_that_verdict_when_its_holder_finishes():
    run = new_run()
    assert run.mark_abandoned(note="taken over")
    mine = run.finish(
        status=DrainRun.Status.SUCCEEDED,
        queue_results={"q": {"processed": 2, "failed": 0, "remaining": 0}},
        redis_commands=7,
    )
    assert mine is False
    run.refresh_from_db()
    assert run.status == DrainRun.Status.ABANDONED
    assert run.error == "taken over"
    assert (run.total_processed, run.redis_commands) == (2, 7)
    assert run.needs_recovery  # the taker settles what it left


def test_a_failed_run_that_started_workers_needs_recovery_once():
    run = new_run()
    assert run.finish(status=DrainRun.Status.FAILED, needs_recovery=True)
    recoverer = uuid.uuid4()
    assert run.mark_recovery_claimed(recoverer)
    assert run.mark_recovered(recoverer)
    assert not run.mark_recovered(recoverer)
    run.refresh_from_db()
    assert not run.needs_recovery
    assert run.recovered_by == recoverer
    assert run.recovered_at is not None
