"""Django's admin app with the console's site as its default site (Django's
documented way: an AdminConfig subclass naming `default_site`)."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class KaireonAdminConfig(AdminConfig):
    default_site = "ops.console.site.KaireonAdminSite"
