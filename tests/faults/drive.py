"""Run a manage.py command the way manage.py does, with two test-only twists
that need no hook in the product:

- `--barrier PATH --ready PATH`: once Django is set up (the slow, jittery part
  of a start), touch `ready` and wait for `barrier` to exist. Two processes
  released by one barrier call the command within milliseconds of each other.
- `--skew-s N`: this "host"'s clock runs N seconds ahead (a faketime for
  Python): time.time/time_ns and django.utils.timezone.now are shifted before
  Django loads, so model defaults (DrainRun.started) and the forked queue
  workers see the same skewed clock. The database's clock is not touched.

    python -m tests.faults.drive [--barrier B --ready R] [--skew-s N] -- drain --json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path


def skew_clock(seconds: float) -> None:
    real_time, real_time_ns = time.time, time.time_ns
    shift_ns = int(seconds * 1e9)
    time.time = lambda: real_time() + seconds  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + shift_ns  # type: ignore[assignment]

    from django.utils import timezone

    real_now = timezone.now
    timezone.now = lambda: real_now() + timedelta(seconds=seconds)  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.drive")
    parser.add_argument("--barrier", default="")
    parser.add_argument("--ready", default="")
    parser.add_argument("--skew-s", type=float, default=0.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    if args.skew_s:
        skew_clock(args.skew_s)
    import django

    django.setup()
    if args.barrier:
        Path(args.ready).touch()
        deadline = time.monotonic() + 30
        while not Path(args.barrier).exists() and time.monotonic() < deadline:
            time.sleep(0.002)

    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", *command])


if __name__ == "__main__":
    main()
    sys.exit(0)
