"""Property-based fuzzing (Hypothesis) of the cron endpoints and of
`manage.py drain`'s options: whatever the bytes, headers and content types,
never a 500 or a traceback, always the JSON error with no-store, and no Redis
command for any rejection (the `wire` proxy counts every command sent).

The example budget is fixed and the examples derandomized: the same inputs on
every run, a few seconds in CI."""

from __future__ import annotations

import io
import json
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ops.models import DrainRun

pytestmark = pytest.mark.django_db(transaction=True)

DRAIN_TOKEN = "fuzz-drain-token-" + "d" * 20
CRON_SECRET = "fuzz-cron-secret-" + "c" * 20

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture(autouse=True)
def production_request_class(monkeypatch):
    """The test client builds requests as gunicorn's handler does."""
    from kaireon.wsgi import Request

    monkeypatch.setattr("django.test.client.WSGIRequest", Request)


@pytest.fixture(autouse=True)
def env_tokens(settings):
    settings.DRAIN_QUEUES_TOKEN = DRAIN_TOKEN
    settings.CRON_SECRET = CRON_SECRET
    settings.CRON_TOKEN = ""
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1_000_000


# --- What a hostile client sends ----------------------------------------------

# Values that broke the endpoint once, or could: digits int() refuses, numbers
# too long for int(), nesting deep enough for RecursionError, JSON's extras.
NASTY_VALUES = [
    "²",
    "٣",
    "\U0001d7d3",  # MATHEMATICAL BOLD DIGIT FIVE
    "1" * 5000,
    "-" + "9" * 5000,
    "0" * 5000 + "7",
    "-1",
    "0",
    " 5 ",
    "1e3",
    "0x10",
    "+5",
    "1_000",
    "",
    "\x00",
    "null",
    "batch-jobs",
    "batch-jobs,seed-jobs",
    ",,,",
    "5000",
]
NASTY_BODIES = [
    b"[" * 15_000,
    b'{"a":' * 2_500,
    b'{"maxDurationMs": NaN}',
    b'{"maxDurationMs": Infinity}',
    b'{"maxDurationMs": 1e400}',
    b'{"maxDurationMs": ' + b"9" * 5000 + b"}",
    b'{"maxDurationMs": null}',
    b'{"queues": [null]}',
    b'{"queues": [[]]}',
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{\x00}\x00",
    b"x" * 17_000,
    b"a=1&" * 1_100,
    b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data\r\n\r\nx",
    b'--x\r\nContent-Disposition: form-data; name="queues"; filename="a"\r\n'
    b"\r\nbatch-jobs\r\n--x--\r\n",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=nonsense",
    "application/problem+json",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data",
    MULTIPART_CONTENT,
    "multipart/form-data; boundary=x",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=" + "b" * 300,
    "multipart/form-data; boundary=é",
    "text/plain",
    "",
    ";;;",
    "application/",
]
FIELDS = ["maxDurationMs", "maxConcurrentQueues", "queues", "token", "x"]

latin1 = st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.sampled_from(NASTY_VALUES),
    st.text(max_size=20),
)
json_value = st.one_of(json_scalar, st.lists(json_scalar, max_size=4))
option_text = st.one_of(st.sampled_from(NASTY_VALUES), st.text(max_size=20))


def _json(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


QUEUES = ["batch-jobs", "dsar-jobs", "journey-jobs", "retrain-jobs", "seed-jobs"]
# Options a drain accepts: a valid request drains (and sends its commands).
valid_options = st.fixed_dictionaries(
    {},
    optional={
        "maxDurationMs": st.one_of(
            st.integers(1, 10**7), st.integers(1, 10**7).map(str)
        ),
        "maxConcurrentQueues": st.integers(1, 5),
        "queues": st.lists(st.sampled_from(QUEUES), min_size=1, max_size=3),
    },
)
option_dicts = st.one_of(
    valid_options, st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=3)
)
form_dicts = st.one_of(
    valid_options.map(
        lambda d: {k: ",".join(v) if isinstance(v, list) else v for k, v in d.items()}
    ),
    st.dictionaries(st.sampled_from(FIELDS), option_text, max_size=3),
)
# (body, the content type that goes with it): mostly matched, as a scheduler
# sends them, so that options get parsed; then any type with any bytes.
typed_bodies = st.one_of(
    st.tuples(option_dicts.map(_json), st.just("application/json")),
    st.tuples(json_value.map(_json), st.just("application/json")),
    st.tuples(
        form_dicts.map(lambda d: urlencode(d).encode()),
        st.just("application/x-www-form-urlencoded"),
    ),
    st.tuples(
        form_dicts.map(lambda d: encode_multipart(BOUNDARY, d)),
        st.just(MULTIPART_CONTENT),
    ),
    st.tuples(st.just(b""), st.sampled_from(CONTENT_TYPES)),
    st.tuples(
        st.one_of(
            st.sampled_from(NASTY_BODIES),
            st.binary(max_size=300),
            option_dicts.map(_json),
        ),
        st.one_of(st.sampled_from(CONTENT_TYPES), latin1),
    ),
)
# Weighted towards a request that gets past the method and token checks.
valid_token = st.sampled_from(
    [
        {"HTTP_X_CRON_TOKEN": DRAIN_TOKEN},
        {"HTTP_X_CRON_TOKEN": CRON_SECRET},
        {"HTTP_AUTHORIZATION": f"Bearer {CRON_SECRET}"},
    ]
)
tokens = st.one_of(
    valid_token,
    valid_token,
    valid_token,
    st.just({}),
    latin1.map(lambda t: {"HTTP_X_CRON_TOKEN": t}),
    latin1.map(lambda t: {"HTTP_AUTHORIZATION": t}),
)
framings = st.sampled_from(
    ["length"] * 5 + ["chunked"] * 2 + ["chunked-unended", "bad-length"]
)
queries = st.one_of(
    st.just(""),
    st.just(""),
    st.just(""),
    form_dicts.map(urlencode),
    latin1,
    st.just("&".join(f"f{i}=1" for i in range(1_100))),
)


@st.composite
def requests(draw: st.DrawFn, path: str, method: str) -> dict:
    body, content_type = draw(typed_bodies)
    others = ["GET", "POST", "PUT", "HEAD", "OPTIONS", "PATCH", "DELETE"]
    environ: dict = {
        "REQUEST_METHOD": draw(st.sampled_from([method] * 6 + others)),
        "PATH_INFO": path,
        "QUERY_STRING": draw(queries),
        "CONTENT_TYPE": content_type,
        **draw(tokens),
    }
    framing = draw(framings)
    if framing == "length":
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
    elif framing == "bad-length":
        environ["CONTENT_LENGTH"] = draw(st.sampled_from(["-1", "²", "x", "9" * 40]))
        environ["wsgi.input"] = io.BytesIO(body)
    else:  # as gunicorn hands over a chunked body: no length
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input"] = io.BytesIO(body)
        if framing == "chunked":
            environ["wsgi.input_terminated"] = True
    if draw(st.integers(0, 3)) == 0:
        header = draw(st.sampled_from(["HTTP_X_FORWARDED_FOR", "HTTP_ACCEPT"]))
        environ[header] = draw(latin1)
    return environ


def check(client: Client, wire, environ: dict) -> None:
    environ = dict(environ)  # Hypothesis may replay an example: a fresh body
    environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].getvalue())
    method, path = environ.pop("REQUEST_METHOD"), environ.pop("PATH_INFO")
    before = wire.total
    response = client.generic(method, path, **environ)
    assert response.status_code < 500 or response.status_code == 503, (
        response.status_code,
        response.content[:300],
    )
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    if response.content:
        body = json.loads(response.content)
        if response.status_code >= 400:
            assert body["error"] and body["detail"]
    if response.status_code >= 400:
        assert wire.total == before, (response.status_code, wire.snapshot())
    elif path.endswith("drain-queues"):
        # A drain that ran was counted: the zero above is not a blind proxy.
        assert wire.total > before


# Client(raise_request_exception=True): an exception in a view fails the test
# instead of turning into a 500 page.


def request(body: bytes = b"", content_type: str = "", **environ: object) -> dict:
    """One request's environ with a Content-Length, for @example."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/cron/drain-queues",
        "QUERY_STRING": "",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "HTTP_X_CRON_TOKEN": DRAIN_TOKEN,
        **environ,
    }


@FUZZ
@given(environ=requests("/api/v1/cron/drain-queues", "POST"))
# Requests that drain, beside the generated ones (mostly refused).
@example(environ=request())
@example(environ=request(b'{"maxDurationMs": 900000}', "application/json"))
@example(environ=request(b"queues=seed-jobs", "application/x-www-form-urlencoded"))
@example(environ=request(QUERY_STRING="maxConcurrentQueues=1&queues=dsar-jobs"))
@example(
    environ={
        **request(b'{"queues": ["batch-jobs"]}', "application/json"),
        "CONTENT_LENGTH": "",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input_terminated": True,
    }
)
def test_fuzz_drain_queues(client, wire, environ):
    check(client, wire, environ)


@FUZZ
@given(environ=requests("/api/v1/cron/status", "GET"))
def test_fuzz_status(client, wire, environ):
    check(client, wire, environ)


@FUZZ
@given(
    environ=requests("/api/v1/cron/prune", "POST"),
    path=st.sampled_from(["/api/v1/cron/prune", "/api/v1/cron/nope", "/api/x"]),
)
def test_fuzz_prune_and_unknown_paths(client, wire, environ, path):
    environ["PATH_INFO"] = path
    check(client, wire, environ)


# --- manage.py drain ---------------------------------------------------------

flags = st.sampled_from(["--max-duration-ms", "--max-concurrent-queues", "--queue"])
cli_values = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.text(max_size=20).filter(lambda s: "\x00" not in s),
    st.integers(min_value=-5, max_value=10**20).map(str),
)


@settings(FUZZ, max_examples=150)
@given(args=st.lists(st.tuples(flags, cli_values), max_size=3))
@example(args=[])
@example(args=[("--max-duration-ms", "900000"), ("--queue", "seed-jobs")])
@example(args=[("--max-concurrent-queues", "1"), ("--queue", "batch-jobs,dsar-jobs")])
def test_fuzz_drain_command_options(wire, args):
    argv = [f"{flag}={value}" for flag, value in args]
    before_wire, before_runs = wire.total, DrainRun.objects.count()
    try:
        call_command("drain", *argv, stdout=StringIO(), stderr=StringIO())
    except CommandError as exc:
        # A rejection: the flag named, exit status 2, no Redis, no run.
        assert exc.returncode == 2, exc
        assert str(exc).startswith("--"), exc
        assert wire.total == before_wire
        assert DrainRun.objects.count() == before_runs
        return
    except SystemExit as exc:  # a drain that ran and said how it went
        assert exc.code in (1, 3, 4, 5), exc
    assert wire.total > before_wire  # it drained: the proxy saw it
