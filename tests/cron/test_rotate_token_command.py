from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from ops.cron import tokens
from ops.models import TokenVersion

pytestmark = pytest.mark.django_db


def rotate(*args: str) -> str:
    out = StringIO()
    call_command("rotate_token", *args, stdout=out)
    return out.getvalue()


def test_it_prints_the_new_token_once_and_it_works():
    out = rotate("--scope", "drain", "--label", "cron-job.org")
    token = out.splitlines()[1]
    assert token.startswith("kaireon_drain_")
    credential = tokens.authenticate(token)
    assert credential.scope == "drain"
    row = TokenVersion.objects.get()
    assert (row.version, row.label) == (1, "cron-job.org")


def test_the_previous_version_stays_valid_for_the_grace():
    first = json.loads(rotate("--scope", "cron", "--json"))["token"]
    out = rotate("--scope", "cron", "--grace-hours", "6")
    assert "v1 (kaireon_cron_" in out and "stays valid until" in out
    assert tokens.authenticate(first) is not None
    rotate("--scope", "cron", "--grace-hours", "0")
    assert tokens.authenticate(first) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scope", "admin"], "--scope must be one of drain, cron, got 'admin'"),
        (
            ["--scope", "drain", "--grace-hours", "soon"],
            "--grace-hours must be an integer",
        ),
        (
            ["--scope", "drain", "--grace-hours", "-1"],
            "--grace-hours must be between 0",
        ),
        (["--scope", "drain", "--label", "x" * 101], "--label must be at most 100"),
    ],
)
def test_it_rejects_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("rotate_token", *args)
    assert not TokenVersion.objects.exists()
