"""Chunked request bodies through a real gunicorn: the size limit holds while
the body is read, and a chunked body is read, not taken for an empty one."""

from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest

from ops.models import DrainRun
from tests.servers import start_gunicorn, stop_gunicorn

TOKEN = "gunicorn-chunked-drain-token-0123456789"
URL = "/api/v1/cron/drain-queues"


@pytest.fixture
def gunicorn(transactional_db, redis_server):
    env = {
        "DRAIN_QUEUES_TOKEN": TOKEN,
        "CRON_RATE_LIMIT_PER_MINUTE": "1000",
        "REDIS_URL": redis_server.url(),
    }
    proc, port = start_gunicorn(env)
    yield port
    stop_gunicorn(proc)


def chunked_post(
    port: int, chunks, content_type: str = "application/json"
) -> tuple[int, dict, int]:
    """POST with Transfer-Encoding: chunked, sending from a thread while the
    answer is read (the server may answer before the body ends). Returns
    (status, JSON body, bytes of body sent before the server stopped reading)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(
        (
            f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Cron-Token: {TOKEN}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    sent = [0]

    def send() -> None:
        try:
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent[0] += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before the end

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    raw = b""
    try:
        while b"\r\n\r\n" not in raw or not _complete(raw):
            data = sock.recv(65536)
            if not data:
                break
            raw += data
    finally:
        sender.join(30)
        sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    headers = head.decode("latin-1").lower()
    assert "content-type: application/json" in headers
    assert "no-store" in headers
    return status, json.loads(body), sent[0]


def _complete(raw: bytes) -> bool:
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            return len(body) >= int(value)
    return False


def test_chunked_bodies_through_gunicorn(gunicorn):
    # 10 MB in 64 KB chunks: refused after the first 16 KB, not read to the end.
    status, body, sent = chunked_post(gunicorn, (b"x" * 65536 for _ in range(160)))
    assert status == 413, body
    assert body["error"] == "payload_too_large"
    assert sent < 10_000_000

    status, body, _ = chunked_post(gunicorn, [b'{"maxDurationMs": '])
    assert status == 400, body
    assert (body["error"], body["field"]) == ("invalid_option", "body")
    assert not DrainRun.objects.exists()

    status, body, _ = chunked_post(gunicorn, [b'{"maxDuration', b'Ms": 2500}'])
    assert status == 200, body
    assert body["maxDurationMs"] == 2500

    # No body, no length: nothing to wait for (gunicorn ends such a stream).
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn, timeout=10)
    conn.request("GET", "/api/v1/cron/status")
    answer = conn.getresponse()
    assert answer.status == 401
    assert json.loads(answer.read())["error"] == "unauthorized"
