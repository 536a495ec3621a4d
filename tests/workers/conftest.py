"""Shared by the always-on worker tests: a real supervisor (`manage.py work`)
against the test database and the private redis-server, stopped at teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings

from tests.conftest import database_url


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


@pytest.fixture
def supervisor(transactional_db) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[bytes]:
        full = dict(os.environ)
        full.update(DATABASE_URL=database_url(), METERING_FLUSH_INTERVAL_S="0")
        full.update(env)
        proc = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "work", *args],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
