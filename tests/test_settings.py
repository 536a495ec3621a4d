"""Settings fail fast, naming the variable, on bad values."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings


def load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update(env)
    full["DJANGO_SETTINGS_MODULE"] = "kaireon.settings"
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={k: v for k, v in full.items() if v is not None},
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DRAIN_MAX_DURATION_MS": "soon"},
            "DRAIN_MAX_DURATION_MS must be an integer, got 'soon'",
        ),
        (
            {"DRAIN_MAX_DURATION_MS": "700000"},
            "DRAIN_MAX_DURATION_MS must be between 1 and 600000",
        ),
        (
            {"DRAIN_MAX_CONCURRENT_QUEUES": "0"},
            "DRAIN_MAX_CONCURRENT_QUEUES must be between 1",
        ),
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean"),
        ({"REDIS_URL": "http://example"}, "REDIS_URL must start with redis://"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL is not a valid database URL"),
        ({"REDIS_SOCKET_TIMEOUT_S": "-1"}, "REDIS_SOCKET_TIMEOUT_S must be between 1"),
        (
            {"ALWAYS_ON_HEARTBEAT_S": "0"},
            "ALWAYS_ON_HEARTBEAT_S must be between 1 and 3600",
        ),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(env, message):
    result = load_settings(SECRET_KEY="x" * 40, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_secret_key_is_required_unless_debug():
    result = load_settings(SECRET_KEY="", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
    assert load_settings(SECRET_KEY="", DEBUG="1").returncode == 0


def test_good_values_load():
    result = load_settings(
        SECRET_KEY="x" * 40, DRAIN_MAX_DURATION_MS="1000", REDIS_URL="rediss://h:6380/1"
    )
    assert result.returncode == 0, result.stderr


# --- Environment cron tokens: refused by every entry point ----------------------

GOOD_TOKEN = "a-long-enough-env-token-0123456789"
BAD_TOKENS = [
    pytest.param(
        {"DRAIN_QUEUES_TOKEN": "x" * 15},
        "DRAIN_QUEUES_TOKEN is 15 characters long; cron tokens must have at least 16",
        id="short",
    ),
    pytest.param(
        {"CRON_SECRET": GOOD_TOKEN + "\n"},
        "CRON_SECRET starts or ends with whitespace",
        id="trailing-newline",
    ),
    pytest.param(
        {"CRON_TOKEN": " " + GOOD_TOKEN},
        "CRON_TOKEN starts or ends with whitespace",
        id="leading-space",
    ),
    pytest.param(
        {"DRAIN_QUEUES_TOKEN": GOOD_TOKEN, "CRON_SECRET": GOOD_TOKEN},
        "DRAIN_QUEUES_TOKEN and CRON_SECRET have the same value",
        id="same-value",
    ),
]


def run_entry_point(
    argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(SECRET_KEY="x" * 40, **env)
    full["DJANGO_SETTINGS_MODULE"] = "kaireon.settings"
    proc = subprocess.Popen(
        argv,
        env=full,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # It started instead of refusing to (gunicorn serving): stop it.
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        pytest.fail(f"{argv} did not stop at start: {err[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


MANAGE = [sys.executable, "manage.py"]
GUNICORN = [sys.executable, "-m", "gunicorn"]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([*MANAGE, "drain", "--json"], id="manage.py-drain"),
        pytest.param([*MANAGE, "check"], id="manage.py-check"),
        pytest.param([*MANAGE, "enqueue", "batch-jobs"], id="manage.py-enqueue"),
        pytest.param(
            [sys.executable, "-c", "import django; django.setup()"],
            id="worker-child-setup",
        ),
    ],
)
@pytest.mark.parametrize(("env", "message"), BAD_TOKENS)
def test_a_bad_env_token_stops_every_entry_point_naming_the_variable(
    argv, env, message
):
    result = run_entry_point(argv, env)
    assert result.returncode != 0
    assert message in result.stderr
    if argv[:2] == MANAGE:
        # One line, not a traceback after Django's "Unknown command".
        assert result.returncode == os.EX_CONFIG
        assert result.stderr.startswith("Configuration error: ")
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("env", "message"), BAD_TOKENS)
def test_a_bad_env_token_stops_gunicorn_before_it_serves(env, message):
    from bench.redis_server import free_port

    result = run_entry_point(
        [*GUNICORN, "-c", "kaireon/gunicorn.conf.py", "kaireon.wsgi"],
        {**env, "KAIREON_BIND": f"127.0.0.1:{free_port()}", "WEB_CONCURRENCY": "1"},
        timeout=30,
    )
    assert result.returncode == os.EX_CONFIG
    assert f"Configuration error: {message}" in result.stderr


def test_good_env_tokens_load():
    result = load_settings(
        SECRET_KEY="x" * 40,
        DRAIN_QUEUES_TOKEN=GOOD_TOKEN,
        CRON_SECRET=GOOD_TOKEN + "-cron",
        CRON_TOKEN="",
    )
    assert result.returncode == 0, result.stderr


def test_the_token_rule_is_one_pure_function():
    from ops.cron.token_rules import env_token_problems

    assert env_token_problems({}) == []
    assert env_token_problems({"CRON_SECRET": GOOD_TOKEN, "CRON_TOKEN": ""}) == []
    problems = env_token_problems(
        {
            "DRAIN_QUEUES_TOKEN": "short",
            "CRON_SECRET": "   ",
            "CRON_TOKEN": "short",
        }
    )
    assert [variables for variables, _ in problems] == [
        ("DRAIN_QUEUES_TOKEN",),
        ("CRON_SECRET",),
        ("CRON_TOKEN",),
        ("DRAIN_QUEUES_TOKEN", "CRON_TOKEN"),
    ]


def test_the_token_rule_imports_nothing_from_django():
    # kaireon/settings.py imports it while Django's settings are being built.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ops.cron.token_rules; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))",
        ],
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=60,
    )
    assert result.stdout.strip() == "[]", result.stderr


# Every way the settings read a variable: env.str/int/list/..., and the two
# fail-fast helpers. A call split over lines still matches (\s*).
_SETTINGS_READS = re.compile(r'(?:\benv\.\w+|\b_int|\b_bool)\(\s*"([A-Z][A-Z0-9_]*)"')
_EXAMPLE_LINE = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=", re.M)


def test_every_variable_the_settings_read_is_in_env_example():
    base = Path(settings.BASE_DIR)
    read = set(_SETTINGS_READS.findall((base / "kaireon/settings.py").read_text()))
    listed = set(_EXAMPLE_LINE.findall((base / ".env.example").read_text()))
    # The pattern finds what it should (a broken one would pass vacuously).
    assert {"REDIS_URL", "DRAIN_MAX_DURATION_MS", "LOG_FORMAT"} <= read
    assert read - listed == set()
    # And .env.example lists nothing nobody reads: the settings, ./dev and its
    # scripts, or gunicorn's config.
    readers = "".join(
        (base / name).read_text()
        for name in (
            "kaireon/settings.py",
            "kaireon/gunicorn.conf.py",
            "dev",
            "scripts/dev_env.py",
            "scripts/local_redis.py",
        )
    )
    assert {name for name in listed - read if name not in readers} == set()
