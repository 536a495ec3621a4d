"""The rate limit across real processes: gunicorn with four workers."""

from __future__ import annotations

import http.client
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.servers import start_gunicorn, stop_gunicorn

TOKEN = "gunicorn-test-drain-token-0123456789"


@pytest.fixture
def gunicorn(transactional_db, redis_server):
    env = {
        "DRAIN_QUEUES_TOKEN": TOKEN,
        "CRON_RATE_LIMIT_PER_MINUTE": "12",
        "REDIS_URL": redis_server.url(),
    }
    proc, port = start_gunicorn(env, workers=4)
    time.sleep(1)  # let the other workers finish booting
    yield port
    stop_gunicorn(proc)


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
