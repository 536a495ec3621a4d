"""System checks for rules that span settings or need the database."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError


@register(Tags.database)
def check_enabled_queues(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """A drain with no enabled queue does nothing, and says so only in its result."""
    if not databases:
        return []
    from ops.models import Queue

    try:
        enabled = Queue.objects.filter(enabled=True).count()
    except DatabaseError:
        return []  # not migrated yet: `migrate` will say so
    if enabled == 0:
        return [
            Warning(
                "No queue is enabled: every drain will do nothing.",
                hint="Enable a queue in the admin (Operations > Queues).",
                id="ops.W001",
            )
        ]
    return []


@register(Tags.security)
def check_env_tokens(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Environment cron tokens that are refused (short, surrounded by
    whitespace, or shared by two variables). The settings refuse to load with
    one; this check sees the same rule applied to settings changed later."""
    from ops.cron.tokens import env_token_problems

    return [
        Error(
            problem,
            hint=f"Set {' and '.join(variables)} to a long random value each "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) "
            "or unset it and use a console-managed token (manage.py rotate_token).",
            id="ops.E001",
        )
        for variables, problem in env_token_problems()
    ]


@register(Tags.database)
def check_double_consumption(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Two consumers on the same queues. Database only."""
    if not databases:
        return []
    from ops.workers.consumers import double_consumption_warnings

    try:
        found = double_consumption_warnings()
    except DatabaseError:
        return []
    return [Warning(text, id="ops.W002") for text in found]
