"""`manage.py quota [--json]`: the quota page's figures on the command line.

Reads the database only (CommandUsage, DrainRun, QuotaIncident,
ProviderUsageReading): running it from a cron job or a monitoring check costs
no Redis command.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from ops.models import QuotaIncident
from ops.usage import advisor, incidents, quota


class Command(BaseCommand):
    help = (
        "Show this billing period's Redis command usage against the budget, the "
        "projection to the period end and the worker-mode advisor. Reads the "
        "database only: no Redis command."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="print the figures as JSON"
        )
        parser.add_argument(
            "--at",
            metavar="ISO-DATETIME",
            help="compute as of this moment instead of now (UTC if no offset), "
            "e.g. 2025-03-10T12:00:00Z (default: now)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        now = quota.current_time() if opts["at"] is None else self._parse_at(opts["at"])
        advice = advisor.advice_now(now)
        report = quota.report(now, costs=advice.costs)
        incident = incidents.open_incident()
        if opts["json"]:
            data = quota.as_json(report, advice)
            data["advisorSummary"] = advice.summary_json()
            data["openIncident"] = _incident_json(incident)
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(summary_line(report, incident))
        for line in detail_lines(report, incident):
            self.stdout.write(line)
        self.stdout.write("")
        for line in advisor_lines(advice):
            self.stdout.write(line)

    @staticmethod
    def _parse_at(raw: str) -> datetime:
        try:
            moment = parse_datetime(raw.strip())
        except ValueError:
            moment = None
        if moment is None:
            raise CommandError(f"--at: not an ISO date and time: {raw!r}")
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        # Periods and run-out dates are UTC days: 23:00-05:00 is tomorrow there.
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-05:00
            raise CommandError(f"--at: out of range: {raw!r}") from None


def _incident_json(incident: QuotaIncident | None) -> dict[str, Any] | None:
    if incident is None:
        return None
    return {
        "openedAt": incident.opened_at.isoformat(),
        "lastSeenAt": incident.last_seen_at.isoformat(),
        "count": incident.count,
        "source": incident.source,
        "lastError": incident.last_error,
        "lastProbeAt": incident.last_probe_at.isoformat()
        if incident.last_probe_at
        else None,
        "probes": incident.probes,
    }


def summary_line(report: quota.Report, incident: QuotaIncident | None) -> str:
    head = report.summary
    line = (
        f"Redis quota: {head.used:,} of {head.budget:,} commands used "
        f"({head.used_percent:.1f} %), projected {head.projected_total:,} "
        f"({head.projected_percent:.0f} %) by {head.period.end:%Y-%m-%d}"
    )
    truth = report.truth
    if truth is not None and truth.basis != quota.TRUTH_METERS:
        line += (
            f"; with others' use {truth.used:,} used, projected "
            f"{truth.projected_total:,} ({truth.projected_percent:.0f} %)"
        )
    if head.exhausted:
        line += f"; budget spent on {report.exhausted_on:%Y-%m-%d}"
    elif report.exhausted_on:
        line += f"; runs out on {report.exhausted_on:%Y-%m-%d}"
    else:
        line += "; lasts the period"
    if incident is not None:
        line += "; QUOTA INCIDENT OPEN"
    return line + "."


def detail_lines(report: quota.Report, incident: QuotaIncident | None) -> list[str]:
    head = report.summary
    rates = head.rates
    crossed = ", ".join(f"{t} %" for t in head.crossed) or "none"
    rows = [
        (
            "Period",
            f"{head.period.start:%Y-%m-%d} to {head.period.end:%Y-%m-%d} (00:00 UTC), "
            f"{head.period.hours_left(head.now):,.0f} h left",
        ),
        (
            "Used",
            f"{head.used:,} ({head.used_percent:.1f} %), unbilled {report.unbilled:,}",
        ),
        (
            "Rate",
            f"{rates.last_24h:,.1f}/h over 24 h, {rates.last_7d:,.1f}/h over 7 days "
            f"(projection: {rates.basis_label})",
        ),
        ("Projected", f"{head.projected_total:,} ({head.projected_percent:.1f} %)"),
        (
            "Runs out",
            f"{report.exhausted_on:%Y-%m-%d}" + (" (already)" if head.exhausted else "")
            if report.exhausted_on
            else "not this period",
        ),
        (
            "Headroom",
            f"{report.headroom_jobs:,} more jobs this period at "
            f"{report.per_job_commands:,.1f} commands/job ({report.per_job_source})",
        ),
        (
            "Thresholds",
            f"{crossed} reached (of {', '.join(map(str, head.thresholds))} %)",
        ),
        (
            "Incident",
            "none open"
            if incident is None
            else f"open since {incident.opened_at:%Y-%m-%d %H:%M} UTC, "
            f"{incident.count} errors, source {incident.source}",
        ),
    ]
    truth = report.truth
    if truth is not None:
        others = "unknown" if truth.basis == quota.TRUTH_METERS else f"{truth.others:,}"
        rows += [
            (
                "By whom",
                f"console {truth.console:,}, application (metered) "
                f"{truth.application:,}, others {others}",
            ),
            ("Others from", truth.basis_note),
            (
                "Best total",
                f"{truth.used:,} ({truth.used_percent:.1f} %), projected "
                f"{truth.projected_total:,} ({truth.projected_percent:.1f} %)",
            ),
        ]
    for s in report.by_source:
        rows.append((f"  {s.source}", f"{s.commands:,} ({s.percent:.1f} %)"))
    if report.by_source:
        rows.insert(len(rows) - len(report.by_source), ("By source", ""))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}".rstrip() for name, value in rows]


def advisor_lines(advice: advisor.Advice) -> list[str]:
    lines = [
        f"Mode advisor ({advice.jobs_per_month:,.0f} jobs/month, 30-day month, "
        f"budget {advice.budget:,}):"
    ]
    header = ("", "mode", "latency", "commands/month", "% budget", "fits")
    table = [header]
    for row in advice.rows:
        fits = "yes" if row.fits_with_margin else ("tight" if row.fits else "no")
        table.append(
            (
                "*" if row.recommended else "",
                row.label,
                row.latency_label,
                f"{row.total:,}",
                f"{row.percent_of_budget:.1f}",
                fits,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    right = {3, 4}
    for r in table:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(r)
        ]
        lines.append("  ".join(cells).rstrip())
    recommended = advice.recommended.label if advice.recommended else "none"
    lines.append(f"* recommended: {recommended}. {advice.reason}")
    for what, value, source in advice.figures():
        lines.append(f"  {what}: {value} - {source}")
    return lines
