"""Fixtures of the fault-injection suite (the harness is tests/faults/harness.py).

Every test here is marked `faults` (select with `-m faults`) and runs against
the test database as a transactional test: the processes it starts read and
write the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from bench.redis_server import PrivateRedis
from tests.conftest import database_url
from tests.faults.harness import Gates, Ledger, Procs, StepProxy

HERE = Path(__file__).parent

# Short enough that a test waits little for a dead drain's lease to lapse
# (budget + grace + margin: 2.5 s), long enough that a drain is still inside
# its budget when a test kills it (measured: 0.2-0.4 s after it started).
BUDGET_MS = 1000
GRACE_MS = 500
MARGIN_MS = 1000
# Supervisors' heartbeats on their workers' rows (ALWAYS_ON_HEARTBEAT_S): a
# killed supervisor's worker is stale after 3 of them (6 s instead of 180 s).
HEARTBEAT_S = 2
# A fresh manage.py process (Django, RQ, a worker's start) on a loaded machine.
STARTUP_S = 10


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(params=["lean", "rq"])
def executor(request: pytest.FixtureRequest, settings) -> str:
    """Both executors (DRAIN_EXECUTOR): in this process and, through `procs`,
    in every process a test starts."""
    settings.DRAIN_EXECUTOR = request.param
    settings.DRAIN_JOB_GRACE_MS = GRACE_MS
    settings.DRAIN_LEASE_MARGIN_MS = MARGIN_MS
    settings.QUOTA_PROBE_COOLDOWN_S = 1
    settings.ALWAYS_ON_HEARTBEAT_S = HEARTBEAT_S
    return request.param


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(tmp_path / "ledger")
    yield book
    book.kill_helpers()


@pytest.fixture
def gates(tmp_path: Path) -> Gates:
    return Gates(tmp_path)


@pytest.fixture
def redis_faults(redis_server: PrivateRedis) -> Iterator[StepProxy]:
    """Every process of the test talks to Redis through a StepProxy."""
    proxy = StepProxy(redis_server.port)
    url = proxy.url(redis_server.password)
    os.environ["REDIS_URL"] = url
    django_settings.REDIS_URL = url
    try:
        yield proxy
    finally:
        proxy.close()
        os.environ["REDIS_URL"] = redis_server.url()
        django_settings.REDIS_URL = redis_server.url()


@pytest.fixture
def procs(transactional_db: None, executor: str, tmp_path: Path) -> Iterator[Procs]:
    """manage.py processes on the test database, the Redis the fixtures point
    at (read from the environment when each starts) and the test's executor."""
    running = Procs(
        root=tmp_path,
        env={
            "DATABASE_URL": database_url(),
            "DRAIN_EXECUTOR": executor,
            "DRAIN_JOB_GRACE_MS": str(GRACE_MS),
            "DRAIN_LEASE_MARGIN_MS": str(MARGIN_MS),
            "DRAIN_MAX_DURATION_MS": str(BUDGET_MS),
            "METERING_FLUSH_INTERVAL_S": "0",
            "QUOTA_PROBE_COOLDOWN_S": "1",
            "ALWAYS_ON_HEARTBEAT_S": str(HEARTBEAT_S),
        },
    )
    try:
        yield running
    finally:
        running.close()
