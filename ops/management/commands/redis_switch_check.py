from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from ops.inspection.switch_check import COST_FORMULA, SwitchCheck, switch_check
from ops.models import Source

# Exit statuses, for scripts that wait before switching. 4 is
# the drain command's "Redis unreachable" too.
EXIT_SAFE = 0
EXIT_NOT_SAFE = 1
EXIT_REDIS_UNAVAILABLE = 4

_COLUMNS = ("queued", "intermediate", "scheduled", "started", "deferred", "failed")


class Command(BaseCommand):
    help = (
        "Is it safe to move to another Redis now? Checks the "
        "empty-drain streak, the jobs still in Redis and the live workers. Costs "
        f"{COST_FORMULA} Redis commands. Exit status: 0 safe, 1 not safe, "
        "4 Redis unreachable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="print the result as JSON"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        # Not an admin page view, not a drain: billed under "other".
        check = switch_check(source=Source.OTHER)
        if opts["json"]:
            self.stdout.write(json.dumps(check.as_dict(), indent=2))
        else:
            self.stdout.write(verdict_line(check))
            for line in detail_lines(check):
                self.stdout.write(line)
        code = exit_status(check)
        if code != EXIT_SAFE:
            sys.exit(code)


def exit_status(check: SwitchCheck) -> int:
    if check.redis_unreachable:
        return EXIT_REDIS_UNAVAILABLE
    return EXIT_SAFE if check.safe else EXIT_NOT_SAFE


def verdict_line(check: SwitchCheck) -> str:
    if check.safe:
        return (
            f"SAFE to switch Redis: {check.consecutive_empty_drains} consecutive "
            f"empty drains (of {check.required_empty_drains} required), nothing "
            "pending, no live workers."
        )
    n = len(check.reasons)
    return f"NOT SAFE to switch Redis: {n} reason{'s' if n != 1 else ''}."


def detail_lines(check: SwitchCheck) -> list[str]:
    lines: list[str] = []
    if check.reasons:
        lines += ["", "Reasons:", *(f"  - {r}" for r in check.reasons)]
    if check.left_behind:
        lines += ["", "Left behind (not blocking):"]
        lines += [f"  - {item}" for item in check.left_behind]

    lines += [
        "",
        f"Empty-drain streak: {check.consecutive_empty_drains} of "
        f"{check.required_empty_drains} required.",
    ]
    for drain in check.recent_drains:
        when = timezone.localtime(drain.run.started).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"  {when}  {drain.run.status:<10} {drain.run.total_processed:>5} "
            f"processed  {drain.note}"
        )

    lines += ["", "Jobs in Redis per queue:"]
    if check.pending is None:
        lines.append("  unknown: Redis could not be read")
    else:
        width = max([len("queue"), *(len(name) + 11 for name in check.pending)])
        lines.append(f"  {'queue':<{width}}" + "".join(f" {c:>12}" for c in _COLUMNS))
        for name, pending in check.pending.items():
            label = name if pending.enabled else f"{name} (disabled)"
            values = "".join(f" {getattr(pending, c):>12}" for c in _COLUMNS)
            lines.append(f"  {label:<{width}}{values}")
    if check.unregistered:
        lines += [
            "",
            "Queues in rq:queues that are not on the Queues page (no drain runs "
            "them; register them in the console's Redis switch page):",
        ]
        width = max(len("queue"), *(len(name) for name in check.unregistered))
        lines.append(f"  {'queue':<{width}}" + "".join(f" {c:>12}" for c in _COLUMNS))
        for name, pending in check.unregistered.items():
            values = "".join(f" {getattr(pending, c):>12}" for c in _COLUMNS)
            lines.append(f"  {name:<{width}}{values}")

    lines += ["", f"Always-on workers alive: {len(check.live_workers)}"]
    lines += [
        f"  {w.name} on {w.host} (pid {w.pid}, {w.state}, queues "
        f"{', '.join(w.queues) or '-'})"
        for w in check.live_workers
    ]
    registered = (
        "unknown"
        if check.rq_registered_workers is None
        else check.rq_registered_workers
    )
    lines.append(f"RQ workers registered in Redis (rq:workers): {registered}")
    lines += [
        "",
        f"This check spent {check.redis_commands} Redis commands ({COST_FORMULA}: "
        f"{check.expected_redis_commands} here).",
    ]
    return lines
