from __future__ import annotations

import contextlib
import os

import django
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaireon.settings")


class Request(WSGIRequest):
    """Django's request, but its constructor never raises on hostile input.

    A Content-Type with a charset makes Django re-read the query string while
    the request is built (HttpRequest.encoding's setter evaluates GET): more
    than DATA_UPLOAD_MAX_NUMBER_FIELDS query fields then raise there, outside
    Django's exception handling, and the server answers its own HTML 500. Left
    unparsed here, GET raises again where it is read, inside the view or a
    middleware: a 400 (the JSON error under /api/)."""

    def _set_content_type_params(self, meta: dict) -> None:
        # The encoding is set by then; GET is parsed (and refused) on first use.
        with contextlib.suppress(SuspiciousOperation):
            super()._set_content_type_params(meta)


class Handler(WSGIHandler):
    request_class = Request


def get_wsgi_application() -> Handler:
    django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application
    return Handler()


application = get_wsgi_application()
