"""The one place that recognises "the Redis quota is exhausted".

Upstash answers every command with `ERR max requests limit exceeded. Limit: …`
once the monthly quota is gone (older daily variant: `ERR max daily request
limit exceeded`). redis-py raises ResponseError and strips the `ERR ` prefix.
"""

from __future__ import annotations

import re

import redis

# At the start of the message, or after the prefix redis-py puts on an error
# raised from a pipeline: "Command # 1 (LLEN rq:queue:x) of pipeline caused
# error: max requests limit exceeded…".
_QUOTA = re.compile(
    r"(?:^|of pipeline caused error: )"
    r"(?:ERR\s+)?max (?:daily )?requests? limit exceeded",
    re.IGNORECASE,
)


def is_quota_exhausted(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and bool(
        _QUOTA.search(str(exc).strip())
    )
