from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ops.models import WorkerProcess
from ops.queues import all_queue_names
from ops.workers.supervisor import Supervisor


class Command(BaseCommand):
    help = (
        "Run always-on RQ workers, supervised: restarted with backoff when they "
        "crash, stopped warmly on SIGTERM. --role dedicated (default) always runs "
        "(a worker container of its own); --role inprocess runs beside "
        "the console and follows the worker mode set in the admin or by "
        "WORKER_INPROCESS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--role",
            default=WorkerProcess.Role.DEDICATED,
            help="dedicated (default) or inprocess",
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="consume only this queue (repeatable; default every enabled queue)",
        )
        parser.add_argument(
            "--per-queue",
            action="store_true",
            help="one worker process per queue (default: one process for all)",
        )
        parser.add_argument(
            "--poll-s",
            default="30",
            metavar="S",
            help="how often the worker mode and the queue list are re-read, "
            "in seconds (default: %(default)s)",
        )
        parser.add_argument(
            "--stop-grace-s",
            default="60",
            metavar="S",
            help="on SIGTERM, how long a running job may take to finish, in "
            "seconds (default: %(default)s)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        role = opts["role"]
        if role not in WorkerProcess.Role.values:
            raise CommandError(
                f"--role must be one of {', '.join(WorkerProcess.Role.values)}, "
                f"got {role!r}"
            )
        queues = opts["queues"]
        if queues:
            known = all_queue_names()
            unknown = sorted(set(queues) - set(known))
            if unknown:
                raise CommandError(
                    f"unknown queue {', '.join(unknown)}; valid queues: "
                    f"{', '.join(known)}"
                )
        grace = _seconds("--stop-grace-s", opts["stop_grace_s"], minimum=0)
        poll = _seconds("--poll-s", opts["poll_s"], minimum=0.1)
        supervisor = Supervisor(
            role=role,
            queues=queues,
            per_queue=opts["per_queue"],
            stop_grace_s=grace,
            poll_s=poll,
        )
        self.stdout.write(f"work: supervising {role} workers (Ctrl-C to stop)")
        supervisor.run()
        self.stdout.write("work: stopped")


def _seconds(flag: str, raw: str, *, minimum: float) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise CommandError(f"{flag} must be a number, got {raw!r}") from None
    if value < minimum:
        raise CommandError(f"{flag} must be at least {minimum:g}, got {value:g}")
    return value
