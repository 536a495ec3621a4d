from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ops.runtime import console_settings
from ops.scheduling import alarm, schedule

EXIT_OK = 0
EXIT_BAD_INPUT = 2
# --needs-cluster: no Schedule row exists, so a qcluster would have nothing to do.
EXIT_NO_CLUSTER_NEEDED = 3


class Command(BaseCommand):
    help = (
        "The built-in drain schedule (django-q2, run by `manage.py qcluster`): "
        "--every N turns it on, --off turns it off, --sync makes django-q2's "
        "Schedule rows match the stored settings (run it before starting "
        "qcluster), --status (the default) shows it. Sends no Redis command."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group()
        # Text, not type=int: a bad value gets our message and exit status 2.
        action.add_argument(
            "--every",
            metavar="N",
            help=f"drain every N minutes ({schedule.MIN_MINUTES}.."
            f"{schedule.MAX_MINUTES}) and turn the schedule on",
        )
        action.add_argument("--off", action="store_true", help="turn it off")
        action.add_argument(
            "--sync", action="store_true", help="sync the Schedule rows only"
        )
        action.add_argument(
            "--status", action="store_true", help="show the schedule (default)"
        )
        action.add_argument(
            "--needs-cluster",
            action="store_true",
            help=f"exit 0 when a qcluster has a schedule to run, "
            f"{EXIT_NO_CLUSTER_NEEDED} when not (after syncing)",
        )
        parser.add_argument(
            "--no-alarm",
            action="store_true",
            help="with --off: also turn the missed-tick alarm off (without it, "
            "the alarm keeps watching at the interval it had, now expected from an "
            "external scheduler)",
        )
        parser.add_argument(
            "--json", action="store_true", help="print the status as JSON"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["no_alarm"] and not opts["off"]:
            raise CommandError("--no-alarm goes with --off", returncode=EXIT_BAD_INPUT)
        row = console_settings()
        if opts["every"] is not None:
            minutes = self._minutes(opts["every"])
            result = schedule.update_settings(
                enabled=True,
                minutes=minutes,
                expected_interval_minutes=row.expected_interval_minutes,
                alarm_grace_minutes=row.alarm_grace_minutes,
            )
            self.stdout.write(f"schedule on, every {minutes} min ({result})")
        elif opts["off"]:
            result = schedule.update_settings(
                enabled=False,
                minutes=row.schedule_minutes,
                expected_interval_minutes=row.expected_interval_minutes,
                alarm_grace_minutes=row.alarm_grace_minutes,
                alarm_off=opts["no_alarm"],
            )
            kept = result.kept_alarm_minutes
            alarm_note = (
                f"; the alarm now expects an external scheduler every {kept} min"
                if kept
                else ""
            )
            self.stdout.write(f"schedule off ({result}){alarm_note}")
        elif opts["sync"]:
            self.stdout.write(f"synced ({schedule.sync()})")
        elif opts["needs_cluster"]:
            result = schedule.sync()
            if not result.cluster_needed:
                self.stdout.write("no schedule: qcluster is not needed")
                sys.exit(EXIT_NO_CLUSTER_NEEDED)
            self.stdout.write(f"qcluster is needed ({result})")
            return
        self._status(as_json=opts["json"])

    def _minutes(self, raw: str) -> int:
        text = raw.strip()
        if not text.isdigit() or not (
            schedule.MIN_MINUTES <= int(text) <= schedule.MAX_MINUTES
        ):
            raise CommandError(
                f"--every: must be a whole number of minutes from "
                f"{schedule.MIN_MINUTES} to {schedule.MAX_MINUTES}, got {raw!r}",
                returncode=EXIT_BAD_INPUT,
            )
        return int(text)

    def _status(self, *, as_json: bool) -> None:
        info = schedule.schedule_info()
        report = alarm.evaluate(row=info.settings)  # database only: no backlog age
        row = info.settings
        status = {
            "enabled": row.schedule_enabled,
            "everyMinutes": row.schedule_minutes,
            "nextRun": info.drain_row.next_run.isoformat()
            if info.drain_row and info.drain_row.next_run
            else None,
            "lastScheduledDrainAt": info.last_run.started.isoformat()
            if info.last_run
            else None,
            "alarmCheck": info.alarm_row is not None,
            "alarm": {
                key: value
                for key, value in report.as_json().items()
                if not key.startswith("oldestQueuedJob") and key != "backlogKnown"
            },
        }
        if as_json:
            self.stdout.write(json.dumps(status, indent=2))
            return
        state = (
            f"on, every {row.schedule_minutes} min" if row.schedule_enabled else "off"
        )
        self.stdout.write(f"schedule: {state}")
        self.stdout.write(f"next run: {status['nextRun'] or '-'}")
        self.stdout.write(
            f"last scheduled drain: {status['lastScheduledDrainAt'] or '-'}"
        )
        self.stdout.write(f"alarm: {report.state}: {report.headline}")
