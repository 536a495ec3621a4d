"""Redis clients that cost nothing to open and count every command they send.

Every Redis client of the project comes from `make_client`. Two rules live here:

* Opening a connection sends nothing billable. redis-py 8 sends `HELLO 3`,
  `CLIENT MAINT_NOTIFICATIONS` and two `CLIENT SETINFO` on every new connection
  unless the client speaks RESP2 and has no driver info; a per-command-billed
  Redis bills all four, on every fresh process. Only `AUTH` (not billed) and
  `SELECT` (only for a non-zero db in the URL) can remain.
* Every command is counted on the client side, each command inside a pipeline
  or MULTI/EXEC included, because that is what a per-command-billed Redis bills.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from redis.connection import (
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)

from ops.models import Source
from ops.usage.metering import count_for_page, recorder

# Upstash documents these as not billed (docs/redis-billing.md).
UNBILLED_COMMANDS = frozenset({"AUTH", "INFO", "PING", "QUIT", "COMMAND"})


class CommandMeter:
    """Thread-safe count of the commands one client sent.

    Each command is also reported to the process's usage recorder under
    `source` (changeable while the client lives: a drain's idle check and its
    job work are billed to different sources), unless `record_usage` is off:
    a drain's child process reports its counts to its parent instead.
    """

    def __init__(
        self,
        source: str = "other",
        *,
        record_usage: bool = True,
        mirror: Callable[[int, int], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.by_command: Counter[str] = Counter()
        self.source = source
        self.record_usage = record_usage
        # Called with (billed, total) after every command: a child process
        # keeps its parent's copy current (ops/engine/children.py), so the counts
        # survive a job that kills the process.
        self.mirror = mirror
        self._billed = 0
        self._total = 0

    def record(self, name: str) -> None:
        billed = name not in UNBILLED_COMMANDS
        with self._lock:
            self.by_command[name] += 1
            self._total += 1
            self._billed += billed
            if self.mirror is not None:
                self.mirror(self._billed, self._total)
        if billed:
            count_for_page(1)
        if self.record_usage:
            recorder.add(self.source, int(billed), int(not billed))

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    @property
    def billed(self) -> int:
        with self._lock:
            return self._billed


def _command_name(args: tuple[Any, ...]) -> str:
    if not args:
        return "?"
    first = args[0]
    if isinstance(first, bytes):
        first = first.decode("ascii", "replace")
    # "CLIENT SETNAME" arrives as one string or as two arguments.
    return str(first).split(" ", 1)[0].upper()


class _CountingPacker:
    """Wraps redis-py's command packer: single commands and pipelines both
    pass through `pack`, once per command, so counting here misses nothing."""

    def __init__(self, inner: Any, meter: CommandMeter) -> None:
        self._inner = inner
        self._meter = meter

    def pack(self, *args: Any) -> Any:
        self._meter.record(_command_name(args))
        return self._inner.pack(*args)


class _MeteredMixin:
    def __init__(self, *args: Any, meter: CommandMeter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._command_packer = _CountingPacker(self._command_packer, meter)  # type: ignore[has-type]


class MeteredConnection(_MeteredMixin, Connection):
    pass


class MeteredSSLConnection(_MeteredMixin, SSLConnection):
    pass


class MeteredUnixConnection(_MeteredMixin, UnixDomainSocketConnection):
    pass


_METERED = {
    Connection: MeteredConnection,
    SSLConnection: MeteredSSLConnection,
    UnixDomainSocketConnection: MeteredUnixConnection,
}


# Options that would bring the connection handshake back (see the top).
_HANDSHAKE_OPTIONS = frozenset({"protocol", "driver_info", "lib_name", "lib_version"})


def _metered_pool(
    meter: CommandMeter, url: str | None, options: dict[str, Any]
) -> ConnectionPool:
    refused = sorted(_HANDSHAKE_OPTIONS & options.keys())
    if refused:
        raise TypeError(
            f"{', '.join(refused)}: a metered client speaks RESP2 without driver "
            "info, so that connecting sends no billed command"
        )
    kwargs = parse_url(url or settings.REDIS_URL)
    base_class = kwargs.pop("connection_class", Connection)
    kwargs.update(
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
    )
    kwargs.update(options)
    return ConnectionPool(
        connection_class=_METERED[base_class],
        meter=meter,
        protocol=2,
        driver_info=None,
        **kwargs,
    )


def make_client(
    meter: CommandMeter, *, url: str | None = None, **options: Any
) -> redis.Redis:
    """A Redis client whose connections send no handshake and count commands.

    `options` are redis-py connection options (`decode_responses=True`,
    `socket_timeout=…`); the ones that would add a handshake are refused."""
    return redis.Redis(connection_pool=_metered_pool(meter, url, options))


def metered_redis(
    url: str | None = None, *, source: str = Source.APP, **options: Any
) -> redis.Redis:
    """The one line for application code with its own redis-py client:

        from ops.usage.redis_client import metered_redis
        r = metered_redis()  # instead of redis.Redis.from_url(REDIS_URL)

    Every command it sends is booked under `source` (default "app") and shows
    on the quota page. `url` defaults to REDIS_URL; `options` are redis-py's
    (e.g. decode_responses=True). It speaks RESP2, so that connecting costs no
    command: code relying on RESP3-only replies must keep its own client."""
    if source not in Source.values:
        raise ValueError(
            f"source must be one of {', '.join(Source.values)}, not {source!r}"
        )
    return make_client(CommandMeter(source), url=url, **options)


# django-rq's connections: one metered pool per process and REDIS_URL, shared by
# every client django-rq builds (kaireon/settings.py hands it over through
# RQ_QUEUES' REDIS_CLIENT_KWARGS). Sharing it also spares each `get_queue()` a
# fresh TCP connection. redis-py's pool resets itself in a forked child.
_django_rq_pools: dict[str, ConnectionPool] = {}
_django_rq_lock = threading.Lock()


def django_rq_pool() -> ConnectionPool:
    url = settings.REDIS_URL
    with _django_rq_lock:
        pool = _django_rq_pools.get(url)
        if pool is None:
            pool = _metered_pool(CommandMeter(Source.DJANGO_RQ), url, {})
            _django_rq_pools[url] = pool
        return pool


def close_client(client: redis.Redis) -> None:
    client.connection_pool.disconnect()
