"""Job functions used only by the tests. Drain children import them as
`tests.jobs.<name>` (the engine puts the project root on their PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def track(path: str, label: str, ms: int) -> str:
    """Append start/end timestamps to a file, to measure overlap across queues."""
    with open(path, "a") as out:
        out.write(f"start {label} {time.time():.6f}\n")
    time.sleep(ms / 1000)
    with open(path, "a") as out:
        out.write(f"end {label} {time.time():.6f}\n")
    return label


def sleep_then_mark(ms: int, marker: str) -> None:
    """Sleep, then leave a file behind: its absence proves the job was cut short."""
    time.sleep(ms / 1000)
    Path(marker).write_text(str(os.getpid()))


def mark_started(marker: str, ms: int) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(ms / 1000)


def add(a: int, b: int) -> int:
    return a + b


def mark_success(job, connection, result) -> None:
    """An on_success callback: leaves the job id and result in meta["marker"]."""
    Path(job.meta["marker"]).write_text(f"{job.id} {result}")


def count_run(path: str, label: str = "") -> str:
    """Append a line per run: the file's line count is how often it ran."""
    with open(path, "a") as out:
        out.write(f"{label}\n")
    return label


def count_then_sleep(path: str, ms: int) -> None:
    count_run(path, "sleeper")
    time.sleep(ms / 1000)


# --- the RQ-compatibility matrix (tests/engine/test_rq_compat.py) --------------


def count_then_fail(path: str, label: str = "") -> None:
    """Count the run, then fail: how many runs a Retry policy gets."""
    count_run(path, label)
    raise ValueError(f"{label} failed on purpose")


def count_then_return_retry(path: str, max_retries: int) -> object:
    """Count the run, then ask to be retried (rq 2.x: a job may return Retry)."""
    from rq import Retry

    count_run(path, "retry")
    return Retry(max=max_retries)


def _append_json(path: str, entry: dict) -> None:
    import json

    with open(path, "a") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")


def log_success(job, connection, result) -> None:
    """An on_success callback: one JSON line of what it was given, in
    meta["callback_log"]."""
    import redis

    _append_json(
        job.meta["callback_log"],
        {
            "callback": "success",
            "job": job.id,
            "connection": isinstance(connection, redis.Redis),
            "result": result,
        },
    )


def log_failure(job, connection, type, value, traceback) -> None:
    """An on_failure callback: one JSON line of what it was given, in
    meta["callback_log"]."""
    import types

    import redis

    _append_json(
        job.meta["callback_log"],
        {
            "callback": "failure",
            "job": job.id,
            "connection": isinstance(connection, redis.Redis),
            "type": type.__name__,
            "value": str(value),
            "traceback": isinstance(traceback, types.TracebackType),
        },
    )


def touch_meta(path: str, label: str) -> str | None:
    """Change the running job's meta through get_current_job() and save it;
    records what get_current_job() returned."""
    from rq import get_current_job

    job = get_current_job()
    _append_json(path, {"current_job": job.id if job is not None else None})
    if job is None:
        return None
    job.meta["touched"] = label
    job.meta["runs"] = job.meta.get("runs", 0) + 1
    job.save_meta()
    return job.id


def observe_while_running(path: str) -> str:
    """Record, from inside the job, what rq's public API says while it runs:
    the started and finished registries, its own status, the workers."""
    from rq import Worker, get_current_job
    from rq.job import Job
    from rq.registry import FinishedJobRegistry, StartedJobRegistry

    job = get_current_job()
    connection = job.connection
    _append_json(
        path,
        {
            "job": job.id,
            "started_registry": StartedJobRegistry(
                job.origin, connection=connection
            ).get_job_ids(),
            "finished_registry": FinishedJobRegistry(
                job.origin, connection=connection
            ).get_job_ids(),
            "own_status": Job.fetch(job.id, connection=connection).get_status().value,
            "workers": len(Worker.all(connection=connection)),
        },
    )
    return job.id


def fail_until(path: str) -> str:
    """Fails until the file exists: a job an operator fixes, then requeues."""
    if not Path(path).exists():
        raise RuntimeError(f"waiting for {path}")
    return "fixed"


# --- ledgers of the console's Stop (tests/engine/test_stop.py, tests/workers,
# tests/console) ------------------------------------------------------------------


def ledger_write(ledger: str, line: str) -> None:
    """One line in a ledger file the test reads: what the job itself saw."""
    with open(ledger, "a") as out:
        out.write(f"{line}\n")


def ledger_sleep_marked(ledger: str, label: str, seconds: float) -> str:
    """Write `start`, sleep, write `end`: a ledger with no `end` line proves
    the job was cut short."""
    ledger_write(ledger, f"start {label} {os.getpid()}")
    time.sleep(seconds)
    ledger_write(ledger, f"end {label}")
    return label


def fail_first_then_sleep(ledger: str, label: str, seconds: float) -> str:
    """The first run writes `failed` and raises (its Retry brings it back);
    a later run writes `start`, sleeps, writes `end`."""
    if not Path(ledger).exists() or f"failed {label}" not in Path(ledger).read_text():
        ledger_write(ledger, f"failed {label}")
        raise RuntimeError("the first run fails")
    return ledger_sleep_marked(ledger, label, seconds)
