"""Run-time settings: the stored ConsoleSettings row over environment defaults."""

from __future__ import annotations

from django.conf import settings

from ops.models import ConsoleSettings

ALWAYS_ON = ConsoleSettings.WorkerMode.ALWAYS_ON
CRON_DRAIN = ConsoleSettings.WorkerMode.CRON_DRAIN


def console_settings() -> ConsoleSettings:
    """The settings row, created from the environment on first use."""
    row, _ = ConsoleSettings.objects.get_or_create(
        pk=1,
        defaults={
            "schedule_enabled": settings.DRAIN_SCHEDULE_MINUTES > 0,
            "schedule_minutes": settings.DRAIN_SCHEDULE_MINUTES or 5,
        },
    )
    return row


def worker_mode(row: ConsoleSettings | None = None) -> str:
    """always-on or cron-drain: the admin's choice, else WORKER_INPROCESS."""
    row = row or console_settings()
    if row.worker_mode:
        return row.worker_mode
    return ALWAYS_ON if settings.WORKER_INPROCESS else CRON_DRAIN
