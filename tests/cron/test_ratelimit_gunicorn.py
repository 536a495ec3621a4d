"""The rate limit across real processes: gunicorn with four workers."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from bench.redis_server import free_port
from tests.conftest import database_url

TOKEN = "gunicorn-test-drain-token-0123456789"


@pytest.fixture
def gunicorn(transactional_db, redis_server):
    port = free_port()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DRAIN_QUEUES_TOKEN=TOKEN,
        CRON_RATE_LIMIT_PER_MINUTE="12",
        REDIS_URL=redis_server.url(),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "4",
            "--bind",
            f"127.0.0.1:{port}",
            "--no-control-socket",
            "--timeout",
            "120",
            "kaireon.wsgi",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/admin/login/")
            if conn.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("gunicorn did not start: " + proc.stderr.read().decode()[-2000:])
    time.sleep(1)  # let the other workers finish booting
    yield port
    proc.terminate()
    proc.wait(30)


def test_100_concurrent_requests_from_one_ip_admit_exactly_12(gunicorn):
    def call(_: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", gunicorn, timeout=90)
        conn.request(
            "POST",
            "/api/v1/cron/drain-queues",
            body=b"",
            headers={"X-Cron-Token": TOKEN},
        )
        return conn.getresponse().status

    with ThreadPoolExecutor(max_workers=100) as pool:
        codes = Counter(pool.map(call, range(100)))
    assert codes[429] == 88, codes
    # The 12 admitted ran a drain or found one running.
    assert codes[200] + codes[409] == 12, codes
    assert codes[200] >= 1
