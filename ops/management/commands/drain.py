from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ops.engine.background import NotQueued, run_queued
from ops.engine.drain import ErrorCode, drain
from ops.engine.drain_options import DrainOptionError, parse_options
from ops.engine.results import drain_result, summary_line
from ops.models import DrainRun

# Exit statuses, for cron wrappers and scripts.
EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_SKIPPED = 3
EXIT_REDIS_UNAVAILABLE = 4
EXIT_QUOTA_EXHAUSTED = 5

_FLAGS = {
    "maxDurationMs": "--max-duration-ms",
    "maxConcurrentQueues": "--max-concurrent-queues",
    "queues": "--queue",
}


class Command(BaseCommand):
    # A cron runs this every few minutes: skip Django's system checks (~40 ms of
    # CPU and a database query each time); `manage.py check` runs them.
    requires_system_checks: list[str] = []
    help = (
        "Drain the queues once: process what is queued within a time budget, then "
        "exit. Exit status: 0 drained, 1 jobs failed, 2 bad input, 3 skipped "
        "(another drain is running), 4 Redis unreachable, 5 Redis command quota "
        "exhausted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # Parsed as text so that bad values get our message, not argparse's.
        parser.add_argument(
            "--max-duration-ms",
            metavar="MS",
            help="time budget in ms (default DRAIN_MAX_DURATION_MS; above 600000 "
            "it is clamped)",
        )
        parser.add_argument(
            "--max-concurrent-queues",
            metavar="N",
            help="queues drained at once (default DRAIN_MAX_CONCURRENT_QUEUES)",
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="drain only this queue (repeatable; default: every enabled queue)",
        )
        parser.add_argument(
            "--json", action="store_true", help="print the result as JSON"
        )
        parser.add_argument(
            "--run-id",
            metavar="ID",
            help="run a drain the console queued (its options are the run's; "
            "no other option applies); the console starts this itself",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["run_id"] is not None:
            run = self._queued_run(opts)
        else:
            run = self._new_run(opts)
        if opts["json"]:
            self.stdout.write(json.dumps(drain_result(run), indent=2))
        else:
            for field, change in (run.params.get("clamped") or {}).items():
                self.stderr.write(
                    f"{_FLAGS.get(field, field)} clamped from {change['requested']} "
                    f"to {change['applied']}"
                )
            self.stdout.write(f"drain {run.public_id} {summary_line(run)}")

        code = _exit_status(run)
        if code != EXIT_OK:
            sys.exit(code)

    def _queued_run(self, opts: dict[str, Any]) -> DrainRun:
        given = [
            _FLAGS[key]
            for key, name in (
                ("maxDurationMs", "max_duration_ms"),
                ("maxConcurrentQueues", "max_concurrent_queues"),
                ("queues", "queues"),
            )
            if opts[name] is not None
        ]
        if given:
            raise CommandError(
                f"--run-id runs a queued run with its own options: drop "
                f"{', '.join(given)}",
                returncode=EXIT_BAD_INPUT,
            )
        text = opts["run_id"].strip()
        if not text.isascii() or not text.isdecimal():
            raise CommandError(
                f"--run-id: must be a drain run's number, got {text[:40]!r}",
                returncode=EXIT_BAD_INPUT,
            )
        try:
            return run_queued(int(text))
        except NotQueued as exc:
            raise CommandError(f"--run-id: {exc}", returncode=EXIT_BAD_INPUT) from None

    def _new_run(self, opts: dict[str, Any]) -> DrainRun:
        try:
            options = parse_options(
                max_duration_ms=opts["max_duration_ms"],
                max_concurrent_queues=opts["max_concurrent_queues"],
                queues=opts["queues"],
            )
        except DrainOptionError as exc:
            raise CommandError(
                f"{_FLAGS.get(exc.field, exc.field)}: {exc.message}",
                returncode=EXIT_BAD_INPUT,
            ) from None

        caller = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
        # This process does nothing else: fork the queue workers rather than
        # start fresh interpreters (~0.7 s of start-up each).
        return drain(
            trigger=DrainRun.Trigger.CLI,
            options=options,
            caller=caller,
            fork_children=True,
        )


def _exit_status(run: DrainRun) -> int:
    if run.status == DrainRun.Status.SKIPPED:
        return EXIT_SKIPPED
    if run.error_code == ErrorCode.REDIS_UNAVAILABLE:
        return EXIT_REDIS_UNAVAILABLE
    if run.error_code == ErrorCode.REDIS_QUOTA_EXHAUSTED:
        # Not "jobs failed": no job ran, or the rest wait for the quota.
        return EXIT_QUOTA_EXHAUSTED
    if run.status == DrainRun.Status.FAILED or run.total_failed:
        return EXIT_JOBS_FAILED
    return EXIT_OK
