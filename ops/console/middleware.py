"""Counting what an admin page costs in Redis commands, for its footer."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from ops.usage.metering import counting_page


def page_redis_cost(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Count the billable Redis commands sent while an admin page is served
    (rendering included: a TemplateResponse renders inside get_response)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/admin/"):
            return get_response(request)
        with counting_page():
            return get_response(request)

    return middleware
