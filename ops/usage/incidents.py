"""Quota incidents: opened by the first "quota exhausted" answer,
closed by the first successful probe.

While one is open, code that would talk to Redis asks `gate()` first: at most
one caller per QUOTA_PROBE_COOLDOWN_S is let through (its first command is the
probe); everyone else gets a refusal without sending anything, so a dead quota
is not hammered by every drain tick and page view. Claims are conditional
UPDATEs, so this holds across processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from ops.models import QuotaIncident
from ops.usage import provider
from ops.usage.quota_errors import is_quota_exhausted
from ops.usage.redis_client import CommandMeter, close_client, make_client


@dataclass(frozen=True)
class Gate:
    allowed: bool
    probing: QuotaIncident | None = None  # set when this caller is the probe
    incident: QuotaIncident | None = None

    def refusal(self) -> str:
        incident = self.incident
        assert incident is not None
        next_probe = (incident.last_probe_at or incident.opened_at) + timedelta(
            seconds=settings.QUOTA_PROBE_COOLDOWN_S
        )
        return (
            f"The Redis command quota is exhausted (incident open since "
            f"{incident.opened_at:%Y-%m-%d %H:%M} UTC). Redis is not contacted until "
            f"the next probe, after {next_probe:%H:%M:%S} UTC."
        )


def open_incident() -> QuotaIncident | None:
    return QuotaIncident.objects.filter(closed_at__isnull=True).first()


def gate() -> Gate:
    """May this caller talk to Redis now? One database read when no incident."""
    incident = open_incident()
    if incident is None:
        return Gate(allowed=True)
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.QUOTA_PROBE_COOLDOWN_S)
    claimed = (
        QuotaIncident.objects.filter(pk=incident.pk, closed_at__isnull=True)
        .filter(Q(last_probe_at__isnull=True) | Q(last_probe_at__lte=cutoff))
        .update(last_probe_at=now, probes=F("probes") + 1)
    )
    if claimed:
        return Gate(allowed=True, probing=incident, incident=incident)
    return Gate(allowed=False, incident=incident)


def succeeded(gate_: Gate) -> None:
    """The caller's Redis commands went through: a probe closes the incident."""
    if gate_.probing is not None:
        QuotaIncident.objects.filter(
            pk=gate_.probing.pk, closed_at__isnull=True
        ).update(closed_at=timezone.now(), open_marker=None)


def note_quota_error(source: str, exc: BaseException) -> QuotaIncident:
    """Record one "quota exhausted" answer: open the incident or count it, and
    keep the provider's `Usage: N` figure it carries (ops/usage/provider.py)."""
    now = timezone.now()
    provider.record_from_error(exc, at=now)
    message = str(exc)[:1000]
    for _ in range(3):
        updated = QuotaIncident.objects.filter(closed_at__isnull=True).update(
            last_seen_at=now, count=F("count") + 1, last_error=message
        )
        if updated:
            break
        try:
            with transaction.atomic():
                # The error itself is the latest probe: the next waits a cool-down.
                QuotaIncident.objects.create(
                    source=source, last_error=message, last_probe_at=now
                )
            break
        except IntegrityError:
            continue  # another process opened it a moment ago: count it there
    incident = open_incident()
    assert incident is not None
    return incident


@contextmanager
def noting_quota_errors(source: str) -> Iterator[None]:
    """Record a quota error raised inside the block (and let it propagate)."""
    try:
        yield
    except redis.ResponseError as exc:
        if is_quota_exhausted(exc):
            note_quota_error(source, exc)
        raise


@dataclass
class GuardedRead:
    """What `guarded_read` gives a caller and tells it afterwards."""

    meter: CommandMeter
    client: redis.Redis | None  # None: the gate refused, nothing may be sent
    refusal: str = ""
    exc: redis.RedisError | None = field(default=None)
    # This read is the probe of an open incident: its first command decides.
    probing: bool = False

    def execute(
        self, calls: Sequence[tuple[Any, ...]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Send `calls` (("llen", key), ("zcard", key), ...) in one pipeline
        and return the replies in order.

        As the probe of an open quota incident, the first call goes alone
        first: if the quota is still spent, the probe has cost one command
        and its error ends the read (the rest is never sent)."""
        assert self.client is not None, "the gate refused: nothing may be sent"
        replies: list[Any] = []
        if self.probing and calls:
            name, *args = calls[0]
            try:
                replies.append(getattr(self.client, name)(*args))
            except redis.ResponseError as exc:
                if raise_on_error or is_quota_exhausted(exc):
                    raise
                replies.append(exc)  # as the pipeline would have returned it
            calls = calls[1:]
        if calls:
            # transaction=False: a MULTI/EXEC pair would add two billed commands.
            with self.client.pipeline(transaction=False) as pipe:
                for name, *args in calls:
                    getattr(pipe, name)(*args)
                replies += pipe.execute(raise_on_error=raise_on_error)
        return replies

    @property
    def quota_exhausted(self) -> bool:
        return bool(self.refusal) or (
            self.exc is not None and is_quota_exhausted(self.exc)
        )

    def problem(self) -> str:
        """One sentence for a page: empty when the read went through."""
        if self.refusal:
            return self.refusal
        if self.exc is None:
            return ""
        if is_quota_exhausted(self.exc):
            return f"the Redis command quota is exhausted ({self.exc})"
        return f"{type(self.exc).__name__}: {self.exc}"


@contextmanager
def guarded_read(source: str) -> Iterator[GuardedRead]:
    """A metered client for a read that must never raise (pages, checks).

    Asks the incident gate first (no client when it refuses); a Redis error
    inside the block is kept in `.exc` instead of raised, a quota error opens
    or counts the incident, a read that went through closes a probing incident,
    and the connection is closed in every case. Send with `.execute`: when
    this read is the incident's probe, the probe then costs one command."""
    quota_gate = gate()
    meter = CommandMeter(source)
    if not quota_gate.allowed:
        yield GuardedRead(meter, None, refusal=quota_gate.refusal())
        return
    client = make_client(meter)
    read = GuardedRead(meter, client, probing=quota_gate.probing is not None)
    try:
        yield read
    except redis.RedisError as exc:
        read.exc = exc
        if is_quota_exhausted(exc):
            note_quota_error(source, exc)
    else:
        succeeded(quota_gate)
    finally:
        close_client(client)
