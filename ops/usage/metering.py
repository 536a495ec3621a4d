"""Where every Redis command this project sends is counted and attributed.

Each client's meter (ops/usage/redis_client.py) forwards every command to the process
recorder below, tagged with the meter's source. The recorder keeps counts per
(source, hour) in memory and adds them to CommandUsage rows in the database —
never Redis — every METERING_FLUSH_INTERVAL_S (default 5) from a background
thread, at the end of each drain, and at normal process exit. Counting is an
in-memory increment under a lock: negligible beside a network round trip.

A process killed hard (SIGKILL, the OOM killer) runs no exit handler: it loses
the counts of its last METERING_FLUSH_INTERVAL_S seconds at most, the window
README.md documents. The database pays for that bound only while commands are
being sent: a flush with nothing pending sends no query, one with counts one
UPDATE per (source, hour) it holds, so at most one per interval per source.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connection
from django.db.models import F

log = logging.getLogger(__name__)


def _hour(ts: float) -> datetime:
    return datetime.fromtimestamp(ts - ts % 3600, tz=UTC)


class UsageRecorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (source, hour epoch) -> [billed, unbilled]
        self._pending: defaultdict[tuple[str, float], list[int]] = defaultdict(
            lambda: [0, 0]
        )
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()

    def add(
        self, source: str, billed: int, unbilled: int = 0, ts: float | None = None
    ) -> None:
        now = time.time() if ts is None else ts
        with self._lock:
            counts = self._pending[(source, now - now % 3600)]
            counts[0] += billed
            counts[1] += unbilled
        if self._thread is None:
            self._start_flusher()

    def after_fork_in_child(self) -> None:
        """A forked child starts with no counts of its own, fresh locks (the
        flusher thread may have held one at the fork) and no flusher thread."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending = defaultdict(lambda: [0, 0])
        self._thread = None

    def pending(self) -> dict[tuple[str, float], list[int]]:
        with self._lock:
            return {k: list(v) for k, v in self._pending.items()}

    def discard(self) -> None:
        with self._lock:
            self._pending.clear()

    def flush(self) -> int:
        """Write pending counts to the database. Returns the commands written.

        Counts that cannot be written (database down) go back to pending."""
        with self._flush_lock:
            with self._lock:
                batch = dict(self._pending)
                self._pending.clear()
            written = 0
            for (source, hour_ts), (billed, unbilled) in batch.items():
                try:
                    _increment(source, _hour(hour_ts), billed, unbilled)
                    written += billed + unbilled
                except DatabaseError:
                    log.warning(
                        "could not flush Redis usage; will retry", exc_info=True
                    )
                    with self._lock:
                        counts = self._pending[(source, hour_ts)]
                        counts[0] += billed
                        counts[1] += unbilled
            return written

    def _start_flusher(self) -> None:
        interval = settings.METERING_FLUSH_INTERVAL_S
        with self._lock:
            if self._thread is not None or interval <= 0:
                return
            self._thread = threading.Thread(
                target=self._run,
                args=(interval,),
                name="kaireon-usage-flush",
                daemon=True,
            )
        self._thread.start()

    def _run(self, interval: int) -> None:
        while True:
            time.sleep(interval)
            try:
                close_old_connections()
                self.flush()
            except Exception:  # the flusher must outlive a bad moment
                log.exception("usage flush failed")
            finally:
                connection.close()


def _increment(source: str, hour: datetime, billed: int, unbilled: int) -> None:
    from ops.models import CommandUsage

    for _ in range(3):
        updated = CommandUsage.objects.filter(hour=hour, source=source).update(
            commands=F("commands") + billed, unbilled=F("unbilled") + unbilled
        )
        if updated:
            return
        try:
            CommandUsage.objects.create(
                hour=hour, source=source, commands=billed, unbilled=unbilled
            )
            return
        except IntegrityError:
            continue  # another process created the row first: update it


recorder = UsageRecorder()
# The parent's unflushed counts stay the parent's: a fork must not book them
# twice (ops/engine/children.py forks drain workers).
os.register_at_fork(after_in_child=recorder.after_fork_in_child)

# Billable commands sent while serving the current admin page (see
# ops/console/middleware.py): what the page footer says the page cost.
_page_commands: ContextVar[list[int] | None] = ContextVar(
    "kaireon_page_commands", default=None
)


@contextmanager
def counting_page() -> Iterator[None]:
    token = _page_commands.set([0])
    try:
        yield
    finally:
        _page_commands.reset(token)


def count_for_page(billed: int) -> None:
    counter = _page_commands.get()
    if counter is not None:
        counter[0] += billed


def page_commands() -> int | None:
    """Billable commands the page being served has sent so far, if counted."""
    counter = _page_commands.get()
    return None if counter is None else counter[0]


@atexit.register
def _flush_at_exit() -> None:
    try:
        recorder.flush()
    except Exception:  # at exit there is no one left to tell but the log
        log.exception("usage flush at exit failed")
