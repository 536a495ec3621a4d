"""The drain lease: one drain at a time across processes and hosts.

Claimed with a conditional UPDATE and a row count: zero Redis commands, no lock
held while jobs run, and a holder that dies lets the lease lapse on its own.

Time comes from the database (`Now()` in the UPDATEs and filters), never from
the application server: two hosts whose clocks disagree still agree on when a
lease lapses.

While a drain runs, its process renews the lease every DRAIN_LEASE_MARGIN_MS / 3
(`Renewal`, a thread), so that a drain that outlives its first life — a job
killed at the hard deadline whose failure callback runs long — is never taken
for dead. A renewal is `UPDATE … WHERE holder = me`: when it changes no row the
lease was taken over, and the holder is told (`Renewal.lost`) so that it stops
taking jobs. A holder that cannot reach the database for 2/3 of the margin
takes its lease as lost too, before anyone else can take it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, Q, Value
from django.db.models.functions import Greatest, Now

from ops.models import DrainRun, Lease

log = logging.getLogger(__name__)

DRAIN_LEASE = "drain"


@dataclass(frozen=True)
class Claim:
    acquired: bool
    holder: uuid.UUID | None  # the running drain, when not acquired


def from_now(life: timedelta) -> ExpressionWrapper:
    """`life` after the database's now."""
    return ExpressionWrapper(
        Now() + Value(life, output_field=DurationField()),
        output_field=DateTimeField(),
    )


def acquire(run: DrainRun, life: timedelta) -> Claim:
    """Take the lease for `run` if it is free or lapsed. The lease and the
    run's own copy of its expiry are written in one transaction: one commit
    (one WAL flush) instead of two on every tick, and no moment where the
    run holds a lease its row does not know of. Called inside the caller's
    transaction, it joins it (the drain creates its run in the same one)."""
    Lease.objects.get_or_create(name=DRAIN_LEASE)
    with transaction.atomic(savepoint=False):
        taken = (
            Lease.objects.filter(name=DRAIN_LEASE)
            .filter(Q(holder__isnull=True) | Q(expires_at__lte=Now()))
            .update(
                holder=run.public_id,
                expires_at=from_now(life),
                acquired_at=Now(),
                renewed_at=Now(),
            )
        )
        if taken == 1:
            DrainRun.objects.filter(pk=run.pk).update(lease_expires=from_now(life))
    if taken == 1:
        run.refresh_from_db(fields=["lease_expires"])
        return Claim(acquired=True, holder=run.public_id)
    holder = (
        Lease.objects.filter(name=DRAIN_LEASE).values_list("holder", flat=True).first()
    )
    return Claim(acquired=False, holder=holder)


def renew(run: DrainRun, margin: timedelta) -> bool:
    """Push the lease to at least `margin` from the database's now, only if
    `run` still holds it (it never shortens it). False: it was taken over."""
    later = Greatest("expires_at", from_now(margin))
    held = (
        Lease.objects.filter(name=DRAIN_LEASE, holder=run.public_id).update(
            expires_at=later, renewed_at=Now()
        )
        == 1
    )
    if held:
        # The run row says when it would be taken for dead (dead_runs).
        DrainRun.objects.filter(pk=run.pk, status=DrainRun.Status.RUNNING).update(
            lease_expires=Greatest("lease_expires", from_now(margin))
        )
    return held


def release(run: DrainRun) -> None:
    Lease.objects.filter(name=DRAIN_LEASE, holder=run.public_id).update(
        holder=None, expires_at=Now()
    )


def dead_runs(current: DrainRun) -> list[DrainRun]:
    """Runs that took the lease and are still "running" after it lapsed: their
    process died (killed worker, OOM, host lost), or lost the database for
    longer than the lease's margin (it stops on its own)."""
    return list(
        DrainRun.objects.filter(
            status=DrainRun.Status.RUNNING,
            lease_expires__isnull=False,
            lease_expires__lte=Now(),
        ).exclude(pk=current.pk)
    )


def margin() -> timedelta:
    return timedelta(milliseconds=settings.DRAIN_LEASE_MARGIN_MS)


# Held while a renewal talks to the database, and across os.fork(): a forked
# drain child never inherits a half-done renewal's locks (ops/engine/drain.py
# forks its queue workers while the renewal thread runs).
_RENEWING = threading.Lock()
os.register_at_fork(
    before=_RENEWING.acquire,
    after_in_parent=_RENEWING.release,
    after_in_child=_RENEWING.release,
)

RENEWAL_THREAD = "kaireon-lease-renew"


class Renewal:
    """Keeps `run`'s lease alive while the drain runs.

    `start()` renews from a thread every margin / 3; where the drain runs
    inside a database transaction (a thread's separate connection would not
    see its rows), `tick()` renews from the drain's own loop instead. `lost`
    is set when a renewal changes no row (taken over) or when no renewal has
    succeeded for 2/3 of the margin (the database is out of reach: someone
    else may take the lease soon)."""

    def __init__(self, run: DrainRun, margin_: timedelta | None = None) -> None:
        self.run = run
        self.margin = margin_ or margin()
        self.every_s = self.margin.total_seconds() / 3
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = time.monotonic()
        self._next = time.monotonic() + self.every_s

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=RENEWAL_THREAD, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def tick(self) -> None:
        """Renew from the caller's thread when due (no-op with a thread)."""
        if self._thread is None and time.monotonic() >= self._next:
            self._renew_once()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.every_s):
                self._renew_once()
        finally:
            connections.close_all()  # this thread's own connection

    def _renew_once(self) -> None:
        self._next = time.monotonic() + self.every_s
        if self.lost.is_set():
            return
        try:
            with _RENEWING:
                held = renew(self.run, self.margin)
        except Exception as exc:  # the database is unreachable, or busy
            silent = time.monotonic() - self._last_ok
            log.warning("drain %s: lease renewal failed: %s", self.run.public_id, exc)
            if silent >= self.margin.total_seconds() * 2 / 3:
                log.error(
                    "drain %s: no lease renewal for %.0f s: stopping",
                    self.run.public_id,
                    silent,
                )
                self.lost.set()
            return
        if held:
            self._last_ok = time.monotonic()
        else:
            log.error(
                "drain %s: lost the drain lease to another drain: stopping",
                self.run.public_id,
            )
            self.lost.set()
