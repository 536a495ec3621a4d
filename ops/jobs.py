"""Job functions of the project: canary and demo jobs (`manage.py enqueue`).

They are importable by any RQ worker as `ops.jobs.<name>`.
"""

from __future__ import annotations

import os
import time


def noop() -> str:
    return "ok"


def sleep(ms: int) -> str:
    time.sleep(ms / 1000)
    return f"slept {ms} ms"


class CanaryFailure(RuntimeError):
    pass


def fail() -> None:
    raise CanaryFailure("canary job failed on purpose")


def crash() -> None:
    # Ends the process at once, without unwinding: what a segfault or an OOM
    # kill looks like to the worker running the job.
    os._exit(13)


KINDS = {"noop": noop, "sleep": sleep, "fail": fail, "crash": crash}
