"""A real gunicorn serving the console, for the tests that need processes and
sockets (rate limits across workers, chunked bodies, a hard kill)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings

from bench.redis_server import free_port
from tests.conftest import database_url


def start_gunicorn(
    env: dict[str, str],
    *,
    workers: int = 1,
    timeout_s: int | None = 120,
    unset: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], int]:
    """gunicorn on a free port with the test database, `env` over this
    process's environment less `unset`; returns once /admin/login/ answers
    200. It runs in a session of its own, so `kill_gunicorn` can signal all its
    workers."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full["DATABASE_URL"] = database_url()
    full.update(env)
    args = [sys.executable, "-m", "gunicorn", "--workers", str(workers)]
    args += ["--bind", f"127.0.0.1:{port}", "--no-control-socket"]
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
    proc = subprocess.Popen(
        [*args, "kaireon.wsgi"],
        cwd=settings.BASE_DIR,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/admin/login/")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    kill_gunicorn(proc)
    pytest.fail("gunicorn did not start: " + proc.stderr.read().decode()[-2000:])


def kill_gunicorn(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the arbiter and its workers (no graceful shutdown)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def stop_gunicorn(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)
