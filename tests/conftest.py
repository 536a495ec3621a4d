"""Shared fixtures: a private redis-server for the whole session (random port,
password, nothing on disk), flushed before every test, and a counting proxy."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from django.conf import settings

from bench.fault_proxy import FaultProxy
from bench.redis_server import PrivateRedis
from bench.wire_proxy import WireProxy
from ops.engine.enqueue import forget_registered_queues
from ops.usage.metering import recorder

if TYPE_CHECKING:
    from playwright.sync_api import Page


@pytest.fixture(scope="session")
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.stop()


def _point_at(url: str) -> None:
    # Children of the drain engine read the environment; this process reads
    # settings. Both must agree.
    os.environ["REDIS_URL"] = url
    settings.REDIS_URL = url


@pytest.fixture(scope="session")
def raw_redis(redis_server: PrivateRedis) -> Iterator[redis.Redis]:
    """A plain client for arranging and inspecting state; not counted anywhere."""
    client = redis.Redis.from_url(redis_server.url())
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_redis(redis_server: PrivateRedis, raw_redis: redis.Redis) -> Iterator[None]:
    raw_redis.flushall()
    # The enqueue API remembers which queues it registered in rq:queues; the
    # flush forgot them.
    forget_registered_queues()
    _point_at(redis_server.url())
    yield
    _point_at(redis_server.url())
    # Counts a test left unflushed must not reach a later test, nor the atexit
    # flush, which would run after the test database is gone.
    recorder.discard()


@pytest.fixture
def wire(redis_server: PrivateRedis) -> Iterator[WireProxy]:
    """Route the project's Redis traffic through a counting proxy."""
    with WireProxy(redis_server.port) as proxy:
        _point_at(proxy.url(redis_server.password))
        yield proxy
    _point_at(redis_server.url())


@pytest.fixture
def rq_client(raw_redis: redis.Redis) -> redis.Redis:
    """What a plain `rq`/django-rq user would enqueue with."""
    return raw_redis


def database_url() -> str:
    """A DATABASE_URL naming the test database, for manage.py subprocesses."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] or ""
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    host = db["HOST"] or "127.0.0.1"
    port = db["PORT"] or 5432
    return f"postgres://{auth}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def manage_py(transactional_db: None):
    """Run `manage.py ...` as a fresh process against the test database and the
    Redis the fixtures point at. Returns a CompletedProcess."""
    import subprocess
    import sys

    def run(*args: str, env: dict[str, str] | None = None, **kwargs):
        full_env = dict(os.environ)
        full_env["DATABASE_URL"] = database_url()
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
            **kwargs,
        )

    return run


@pytest.fixture
def background_drains(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., object]]:
    """Drains the console starts in the background (a detached `manage.py
    drain --run-id`, ops/engine/background.py) reach the test database.
    Returns wait(run_pk, timeout_s=60): the run once it has ended. Waits for
    the processes at teardown, so that none writes after the test."""
    import time

    from ops.engine import background
    from ops.models import DrainRun

    monkeypatch.setenv("DATABASE_URL", database_url())

    def wait(pk: int, timeout_s: float = 60.0) -> DrainRun:
        deadline = time.monotonic() + timeout_s
        while True:
            run = DrainRun.objects.get(pk=pk)
            if not run.is_active:
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"drain run {pk} still {run.status} after {timeout_s} s")
            time.sleep(0.05)

    yield wait
    for proc in list(background._started):
        proc.wait(timeout=120)


@pytest.fixture(autouse=True)
def _runbook_queues(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush every table afterwards, the data migration's
    queues included: put them back for every test that uses the database."""
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    transactional = bool(marker and marker.kwargs.get("transaction")) or bool(
        names & {"transactional_db", "live_server", "manage_py"}
    )
    if not transactional and marker is None and not names & {"db", "admin_client"}:
        return
    request.getfixturevalue("transactional_db" if transactional else "db")
    import importlib

    from django.apps import apps

    importlib.import_module("ops.migrations.0002_runbook_queues").create(apps, None)


@pytest.fixture
def fault(redis_server: PrivateRedis) -> Iterator[FaultProxy]:
    """Route the project's Redis traffic through a proxy that can answer with
    the provider's quota error, add latency or drop connections."""
    proxy = FaultProxy(redis_server.port)
    _point_at(proxy.url(redis_server.password))
    try:
        yield proxy
    finally:
        proxy.close()
        _point_at(redis_server.url())


# End-to-end tests drive Debian's Chromium, never a downloaded one.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    """A page in a fresh headless Chromium (viewport 1280x900, default timeout
    60 s: the admin's "Drain now" runs the drain inside the POST). The browser
    is closed afterwards."""
    # A missing browser is a broken test machine, not a reason to pass quietly.
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"the playwright package is missing from the venv: {exc}")
    # Playwright's sync API runs an event loop in this thread; the ORM calls
    # the test makes around it would otherwise raise SynchronousOnlyOperation.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def admin_login() -> Callable[..., None]:
    """Log in through the admin login form; the caller checks where it lands.
    Call as admin_login(page, live_server.url, username, password, next_path=...)."""

    def login(
        page: Page,
        live_server_url: str,
        username: str,
        password: str,
        next_path: str = "/admin/",
    ) -> None:
        page.goto(f"{live_server_url}/admin/login/?next={next_path}")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("input[type=submit]")

    return login
