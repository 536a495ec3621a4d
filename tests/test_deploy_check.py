"""Behind HTTPS: the documented block of .env.example makes `manage.py check
--deploy` silent, and the cron endpoint keeps working behind the SSL redirect."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

TOKEN = "deploy-test-drain-token-0123456789"
DRAIN_URL = "/api/v1/cron/drain-queues"


def https_block() -> dict[str, str]:
    """The "Behind HTTPS" block as .env.example documents it."""
    text = (settings.BASE_DIR / ".env.example").read_text()
    block = text[text.index("# --- Behind HTTPS") :]
    found = dict(re.findall(r"^#   ([A-Z_]+)=(\S+)$", block, flags=re.MULTILINE))
    assert len(found) == 7, found
    return found


def run_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update(env, DJANGO_SETTINGS_MODULE="kaireon.settings")
    return subprocess.run(
        [sys.executable, *args],
        env=full,
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=120,
    )


PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "ops.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://ops.example.com",
}


def test_check_deploy_is_silent_with_the_documented_https_block():
    result = run_with({**PRODUCTION, **https_block()}, "manage.py", "check", "--deploy")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_without_the_block_check_deploy_names_what_is_missing():
    result = run_with(PRODUCTION, "manage.py", "check", "--deploy")
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stdout + result.stderr


def test_the_readme_shows_the_same_block():
    readme = (settings.BASE_DIR / "README.md").read_text()
    for name, value in https_block().items():
        assert f"\n{name}={value}\n" in readme


def test_the_block_sets_the_settings_it_names():
    result = run_with(
        {**PRODUCTION, **https_block()},
        "-c",
        "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SECURE_HSTS_PRELOAD, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_PROXY_SSL_HEADER)",
    )
    assert result.stdout.strip() == (
        "True 31536000 True True True True ('HTTP_X_FORWARDED_PROTO', 'https')"
    ), result.stderr


def test_the_defaults_suit_plain_http_for_local_use():
    result = run_with(
        {"SECRET_KEY": "x" * 40},
        "-c",
        "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_PROXY_SSL_HEADER)",
    )
    assert result.stdout.strip() == "False 0 False False None", result.stderr


def test_a_bad_proxy_ssl_header_stops_the_start():
    result = run_with(
        {"SECRET_KEY": "x" * 40, "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"},
        "-c",
        "import django; django.setup()",
    )
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be a header name" in result.stderr


@pytest.fixture
def behind_https(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.DRAIN_QUEUES_TOKEN = TOKEN
    settings.CRON_RATE_LIMIT_PER_MINUTE = 100


@pytest.mark.django_db(transaction=True)
def test_the_cron_endpoint_works_behind_the_ssl_redirect(behind_https, client):
    response = client.post(
        DRAIN_URL, HTTP_X_CRON_TOKEN=TOKEN, HTTP_X_FORWARDED_PROTO="https"
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "succeeded"
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


@pytest.mark.django_db(transaction=True)
def test_plain_http_to_the_cron_endpoint_is_redirected_without_a_drain(
    behind_https, client, wire
):
    from ops.models import DrainRun

    response = client.post(DRAIN_URL, HTTP_X_CRON_TOKEN=TOKEN)
    assert response.status_code == 301
    assert response["Location"] == f"https://testserver{DRAIN_URL}"
    assert not DrainRun.objects.exists()
    assert wire.total == 0
