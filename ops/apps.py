from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The admin pages live in ops.console.admin, not in ops.admin where
        # Django's autodiscovery looks: importing them registers them.
        from ops import checks  # noqa: F401  (registers the system checks)
        from ops.console import admin  # noqa: F401  (registers the admin pages)
