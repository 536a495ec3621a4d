"""Validation of a drain's options, shared by every interface.

The cron endpoint, the admin form and `manage.py drain` all hand raw values to
`parse_options`; one place decides what is valid, what is clamped, and how the
error reads (it names the field, in the endpoint's spelling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from ops.queues import all_queue_names, enabled_queue_names


class DrainOptionError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class DrainOptions:
    max_duration_ms: int
    max_concurrent_queues: int
    queues: tuple[str, ...]  # in drain order
    # field -> {"requested": n, "applied": n} for values brought within limits
    clamped: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "maxDurationMs": self.max_duration_ms,
            "maxConcurrentQueues": self.max_concurrent_queues,
            "queues": list(self.queues),
        }
        if self.clamped:
            params["clamped"] = self.clamped
        return params


# Integers are decimal ASCII digits: str.isdigit() also accepts "²" or "٣",
# which int() refuses (or reads), so it is never the test.
_INTEGER = re.compile(r"-?[0-9]+")
# The largest integer every JSON parser reads exactly (RFC 8259 §6).
MAX_INTEGER = 2**53 - 1


def _shown(value: str) -> str:
    """A caller's value for an error message, cut short."""
    return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."


def _positive_int(field_name: str, value: Any) -> int:
    # bool is an int subclass; "true" as a duration is a caller's mistake.
    if isinstance(value, bool):
        raise DrainOptionError(field_name, "must be an integer, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise DrainOptionError(
                field_name, f"must be an integer, got {_shown(value)}"
            )
        negative = text.startswith("-")
        digits = text.lstrip("-").lstrip("0") or "0"
        if len(digits) > len(str(MAX_INTEGER)):  # before int(): 5,000 digits raise
            raise DrainOptionError(
                field_name,
                "must be at least 1" if negative else f"must be at most {MAX_INTEGER}",
            )
        value = -int(digits) if negative else int(digits)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise DrainOptionError(
            field_name, f"must be an integer, got {type(value).__name__}"
        )
    if value < 1:
        # A huge negative number has too many digits to print.
        shown = value if value >= -MAX_INTEGER else "a large negative number"
        raise DrainOptionError(field_name, f"must be at least 1, got {shown}")
    if value > MAX_INTEGER:
        raise DrainOptionError(field_name, f"must be at most {MAX_INTEGER}")
    return value


def parse_options(
    *,
    max_duration_ms: Any = None,
    max_concurrent_queues: Any = None,
    queues: Any = None,
) -> DrainOptions:
    clamped: dict[str, dict[str, int]] = {}

    enabled = enabled_queue_names()
    if queues is None:
        selected = enabled
    else:
        if isinstance(queues, str):
            queues = [q for q in queues.split(",") if q.strip()]
        if not isinstance(queues, list | tuple) or not all(
            isinstance(q, str) for q in queues
        ):
            raise DrainOptionError("queues", "must be a list of queue names")
        if not queues:
            raise DrainOptionError("queues", "must name at least one queue")
        wanted = {q.strip() for q in queues}
        known = set(all_queue_names())
        unknown = sorted(wanted - known)
        if unknown:
            raise DrainOptionError(
                "queues",
                f"unknown queue {', '.join(unknown)}; valid queues: "
                f"{', '.join(enabled) or '(none enabled)'}",
            )
        disabled = sorted(wanted - set(enabled))
        if disabled:
            raise DrainOptionError(
                "queues", f"queue {', '.join(disabled)} is disabled in the console"
            )
        selected = [q for q in enabled if q in wanted]  # keep priority order

    if max_duration_ms is None:
        duration = settings.DRAIN_MAX_DURATION_MS
    else:
        duration = _positive_int("maxDurationMs", max_duration_ms)
        cap = settings.DRAIN_MAX_DURATION_CAP_MS
        if duration > cap:
            clamped["maxDurationMs"] = {"requested": duration, "applied": cap}
            duration = cap

    limit = max(1, len(enabled))
    if max_concurrent_queues is None:
        concurrency = min(settings.DRAIN_MAX_CONCURRENT_QUEUES, limit)
    else:
        concurrency = _positive_int("maxConcurrentQueues", max_concurrent_queues)
        if concurrency > limit:
            raise DrainOptionError(
                "maxConcurrentQueues",
                f"must be between 1 and {limit} (the number of enabled queues), "
                f"got {concurrency}",
            )

    return DrainOptions(
        max_duration_ms=duration,
        max_concurrent_queues=concurrency,
        queues=tuple(selected),
        clamped=clamped,
    )
