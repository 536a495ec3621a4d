"""The credential chain, scopes, rotation with overlap, revocation, secrecy."""

from __future__ import annotations

import itertools
import logging
from datetime import timedelta

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.utils import timezone

from ops.cron import tokens
from ops.models import DrainRun, TokenVersion

pytestmark = pytest.mark.django_db(transaction=True)

VALUES = {
    "DRAIN_QUEUES_TOKEN": "env-drain-queues-token-0001",
    "CRON_SECRET": "env-cron-secret-value-00002",
    "CRON_TOKEN": "env-cron-token-value-000003",
}
SCOPE = {"DRAIN_QUEUES_TOKEN": "drain", "CRON_SECRET": "cron", "CRON_TOKEN": "drain"}
DRAIN_URL = "/api/v1/cron/drain-queues"
STATUS_URL = "/api/v1/cron/status"
PRUNE_URL = "/api/v1/cron/prune"


@pytest.fixture(autouse=True)
def generous_limit(settings):
    settings.CRON_RATE_LIMIT_PER_MINUTE = 10_000


def set_env(settings, present: set[str]) -> None:
    for name, value in VALUES.items():
        setattr(settings, name, value if name in present else "")


COMBINATIONS = [
    set(combo) for n in range(4) for combo in itertools.combinations(VALUES, n)
]


@pytest.mark.parametrize(
    "present", COMBINATIONS, ids=lambda p: "+".join(sorted(p)) or "none"
)
def test_the_fallback_chain_for_every_combination_of_variables(
    settings, client, present
):
    set_env(settings, present)
    for name, value in VALUES.items():
        credential = tokens.authenticate(value)
        if name in present:
            assert credential is not None
            assert credential.source == f"env:{name}"
            assert credential.scope == SCOPE[name]
        else:
            assert credential is None
        drain = client.post(DRAIN_URL, HTTP_X_CRON_TOKEN=value)
        status = client.get(STATUS_URL, HTTP_X_CRON_TOKEN=value)
        if name not in present:
            assert (drain.status_code, status.status_code) == (401, 401)
        elif SCOPE[name] == "cron":
            assert (drain.status_code, status.status_code) == (200, 200)
        else:
            assert (drain.status_code, status.status_code) == (200, 403)
        if name in present:
            run = DrainRun.objects.get(public_id=drain.json()["runId"])
            assert run.credential == f"env:{name}"


def test_one_value_in_two_variables_is_refused_in_both(settings, client):
    # It used to be credited to the first in the chain: a CRON_SECRET equal to
    # DRAIN_QUEUES_TOKEN got the drain scope and a 403 from the status endpoint.
    settings.DRAIN_QUEUES_TOKEN = settings.CRON_SECRET = VALUES["CRON_SECRET"]
    settings.CRON_TOKEN = VALUES["CRON_TOKEN"]
    errors = [m for m in run_checks() if m.id == "ops.E001"]
    assert [e.msg for e in errors] == [
        "DRAIN_QUEUES_TOKEN and CRON_SECRET have the same value; give each "
        "variable its own token (one value cannot have two scopes)"
    ]
    assert tokens.authenticate(VALUES["CRON_SECRET"]) is None
    assert tokens.authenticate(VALUES["CRON_TOKEN"]).source == "env:CRON_TOKEN"
    status = client.get(STATUS_URL, HTTP_X_CRON_TOKEN=VALUES["CRON_SECRET"])
    assert status.status_code == 401


def test_an_env_token_with_surrounding_whitespace_is_refused_not_stripped(settings):
    settings.DRAIN_QUEUES_TOKEN = VALUES["DRAIN_QUEUES_TOKEN"] + "\n"
    settings.CRON_SECRET = " " + VALUES["CRON_SECRET"]
    settings.CRON_TOKEN = ""
    errors = [m for m in run_checks() if m.id == "ops.E001"]
    named = [e.msg.split(" ")[0] for e in errors]
    assert named == ["DRAIN_QUEUES_TOKEN", "CRON_SECRET"]
    assert "whitespace" in errors[0].msg
    for value in (*VALUES.values(), settings.DRAIN_QUEUES_TOKEN, settings.CRON_SECRET):
        assert tokens.authenticate(value) is None


def test_short_env_tokens_are_a_system_check_error_naming_the_variable(settings):
    settings.DRAIN_QUEUES_TOKEN = "short"
    settings.CRON_SECRET = "x" * 16
    settings.CRON_TOKEN = "y" * 15
    errors = [m for m in run_checks() if m.id == "ops.E001"]
    assert [e.msg.split(" ")[0] for e in errors] == ["DRAIN_QUEUES_TOKEN", "CRON_TOKEN"]
    assert "at least 16" in errors[0].msg
    # And they are never accepted, check or no check.
    assert tokens.authenticate("short") is None
    assert tokens.authenticate("x" * 16) is not None


@pytest.mark.parametrize(
    ("scope", "drain", "status", "prune"),
    [("drain", 200, 403, 403), ("cron", 200, 200, 200)],
)
def test_scope_rules_for_console_tokens(settings, client, scope, drain, status, prune):
    set_env(settings, set())
    _, token = tokens.rotate(scope=scope)
    assert client.post(DRAIN_URL, HTTP_X_CRON_TOKEN=token).status_code == drain
    assert client.get(STATUS_URL, HTTP_X_CRON_TOKEN=token).status_code == status
    assert client.post(PRUNE_URL, HTTP_X_CRON_TOKEN=token).status_code == prune


def test_tokens_have_a_scope_prefix_and_256_bits():
    _, drain = tokens.rotate(scope="drain")
    _, cron = tokens.rotate(scope="cron")
    assert drain.startswith("kaireon_drain_")
    assert cron.startswith("kaireon_cron_")
    assert len(drain) - len("kaireon_drain_") == 43  # urlsafe base64 of 32 bytes


def test_rotation_keeps_the_old_version_valid_for_the_grace_only():
    old, old_token = tokens.rotate(scope="drain")
    new, new_token = tokens.rotate(scope="drain", grace=timedelta(hours=2))
    assert (old.version, new.version) == (1, 2)
    assert tokens.authenticate(old_token).token_version == old
    assert tokens.authenticate(new_token).token_version == new
    old.refresh_from_db()
    assert old.state() == TokenVersion.State.GRACE
    assert (
        timedelta(hours=1, minutes=59)
        < old.expires_at - timezone.now()
        <= timedelta(hours=2)
    )
    # After the grace period, only the new one works.
    TokenVersion.objects.filter(pk=old.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert tokens.authenticate(old_token) is None
    assert tokens.authenticate(new_token) is not None
    old.refresh_from_db()
    assert old.state() == TokenVersion.State.EXPIRED


def test_a_zero_grace_rotation_rejects_the_old_version_at_once():
    _, old_token = tokens.rotate(scope="cron")
    tokens.rotate(scope="cron", grace=timedelta(0))
    assert tokens.authenticate(old_token) is None


def test_rotation_does_not_extend_an_old_versions_grace():
    first, _ = tokens.rotate(scope="drain", grace=timedelta(hours=1))
    tokens.rotate(scope="drain", grace=timedelta(hours=1))
    first.refresh_from_db()
    expiry = first.expires_at
    tokens.rotate(scope="drain", grace=timedelta(hours=48))
    first.refresh_from_db()
    assert first.expires_at == expiry


def test_rotating_one_scope_leaves_the_other_alone():
    _, cron_token = tokens.rotate(scope="cron")
    tokens.rotate(scope="drain", grace=timedelta(0))
    assert tokens.authenticate(cron_token) is not None


def test_revoke_takes_effect_at_once(client, settings):
    set_env(settings, set())
    row, token = tokens.rotate(scope="drain")
    assert client.post(DRAIN_URL, HTTP_X_CRON_TOKEN=token).status_code == 200
    row.revoke()
    assert row.state() == TokenVersion.State.REVOKED
    assert client.post(DRAIN_URL, HTTP_X_CRON_TOKEN=token).status_code == 401


def test_no_token_value_is_stored_logged_or_returned(client, settings, caplog):
    set_env(settings, {"DRAIN_QUEUES_TOKEN"})
    caplog.set_level(logging.DEBUG)
    row, token = tokens.rotate(scope="drain")
    responses = [
        client.post(DRAIN_URL, HTTP_X_CRON_TOKEN=token),
        client.post(DRAIN_URL, HTTP_X_CRON_TOKEN=VALUES["DRAIN_QUEUES_TOKEN"]),
        client.post(DRAIN_URL, HTTP_X_CRON_TOKEN=token + "wrong"),
        client.get(STATUS_URL, HTTP_X_CRON_TOKEN=token),
    ]
    secrets = [token, token[len("kaireon_drain_") + 6 :], VALUES["DRAIN_QUEUES_TOKEN"]]
    for response in responses:
        for secret in secrets:
            assert secret not in response.content.decode()
    for secret in secrets:
        assert secret not in caplog.text
    # Every text column of every table.
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row_values in cursor.fetchall():
                for value in row_values:
                    for secret in secrets:
                        assert secret not in str(value), table
    assert row.digest != token and len(row.digest) == 64
