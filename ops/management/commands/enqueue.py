from __future__ import annotations

import json
from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ops.engine.enqueue import MAX_COUNT, enqueue_canaries
from ops.jobs import KINDS
from ops.queues import all_queue_names
from ops.usage.quota_errors import is_quota_exhausted


class Command(BaseCommand):
    help = "Put canary/demo jobs on a queue (noop, sleep, fail, crash)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queue", help="queue name")
        parser.add_argument(
            "--count",
            default="1",
            metavar="N",
            help="jobs to enqueue (default: %(default)s)",
        )
        parser.add_argument(
            "--kind",
            default="noop",
            metavar="KIND",
            help=f"one of {', '.join(KINDS)} (default: %(default)s)",
        )
        parser.add_argument(
            "--sleep-ms",
            default="100",
            metavar="MS",
            help="duration of sleep jobs (default: %(default)s)",
        )
        parser.add_argument(
            "--timeout",
            default=None,
            metavar="S",
            help="job timeout in seconds (default: RQ's, 180)",
        )
        parser.add_argument(
            "--json", action="store_true", help="print the job ids as JSON"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        name = opts["queue"]
        known = all_queue_names()
        if name not in known:
            raise CommandError(
                f"unknown queue {name!r}; valid queues: {', '.join(known) or '(none)'}"
            )
        kind = opts["kind"]
        if kind not in KINDS:
            raise CommandError(
                f"--kind must be one of {', '.join(KINDS)}, got {kind!r}"
            )
        count = _int_option("--count", opts["count"], maximum=MAX_COUNT)
        sleep_ms = _int_option("--sleep-ms", opts["sleep_ms"], minimum=0)
        timeout = (
            None
            if opts["timeout"] is None
            else _int_option("--timeout", opts["timeout"])
        )
        try:
            job_ids = enqueue_canaries(
                name, kind=kind, count=count, sleep_ms=sleep_ms, timeout=timeout
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise CommandError(f"Redis is unreachable: {exc}", returncode=4) from None
        except redis.ResponseError as exc:
            if not is_quota_exhausted(exc):
                raise
            raise CommandError(
                f"The Redis command quota is exhausted: {exc}", returncode=4
            ) from None
        if opts["json"]:
            self.stdout.write(json.dumps({"queue": name, "jobIds": job_ids}))
        else:
            self.stdout.write(f"enqueued {len(job_ids)} {kind} job(s) on {name}")


def _int_option(
    flag: str, raw: str, *, minimum: int = 1, maximum: int | None = None
) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise CommandError(f"{flag} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise CommandError(f"{flag} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise CommandError(f"{flag} must be at most {maximum}, got {value}")
    return value
