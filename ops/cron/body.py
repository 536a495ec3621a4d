"""A cron request's body and the drain options in it, read before any Redis
command: the size limit (also for chunked bodies), content types, forms, JSON.

Nothing here answers: a request that cannot be read raises `Rejected` (status,
error code, sentence), an option that is not valid raises `DrainOptionError`
(400 invalid_option naming the field). `ops/cron/views.py` turns both into the
documented JSON errors.
"""

from __future__ import annotations

import json
import re
from io import BytesIO
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, QueryDict
from django.http.multipartparser import MultiPartParser, MultiPartParserError

from ops.engine.drain_options import DrainOptionError

MAX_BODY_BYTES = 16 * 1024
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}
DRAIN_FIELDS = {
    "maxDurationMs": "max_duration_ms",
    "maxConcurrentQueues": "max_concurrent_queues",
    "queues": "queues",
}
_LENGTH = re.compile(r"[0-9]{1,15}")  # ASCII digits; more would be over any limit


class Rejected(Exception):
    """The request as a whole is refused: `status`, `code` and `detail` are
    the JSON error's."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def read_body(request: HttpRequest, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit`.

    With a Content-Length the size is known before reading. A chunked body has
    none: WSGI servers that de-chunk it into a stream that ends (gunicorn, which
    sets `wsgi.input_terminated`) hand it over without a length, and Django
    would read it as empty; it is read here, and refused at byte `limit + 1`.
    A chunked body behind a server that does not end the stream cannot be read
    safely: refused rather than taken for an empty one."""
    meta = request.META
    raw_length = meta.get("CONTENT_LENGTH") or ""
    if raw_length:
        if not _LENGTH.fullmatch(raw_length):
            raise Rejected(400, "invalid_request", "Content-Length is not a number.")
        length = int(raw_length)
        if length > limit:
            raise _too_large(f"The body is {length} bytes", limit)
        try:
            return request.body
        except OSError as exc:  # the client went away (UnreadablePostError)
            raise _unreadable(exc) from None
    if meta.get("wsgi.input_terminated"):
        return _read_to_end(meta["wsgi.input"], limit)
    if meta.get("HTTP_TRANSFER_ENCODING"):
        raise Rejected(
            400,
            "invalid_request",
            "This server cannot read a body without Content-Length; send one.",
        )
    return b""


def _read_to_end(stream: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = stream.read(min(8192, limit + 1 - size))
        except (OSError, ValueError) as exc:  # a broken chunk, a client gone
            raise _unreadable(exc) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _too_large("The body is larger", limit)
        chunks.append(chunk)


def _too_large(what: str, limit: int) -> Rejected:
    return Rejected(413, "payload_too_large", f"{what}; the limit is {limit} bytes.")


def _unreadable(exc: BaseException) -> Rejected:
    return Rejected(
        400, "invalid_request", f"The body could not be read ({type(exc).__name__})."
    )


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def drain_arguments(request: HttpRequest, body: bytes) -> dict[str, Any]:
    """parse_options' keyword arguments from the query string and the body (a
    JSON object, or a form); the same option in both is an error."""
    try:
        given = _from_querydict(request.GET)
    except SuspiciousOperation as exc:  # more than DATA_UPLOAD_MAX_NUMBER_FIELDS
        raise DrainOptionError("query", f"is refused ({exc})") from None
    if body.strip():
        content_type = request.content_type or ""
        if content_type in FORM_TYPES:
            # `curl -d maxDurationMs=5000` and schedulers that always send a form.
            fields = _form_fields(request, body)
        elif is_json(content_type):
            fields = _json_fields(body)
        else:
            raise Rejected(
                415,
                "unsupported_media_type",
                f"A body of type {content_type or '(none)'} is not read: send "
                "the options as application/json, as a form, or in the query.",
            )
        for key, value in fields.items():
            if key in given:
                raise DrainOptionError(key, "is given both in the query and the body")
            given[key] = value
    unknown = sorted(set(given) - set(DRAIN_FIELDS))
    if unknown:
        raise DrainOptionError(
            unknown[0][:100],
            f"is not a known option; use {', '.join(DRAIN_FIELDS)}",
        )
    for key, value in given.items():
        if value is None:  # JSON null: the schema says integer (or array)
            raise DrainOptionError(
                key, "must not be null; leave it out for the default"
            )
    return {DRAIN_FIELDS[key]: value for key, value in given.items()}


def _form_fields(request: HttpRequest, body: bytes) -> dict[str, Any]:
    try:
        if request.content_type == "multipart/form-data":
            # The length of what was read: a chunked body had none.
            meta = {**request.META, "CONTENT_LENGTH": str(len(body))}
            data, files = MultiPartParser(
                meta, BytesIO(body), request.upload_handlers, request.encoding
            ).parse()
        else:
            data, files = QueryDict(body, encoding=request.encoding), {}
    except (MultiPartParserError, SuspiciousOperation, ValueError) as exc:
        # No boundary, a broken part, more than DATA_UPLOAD_MAX_NUMBER_FIELDS.
        raise DrainOptionError("body", f"is not a valid form ({exc})") from None
    if files:
        raise DrainOptionError(
            next(iter(files))[:100],
            "is a file upload; send options as plain form fields",
        )
    return _from_querydict(data)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_fields(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body, parse_constant=_no_constants)
    except RecursionError:  # "[[[[..." under the size limit
        raise DrainOptionError("body", "is nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise DrainOptionError("body", f"is not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise DrainOptionError("body", "must be a JSON object")
    return parsed


def _from_querydict(data: QueryDict) -> dict[str, Any]:
    given: dict[str, Any] = {}
    for key in data:
        values = data.getlist(key)
        given[key] = values if key == "queues" and len(values) > 1 else values[-1]
    return given
