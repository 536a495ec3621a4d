"""The drain lease: one drain at a time across processes and hosts.

Claimed with a conditional UPDATE and a row count: zero Redis commands, no lock
held while jobs run, and a holder that dies lets the lease lapse on its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from ops.models import DrainRun, Lease

DRAIN_LEASE = "drain"


@dataclass(frozen=True)
class Claim:
    acquired: bool
    holder: uuid.UUID | None  # the running drain, when not acquired


def acquire(run: DrainRun, life: timedelta) -> Claim:
    now = timezone.now()
    Lease.objects.get_or_create(name=DRAIN_LEASE)
    expires = now + life
    taken = (
        Lease.objects.filter(name=DRAIN_LEASE)
        .filter(Q(holder__isnull=True) | Q(expires_at__lte=now))
        .update(holder=run.public_id, expires_at=expires, acquired_at=now)
    )
    if taken == 1:
        run.lease_expires = expires
        run.save(update_fields=["lease_expires"])
        return Claim(acquired=True, holder=run.public_id)
    holder = (
        Lease.objects.filter(name=DRAIN_LEASE).values_list("holder", flat=True).first()
    )
    return Claim(acquired=False, holder=holder)


def release(run: DrainRun) -> None:
    Lease.objects.filter(name=DRAIN_LEASE, holder=run.public_id).update(
        holder=None, expires_at=timezone.now()
    )


def dead_runs(current: DrainRun) -> list[DrainRun]:
    """Runs that took the lease and are still "running" after it lapsed: their
    process died (killed worker, OOM, host lost)."""
    return list(
        DrainRun.objects.filter(
            status=DrainRun.Status.RUNNING,
            lease_expires__isnull=False,
            lease_expires__lte=timezone.now(),
        ).exclude(pk=current.pk)
    )
