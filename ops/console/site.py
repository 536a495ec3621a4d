"""The console's admin site: Kaireon Ops branding, the home page, and the
Operations models in the order an on-call engineer uses them.

Installed as Django's default admin site (`ops.console.apps.KaireonAdminConfig`
in INSTALLED_APPS, Django's documented way to override the default site), so
every `@admin.register` in ops/console/admin/ lands here.

The app list (index, app index, nav sidebar) is rebuilt by `get_app_list`:

* "Operations": queues, drain runs, jobs, tokens, quota, worker mode, schedule,
  Redis switch; the custom pages (quota, worker mode, schedule, Redis switch)
  are listed as entries of their own, shown to whoever may view their model.
* "Internals": what is kept for the machinery rather than looked at daily
  (leases, hourly usage rows, django-q2's task tables, users and groups, login
  throttling), in one section at the bottom, named so that django-q2's "Failed
  tasks" are not mistaken for failed RQ jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse

OPS = "ops"
INTERNALS = "internals"


@dataclass(frozen=True)
class Entry:
    """One line of the Operations list: a model's change list, or a custom
    page (`url_name`) shown to those who may view `model`."""

    model: str  # object name of an ops model
    name: str = ""  # shown instead of the model's plural name
    url_name: str = ""  # a custom page instead of the change list


# The order of use. A model not named here (a new one) comes after these.
OPERATIONS: tuple[Entry, ...] = (
    Entry("Queue"),
    Entry("DrainRun"),
    Entry("JobRecord", name="Jobs run by drains"),
    Entry("JobStopRequest"),
    Entry("TokenVersion"),
    Entry("CommandUsage", name="Quota", url_name="ops_commandusage_quota"),
    Entry("QuotaIncident"),
    Entry("ProviderUsageReading"),
    Entry("WorkerProcess", name="Worker mode", url_name="ops_workerprocess_mode"),
    Entry("WorkerProcess"),
    Entry(
        "ConsoleSettings",
        name="Schedule and missed-tick alarm",
        url_name="ops_consolesettings_schedule",
    ),
    Entry("AlertChannel"),
    Entry("Queue", name="Redis switch check", url_name="ops_queue_redis_switch"),
)

# Operations models listed under Internals (their change lists).
OPS_INTERNALS: dict[str, str] = {
    "CommandUsage": "Hourly Redis usage rows",
    "Lease": "Drain leases",
}

# Other apps' models go to Internals, their app's name in front so that
# django-q2's "Failed tasks" never read as failed RQ jobs.
APP_PREFIXES: dict[str, str] = {
    "django_q": "Django-Q (schedule runner)",
    "auth": "Authentication",
    "axes": "Login throttling",
}


def _page_entry(model: dict[str, Any], entry: Entry, site_name: str) -> dict | None:
    try:
        url = reverse(f"admin:{entry.url_name}", current_app=site_name)
    except NoReverseMatch:
        return None
    return {
        **model,
        "name": entry.name,
        # Distinct per page: the template's CSS class and element ids use it.
        "object_name": entry.url_name,
        "admin_url": url,
        "add_url": None,
        "view_only": True,
    }


class KaireonAdminSite(admin.AdminSite):
    site_header = "Kaireon Ops"
    site_title = "Kaireon Ops"
    index_title = "Health at a glance"
    # No "View site" link: the site *is* the console (/ redirects here).
    site_url = None

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        # Imported here: they import models, which are not loaded yet when
        # Django instantiates the default site.
        from ops.console.admin.common import STATUS_COLOURS
        from ops.health import overview

        health = overview.gather(request.user)
        run = health.last_drain
        return super().index(
            request,
            extra_context={
                "health": health,
                "drain_colour": STATUS_COLOURS.get(run.status, "#6b7280")
                if run
                else "",
                **(extra_context or {}),
            },
        )

    def get_app_list(
        self, request: HttpRequest, app_label: str | None = None
    ) -> list[dict[str, Any]]:
        app_dict = self._build_app_dict(request, app_label)
        ops = app_dict.pop(OPS, None)
        if app_label is not None:
            # An app's own page (/admin/<app>/): that app only.
            if ops is None:
                return super().get_app_list(request, app_label)
            operations, internals = self._split_ops(ops)
            ops["models"] = operations + internals
            return [ops]
        app_list: list[dict[str, Any]] = []
        internals: list[dict[str, Any]] = []
        if ops is not None:
            operations, internals = self._split_ops(ops)
            app_list.append({**ops, "models": operations})
        for label, app in sorted(app_dict.items(), key=lambda kv: kv[1]["name"]):
            prefix = APP_PREFIXES.get(label, app["name"])
            for model in sorted(app["models"], key=lambda m: m["name"]):
                internals.append({**model, "name": f"{prefix}: {model['name']}"})
        if internals:
            app_list.append(
                {
                    "name": "Internals",
                    "app_label": INTERNALS,
                    # Not a real app page; "" would mark every page as current.
                    "app_url": "#internals",
                    "has_module_perms": True,
                    "models": internals,
                }
            )
        return app_list

    def _split_ops(
        self, app: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        by_name = {model["object_name"]: model for model in app["models"]}
        operations: list[dict[str, Any]] = []
        listed: set[str] = set()
        for entry in OPERATIONS:
            model = by_name.get(entry.model)
            if model is None:
                continue  # this user may not see it
            if entry.url_name:
                page = _page_entry(model, entry, self.name)
                if page is not None:
                    operations.append(page)
                # A model shown by its page only (ConsoleSettings: its change
                # list redirects to the schedule page) is not listed again.
                listed.add(entry.model)
                continue
            if entry.model in OPS_INTERNALS:
                continue
            operations.append({**model, "name": entry.name or model["name"]})
            listed.add(entry.model)
        internals = [
            {**by_name[name], "name": label}
            for name, label in OPS_INTERNALS.items()
            if name in by_name
        ]
        listed |= OPS_INTERNALS.keys()
        # A model registered later and not placed yet: after the known ones.
        operations += [m for name, m in by_name.items() if name not in listed]
        return operations, internals
