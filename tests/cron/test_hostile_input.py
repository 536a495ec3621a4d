"""Hostile and malformed requests under /api/: always the documented JSON error
with Cache-Control: no-store, never Django's HTML pages, never a 500 from
input, and no Redis command for any rejection. Chunked bodies are simulated
the way gunicorn hands them over (no CONTENT_LENGTH, `wsgi.input_terminated`);
tests/cron/test_chunked_gunicorn.py sends them to a real gunicorn."""

from __future__ import annotations

import io
import json

import pytest
from django.test import Client

from ops.models import DrainRun

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/cron/drain-queues"
DRAIN_TOKEN = "drain-token-" + "d" * 20
CRON_SECRET = "cron-secret-" + "c" * 20


@pytest.fixture(autouse=True)
def env_tokens(settings):
    settings.DRAIN_QUEUES_TOKEN = DRAIN_TOKEN
    settings.CRON_SECRET = CRON_SECRET
    settings.CRON_TOKEN = ""
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1000


def assert_json_error(response, status, code):
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["error"] == code
    assert body["detail"]
    return body


def post(client, data, content_type, *, query="", **extra):
    return client.generic(
        "POST",
        URL + query,
        data,
        content_type=content_type,
        HTTP_X_CRON_TOKEN=DRAIN_TOKEN,
        **extra,
    )


class CountingStream(io.BytesIO):
    """A de-chunked request body as gunicorn hands it over; counts what the
    application read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk


def chunked(client, body: bytes, content_type="application/json", **extra):
    """POST `body` as gunicorn passes a chunked request: no Content-Length."""
    stream = CountingStream(body)
    response = client.generic(
        "POST",
        URL,
        b"",
        HTTP_X_CRON_TOKEN=DRAIN_TOKEN,
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_TYPE=content_type,
        **{"wsgi.input": stream, "wsgi.input_terminated": True},
        **extra,
    )
    return response, stream


# --- 1. JSON whatever goes wrong -------------------------------------------


def test_a_multipart_body_without_boundary_is_a_json_400(client, wire):
    response = post(client, b"maxDurationMs=5", "multipart/form-data")
    body = assert_json_error(response, 400, "invalid_option")
    assert body["field"] == "body"
    assert "boundary" in body["detail"]
    assert wire.billed() == 0
    assert not DrainRun.objects.exists()


@pytest.mark.parametrize("multipart", [False, True])
def test_more_form_fields_than_django_allows_is_a_json_400(
    client, wire, settings, multipart
):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 50
    if multipart:
        from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

        data = encode_multipart(BOUNDARY, {f"f{i}": "1" for i in range(60)})
        response = post(client, data, MULTIPART_CONTENT)
    else:
        data = "&".join(f"f{i}=1" for i in range(60))
        response = post(client, data, "application/x-www-form-urlencoded")
    body = assert_json_error(response, 400, "invalid_option")
    assert body["field"] == "body"
    assert wire.billed() == 0


def test_more_query_fields_than_django_allows_is_a_json_400(client, wire):
    query = "?" + "&".join(f"f{i}=1" for i in range(1001))
    response = post(client, b"", "application/json", query=query)
    body = assert_json_error(response, 400, "invalid_option")
    assert body["field"] == "query"
    assert wire.billed() == 0


def test_many_query_fields_and_a_charset_are_a_json_400_through_the_wsgi_app():
    # Django builds this request's GET in its constructor, where an exception
    # escapes to the server (its own HTML 500): kaireon.wsgi.Request defers it.
    from wsgiref.util import setup_testing_defaults

    from kaireon.wsgi import application

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": URL,
        "QUERY_STRING": "&".join(f"f{i}=1" for i in range(1001)),
        "CONTENT_TYPE": "application/json; charset=utf-8",
        "HTTP_HOST": "testserver",
        "HTTP_X_CRON_TOKEN": DRAIN_TOKEN,
        "wsgi.input": io.BytesIO(b""),
    }
    setup_testing_defaults(environ)
    answer: dict = {}

    def start_response(status: str, headers: list) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(application(environ, start_response))
    assert answer["status"].startswith("400"), body
    assert answer["headers"]["Content-Type"] == "application/json"
    assert "no-store" in answer["headers"]["Cache-Control"]
    assert json.loads(body)["field"] == "query"


def test_an_unexpected_exception_is_a_json_500_with_no_store(monkeypatch):
    def broken() -> dict:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr("ops.cron.views.cron_status", broken)
    client = Client(raise_request_exception=False)
    response = client.get("/api/v1/cron/status", HTTP_X_CRON_TOKEN=CRON_SECRET)
    body = assert_json_error(response, 500, "internal_error")
    assert "nobody expected" not in body["detail"]  # no internals leak


@pytest.mark.parametrize(
    "path", ["/api/v1/other", "/api", "/api/", "/api/v2/cron/status", "/api/v1/cron"]
)
def test_an_unknown_api_path_is_a_json_404(client, wire, path):
    body = assert_json_error(client.get(path), 404, "not_found")
    assert path in body["detail"]
    assert wire.billed() == 0


def test_a_request_django_refuses_before_any_view_is_a_json_400_under_api(client):
    # A Host header not in ALLOWED_HOSTS: Django refuses it in a middleware.
    response = client.post(URL, HTTP_HOST="attacker.example")
    assert_json_error(response, 400, "invalid_request")
    # Elsewhere Django's own page stays.
    page = client.get("/admin/login/", HTTP_HOST="attacker.example")
    assert page.status_code == 400
    assert not page["Content-Type"].startswith("application/json")


# --- 2. The size limit, chunked or not ---------------------------------------


def test_a_chunked_body_too_large_is_refused_while_read(client, wire):
    response, stream = chunked(client, b"x" * 10_000_000)
    assert_json_error(response, 413, "payload_too_large")
    assert stream.taken == 16 * 1024 + 1  # stopped one byte past the limit
    assert wire.billed() == 0
    assert not DrainRun.objects.exists()


def test_a_body_announced_too_large_is_refused_before_reading(client, wire):
    stream = CountingStream(b"{}")
    response = client.generic(
        "POST",
        URL,
        b"",
        HTTP_X_CRON_TOKEN=DRAIN_TOKEN,
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH=str(10_000_000),
        **{"wsgi.input": stream},
    )
    assert_json_error(response, 413, "payload_too_large")
    assert stream.taken == 0
    assert wire.billed() == 0


@pytest.mark.parametrize("length", ["12abc", "-1", "²", "1" * 40, " 5"])
def test_a_content_length_that_is_not_a_number_is_a_json_400(client, wire, length):
    response = client.generic(
        "POST",
        URL,
        b"",
        HTTP_X_CRON_TOKEN=DRAIN_TOKEN,
        CONTENT_LENGTH=length,
        **{"wsgi.input": io.BytesIO(b"{}")},
    )
    assert_json_error(response, 400, "invalid_request")
    assert wire.billed() == 0


def test_chunked_invalid_json_is_a_400(client, wire):
    response, _ = chunked(client, b'{"maxDurationMs": ')
    body = assert_json_error(response, 400, "invalid_option")
    assert body["field"] == "body"
    assert "not valid JSON" in body["detail"]
    assert wire.billed() == 0
    assert not DrainRun.objects.exists()


def test_chunked_options_are_read_and_applied(client):
    response, _ = chunked(client, json.dumps({"maxDurationMs": 2500}).encode())
    assert response.status_code == 200, response.content
    assert response.json()["maxDurationMs"] == 2500


def test_a_chunked_multipart_form_is_read(client):
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    data = encode_multipart(BOUNDARY, {"maxDurationMs": "3500"})
    response, _ = chunked(client, data, content_type=MULTIPART_CONTENT)
    assert response.status_code == 200, response.content
    assert response.json()["maxDurationMs"] == 3500


def test_a_chunked_body_a_server_cannot_end_is_refused_not_taken_as_empty(client, wire):
    # A WSGI server that passes Transfer-Encoding through but no ending stream.
    response = client.generic(
        "POST",
        URL,
        b"",
        HTTP_X_CRON_TOKEN=DRAIN_TOKEN,
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_TYPE="application/json",
    )
    assert_json_error(response, 400, "invalid_request")
    assert wire.billed() == 0
    assert not DrainRun.objects.exists()


@pytest.mark.parametrize("path", ["/api/v1/cron/status", "/api/v1/cron/prune"])
def test_the_other_endpoints_refuse_a_chunked_body_too_large(client, wire, path):
    method = "GET" if path.endswith("status") else "POST"
    stream = CountingStream(b"x" * 100_000)
    response = client.generic(
        method,
        path,
        b"",
        HTTP_X_CRON_TOKEN=CRON_SECRET,
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": stream, "wsgi.input_terminated": True},
    )
    assert_json_error(response, 413, "payload_too_large")
    assert stream.taken == 16 * 1024 + 1
    assert wire.billed() == 0


# --- 3. Option values, strictly ----------------------------------------------

FIVE_THOUSAND_DIGITS = "1" * 5000


@pytest.mark.parametrize(
    ("data", "content_type", "query", "field", "words"),
    [
        ('{"maxDurationMs": null}', "application/json", "", "maxDurationMs", "null"),
        (
            '{"maxConcurrentQueues": null}',
            "application/json",
            "",
            "maxConcurrentQueues",
            "null",
        ),
        ('{"queues": null}', "application/json", "", "queues", "null"),
        ('{"maxDurationMs": "²"}', "application/json", "", "maxDurationMs", "'²'"),
        ('{"maxDurationMs": "٣"}', "application/json", "", "maxDurationMs", "integer"),
        (
            '{"maxDurationMs": "' + FIVE_THOUSAND_DIGITS + '"}',
            "application/json",
            "",
            "maxDurationMs",
            "at most 9007199254740991",
        ),
        (
            '{"maxDurationMs": "-' + FIVE_THOUSAND_DIGITS + '"}',
            "application/json",
            "",
            "maxDurationMs",
            "at least 1",
        ),
        (
            '{"maxDurationMs": ' + FIVE_THOUSAND_DIGITS + "}",
            "application/json",
            "",
            "body",
            "not valid JSON",
        ),
        (
            '{"maxDurationMs": ' + "9" * 4000 + "}",
            "application/json",
            "",
            "maxDurationMs",
            "at most",
        ),
        ('{"maxDurationMs": 1e400}', "application/json", "", "maxDurationMs", "float"),
        ('{"maxDurationMs": NaN}', "application/json", "", "body", "not valid JSON"),
        ('{"maxDurationMs": Infinity}', "application/json", "", "body", "not valid"),
        ("", "application/json", "?maxDurationMs=%C2%B2", "maxDurationMs", "integer"),
        (
            "maxConcurrentQueues=%C2%B2",
            "application/x-www-form-urlencoded",
            "",
            "maxConcurrentQueues",
            "'²'",
        ),
        ("[" * 15_000, "application/json", "", "body", "nested too deeply"),
        ('{"a":' * 2_500, "application/json", "", "body", "nested too deeply"),
        (b'{"maxDurationMs": "\xff"}', "application/json", "", "body", "not valid"),
    ],
)
def test_option_values_are_checked_strictly_and_cost_no_redis(
    client, wire, data, content_type, query, field, words
):
    response = post(client, data, content_type, query=query)
    body = assert_json_error(response, 400, "invalid_option")
    assert body["field"] == field
    assert words in body["detail"]
    assert len(body["detail"]) < 1000  # no 5,000-digit echo
    assert wire.billed() == 0
    assert not DrainRun.objects.exists()


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/xml"])
def test_a_json_body_needs_a_json_content_type(client, wire, content_type):
    response = client.generic(
        "POST",
        URL,
        b'{"maxDurationMs": 1000}',
        content_type=content_type,
        HTTP_X_CRON_TOKEN=DRAIN_TOKEN,
    )
    body = assert_json_error(response, 415, "unsupported_media_type")
    assert "application/json" in body["detail"]
    assert wire.billed() == 0
    assert not DrainRun.objects.exists()


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/vnd.kaireon+json"],
)
def test_json_content_types_with_parameters_or_suffixes_are_read(client, content_type):
    response = post(client, b'{"maxDurationMs": 1500}', content_type)
    assert response.status_code == 200, response.content
    assert response.json()["maxDurationMs"] == 1500


def test_an_empty_body_needs_no_content_type(client):
    response = client.generic(
        "POST", URL, b"  \n", content_type="text/plain", HTTP_X_CRON_TOKEN=DRAIN_TOKEN
    )
    assert response.status_code == 200, response.content


def test_a_415_comes_after_the_token_check(client, wire):
    response = client.generic(
        "POST", URL, b"{}", content_type="text/plain", HTTP_X_CRON_TOKEN="wrong" * 5
    )
    assert_json_error(response, 401, "unauthorized")
