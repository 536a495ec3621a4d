"""What a log line is about: the drain run, queue and job it was written for.

`with log_context(run_id=..., queue=...)` (or `bind(...)` inside a function
decorated `@scoped`) sets fields for everything logged inside it
(contextvars: per thread and per asyncio task, and inherited by a forked
child). `ContextFilter`, installed on the log handler by
kaireon/settings.py, copies them onto every record, where the JSON formatter
(LOG_FORMAT=json) writes them as keys. Fields not set are left out, not null.

A bottom-layer module with no Django import: the engine's executors and the
settings use it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# The fields a line may carry, in the order the JSON shows them.
FIELDS = ("run_id", "queue", "job_id", "worker")

# Never mutated in place: every change sets a new dict (an immutable mapping
# would do as well), so the shared default is safe.
_EMPTY: dict[str, str] = {}
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "kaireon_log_context", default=_EMPTY
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (of FIELDS; None values are skipped) to the log lines
    written inside the block."""
    token = _context.set({**_context.get(), **_check(fields)})
    try:
        yield
    finally:
        _context.reset(token)


def _check(fields: dict[str, Any]) -> dict[str, str]:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {', '.join(sorted(unknown))}")
    return {k: str(v) for k, v in fields.items() if v is not None}


def scoped(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` in a copy of the current context: what `bind` sets inside
    it ends with it. For a function that learns its fields halfway (a drain
    knows its run id once the row exists) without re-indenting its body."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return contextvars.copy_context().run(func, *args, **kwargs)

    return wrapper


def bind(**fields: Any) -> None:
    """Add `fields` to the log lines of the rest of the current context: only
    inside a `scoped` function (or a thread or process of one's own)."""
    _context.set({**_context.get(), **_check(fields)})


def current() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record (never drops one).
    A field the call already passed with `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
