"""Idle drains in a process of their own, timed (the scale benchmark's prune
phase starts this beside the prune).

    python -m bench.idle_drainer [--every-s 0.2] [--before 10]

In production the prune and the drains never share a Python process: the
cron endpoint's drain and prune are separate requests to gunicorn's sync
workers, `manage.py drain` and `manage.py prune` are separate commands, and
django-q's workers are processes. A drain in a thread of the process that
runs the prune would also wait for that process's interpreter lock, which no
deployment does; so the benchmark measures the drain here, in its own
process, against the same database.

The environment (DATABASE_URL, REDIS_URL, ...) is the caller's. Protocol:
after a warm-up and `--before` drains with nothing else running, it prints
one line `ready` on stdout; it then runs an idle drain every `--every-s`
until its stdin closes, and prints one line of JSON: the drains' times
before and during (ms), and the slowest drains (when, and their slowest
statements or commits).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_drainer")
    parser.add_argument("--every-s", type=float, default=0.2)
    parser.add_argument("--before", type=int, default=10)
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.db import connection

    from ops.engine.drain import drain
    from ops.engine.drain_options import parse_options
    from ops.models import DrainRun

    def one() -> float:
        t0 = time.perf_counter()
        drain(
            trigger=DrainRun.Trigger.CLI, options=parse_options(), caller="bench idle"
        )
        return (time.perf_counter() - t0) * 1000

    for _ in range(5):  # warm the drain path before measuring
        one()
    before = [one() for _ in range(args.before)]

    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    statements: list[tuple[float, str]] = []

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append(((time.perf_counter() - t0) * 1000, sql[:70]))

    # Commits are not statements to Django: timed apart, since a commit
    # waits for its WAL flush, and so for the disk the prune keeps busy.
    commit = connection._commit

    def timed_commit() -> None:
        t0 = time.perf_counter()
        try:
            commit()
        finally:
            statements.append(((time.perf_counter() - t0) * 1000, "COMMIT"))

    connection._commit = timed_commit  # type: ignore[method-assign]
    during: list[tuple[float, float, list[tuple[float, str]]]] = []
    print("ready", flush=True)
    with connection.execute_wrapper(timed):
        while not stop.is_set():
            statements.clear()
            at = time.time()
            ms = one()
            during.append((ms, at, sorted(statements, reverse=True)[:2]))
            stop.wait(args.every_s)
    slowest = sorted(during, key=lambda d: d[0], reverse=True)[:3]
    print(
        json.dumps(
            {
                "beforeMs": [round(ms, 1) for ms in before],
                "duringMs": [round(ms, 1) for ms, _, _ in during],
                "slowest": [
                    {
                        "ms": round(ms, 1),
                        "at": time.strftime("%H:%M:%S", time.localtime(at))
                        + f".{int(at % 1 * 1000):03d}",
                        "statements": [[round(t, 1), sql] for t, sql in top],
                    }
                    for ms, at, top in slowest
                ],
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
