"""The cron token admin: the list and the environment box, rotation with the
token shown once (and nowhere else), revocation, and who may do what."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ops.console.admin import tokens as token_admin
from ops.console.admin.tokens import NEW_TOKEN_SESSION_KEY
from ops.cron import tokens
from ops.models import TokenVersion

LIST_URL = "/admin/ops/tokenversion/"
ROTATE_URL = "/admin/ops/tokenversion/rotate/"
SETUP_URL = "/admin/ops/tokenversion/scheduler-setup/"


def revoke_url(row: TokenVersion) -> str:
    return f"/admin/ops/tokenversion/{row.pk}/revoke/"


def _staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__in=codenames
        )
    )
    return user


@pytest.fixture
def viewer_client(db: None) -> Client:
    client = Client()
    client.force_login(_staff("viewer", "view_tokenversion"))
    return client


@pytest.fixture
def rotator(db: None) -> User:
    return _staff("rotator", "view_tokenversion", "rotate_tokenversion")


@pytest.fixture
def rotator_client(rotator: User) -> Client:
    client = Client()
    client.force_login(rotator)
    return client


def _row_cells(html: str, marker: str) -> dict[str, str]:
    """The change list cells (by column class) of the row containing `marker`."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S):
        if marker in row:
            return {
                column: " ".join(unescape(re.sub(r"<[^>]+>", " ", cell)).split())
                for column, cell in re.findall(
                    r'<t[dh] class="field-([\w-]+)"[^>]*>(.*?)</t[dh]>', row, re.S
                )
            }
    raise AssertionError(f"no row with {marker}")


def _secret_part(token: str) -> str:
    """What follows the displayed prefix: never on any page."""
    return token[
        len(TokenVersion.objects.get(digest=tokens.digest(token).hex()).prefix) :
    ]


def _four_states(user: User | None = None) -> dict[str, tuple[TokenVersion, str]]:
    """One version in each state, with its token."""
    _, drain_old = tokens.rotate(scope="drain", label="old scheduler", created_by=user)
    _, drain_new = tokens.rotate(
        scope="drain", grace=timedelta(hours=6), label="cron-job.org", created_by=user
    )
    _, cron_old = tokens.rotate(scope="cron", created_by=user)
    _, cron_new = tokens.rotate(scope="cron", grace=timedelta(0), created_by=user)
    rows = {
        token: TokenVersion.objects.get(digest=tokens.digest(token).hex())
        for token in (drain_old, drain_new, cron_old, cron_new)
    }
    rows[cron_new].revoke()
    return {
        "grace": (rows[drain_old], drain_old),
        "active": (rows[drain_new], drain_new),
        "expired": (rows[cron_old], cron_old),
        "revoked": (rows[cron_new], cron_new),
    }


def _new_token(html: str) -> str:
    match = re.search(r'id="ops-new-token" value="([^"]+)"', html)
    assert match, "the page shows no token"
    return unescape(match.group(1))


# --- The list -----------------------------------------------------------------


def test_the_list_shows_each_state_and_never_a_digest_or_a_token(
    admin_client: Client, admin_user: User
) -> None:
    states = _four_states(admin_user)
    grace_row, _ = states["grace"]
    grace_row.record_use("203.0.113.7")
    grace_row.refresh_from_db()

    response = admin_client.get(LIST_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Cron tokens</h1>" in html
    for state, (row, token) in states.items():
        cells = _row_cells(html, f"<code>{row.prefix}…</code>")
        assert cells["state_badge"].startswith(state), cells
        assert cells["scope_name"] == row.scope
        assert cells["version_name"] == f"v{row.version}"
        assert cells["prefix_display"] == f"{row.prefix}…"
        assert cells["created_cell"].endswith("by admin")
        assert f'class="ops-badge ops-token-{state}"' in html
        # Neither the token, nor its secret part, nor the stored digest.
        assert token not in html
        assert _secret_part(token)[:8] not in html
        assert row.digest not in html
        assert row.digest[:16] not in html

    grace = _row_cells(html, f"<code>{grace_row.prefix}…</code>")
    until = timezone.localtime(grace_row.expires_at).strftime("%Y-%m-%d %H:%M")
    assert f"in grace until {until}" in grace["state_badge"]
    assert grace["label"] == "old scheduler"
    assert grace["last_used"].endswith("from 203.0.113.7")
    assert grace["uses"] == "1"
    active = _row_cells(html, f"<code>{states['active'][0].prefix}…</code>")
    assert active["last_used"] == "never"
    assert active["uses"] == "0"
    assert "expired" in _row_cells(html, states["expired"][0].prefix)["state_badge"]
    assert "revoked" in _row_cells(html, states["revoked"][0].prefix)["state_badge"]
    # Rotate and Scheduler setup for a superuser; revoke links on unrevoked rows.
    assert f'href="{ROTATE_URL}"' in html
    assert f'href="{SETUP_URL}"' in html
    assert f'href="{revoke_url(states["active"][0])}"' in html
    assert f'href="{revoke_url(states["revoked"][0])}"' not in html


def test_the_environment_box_says_set_or_not_and_never_shows_a_value(
    admin_client: Client, settings
) -> None:
    settings.DRAIN_QUEUES_TOKEN = "zq7-env-drain-queues-VALUE-4411"
    settings.CRON_SECRET = ""
    settings.CRON_TOKEN = "qx-k9-j7w"  # refused: under 16 characters

    response = admin_client.get(LIST_URL)

    html = response.content.decode()
    box = html[html.index('id="ops-env-credentials"') :]
    box = box[: box.index("</div>")]
    rows = {
        variable: " ".join(re.sub(r"<[^>]+>", " ", cells).split())
        for variable, cells in re.findall(
            r'<tr class="ops-env-(\w+)">(.*?)</tr>', box, re.S
        )
    }
    assert list(rows) == ["DRAIN_QUEUES_TOKEN", "CRON_SECRET", "CRON_TOKEN"]  # order
    assert rows["DRAIN_QUEUES_TOKEN"] == "1 DRAIN_QUEUES_TOKEN drain set"
    assert rows["CRON_SECRET"] == "2 CRON_SECRET cron not set"
    assert rows["CRON_TOKEN"].startswith("3 CRON_TOKEN drain set, but refused")
    for value in ("zq7-env-drain-queues-VALUE-4411", "qx-k9-j7w"):
        assert value not in html
        assert value[:5] not in html
        assert value[-5:] not in html
    assert "VALUE" not in html


def test_versions_cannot_be_added_edited_or_deleted(admin_client: Client) -> None:
    row, token = tokens.rotate(scope="drain")
    change_url = reverse("admin:ops_tokenversion_change", args=[row.pk])

    page = admin_client.get(change_url)

    assert page.status_code == 200
    html = page.content.decode()
    assert f"{row.prefix}…" in html
    assert row.digest not in html
    assert "digest" not in html.lower()
    assert 'name="_save"' not in html
    assert f'href="{revoke_url(row)}"' in html
    assert admin_client.get(reverse("admin:ops_tokenversion_add")).status_code == 403
    assert admin_client.post(change_url, {"label": "x"}).status_code == 403
    delete_url = reverse("admin:ops_tokenversion_delete", args=[row.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert TokenVersion.objects.get().label == ""
    assert tokens.authenticate(token) is not None


# --- Rotation -----------------------------------------------------------------


def test_the_rotate_page_explains_what_happens_to_the_valid_versions(
    rotator_client: Client, settings
) -> None:
    settings.TOKEN_GRACE_HOURS = 12
    current, _ = tokens.rotate(scope="drain", label="cron-job.org")
    before = timezone.now()

    response = rotator_client.get(ROTATE_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in html
    assert re.search(r'<select name="scope"[^>]*>', html)
    assert re.search(r'<input type="number" name="grace_hours" value="12"', html)
    assert re.search(r'<input type="text" name="label" maxlength="100"', html)
    table = html[html.index('id="ops-after-drain"') :]
    table = table[: table.index("</table>")]
    assert "v1" in table and f"{current.prefix}…" in table
    assert (before + timedelta(hours=12)).strftime("%Y-%m-%d") in table
    assert "No valid cron version" in html
    assert "no-store" in response["Cache-Control"]


def test_rotating_shows_the_new_token_once_and_keeps_it_nowhere(
    rotator: User, rotator_client: Client
) -> None:
    old, old_token = tokens.rotate(scope="drain")
    assert rotator_client.get(ROTATE_URL).status_code == 200

    posted = rotator_client.post(
        ROTATE_URL, {"scope": "drain", "grace_hours": "6", "label": "cron-job.org"}
    )

    # Redirected to the version's page (no token in the URL), which shows it.
    assert posted.status_code == 302
    new_row = TokenVersion.objects.get(version=2)
    assert posted["Location"] == reverse(
        "admin:ops_tokenversion_new_token", args=[new_row.pk]
    )
    assert new_row.prefix not in posted["Location"]
    response = rotator_client.get(posted["Location"])
    assert response.status_code == 200
    cache_control = response["Cache-Control"]
    assert "no-store" in cache_control and "private" in cache_control
    html = response.content.decode()
    token = _new_token(html)
    assert html.count(token) == 1
    assert "it will not be shown again" in html
    assert 'id="ops-copy-token"' in html and "navigator.clipboard.writeText" in html
    assert f'href="{LIST_URL}"' in html
    assert token not in posted["Location"]

    credential = tokens.authenticate(token)
    assert credential is not None and credential.scope == "drain"
    new = credential.token_version
    assert (new.version, new.label, new.created_by) == (2, "cron-job.org", rotator)

    # Not in any column of any version (nor the part after the shown prefix).
    secret = token[len(new.prefix) :]
    for row in TokenVersion.objects.all():
        for field in row._meta.concrete_fields:
            value = str(field.value_from_object(row))
            assert token not in value and secret not in value, field.name
    # Not in a message, the session (once shown), the admin history or a
    # later page.
    stored = list(get_messages(response.wsgi_request))
    assert all(token not in str(message) for message in stored)
    assert all(token not in morsel.value for morsel in response.cookies.values())
    for session in Session.objects.all():
        assert token not in str(session.get_decoded())
        assert secret not in session.session_data
    history = LogEntry.objects.get()
    assert history.change_message == f"Rotated: drain v2 ({new.prefix}…)"
    assert token not in rotator_client.get(LIST_URL).content.decode()

    # The old version is in its grace, and still works.
    old.refresh_from_db()
    assert old.state() == TokenVersion.State.GRACE
    assert abs(old.expires_at - (timezone.now() + timedelta(hours=6))) < timedelta(
        minutes=1
    )
    assert tokens.authenticate(old_token) is not None
    assert (
        "in grace until"
        in _row_cells(rotator_client.get(LIST_URL).content.decode(), f"{old.prefix}…")[
            "state_badge"
        ]
    )


def test_a_zero_grace_rejects_the_old_version_at_once(
    rotator_client: Client,
) -> None:
    _, old_token = tokens.rotate(scope="cron")

    response = rotator_client.post(
        ROTATE_URL, {"scope": "cron", "grace_hours": "0"}, follow=True
    )

    assert tokens.authenticate(_new_token(response.content.decode())).scope == "cron"
    assert tokens.authenticate(old_token) is None


def test_a_reload_after_rotating_shows_no_token_and_creates_no_version(
    rotator_client: Client,
) -> None:
    posted = rotator_client.post(ROTATE_URL, {"scope": "drain", "grace_hours": "1"})
    first = rotator_client.get(posted["Location"])
    token = _new_token(first.content.decode())

    # Reloading the token page, twice, as the back and forward buttons would.
    for _ in range(2):
        again = rotator_client.get(posted["Location"])
        assert again.status_code == 200
        assert "no-store" in again["Cache-Control"]
        html = again.content.decode()
        assert 'id="ops-new-token"' not in html
        assert token not in html
        assert 'id="ops-token-already-shown"' in html
        assert "rotate again" in html

    assert TokenVersion.objects.count() == 1  # one rotation, one version
    assert tokens.authenticate(token) is not None  # still the valid one
    for session in Session.objects.all():
        assert NEW_TOKEN_SESSION_KEY not in session.get_decoded()


def test_a_new_token_not_fetched_in_time_is_never_shown(
    rotator_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted = rotator_client.post(ROTATE_URL, {"scope": "drain", "grace_hours": "1"})
    monkeypatch.setattr(token_admin, "NEW_TOKEN_MAX_AGE_S", -1)

    page = rotator_client.get(posted["Location"])

    html = page.content.decode()
    assert 'id="ops-new-token"' not in html
    assert 'id="ops-token-already-shown"' in html
    for session in Session.objects.all():
        assert NEW_TOKEN_SESSION_KEY not in session.get_decoded()


def test_only_rotators_see_a_new_token_page(
    rotator_client: Client, viewer_client: Client
) -> None:
    posted = rotator_client.post(ROTATE_URL, {"scope": "drain", "grace_hours": "1"})

    assert viewer_client.get(posted["Location"]).status_code == 403
    assert rotator_client.get("/admin/ops/tokenversion/999/new-token/").status_code == (
        404
    )
    # The rotator's token is still waiting for the rotator.
    assert (
        'id="ops-new-token"' in rotator_client.get(posted["Location"]).content.decode()
    )


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"grace_hours": "abc"}, "grace_hours", "Enter a whole number."),
        ({"grace_hours": "-1"}, "grace_hours", "greater than or equal to 0"),
        ({"grace_hours": "99999"}, "grace_hours", "less than or equal to 2160"),
        ({"grace_hours": ""}, "grace_hours", "This field is required."),
        ({"scope": "admin"}, "scope", "Select a valid choice."),
        ({"scope": ""}, "scope", "This field is required."),
        ({"label": "x" * 101}, "label", "at most 100 characters"),
    ],
)
def test_bad_input_rerenders_the_form_and_creates_nothing(
    rotator_client: Client, data: dict[str, str], field: str, message: str
) -> None:
    current, current_token = tokens.rotate(scope="drain")

    response = rotator_client.post(
        ROTATE_URL, {"scope": "drain", "grace_hours": "24", "label": "", **data}
    )

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    html = response.content.decode()
    assert f'class="form-row errors field-{field}"' in html
    assert 'id="ops-new-token"' not in html
    assert list(TokenVersion.objects.values_list("pk", flat=True)) == [current.pk]
    current.refresh_from_db()
    assert current.state() == TokenVersion.State.ACTIVE  # nothing cut short
    assert tokens.authenticate(current_token) is not None


def test_the_rotate_post_is_csrf_protected(rotator: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(rotator)

    response = client.post(ROTATE_URL, {"scope": "drain", "grace_hours": "1"})

    assert response.status_code == 403
    assert not TokenVersion.objects.exists()


def test_rotation_needs_a_staff_login(client: Client, db: None) -> None:
    for url in (ROTATE_URL, SETUP_URL):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert (
        client.post(ROTATE_URL, {"scope": "drain", "grace_hours": "1"}).status_code
        == 302
    )
    assert not TokenVersion.objects.exists()


# --- Who may act --------------------------------------------------------------


def test_viewing_tokens_does_not_grant_rotating_or_revoking(
    viewer_client: Client,
) -> None:
    row, token = tokens.rotate(scope="drain")

    page = viewer_client.get(LIST_URL)

    assert page.status_code == 200
    html = page.content.decode()
    assert f"{row.prefix}…" in html
    assert ROTATE_URL not in html and "Rotate a token" not in html
    assert "/revoke/" not in html
    assert "ops-revoke-link" not in html and "field-revoke_link" not in html
    assert f'href="{SETUP_URL}"' in html
    change = viewer_client.get(reverse("admin:ops_tokenversion_change", args=[row.pk]))
    assert change.status_code == 200
    assert "/revoke/" not in change.content.decode()

    assert viewer_client.get(ROTATE_URL).status_code == 403
    assert (
        viewer_client.post(
            ROTATE_URL, {"scope": "drain", "grace_hours": "0"}
        ).status_code
        == 403
    )
    assert viewer_client.get(revoke_url(row)).status_code == 403
    assert viewer_client.post(revoke_url(row)).status_code == 403
    assert TokenVersion.objects.count() == 1
    row.refresh_from_db()
    assert row.state() == TokenVersion.State.ACTIVE
    assert tokens.authenticate(token) is not None


def test_a_rotator_without_view_permission_lands_on_the_index(db: None) -> None:
    client = Client()
    client.force_login(_staff("rotate-only", "rotate_tokenversion"))
    row, _ = tokens.rotate(scope="drain")

    assert client.get(LIST_URL).status_code == 403
    response = client.post(revoke_url(row))

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
    row.refresh_from_db()
    assert row.revoked_at is not None


# --- Revocation ---------------------------------------------------------------


def test_revoking_asks_first_then_rejects_the_token(
    rotator_client: Client, settings
) -> None:
    settings.DRAIN_QUEUES_TOKEN = "env-drain-queues-token-0001"
    row, token = tokens.rotate(scope="drain", label="cron-job.org")

    confirm = rotator_client.get(revoke_url(row))

    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert f"Revoke drain v{row.version}" in html
    assert f"{row.prefix}…" in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert "Yes, revoke v1" in html
    # The only valid drain version: the page says so, and what still works.
    assert 'id="ops-last-valid"' in html
    assert "Still accepted where this version was: DRAIN_QUEUES_TOKEN" in html
    assert "env-drain-queues-token-0001" not in html
    row.refresh_from_db()
    assert row.revoked_at is None  # GET changes nothing
    assert tokens.authenticate(token) is not None

    response = rotator_client.post(revoke_url(row))

    assert response.status_code == 302
    assert response["Location"] == LIST_URL
    row.refresh_from_db()
    assert row.state() == TokenVersion.State.REVOKED
    assert tokens.authenticate(token) is None
    page = rotator_client.get(LIST_URL).content.decode()
    assert f"Revoked {unescape(str(row))}" in unescape(page)
    assert LogEntry.objects.get().change_message == "Revoked."


def test_revoking_a_revoked_version_changes_nothing(rotator_client: Client) -> None:
    row, _ = tokens.rotate(scope="cron")
    row.revoke()
    revoked_at = row.revoked_at

    confirm = rotator_client.get(revoke_url(row))
    assert "already revoked" in confirm.content.decode()
    response = rotator_client.post(revoke_url(row), follow=True)

    assert response.status_code == 200
    assert "was already revoked on" in response.content.decode()
    row.refresh_from_db()
    assert row.revoked_at == revoked_at
    assert not LogEntry.objects.exists()


def test_revoking_an_unknown_version_is_a_404(rotator_client: Client) -> None:
    assert rotator_client.get("/admin/ops/tokenversion/999/revoke/").status_code == 404
    assert rotator_client.post("/admin/ops/tokenversion/999/revoke/").status_code == 404


def test_the_revoke_post_is_csrf_protected(rotator: User) -> None:
    row, token = tokens.rotate(scope="drain")
    client = Client(enforce_csrf_checks=True)
    client.force_login(rotator)

    assert client.post(revoke_url(row)).status_code == 403
    assert tokens.authenticate(token) is not None
