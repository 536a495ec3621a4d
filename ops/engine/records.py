"""Per-job records: the `record` report line and its writer to the database.

Every executor child reports each job it ran as one line on its report pipe,
right before the job's `end` line:

    record {"job":"…","queue":"…","func":"…","status":"failed",
            "started":"2026-01-02T03:04:05.123456+00:00","ended":"…",
            "exc_type":"ZeroDivisionError","exc_message":"division by zero"}

(on a single line: compact JSON, whose strings never hold a raw newline). The
engine parses it with `parse_record` and stores it with a `RecordWriter` (one
`bulk_create` per batch) as a `JobRecord`, so a job's history costs no Redis
command to read. This module is the one place that knows the format: children
build lines with `record_line`, the engine reads them with `parse_record`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, transaction

if TYPE_CHECKING:
    from ops.models import DrainRun, JobRecord

log = logging.getLogger(__name__)

PREFIX = "record "

# Executor children import this module before Django is set up, so it cannot
# load ops.models at import time: JobRecord's statuses and column sizes are
# spelled out here (tests/engine/test_records.py checks that they agree).
FINISHED = "finished"
FAILED = "failed"
RETRIED = "retried"  # failed, then requeued or scheduled by its Retry
ABANDONED = "abandoned"  # its worker died (AbandonedJobError)
REQUEUED = "requeued"  # claimed but never started, put back
STATUSES = frozenset({FINISHED, FAILED, RETRIED, ABANDONED, REQUEUED})

# A value over its column fails the whole batch on PostgreSQL: both ends cut.
JOB_ID_MAX = 128
QUEUE_MAX = 100
FUNC_MAX = 255
EXC_TYPE_MAX = 200
EXC_MESSAGE_MAX = 2000
WORKER_MAX = 200
DURATION_MS_MAX = 2**31 - 1  # a PositiveIntegerField on every database

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # RQ's timestamps are UTC, naive or not
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def record_line(
    *,
    job_id: str,
    queue: str,
    func: str,
    status: str,
    started: datetime | None,
    ended: datetime | None,
    exc_type: str = "",
    exc_message: str = "",
) -> str:
    """The report line of one job run (no trailing newline)."""
    data: dict[str, Any] = {
        "job": job_id[:JOB_ID_MAX],
        "queue": queue[:QUEUE_MAX],
        "func": (func or "")[:FUNC_MAX],
        "status": status,
        "started": _iso(started),
        "ended": _iso(ended),
    }
    if exc_type:
        data["exc_type"] = exc_type[:EXC_TYPE_MAX]
    if exc_message:
        data["exc_message"] = exc_message[:EXC_MESSAGE_MAX]
    # ensure_ascii: newlines, U+2028 and every non-ASCII character become
    # escapes, so the line is one line whatever the message holds.
    return PREFIX + json.dumps(data, separators=(",", ":"))


def exception_fields(
    exc: ExcInfo | BaseException | None,
) -> tuple[str, str]:
    """(type name, message) of an exception or a sys.exc_info() tuple, e.g.
    ("ZeroDivisionError", "division by zero"); ("", "") for none."""
    kind: Any = None
    if isinstance(exc, tuple):
        kind = exc[0] if exc else None
        value = exc[1] if len(exc) > 1 else None
    else:
        value = exc
    if value is not None:
        kind = type(value)
    if kind is None:
        return "", ""
    name = getattr(kind, "__name__", None) or str(kind)
    try:
        message = "" if value is None else str(value)
    except Exception:  # an exception whose __str__ fails
        message = f"<unprintable {name}>"
    return name[:EXC_TYPE_MAX], message[:EXC_MESSAGE_MAX]


class _Malformed(Exception):
    pass


def _text(value: Any, limit: int, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _Malformed
    return value[:limit]


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Malformed
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Malformed from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_record(payload: str) -> dict[str, Any] | None:
    """The fields of a JobRecord from a line's text after "record ", with
    `duration_ms` computed; None for anything malformed. Never raises."""
    try:
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            return None
        record: dict[str, Any] = {
            "job_id": _text(data.get("job"), JOB_ID_MAX, required=True),
            "queue": _text(data.get("queue"), QUEUE_MAX, required=True),
            "func": _text(data.get("func"), FUNC_MAX),
            "status": data["status"],
            "started": _moment(data.get("started")),
            "ended": _moment(data.get("ended")),
            "duration_ms": None,
            "exc_type": _text(data.get("exc_type"), EXC_TYPE_MAX),
            "exc_message": _text(data.get("exc_message"), EXC_MESSAGE_MAX),
        }
    except (_Malformed, ValueError, TypeError, RecursionError):
        return None
    started, ended = record["started"], record["ended"]
    if started is not None and ended is not None:
        elapsed = (ended - started) // timedelta(milliseconds=1)
        record["duration_ms"] = min(max(0, elapsed), DURATION_MS_MAX)
    return record


class RecordWriter:
    """Buffers parsed records of one run and writes them in one bulk_create."""

    def __init__(self, *, run: DrainRun | None = None, worker: str = "") -> None:
        self.run = run
        self.worker = worker
        self._buffer: list[JobRecord] = []

    def __len__(self) -> int:
        return len(self._buffer)

    def add(self, data: dict[str, Any], *, worker: str = "") -> None:
        """Buffer one record (a `parse_record` result) of the worker `worker`
        (default: the writer's)."""
        from ops.models import JobRecord

        self._buffer.append(
            JobRecord(
                job_id=data["job_id"],
                queue=data["queue"],
                func=data.get("func", ""),
                status=data["status"],
                started=data.get("started"),
                ended=data.get("ended"),
                duration_ms=data.get("duration_ms"),
                exc_type=data.get("exc_type", ""),
                exc_message=data.get("exc_message", ""),
                run=self.run,
                worker=(worker or self.worker)[:WORKER_MAX],
            )
        )

    def flush(self) -> int:
        """Write what is buffered; returns how many rows. A database error is
        logged and the buffer dropped (the drain goes on without its records)."""
        from ops.models import JobRecord

        if not self._buffer:
            return 0
        rows, self._buffer = self._buffer, []
        try:
            # A savepoint when called inside a transaction: a failed insert
            # must not break the caller's transaction.
            with transaction.atomic():
                JobRecord.objects.bulk_create(rows)
        except DatabaseError:
            log.exception("could not write %d job records; dropped", len(rows))
            return 0
        return len(rows)
