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
