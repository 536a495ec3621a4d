"""The cron API: /api/v1/cron/*. Thin views: parse, call one service, render.

Every response is JSON with `Cache-Control: no-store` (but the metrics
endpoint's success, in Prometheus's text format); every failure is
{"error": "<code>", "detail": "<sentence>"}. Checks run cheapest first and
none of the rejections (405, 429, 413, 401, 403, 400, 415) sends a Redis
command: method, rate limit (before the token, so guessing is throttled too),
body size, credential, scope, options. The handlers at the end answer JSON
for whatever goes wrong elsewhere under /api/ (kaireon/urls.py installs them).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from ops.cron import ratelimit, tokens
from ops.cron.body import Rejected, drain_arguments, read_body
from ops.cron.client_ip import client_ip
from ops.cron.retention import prune_history
from ops.cron.status import cron_status
from ops.engine.drain import drain
from ops.engine.drain_options import DrainOptionError, parse_options
from ops.engine.results import drain_answer
from ops.models import DrainRun
from ops.monitoring import access
from ops.monitoring.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ops.monitoring.metrics import render as render_metrics

log = logging.getLogger(__name__)

_UNAUTHORIZED = "Missing or invalid cron token."


def error(code: str, detail: str, status: int, **extra: Any) -> JsonResponse:
    """The one shape of every failure under /api/, never cached."""
    response = JsonResponse({"error": code, "detail": detail, **extra}, status=status)
    add_never_cache_headers(response)
    return response


def _presented_token(request: HttpRequest) -> str | None:
    token = request.headers.get("X-Cron-Token")
    if token:
        return token.strip()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def cron_endpoint(
    *, scope: str, method: str, open_to: Callable[[str], bool] | None = None
) -> Callable[[Callable[..., HttpResponse]], Callable[[HttpRequest], HttpResponse]]:
    """Method, rate limit, body size, credential and scope, in that order.
    `open_to(ip)` True lets that client in without a credential (None)."""

    def decorate(
        view: Callable[..., HttpResponse],
    ) -> Callable[[HttpRequest], HttpResponse]:
        @csrf_exempt
        @never_cache
        @functools.wraps(view)
        def wrapped(request: HttpRequest) -> HttpResponse:
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
                body = read_body(request)
                if open_to is not None and open_to(ip):
                    return view(request, credential=None, ip=ip, body=body)
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
                return view(request, credential=credential, ip=ip, body=body)
            except Rejected as exc:
                return error(exc.code, exc.detail, exc.status)
            except DrainOptionError as exc:
                return error(
                    "invalid_option",
                    f"{exc.field}: {exc.message}",
                    400,
                    field=exc.field,
                )
            except DatabaseError:
                log.exception("database error on %s", request.path)
                return error(
                    "database_unavailable",
                    "The console's database is unavailable.",
                    503,
                )

        return wrapped

    return decorate


@cron_endpoint(scope=tokens.Scope.DRAIN, method="POST")
def drain_queues(
    request: HttpRequest, *, credential: tokens.Credential, ip: str, body: bytes
) -> JsonResponse:
    options = parse_options(**drain_arguments(request, body))
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
    request: HttpRequest, *, credential: tokens.Credential, ip: str, body: bytes
) -> JsonResponse:
    return JsonResponse(cron_status())


@cron_endpoint(scope=tokens.Scope.CRON, method="POST")
def prune(
    request: HttpRequest, *, credential: tokens.Credential, ip: str, body: bytes
) -> JsonResponse:
    return JsonResponse(prune_history())


@cron_endpoint(
    scope=tokens.Scope.CRON, method="GET", open_to=access.allowed_without_token
)
def metrics(
    request: HttpRequest, *, credential: tokens.Credential | None, ip: str, body: bytes
) -> HttpResponse:
    """Prometheus exposition text, from the database only (docs/monitoring.md)."""
    return HttpResponse(render_metrics(), content_type=METRICS_CONTENT_TYPE)


@csrf_exempt
@never_cache
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return error("not_found", f"No API endpoint at {request.path[:200]}.", 404)


# --- Django's error handlers (kaireon/urls.py): JSON under /api/ -------------
# What fails before or outside a view (a Host header Django refuses, an
# exception anywhere) answers the documented JSON error there, and Django's
# own pages everywhere else.


def _under_api(request: HttpRequest) -> bool:
    return request.path_info == "/api" or request.path_info.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _under_api(request):
        return error("invalid_request", "The request was refused as malformed.", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _under_api(request):
        return error("forbidden", "This request is not allowed.", 403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _under_api(request):
        return not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django has logged the exception (django.request) before calling this.
    if _under_api(request):
        return error(
            "internal_error", "An unexpected error occurred; it has been logged.", 500
        )
    return defaults.server_error(request)
