"""The admin login resists guessing: django-axes locks an address and a username
out after LOGIN_FAILURE_LIMIT failures, in the database (0 Redis commands),
with the client address the cron rate limit uses; passwords are validated."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

LOGIN_URL = "/admin/login/?next=/admin/"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def admin_user() -> User:
    return User.objects.create_superuser("admin", "", PASSWORD)


def login(username: str, password: str, **extra: str) -> tuple[int, bool]:
    """POST the admin login form from a fresh browser; (status, logged in)."""
    browser = Client()
    response = browser.post(
        LOGIN_URL, {"username": username, "password": password}, **extra
    )
    return response.status_code, "_auth_user_id" in browser.session


def test_it_is_on_with_the_documented_defaults():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_HANDLER == "axes.handlers.database.AxesDatabaseHandler"
    assert settings.AUTHENTICATION_BACKENDS[0].startswith("axes.backends.")


def test_failures_from_one_address_lock_that_address_even_for_the_right_password(
    admin_user,
):
    # Password spraying: one address, a different username each time, so no
    # username reaches the limit; the address does.
    codes = [login(f"user{i}", "wrong", REMOTE_ADDR="203.0.113.9") for i in range(5)]
    # The 5th failure reaches the limit: its answer is already the lockout.
    assert codes == [(200, False)] * 4 + [(429, False)]
    status, logged_in = login("admin", PASSWORD, REMOTE_ADDR="203.0.113.9")
    assert (status, logged_in) == (429, False)
    # The username itself is not locked: another address gets in.
    assert login("admin", PASSWORD, REMOTE_ADDR="198.51.100.7") == (302, True)


def test_failures_for_one_username_lock_it_across_addresses(admin_user):
    User.objects.create_user("other", "", PASSWORD, is_staff=True)
    codes = [login("admin", "wrong", REMOTE_ADDR=f"203.0.113.{i}") for i in range(5)]
    assert codes == [(200, False)] * 4 + [(429, False)]
    # No address reached the limit, the username did: from a new address, the
    # right password is refused too ...
    assert login("admin", PASSWORD, REMOTE_ADDR="198.51.100.7") == (429, False)
    # ... while another account still logs in from an address that took part.
    assert login("other", PASSWORD, REMOTE_ADDR="203.0.113.0") == (302, True)


def test_the_lockout_answer_says_so_without_saying_which(admin_user):
    for _ in range(5):
        login("admin", "wrong", REMOTE_ADDR="203.0.113.9")
    response = Client().post(
        LOGIN_URL,
        {"username": "admin", "password": PASSWORD},
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 429
    html = response.content.decode()
    assert "Too many failed logins" in html
    assert "5" in html


def test_the_lock_ends_after_the_cool_off(admin_user):
    for _ in range(5):
        login("admin", "wrong", REMOTE_ADDR="203.0.113.9")
    assert login("admin", PASSWORD, REMOTE_ADDR="203.0.113.9")[0] == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - timedelta(minutes=15, seconds=1)
    )
    assert login("admin", PASSWORD, REMOTE_ADDR="203.0.113.9") == (302, True)


def test_the_limit_and_the_cool_off_come_from_the_settings(admin_user, settings):
    settings.AXES_FAILURE_LIMIT = 2
    for _ in range(2):
        login("admin", "wrong", REMOTE_ADDR="203.0.113.9")
    assert login("admin", PASSWORD, REMOTE_ADDR="198.51.100.7")[0] == 429


def test_throttling_costs_no_redis_command(admin_user, wire):
    for _ in range(7):
        login("admin", "wrong", REMOTE_ADDR="203.0.113.9")
    assert login("admin", PASSWORD, REMOTE_ADDR="203.0.113.9")[0] == 429
    assert AccessAttempt.objects.exists()
    assert wire.total == 0


def test_the_address_is_the_cron_rate_limits_behind_trusted_proxies(
    admin_user, settings
):
    settings.TRUSTED_PROXY_HOPS = 1
    proxy = "10.0.0.5"
    # Spoofed left-most entries change nothing: the entry the proxy added counts.
    for i in range(5):
        login(
            f"user{i}",
            "wrong",
            REMOTE_ADDR=proxy,
            HTTP_X_FORWARDED_FOR=f"6.6.6.{i}, 203.0.113.9",
        )
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {
        "203.0.113.9"
    }
    locked = login(
        "admin", PASSWORD, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.9"
    )
    assert locked == (429, False)
    # Another client behind the same proxy is not locked out with it.
    other = login(
        "admin", PASSWORD, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="198.51.100.7"
    )
    assert other == (302, True)


def test_an_ipv6_client_is_one_address_per_64(admin_user):
    for i in range(1, 6):
        login(f"user{i}", "wrong", REMOTE_ADDR=f"2001:db8:1:2::{i}")
    assert login("admin", PASSWORD, REMOTE_ADDR="2001:db8:1:2:ffff::9")[0] == 429
    assert login("admin", PASSWORD, REMOTE_ADDR="2001:db8:1:3::1") == (302, True)


def test_password_validators_are_on():
    with pytest.raises(ValidationError):
        validate_password("1")
    with pytest.raises(ValidationError):
        validate_password("password")
    names = [v["NAME"].rsplit(".", 1)[1] for v in settings.AUTH_PASSWORD_VALIDATORS]
    assert names == [
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    ]


def test_ensure_admins_password_passes_the_validators_and_logs_in():
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    password = re.search(r"password (\S+)", out.getvalue()).group(1)
    user = User.objects.get(username="admin")
    validate_password(password, user)
    assert login("admin", password, REMOTE_ADDR="198.51.100.7") == (302, True)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOGIN_FAILURE_LIMIT": "0"}, "LOGIN_FAILURE_LIMIT must be between 1"),
        ({"LOGIN_COOLOFF_MINUTES": "soon"}, "LOGIN_COOLOFF_MINUTES must be an integer"),
    ],
)
def test_a_bad_login_setting_stops_the_start_naming_it(env, message):
    from tests.test_settings import load_settings

    result = load_settings(SECRET_KEY="x" * 40, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_login_settings_are_read_from_the_environment():
    import os

    env = {
        **os.environ,
        "SECRET_KEY": "x" * 40,
        "DJANGO_SETTINGS_MODULE": "kaireon.settings",
        "LOGIN_FAILURE_LIMIT": "9",
        "LOGIN_COOLOFF_MINUTES": "42",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; "
            "print(settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME)",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=60,
    )
    assert result.stdout.split() == ["9", "0:42:00"], result.stderr
