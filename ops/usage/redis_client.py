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


def make_client(meter: CommandMeter, *, url: str | None = None) -> redis.Redis:
    """A Redis client whose connections send no handshake and count commands."""
    kwargs = parse_url(url or settings.REDIS_URL)
    base_class = kwargs.pop("connection_class", Connection)
    pool = ConnectionPool(
        connection_class=_METERED[base_class],
        meter=meter,
        protocol=2,
        driver_info=None,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
        **kwargs,
    )
    return redis.Redis(connection_pool=pool)


def close_client(client: redis.Redis) -> None:
    client.connection_pool.disconnect()
