"""A rate limit kept in the database: it holds across gunicorn workers and
hosts, costs no Redis command, and admits no overshoot under concurrency.

GCRA (the generic cell rate algorithm) in one row per client and endpoint:
`tat` is the theoretical arrival time of the next request. A request at `now`
is admitted iff tat <= now + burst_window, and admitting it sets
tat = max(tat, now) + interval. Both happen in one conditional UPDATE, so two
processes can never both take the last slot. Unlike a fixed window it cannot
admit twice the limit across a minute boundary.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.db.models import F, Value
from django.db.models.functions import Greatest

from ops.cron.client_ip import bucket
from ops.models import RateBucket

WINDOW_S = 60.0
# Buckets whose tat is this far in the past are back to a full burst: deleting
# them loses nothing.
_STALE_AFTER_S = WINDOW_S
_last_prune = 0.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0


def hit(key: str, *, per_minute: int, now: float | None = None) -> Decision:
    """Count one request under `key`, "<endpoint>:<client address>": the
    address part is counted under its bucket (client_ip.bucket), so an IPv4
    client and its IPv4-mapped form share one, and so does a whole IPv6 /64."""
    now = time.time() if now is None else now
    key = bucket_key(key)
    interval = WINDOW_S / per_minute
    burst_window = WINDOW_S - interval  # room for `per_minute` back-to-back hits
    RateBucket.objects.bulk_create(
        [RateBucket(key=key, tat=0.0)], ignore_conflicts=True
    )
    admitted = RateBucket.objects.filter(key=key, tat__lte=now + burst_window).update(
        tat=Greatest(F("tat"), Value(now)) + interval
    )
    _maybe_prune(now)
    if admitted:
        return Decision(allowed=True)
    tat = (
        RateBucket.objects.filter(key=key).values_list("tat", flat=True).first() or now
    )
    return Decision(
        allowed=False, retry_after_s=max(1, math.ceil(tat - burst_window - now))
    )


def bucket_key(key: str) -> str:
    endpoint, colon, address = key.partition(":")
    return f"{endpoint}:{bucket(address)}" if colon else key


def prune(now: float | None = None) -> int:
    now = time.time() if now is None else now
    deleted, _ = RateBucket.objects.filter(tat__lt=now - _STALE_AFTER_S).delete()
    return deleted


def _maybe_prune(now: float) -> None:
    # At most once a minute per process: the table stays as small as the set
    # of clients seen in the last minute or two.
    global _last_prune
    if now - _last_prune >= WINDOW_S:
        _last_prune = now
        prune(now)
