"""The drain lease under real concurrency (run on PostgreSQL too, by .ci/run)."""

from __future__ import annotations

import threading
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
