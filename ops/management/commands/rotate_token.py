from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ops.cron import tokens
from ops.models import TokenVersion


class Command(BaseCommand):
    help = (
        "Create the next cron token version of a scope and print it once. Versions "
        "still valid keep working for the grace period, so the scheduler can be "
        "updated without downtime."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scope",
            required=True,
            help="drain (only /api/v1/cron/drain-queues) or cron (all /api/v1/cron/*)",
        )
        parser.add_argument(
            "--grace-hours",
            default=None,
            metavar="N",
            help=f"hours the previous versions stay valid (default "
            f"{settings.TOKEN_GRACE_HOURS}; 0 = reject them now)",
        )
        parser.add_argument(
            "--label", default="", help="a note, e.g. 'cron-job.org' (default: none)"
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        scope = opts["scope"]
        if scope not in TokenVersion.Scope.values:
            raise CommandError(
                f"--scope must be one of {', '.join(TokenVersion.Scope.values)}, "
                f"got {scope!r}"
            )
        grace = None
        if opts["grace_hours"] is not None:
            try:
                hours = int(str(opts["grace_hours"]).strip())
            except ValueError:
                raise CommandError(
                    f"--grace-hours must be an integer, got {opts['grace_hours']!r}"
                ) from None
            if not 0 <= hours <= 24 * 90:
                raise CommandError(
                    f"--grace-hours must be between 0 and {24 * 90}, got {hours}"
                )
            grace = timedelta(hours=hours)
        if len(opts["label"]) > 100:
            raise CommandError("--label must be at most 100 characters")

        row, token = tokens.rotate(scope=scope, grace=grace, label=opts["label"])
        if opts["json"]:
            self.stdout.write(
                json.dumps({"scope": row.scope, "version": row.version, "token": token})
            )
            return
        self.stdout.write(
            f"{row.scope} token v{row.version} created. It is shown once:"
        )
        self.stdout.write(token)
        previous = TokenVersion.objects.filter(
            scope=scope, revoked_at__isnull=True, expires_at__isnull=False
        ).exclude(pk=row.pk)
        for old in previous:
            if old.is_valid():
                self.stdout.write(
                    f"v{old.version} ({old.prefix}…) stays valid until "
                    f"{old.expires_at:%Y-%m-%d %H:%M} UTC"
                )
