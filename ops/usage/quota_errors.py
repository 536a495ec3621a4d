"""The one place that recognises "the Redis quota is exhausted", and reads the
provider's own figure out of it.

Upstash answers every command with `ERR max requests limit exceeded. Limit:
500000, Usage: 500000.` once the monthly quota is gone (older daily variant:
`ERR max daily request limit exceeded. Limit: …, Usage: …`). redis-py raises
ResponseError and strips the `ERR ` prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis

# At the start of the message, or after the prefix redis-py puts on an error
# raised from a pipeline: "Command # 1 (LLEN rq:queue:x) of pipeline caused
# error: max requests limit exceeded…".
_QUOTA = re.compile(
    r"(?:^|of pipeline caused error: )"
    r"(?:ERR\s+)?max (?P<daily>daily )?requests? limit exceeded",
    re.IGNORECASE,
)
# "Limit: 500000, Usage: 500000" (digits may carry thousands separators).
_LIMIT = re.compile(r"\bLimit:\s*(?P<n>\d[\d,]*)", re.IGNORECASE)
_USAGE = re.compile(r"\bUsage:\s*(?P<n>\d[\d,]*)", re.IGNORECASE)

MONTHLY = "monthly"
DAILY = "daily"


def is_quota_exhausted(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and bool(
        _QUOTA.search(str(exc).strip())
    )


@dataclass(frozen=True)
class ProviderFigure:
    """What the provider said it counted: `used` of `limit` this month (or
    today, for the daily variant)."""

    used: int
    limit: int | None
    kind: str  # MONTHLY or DAILY


def _number(match: re.Match[str] | None) -> int | None:
    return None if match is None else int(match.group("n").replace(",", ""))


def provider_figure(exc: BaseException) -> ProviderFigure | None:
    """The `Usage: N` of a quota error, or None when the error is not a quota
    error or carries no usage figure."""
    if not isinstance(exc, redis.ResponseError):
        return None
    text = str(exc).strip()
    quota = _QUOTA.search(text)
    if quota is None:
        return None
    # Only what follows the matched words: a pipeline's prefix quotes the
    # command, whose arguments could contain anything.
    rest = text[quota.end() :]
    used = _number(_USAGE.search(rest))
    if used is None:
        return None
    return ProviderFigure(
        used=used,
        limit=_number(_LIMIT.search(rest)),
        kind=DAILY if quota.group("daily") else MONTHLY,
    )
