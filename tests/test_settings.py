"""Settings fail fast, naming the variable, on bad values."""

from __future__ import annotations

import os
import subprocess
import sys

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
