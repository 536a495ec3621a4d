"""`manage.py prune [--all] [--budget-s S] [--json]`: delete history older
than HISTORY_RETENTION_DAYS, as `POST /api/v1/cron/prune` does.

One call by default: batches of short transactions until the budget is spent
(ops/cron/retention.py), then it says how many old runs are left. `--all`
calls again until nothing old is left, for the first prune of a long history
(750,000 runs and 7,500,000 job records: 303 s, docs/benchmarks.md); drains go
on beside it. Database only: no Redis command.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ops.cron.retention import BUDGET_S, prune_history

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C
# A call's budget: beyond a few minutes a single call is what `--all` is for.
MAX_BUDGET_S = 300.0


class Command(BaseCommand):
    help = (
        "Delete drain runs, job records and the small histories older than "
        "HISTORY_RETENTION_DAYS, in short transactions, within a time budget; "
        "says how many old runs are left. No Redis command. Exit status: 0 done "
        "(or progress made), 2 bad input, 130 interrupted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # Parsed as text so that bad values get our message, not argparse's.
        parser.add_argument(
            "--budget-s",
            metavar="S",
            help=f"seconds one call keeps starting batches (default {BUDGET_S:g}, "
            f"at most {MAX_BUDGET_S:g})",
        )
        parser.add_argument(
            "--all",
            action="store_true",
            help="call again until nothing older than the retention is left "
            "(default: one call, as the cron endpoint does)",
        )
        parser.add_argument(
            "--json", action="store_true", help="print each call's result as JSON"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        budget_s = _budget(opts["budget_s"])
        calls = 0
        deleted: dict[str, int] = {}
        while True:
            try:
                result = prune_history(budget_s=budget_s)
            except KeyboardInterrupt:
                # Each batch is its own transaction: what was deleted is gone,
                # the batch interrupted rolled back, the next call goes on.
                raise CommandError(
                    "interrupted: the batches done are deleted; run it again to go on",
                    returncode=EXIT_INTERRUPTED,
                ) from None
            calls += 1
            for name, rows in result["deleted"].items():
                deleted[name] = deleted.get(name, 0) + rows
            if opts["json"]:
                self.stdout.write(json.dumps(result))
            elif opts["all"] and not result["complete"]:
                self.stderr.write(_progress(result))
            if result["complete"] or not opts["all"]:
                break
        if not opts["json"]:
            self.stdout.write(_summary(result, deleted, calls))


def _budget(raw: str | None) -> float | None:
    if raw is None:
        return None
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > MAX_BUDGET_S:
        raise CommandError(
            f"--budget-s: seconds between 0 and {MAX_BUDGET_S:g}, got {text[:40]!r}",
            returncode=EXIT_BAD_INPUT,
        )
    return value


def _progress(result: dict[str, Any]) -> str:
    done = result["deleted"]
    return (
        f"… {done['drainRuns']:,} runs and {done['jobRecords']:,} job records "
        f"deleted in {result['durationMs']:,} ms; "
        f"{result['remaining']['drainRuns']:,} old runs left"
    )


def _summary(result: dict[str, Any], deleted: dict[str, int], calls: int) -> str:
    days = settings.HISTORY_RETENTION_DAYS
    what = (
        f"pruned {deleted['drainRuns']:,} drain runs and "
        f"{deleted['jobRecords']:,} job records older than {days} days"
    )
    others = sum(
        rows
        for name, rows in deleted.items()
        if name not in ("drainRuns", "jobRecords")
    )
    if others:
        what += f" (and {others:,} other rows)"
    if calls > 1:
        what += f" in {calls} calls"
    if result["complete"]:
        return f"{what}: nothing older is left"
    left = result["remaining"]["drainRuns"]
    return f"{what}: {left:,} old runs left; run it again, or with --all"
