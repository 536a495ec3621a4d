"""The cron API: /api/v1/cron/*. Thin views: parse, call one service, render.

Every response is JSON with `Cache-Control: no-store`; every failure is
{"error": "<code>", "detail": "<sentence>"}. Checks run cheapest first and
none of the rejections (405, 429, 413, 401, 403, 400) sends a Redis command:
method, rate limit (before the token, so guessing is throttled too), body
size, credential, scope, options.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from ops.cron import ratelimit, tokens
from ops.cron.client_ip import client_ip
from ops.cron.retention import prune_history
from ops.cron.status import cron_status
from ops.engine.drain import drain
from ops.engine.drain_options import DrainOptionError, parse_options
from ops.engine.results import drain_answer
from ops.models import DrainRun

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}
DRAIN_FIELDS = {
    "maxDurationMs": "max_duration_ms",
    "maxConcurrentQueues": "max_concurrent_queues",
    "queues": "queues",
}
_UNAUTHORIZED = "Missing or invalid cron token."


def error(code: str, detail: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)


def _presented_token(request: HttpRequest) -> str | None:
    token = request.headers.get("X-Cron-Token")
    if token:
        return token.strip()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def cron_endpoint(
    *, scope: str, method: str
) -> Callable[[Callable[..., JsonResponse]], Callable[[HttpRequest], JsonResponse]]:
    """Method, rate limit, body size, credential and scope, in that order."""

    def decorate(
        view: Callable[..., JsonResponse],
    ) -> Callable[[HttpRequest], JsonResponse]:
        @csrf_exempt
        @never_cache
        @functools.wraps(view)
        def wrapped(request: HttpRequest) -> JsonResponse:
            if request.method != method:
                response = error(
                    "method_not_allowed", f"Use {method} on this endpoint.", 405
                )
                response["Allow"] = method
                return response
            ip = client_ip(request)
            try:
                decision = ratelimit.hit(
                    f"{view.__name__}:{ip}",
                    per_minute=settings.CRON_RATE_LIMIT_PER_MINUTE,
                )
                if not decision.allowed:
                    response = error(
                        "rate_limited",
                        f"More than {settings.CRON_RATE_LIMIT_PER_MINUTE} requests "
                        f"a minute from {ip}; retry in {decision.retry_after_s} s.",
                        429,
                    )
                    response["Retry-After"] = str(decision.retry_after_s)
                    return response
                too_big = _body_too_big(request)
                if too_big:
                    return too_big
                credential = tokens.authenticate(_presented_token(request))
                if credential is None:
                    return error("unauthorized", _UNAUTHORIZED, 401)
                if not credential.allows(scope):
                    return error(
                        "forbidden",
                        "This token may only call /api/v1/cron/drain-queues; this "
                        "endpoint needs a cron-scope token (CRON_SECRET or a "
                        "'cron' token version).",
                        403,
                    )
                if credential.token_version is not None:
                    credential.token_version.record_use(ip)
                return view(request, credential=credential, ip=ip)
            except DatabaseError:
                log.exception("database error on %s", request.path)
                return error(
                    "database_unavailable",
                    "The console's database is unavailable.",
                    503,
                )

        return wrapped

    return decorate


def _body_too_big(request: HttpRequest) -> JsonResponse | None:
    raw_length = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw_length)
    except ValueError:
        return error("invalid_request", "Content-Length is not a number.", 400)
    if length > MAX_BODY_BYTES:
        return error(
            "payload_too_large",
            f"The body is {length} bytes; the limit is {MAX_BODY_BYTES}.",
            413,
        )
    return None


def _drain_arguments(request: HttpRequest) -> dict[str, Any]:
    """Options from the query string and/or a JSON object body."""
    given = _from_querydict(request.GET)
    if request.content_type in FORM_TYPES:
        # `curl -d maxDurationMs=5000` and schedulers that always send a form.
        for key, value in _from_querydict(request.POST).items():
            if key in given:
                raise DrainOptionError(key, "is given both in the query and the body")
            given[key] = value
        body = b""
    else:
        body = request.body
    if body.strip():
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DrainOptionError("body", f"is not valid JSON ({exc})") from None
        if not isinstance(parsed, dict):
            raise DrainOptionError("body", "must be a JSON object")
        for key, value in parsed.items():
            if key in given:
                raise DrainOptionError(key, "is given both in the query and the body")
            given[key] = value
    unknown = sorted(set(given) - set(DRAIN_FIELDS))
    if unknown:
        raise DrainOptionError(
            unknown[0],
            f"is not a known option; use {', '.join(DRAIN_FIELDS)}",
        )
    return {DRAIN_FIELDS[key]: value for key, value in given.items()}


def _from_querydict(data: Any) -> dict[str, Any]:
    given: dict[str, Any] = {}
    for key in data:
        values = data.getlist(key)
        given[key] = values if key == "queues" and len(values) > 1 else values[-1]
    return given


@cron_endpoint(scope=tokens.Scope.DRAIN, method="POST")
def drain_queues(
    request: HttpRequest, *, credential: tokens.Credential, ip: str
) -> JsonResponse:
    try:
        options = parse_options(**_drain_arguments(request))
    except DrainOptionError as exc:
        return error(
            "invalid_option", f"{exc.field}: {exc.message}", 400, field=exc.field
        )
    run = drain(
        trigger=DrainRun.Trigger.CRON,
        options=options,
        caller=f"cron {ip}",
        credential=credential.source,
    )
    status, result = drain_answer(run)
    return JsonResponse(result, status=status)


@cron_endpoint(scope=tokens.Scope.CRON, method="GET")
def status(
    request: HttpRequest, *, credential: tokens.Credential, ip: str
) -> JsonResponse:
    return JsonResponse(cron_status())


@cron_endpoint(scope=tokens.Scope.CRON, method="POST")
def prune(
    request: HttpRequest, *, credential: tokens.Credential, ip: str
) -> JsonResponse:
    return JsonResponse(prune_history())


@csrf_exempt
@never_cache
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return error("not_found", f"No cron endpoint at {request.path}.", 404)
