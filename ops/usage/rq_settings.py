"""What kaireon/settings.py puts in RQ_QUEUES so that every Redis connection
django-rq hands out is metered (source "django-rq").

django-rq 4 builds a client per call (`get_connection`, `get_queue`,
`enqueue`) from the queue's settings; for a HOST/PORT entry it calls
`redis.Redis(host=…, port=…, **REDIS_CLIENT_KWARGS)`, and redis-py ignores
host and port when a `connection_pool` is among those arguments. So the entry
below passes the process's metered pool (ops/usage/redis_client.py), resolved
when django-rq first connects: no monkeypatching, and the pool follows
REDIS_URL at run time. No Django import here: the settings module loads it.

Not covered: django-rq's own dashboard, cron and Prometheus views, which
rebuild connections from a filtered copy of the settings (this project mounts
none of them), and `rq worker` processes started outside this project.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class MeteredClientKwargs(Mapping[str, Any]):
    """`REDIS_CLIENT_KWARGS` whose `connection_pool` is the metered pool."""

    def __getitem__(self, key: str) -> Any:
        if key != "connection_pool":
            raise KeyError(key)
        # Imported on first use: this module is loaded by the settings.
        from ops.usage.redis_client import django_rq_pool

        return django_rq_pool()

    def __iter__(self) -> Iterator[str]:
        yield "connection_pool"

    def __len__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        # django-rq's get_queues() compares queue settings for equality.
        return isinstance(other, MeteredClientKwargs)

    def __hash__(self) -> int:
        return hash(MeteredClientKwargs)

    def __repr__(self) -> str:
        return "MeteredClientKwargs(connection_pool=<metered, source django-rq>)"


def queue_settings(host: str | None, port: int | None) -> dict[str, Any]:
    """One RQ_QUEUES entry. HOST and PORT only satisfy django-rq's lookup (the
    pool, built from REDIS_URL, decides where it connects)."""
    return {
        "HOST": host or "localhost",
        "PORT": port or 6379,
        "REDIS_CLIENT_KWARGS": MeteredClientKwargs(),
    }
