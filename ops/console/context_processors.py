"""The quota banner's context for every admin page (templates/admin/base_site.html).

Lazy: nothing is read unless a template asks for `ops_quota`, and the admin's
base template asks only on pages of logged-in staff (`has_permission`). Then
it costs two database queries (the quota at a glance: the meters and the
provider's latest figure in one aggregate, ops/usage/quota.py's `glance`; the
open incident) and no Redis command: a page view must never spend from the
budget it reports on. It warns on the quota page's larger truth, so a
provider figure beyond the meters turns it amber like the meters would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.functional import SimpleLazyObject

from ops.models import QuotaIncident
from ops.usage import incidents, quota

# The ways out of a spent quota: (option, effort, cost).
RESOLUTION_PATHS = [
    (
        "Switch to cron drain: WORKER_INPROCESS=0 + a 5-minute cron",
        "30 min",
        "$0",
    ),
    ("New Redis database + the same fix (a clean reset)", "45 min", "$0"),
    ("Upgrade the Redis plan to pay-as-you-go", "1 min", "~$0.20 per 100K commands"),
    (
        "Move to a different Redis (Fly free, ElastiCache, self-hosted)",
        "1-2 h",
        "varies",
    ),
]


@dataclass(frozen=True)
class QuotaBanner:
    visible: bool
    summary: quota.Glance | None = None
    incident: QuotaIncident | None = None
    quota_url: str = ""
    incident_url: str = ""
    probe_cooldown_s: int = 0
    next_probe_at: datetime | None = None
    resolution_paths: tuple[tuple[str, str, str], ...] = ()

    @property
    def level(self) -> str:
        """red (incident open), amber (a threshold reached), notice (the
        projection passes the budget), or "" (nothing to say)."""
        if self.incident is not None:
            return "red"
        if self.summary is None:
            return ""
        return {"warning": "amber", "notice": "notice"}.get(self.summary.level, "")


def banner_for(request: HttpRequest, now: datetime | None = None) -> QuotaBanner:
    user = getattr(request, "user", None)
    if user is None or not (user.is_active and user.is_staff):
        return QuotaBanner(visible=False)
    head = quota.glance(now)
    incident = incidents.open_incident()
    url = ""
    if user.has_perm("ops.view_commandusage"):
        url = _reverse("admin:ops_commandusage_quota")
    incident_url = ""
    if incident is not None and user.has_perm("ops.view_quotaincident"):
        incident_url = _reverse("admin:ops_quotaincident_change", incident.pk)
    next_probe = None
    if incident is not None:
        next_probe = (incident.last_probe_at or incident.opened_at) + timedelta(
            seconds=settings.QUOTA_PROBE_COOLDOWN_S
        )
    return QuotaBanner(
        visible=True,
        summary=head,
        incident=incident,
        quota_url=url,
        incident_url=incident_url,
        probe_cooldown_s=settings.QUOTA_PROBE_COOLDOWN_S,
        next_probe_at=next_probe,
        resolution_paths=tuple(RESOLUTION_PATHS),
    )


def _reverse(name: str, *args: Any) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:  # the quota admin is not installed on this site
        return ""


def quota_banner(request: HttpRequest) -> dict[str, Any]:
    return {"ops_quota": SimpleLazyObject(lambda: banner_for(request))}


class _PageCost:
    """Read when the footer renders, at the end of the page: by then the view
    has sent everything it will send."""

    def __str__(self) -> str:
        from ops.usage.metering import page_commands

        spent = page_commands()
        return "" if spent is None else str(spent)


def page_cost(request: HttpRequest) -> dict[str, Any]:
    return {"ops_page_cost": _PageCost()}
