"""Cron tokens: the credential chain, scopes, rotation and revocation.

One place owns the rule of which credentials open which endpoint:

* environment tokens, in the runbook's order: DRAIN_QUEUES_TOKEN (drain scope),
  CRON_SECRET (cron scope), CRON_TOKEN (drain scope);
* console-managed TokenVersion rows, valid while active or in their grace.

The drain scope opens /api/v1/cron/drain-queues only; the cron scope opens every
/api/v1/cron/* endpoint. Tokens are never stored: a row keeps a display prefix
and HMAC-SHA256(SECRET_KEY, token); comparisons are over digests, as bytes, with
hmac.compare_digest, and every environment source is compared every time so the
timing does not tell which one matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from ops.cron import token_rules
from ops.cron.token_rules import ENV_TOKEN_VARIABLES
from ops.models import TokenVersion

Scope = TokenVersion.Scope

_ENV_SCOPES = {
    "DRAIN_QUEUES_TOKEN": Scope.DRAIN,
    "CRON_SECRET": Scope.CRON,
    "CRON_TOKEN": Scope.DRAIN,
}
# (variable, scope), in the runbook's priority order.
ENV_TOKENS: tuple[tuple[str, str], ...] = tuple(
    (variable, _ENV_SCOPES[variable]) for variable in ENV_TOKEN_VARIABLES
)
# Recognisable per scope, so secret scanners and people can spot a leaked one.
TOKEN_PREFIXES = {Scope.DRAIN: "kaireon_drain_", Scope.CRON: "kaireon_cron_"}
_DISPLAY_CHARS = 6


@dataclass(frozen=True)
class Credential:
    """What let a request in: never the token, only where it came from."""

    scope: str
    source: str  # "env:DRAIN_QUEUES_TOKEN" or "token:drain v3 kaireon_drain_AbC123"
    token_version: TokenVersion | None = None

    def allows(self, required_scope: str) -> bool:
        return self.scope == Scope.CRON or self.scope == required_scope


def digest(token: str) -> bytes:
    # surrogateescape: header bytes Django could not decode must not crash us.
    raw = token.encode("utf-8", "surrogateescape")
    return hmac.new(settings.SECRET_KEY.encode(), raw, hashlib.sha256).digest()


def authenticate(presented: str | None) -> Credential | None:
    """The credential `presented` matches, or None. Scope is checked by the caller."""
    if not presented:
        return None
    wanted = digest(presented)
    matched: Credential | None = None
    refused = refused_env_tokens()
    for variable, scope in ENV_TOKENS:
        value = getattr(settings, variable, "")
        if variable in refused:
            value = ""  # refused at start (settings, check ops.E001); never accepted
        # Compare every source, even after a match: no early exit.
        candidate = digest(value) if value else secrets.token_bytes(32)
        if hmac.compare_digest(candidate, wanted) and value and matched is None:
            matched = Credential(scope=scope, source=f"env:{variable}")
    if matched is not None:
        return matched
    row = TokenVersion.objects.filter(digest=wanted.hex()).first()
    if row is None or not hmac.compare_digest(bytes.fromhex(row.digest), wanted):
        return None
    if not row.is_valid():
        return None
    return Credential(
        scope=row.scope,
        source=f"token:{row.scope} v{row.version} {row.prefix}",
        token_version=row,
    )


def new_token(scope: str) -> str:
    return TOKEN_PREFIXES[scope] + secrets.token_urlsafe(32)  # 256 bits


def rotate(
    *,
    scope: str,
    grace: timedelta | None = None,
    label: str = "",
    created_by: Any = None,
) -> tuple[TokenVersion, str]:
    """Create the next version of `scope` and return it with the token, which
    exists only in this return value. Versions still valid get `grace` to live,
    so the scheduler can be updated without a window of rejected calls."""
    if scope not in Scope.values:
        raise ValueError(f"scope must be one of {', '.join(Scope.values)}")
    grace = timedelta(hours=settings.TOKEN_GRACE_HOURS) if grace is None else grace
    now = timezone.now()
    token = new_token(scope)
    with transaction.atomic():
        # Lock this scope's rows so two rotations cannot pick the same number.
        current = TokenVersion.objects.select_for_update().filter(scope=scope)
        version = (current.aggregate(top=Max("version"))["top"] or 0) + 1
        current.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now + grace)
        ).update(expires_at=now + grace)
        row = TokenVersion.objects.create(
            scope=scope,
            version=version,
            label=label[:100],
            prefix=token[: len(TOKEN_PREFIXES[scope]) + _DISPLAY_CHARS],
            digest=digest(token).hex(),
            created_by=created_by if getattr(created_by, "pk", None) else None,
        )
    return row, token


def env_token_problems() -> list[tuple[tuple[str, ...], str]]:
    """(variables, problem) for environment tokens that must not be accepted
    (the rule is ops/cron/token_rules.py's, applied to the settings in force)."""
    return token_rules.env_token_problems(
        {variable: getattr(settings, variable, "") for variable in ENV_TOKEN_VARIABLES}
    )


def refused_env_tokens() -> set[str]:
    """The environment token variables that are set but never accepted."""
    return {variable for variables, _ in env_token_problems() for variable in variables}
