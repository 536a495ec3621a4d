"""The alerts besides the missed tick, evaluated from database state by the
periodic alarm check (ops/tasks.py, every minute), each sent once:

* quota threshold crossed: the period's used commands (the larger of the
  meters and the provider's figure, as on the quota page) reach a percentage
  of QUOTA_WARN_THRESHOLDS (80 %, 95 %): once per threshold and billing period;
* quota incident opened, and closed: once each per incident, for incidents
  that opened (or closed) within RECENT, so a first deploy does not announce
  old history;
* failed jobs: more than ALERT_FAILED_JOBS_PER_HOUR jobs failed or were
  abandoned in the last hour; sent when the count goes over, and "resolved"
  once when it is back at or under the threshold (which re-arms it).

"Once" holds across processes: a fired alert is an AlertState row whose
primary key only one evaluator can insert; the failed-jobs state flips by a
conditional UPDATE. The usage package never calls this: it only records.
Costs no Redis command (one aggregate over CommandUsage with the provider's
latest figure, a few small reads).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from ops.models import AlertEvent, AlertState, JobRecord, QuotaIncident
from ops.scheduling import alerts
from ops.scheduling.notify import console_url
from ops.usage import quota

log = logging.getLogger(__name__)

# How far back an incident's opening or closing is still news.
RECENT = timedelta(hours=1)
FAILED_JOBS_WINDOW = timedelta(hours=1)
FAILED_JOBS_KEY = "failed_jobs"
FIRING, CLEAR = "firing", "ok"
FAILED_STATUSES = (JobRecord.Status.FAILED, JobRecord.Status.ABANDONED)


def _claim(key: str, now: datetime) -> bool:
    """Insert the marker `key`; True for the one caller that inserted it."""
    try:
        with transaction.atomic():
            AlertState.objects.create(key=key, state="sent", changed_at=now)
    except IntegrityError:
        return False
    return True


def _flip(key: str, to: str, now: datetime) -> bool:
    """Set `key`'s state to `to`; True for the one caller that changed it."""
    AlertState.objects.get_or_create(key=key, defaults={"state": CLEAR})
    return (
        AlertState.objects.filter(key=key)
        .exclude(state=to)
        .update(state=to, changed_at=now)
        == 1
    )


def quota_alerts(now: datetime) -> list[alerts.Alert]:
    # The quota page's and the banner's larger truth: a provider figure past a
    # threshold alerts even when the meters alone are under it.
    head = quota.glance(now)
    found = []
    for threshold in head.crossed:
        key = f"quota:{head.period.start:%Y-%m-%d}:{threshold}"
        if not _claim(key, now):
            continue
        found.append(
            alerts.Alert(
                event=AlertEvent.QUOTA_THRESHOLD,
                severity="critical" if threshold >= 95 else "warning",
                title=f"Redis quota: {threshold} % of the budget used",
                message=(
                    f"This billing period has used {head.used:,} of "
                    f"{head.budget:,} commands ({head.used_percent:.1f} %); "
                    f"projected {head.projected_total:,} by "
                    f"{head.period.end:%Y-%m-%d}."
                ),
                at=now,
                console=console_url(),
                fields={
                    "threshold": threshold,
                    "used": head.used,
                    "budget": head.budget,
                    "usedPercent": round(head.used_percent, 2),
                    "projected": head.projected_total,
                    "periodStart": head.period.start.isoformat(),
                    "periodEnd": head.period.end.isoformat(),
                },
            )
        )
    return found


def incident_alerts(now: datetime) -> list[alerts.Alert]:
    since = now - RECENT
    found = []
    recent = QuotaIncident.objects.filter(
        Q(opened_at__gte=since) | Q(closed_at__gte=since)
    ).order_by("opened_at")
    for incident in recent:
        fields = {
            "incidentId": incident.pk,
            "openedAt": incident.opened_at.isoformat(),
            "closedAt": incident.closed_at.isoformat() if incident.closed_at else None,
            "source": incident.source,
            "errors": incident.count,
            "lastError": incident.last_error[:500],
        }
        if incident.opened_at >= since and _claim(
            f"incident:{incident.pk}:opened", now
        ):
            found.append(
                alerts.Alert(
                    event=AlertEvent.QUOTA_INCIDENT,
                    severity="critical",
                    title="Redis quota exhausted: incident opened",
                    message=(
                        f"Redis answered that the command quota is exhausted "
                        f"({incident.source}, {incident.opened_at:%Y-%m-%d %H:%M} "
                        f"UTC). Drains and workers stop until a probe succeeds."
                    ),
                    at=now,
                    console=console_url(),
                    fields={**fields, "state": "opened"},
                )
            )
        if (
            incident.closed_at is not None
            and incident.closed_at >= since
            and _claim(f"incident:{incident.pk}:closed", now)
        ):
            found.append(
                alerts.Alert(
                    event=AlertEvent.QUOTA_INCIDENT,
                    severity="resolved",
                    title="Redis quota incident closed",
                    message=(
                        f"A probe succeeded at {incident.closed_at:%Y-%m-%d %H:%M} "
                        f"UTC: Redis takes commands again (incident opened "
                        f"{incident.opened_at:%Y-%m-%d %H:%M} UTC, "
                        f"{incident.count} quota errors)."
                    ),
                    at=now,
                    console=console_url(),
                    fields={**fields, "state": "closed"},
                )
            )
    return found


def failed_jobs_alerts(now: datetime) -> list[alerts.Alert]:
    threshold = settings.ALERT_FAILED_JOBS_PER_HOUR
    # Served by jobrecord_status_idx (status, created).
    failed = JobRecord.objects.filter(
        status__in=FAILED_STATUSES, created__gte=now - FAILED_JOBS_WINDOW
    ).count()
    fields = {"failedLastHour": failed, "threshold": threshold}
    if failed <= threshold:
        # Re-armed; only the evaluator that flipped a firing state says so,
        # and a state that never fired (the first check) flips nothing.
        if not _flip(FAILED_JOBS_KEY, CLEAR, now):
            return []
        return [
            alerts.Alert(
                event=AlertEvent.FAILED_JOBS,
                severity="resolved",
                title="Failed jobs back under the threshold",
                message=(
                    f"{failed} jobs failed or were abandoned in the last hour, "
                    f"at or under the threshold of {threshold} "
                    f"(ALERT_FAILED_JOBS_PER_HOUR)."
                ),
                at=now,
                console=console_url(),
                fields={**fields, "state": "resolved"},
            )
        ]
    if not _flip(FAILED_JOBS_KEY, FIRING, now):
        return []
    return [
        alerts.Alert(
            event=AlertEvent.FAILED_JOBS,
            severity="warning",
            title=f"{failed} jobs failed in the last hour",
            message=(
                f"{failed} jobs failed or were abandoned in the last hour, over "
                f"the threshold of {threshold} (ALERT_FAILED_JOBS_PER_HOUR)."
            ),
            at=now,
            console=console_url(),
            fields={**fields, "state": "firing"},
        )
    ]


def check(now: datetime | None = None) -> list[alerts.Delivery]:
    """Evaluate every event, send what fired to its channels (never raises
    for a channel; a broken evaluator is logged and the others still run)."""
    now = now or timezone.now()
    deliveries: list[alerts.Delivery] = []
    for evaluate in (quota_alerts, incident_alerts, failed_jobs_alerts):
        try:
            fired = evaluate(now)
        except Exception:
            log.exception("alert check %s failed", evaluate.__name__)
            continue
        for alert in fired:
            log.warning("alert %s: %s", alert.event, alert.title)
            deliveries.extend(alerts.dispatch(alert))
    return deliveries
