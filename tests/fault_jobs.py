"""Job functions of the fault-injection suite (tests/faults/): they keep the
ledger the suite asserts with.

Every run of a job appends lines to a ledger file: `start`, then `end` when its
function returns, `callback` when its on_success callback begins and `failure`
when its on_failure callback does. Each line
is `<event> <job id> <pid> <time_ns>`, written with one write() on a file
opened with O_APPEND: a write that small is atomic, so the processes of a
drain, a second drain and always-on workers can share one ledger without
interleaving. The job id comes from rq's get_current_job(), which both
executors (lean and rq) set, so the ledger says what actually ran, whatever
Redis says afterwards.

Drain children and always-on workers import them as `tests.fault_jobs.<name>`
(the engine puts the project root on their PYTHONPATH; tests/settings.py is
their settings module). The reading side is tests/faults/harness.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

# How long a job waits at most for a gate the test never opens: a killed test
# must not leave a job that blocks a worker for ever.
GATE_LIMIT_S = 20.0


def note(ledger: str, event: str, job_id: str) -> None:
    """Append one ledger line, atomically (O_APPEND, one write)."""
    line = f"{event} {job_id} {os.getpid()} {time.time_ns()}\n".encode()
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _current_id() -> str:
    from rq import get_current_job

    job = get_current_job()
    return job.id if job is not None else "?"


def _wait_for(gate: str, limit_s: float = GATE_LIMIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def step(
    ledger: str,
    gate: str = "",
    ms: int = 0,
    helper_s: int = 0,
    stubborn: bool = False,
) -> str:
    """A job that writes `start`, waits for the `gate` file to exist (or `ms`
    milliseconds), then writes `end`. A test kills its process between the two
    to kill it mid-job, or opens the gate to let it finish.

    `helper_s`: first fork a helper that lives that long holding every
    descriptor the job had except stdio (as a daemonised helper would; the
    report pipe too); it writes `helper` with its own pid. `stubborn`: swallow
    every exception while waiting, writing `swallowed` (a job that ignores
    being told to stop)."""
    job_id = _current_id()
    note(ledger, "start", job_id)
    if helper_s:
        _fork_helper(ledger, job_id, helper_s)
    deadline = time.monotonic() + (ms / 1000 if ms else GATE_LIMIT_S)
    while time.monotonic() < deadline and not (gate and Path(gate).exists()):
        if not (gate or ms):
            break
        try:
            time.sleep(0.01)
        except Exception:
            if not stubborn:
                raise
            note(ledger, "swallowed", job_id)
    note(ledger, "end", job_id)
    return job_id


def _fork_helper(ledger: str, job_id: str, seconds: int) -> None:
    if os.fork() == 0:  # the helper
        try:
            note(ledger, "helper", job_id)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            time.sleep(seconds)
        finally:
            os._exit(0)


def hold_in_callback(job: Any, connection: Any, result: Any) -> None:
    """An on_success callback that writes `callback`, then waits for the file
    in meta["callback_gate"]. Both executors run it after the job's function
    returned and before they write its outcome to Redis: a process killed here
    is killed "after the job ended, before its outcome was written"."""
    note(job.meta["ledger"], "callback", job.id)
    _wait_for(job.meta["callback_gate"])


def slow_failure(job: Any, connection: Any, *exc_info: Any) -> None:
    """An on_failure callback that writes `failure`, then takes
    meta["failure_ms"]: a callback still running after the drain's hard
    deadline killed its job."""
    note(job.meta["ledger"], "failure", job.id)
    time.sleep(job.meta["failure_ms"] / 1000)
