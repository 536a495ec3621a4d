"""The quota page, the usage and incident admin, and the quota banner on every
admin page. The page and the banner are read from the database only: the
`wire` proxy proves they send no Redis command."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client, RequestFactory
from django.utils import timezone

from ops.console.context_processors import banner_for
from ops.models import CommandUsage, DrainRun, ProviderUsageReading, QuotaIncident
from ops.usage import incidents, quota

QUOTA_URL = "/admin/ops/commandusage/quota/"
USAGE_URL = "/admin/ops/commandusage/"
INCIDENTS_URL = "/admin/ops/quotaincident/"
RUNS_URL = "/admin/ops/drainrun/"
READINGS_URL = "/admin/ops/providerusagereading/"


# The pages read the clock through ops.usage.quota.current_time: pinned here, so the
# period (Mar 1 - Apr 1) and the rates do not depend on when the suite runs.
NOW = datetime(2025, 3, 10, 12, 20, tzinfo=UTC)
HOUR = NOW.replace(minute=0)


def add(commands: int, source: str = "drain-check", hours_ago: int = 0) -> None:
    CommandUsage.objects.create(
        hour=HOUR - timedelta(hours=hours_ago), source=source, commands=commands
    )


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch):
    monkeypatch.setattr(quota, "current_time", lambda: NOW)


@pytest.fixture(autouse=True)
def quota_settings(settings):
    settings.QUOTA_MONTHLY_BUDGET = 500_000
    settings.QUOTA_PERIOD_START_DAY = 1
    settings.QUOTA_WARN_THRESHOLDS = [80, 95]
    settings.QUOTA_SERVER_STATS = False
    return settings


def _staff(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- The quota page --------------------------------------------------------------


def test_the_quota_page_shows_chart_sources_and_advisor_and_costs_no_redis(
    admin_client: Client, wire, settings
) -> None:
    settings.DRAIN_EXECUTOR = "rq"  # the figures below are RQ's executor's
    add(1_200, "drain-check", hours_ago=30)
    add(3_000, "drain-jobs", hours_ago=2)
    add(300, "console")
    for i in range(3):
        DrainRun.objects.create(
            trigger="cron",
            status="succeeded",
            started=NOW - timedelta(hours=i + 1),
            total_processed=10,
            redis_commands=600,
        )

    response = admin_client.get(QUOTA_URL)

    assert response.status_code == 200
    html = response.content.decode()
    # The chart: inline SVG with a bar for today, the budget line, no script.
    svg = re.search(r'<svg class="ops-chart" data-chart="usage".*?</svg>', html, re.S)
    assert svg, "no usage chart"
    assert re.search(r'<rect class="ops-bar" data-day="[\d-]+"', svg.group(0))
    # Mar 1 to Mar 10: ten days, three with usage (a bar each, two segments
    # once an earlier day has usage).
    assert len(re.findall(r'<rect class="ops-bar"', svg.group(0))) == 10
    assert 'data-day="2025-03-09"' in svg.group(0)
    assert 'class="ops-budget"' in svg.group(0)
    assert 'class="ops-projection"' in svg.group(0)
    assert "budget 500,000" in svg.group(0)
    assert "<script" not in svg.group(0)
    # By source: this period's commands and their share.
    table = re.search(
        r'<table class="ops-quota-table" id="ops-by-source">.*?</table>', html, re.S
    )
    assert table
    text = _text(table.group(0))
    assert "drain-jobs 3,000 66.7 %" in text
    assert "drain-check 1,200 26.7 %" in text
    assert "console 300 6.7 %" in text
    assert "Total 4,500 100 %" in text
    # The advisor: five modes, one recommended.
    advisor_table = re.search(
        r'<table class="ops-quota-table" id="ops-advisor">.*?</table>', html, re.S
    )
    assert advisor_table
    modes = re.findall(r'data-mode="([\w-]+)"', advisor_table.group(0))
    assert modes == ["always-on", "cron-1", "cron-5", "cron-15", "cron-30"]
    assert re.findall(r'data-mode="([\w-]+)" data-recommended="true"', html) == [
        "always-on"
    ]
    assert "Recommended: Always-on workers" in _text(html)
    # Where each figure came from.
    assert "benchmark: RQ job life cycle, 52 per job" in html
    assert "benchmark: 1 EXISTS per idle tick" in html
    # Zero Redis: not even a connection.
    assert "This page spent 0 Redis commands" in _text(html)
    assert wire.billed() == 0
    assert wire.total == 0


def test_the_page_shows_used_budget_and_progress(
    admin_client: Client, settings
) -> None:
    settings.QUOTA_MONTHLY_BUDGET = 10_000
    add(2_500)
    html = admin_client.get(QUOTA_URL).content.decode()
    assert re.search(r'id="ops-used">2,500 <small>25.0 %</small>', html)
    assert 'aria-valuenow="2500"' in html
    assert 'class="ops-progress-used" style="width: 25.0%"' in html


def test_the_page_is_for_users_who_may_view_usage(db) -> None:
    assert _staff("nobody").get(QUOTA_URL).status_code == 403
    viewer = _staff("viewer", "view_commandusage")
    assert viewer.get(QUOTA_URL).status_code == 200
    assert Client().get(QUOTA_URL).status_code == 302  # to the login page


def test_server_stats_are_read_with_unbilled_info_only(
    admin_client: Client, settings, wire, raw_redis
) -> None:
    settings.QUOTA_SERVER_STATS = True
    add(40)
    for i in range(5):
        raw_redis.set(f"k{i}", i)  # another client's commands

    html = admin_client.get(QUOTA_URL).content.decode()

    assert 'id="ops-server-stats"' in html
    all_clients = int(
        re.search(r'id="ops-server-all">([\d,]+)<', html).group(1).replace(",", "")
    )
    assert all_clients >= 5
    assert re.search(r'id="ops-server-project">40<', html)
    # One INFO ("all": uptime and commandstats in one reply), and the AUTH.
    assert wire.snapshot() == {"AUTH": 1, "INFO": 1}
    assert wire.billed() == 0
    assert "This page spent 0 Redis commands (2 unbilled: AUTH and INFO" in _text(html)
    assert 'data-basis="server"' in html


def test_server_stats_are_skipped_while_an_incident_is_open(
    admin_client: Client, settings, wire
) -> None:
    settings.QUOTA_SERVER_STATS = True
    incidents.note_quota_error("console", Exception("max requests limit exceeded"))
    html = admin_client.get(QUOTA_URL).content.decode()
    assert "skipped while a quota incident is open" in html
    assert wire.total == 0


# --- Usage rows and incidents in the admin ------------------------------------------


def test_usage_rows_are_a_read_only_list_linking_to_the_quota_page(
    admin_client: Client,
) -> None:
    add(1_234, "enqueue")
    response = admin_client.get(USAGE_URL, {"source": "enqueue"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "1,234" in html
    assert f'href="{QUOTA_URL}" id="ops-quota-page-link"' in html
    assert f'href="{USAGE_URL}add/"' not in html
    assert admin_client.get(USAGE_URL + "add/").status_code == 403
    row = CommandUsage.objects.get()
    detail = admin_client.get(f"{USAGE_URL}{row.pk}/change/")
    assert detail.status_code == 200
    assert 'name="commands"' not in detail.content.decode()  # no form field


def test_incidents_are_listed_and_shown_read_only(admin_client: Client) -> None:
    incident = incidents.note_quota_error(
        "drain-check", Exception("max requests limit exceeded. Limit: 500000")
    )
    listing = admin_client.get(INCIDENTS_URL, {"state": "open"})
    assert listing.status_code == 200
    assert "max requests limit exceeded" in listing.content.decode()
    detail = admin_client.get(f"{INCIDENTS_URL}{incident.pk}/change/")
    assert detail.status_code == 200
    html = detail.content.decode()
    assert "Limit: 500000" in html
    assert 'name="_save"' not in html  # read-only: nothing to save
    assert admin_client.get(INCIDENTS_URL + "add/").status_code == 403


# --- The banner ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/admin/", RUNS_URL])
def test_the_amber_banner_appears_at_80_percent_of_the_budget(
    admin_client: Client, settings, url
) -> None:
    settings.QUOTA_MONTHLY_BUDGET = 1_000
    add(820)
    html = admin_client.get(url).content.decode()
    assert 'id="ops-quota-warning"' in html
    text = _text(html)
    assert "Redis quota: 82.0 % used" in text
    assert "past the 80 % warning threshold" in text
    assert f'<a href="{QUOTA_URL}">Quota page</a>' in html
    assert 'id="ops-quota-incident"' not in html


@pytest.mark.parametrize("url", ["/admin/", RUNS_URL])
def test_no_amber_banner_below_80_percent(admin_client: Client, settings, url) -> None:
    settings.QUOTA_MONTHLY_BUDGET = 1_000
    add(790)
    html = admin_client.get(url).content.decode()
    assert 'id="ops-quota-warning"' not in html
    assert 'id="ops-quota-incident"' not in html
    # The quota link in the header is there on every page.
    assert re.search(r'id="ops-quota-link"[^>]*>Redis quota 79.0 %<', html)


def test_the_95_percent_threshold_is_named_once_reached(
    admin_client: Client, settings
) -> None:
    settings.QUOTA_MONTHLY_BUDGET = 1_000
    add(960)
    text = _text(admin_client.get("/admin/").content.decode())
    assert "past the 95 % warning threshold" in text


def _assert_red_banner(html: str, incident: QuotaIncident, source: str) -> None:
    assert 'id="ops-quota-incident"' in html
    text = _text(html)
    assert "Redis quota exhausted" in text
    assert f"incident open since {incident.opened_at:%Y-%m-%d %H:%M} UTC" in text
    assert f"{incident.count} quota error" in text
    assert f"first by {source}" in text
    assert "max requests limit exceeded" in text
    assert "503 redis_quota_exhausted" in text
    assert "at most once every 600 s (QUOTA_PROBE_COOLDOWN_S)" in text
    for option, effort in (
        ("WORKER_INPROCESS=0 + a 5-minute cron", "30 min"),
        ("New Redis database + the same fix", "45 min"),
        ("pay-as-you-go", "1 min"),
        ("Move to a different Redis", "1-2 h"),
    ):
        assert option in text and effort in text
    assert "~$0.20 per 100K commands" in text
    assert f'href="/admin/ops/quotaincident/{incident.pk}/change/"' in html


# Transactional: Drain now's drain runs in a process of its own, which must see
# the rows this test writes.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("how", "source"), [("queue page", "console"), ("drain now", "drain-check")]
)
def test_the_red_banner_appears_when_redis_answers_quota_exhausted_and_goes_when_closed(
    request: pytest.FixtureRequest, admin_client: Client, fault, settings, how, source
) -> None:
    settings.QUOTA_PROBE_COOLDOWN_S = 600
    fault.exhaust()
    # A console page that talks to Redis meets the provider's quota error.
    if how == "queue page":
        assert admin_client.get("/admin/ops/queue/").status_code == 200
    else:
        # Drain now runs the drain in a process of its own (it reaches Redis
        # through the same fault proxy).
        wait = request.getfixturevalue("background_drains")
        admin_client.post("/admin/ops/drainrun/drain/", {"queues": ["batch-jobs"]})
        wait(DrainRun.objects.get().pk)
    incident = QuotaIncident.objects.get()
    assert incident.is_open

    for url in ("/admin/", RUNS_URL, QUOTA_URL):
        _assert_red_banner(admin_client.get(url).content.decode(), incident, source)

    QuotaIncident.objects.filter(pk=incident.pk).update(
        closed_at=timezone.now(), open_marker=None
    )
    # A page without Redis reads: the home page's backlog read would meet the
    # proxy's quota error again and open a new incident.
    html = admin_client.get(RUNS_URL).content.decode()
    assert 'id="ops-quota-incident"' not in html


def test_the_red_banner_counts_every_quota_error_of_the_incident(
    admin_client: Client,
) -> None:
    error = Exception("max requests limit exceeded. Limit: 500000, Usage: 500000")
    incidents.note_quota_error("console", error)
    incident = incidents.note_quota_error("enqueue", error)
    assert incident.count == 2
    html = admin_client.get(USAGE_URL).content.decode()
    _assert_red_banner(html, incident, "console")
    assert "2 quota errors seen" in _text(html)
    # An incident outranks a threshold warning: one banner, the red one.
    assert 'id="ops-quota-warning"' not in html


def test_a_projection_past_the_budget_shows_the_softer_notice(
    admin_client: Client, settings
) -> None:
    settings.QUOTA_MONTHLY_BUDGET = 10_000
    add(1_000, hours_ago=2)  # 1,000 over 2 h 20 min of data: ~429/h
    html = admin_client.get("/admin/").content.decode()
    assert 'id="ops-quota-warning"' not in html
    assert 'id="ops-quota-notice"' in html
    text = _text(html)
    assert "Redis quota: 10.0 % used, but at the current rate" in text
    # 9,000 left at 1,000 / (7/3 h) = 428.6/h: 21 h after Mar 10 12:20.
    assert "the budget runs out on 2025-03-11" in text


def test_no_banner_for_visitors_who_are_not_logged_in(
    client: Client, settings, db
) -> None:
    settings.QUOTA_MONTHLY_BUDGET = 1_000
    add(999)
    html = client.get("/admin/login/").content.decode()
    assert "ops-quota" not in html


def test_the_banner_costs_two_queries_and_no_redis(
    admin_user, django_assert_num_queries, wire
) -> None:
    add(10)
    incidents.note_quota_error("console", Exception("max requests limit exceeded"))
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    with django_assert_num_queries(2):
        banner = banner_for(request)
    assert banner.level == "red"
    assert wire.total == 0


def test_the_banner_is_lazy_pages_that_do_not_show_it_read_nothing(
    admin_user, django_assert_num_queries
) -> None:
    from ops.console.context_processors import quota_banner

    request = RequestFactory().get("/")
    request.user = admin_user
    with django_assert_num_queries(0):
        context = quota_banner(request)
    with django_assert_num_queries(2):
        assert context["ops_quota"].visible


# --- Who used the budget: the provider's figure and what the page cannot see ----------


def _figure(html: str, element_id: str) -> int:
    match = re.search(rf'id="{element_id}">([\d,]+)', html)
    assert match, f"no #{element_id}"
    return int(match.group(1).replace(",", ""))


def test_without_any_figure_the_page_says_others_are_unknown(
    admin_client: Client,
) -> None:
    add(300, "console")
    add(80, "django-rq")
    html = admin_client.get(QUOTA_URL).content.decode()
    assert 'data-basis="meters"' in html
    assert _figure(html, "ops-used-console") == 300
    assert _figure(html, "ops-used-application") == 80
    assert re.search(r'id="ops-used-others">unknown<', html)
    text = _text(html)
    assert (
        "What this page cannot see: commands sent by processes outside this console "
        "that do not use a metered client"
    ) in text
    assert "No provider figure is recorded this period" in text


def test_a_quota_errors_usage_figure_lands_on_the_quota_page(
    admin_client: Client, fault, monkeypatch
) -> None:
    # The figure is recorded at the real time: the page must look at it then.
    monkeypatch.setattr(quota, "current_time", timezone.now)
    fault.exhaust()
    with incidents.guarded_read("console") as read:
        read.execute([("llen", "rq:queue:batch-jobs")])
    assert read.quota_exhausted

    html = admin_client.get(QUOTA_URL).content.decode()

    reading = ProviderUsageReading.objects.get()
    assert (reading.used, reading.limit, reading.kind, reading.origin) == (
        500_000,
        500_000,
        "monthly",
        "error",
    )
    assert 'data-basis="provider"' in html
    # The meters saw (next to) nothing; the provider counted the whole budget.
    assert _figure(html, "ops-truth-used") == 500_000
    assert _figure(html, "ops-used-others") == 500_000
    assert "100.0 %" in _text(re.search(r'id="ops-truth".*?</table>', html, re.S)[0])
    text = _text(html)
    assert (
        f"The provider's figure of {reading.at:%Y-%m-%d %H:%M} UTC (500,000, monthly) "
        "is the best total we have"
    ) in text
    assert re.search(r'<tr data-origin="error">.*?500,000', html, re.S)


@pytest.fixture
def recorder_user(db) -> tuple[User, Client]:
    user = User.objects.create_user("sre", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops",
            codename__in=["view_commandusage", "add_providerusagereading"],
        )
    )
    client = Client()
    client.force_login(user)
    return user, client


def test_an_sre_enters_the_providers_figure_and_the_projection_follows_it(
    recorder_user,
) -> None:
    user, client = recorder_user
    add(1_000, "drain-check", hours_ago=30)
    html = client.get(QUOTA_URL).content.decode()
    assert 'id="ops-reading-form"' in html
    metered_projection = _figure(html, "ops-truth-projected")
    assert metered_projection == _figure(html, "ops-projected")

    response = client.post(
        QUOTA_URL,
        {
            "used": "120000",
            "kind": "monthly",
            "limit": "500000",
            "at": "2025-03-10 06:00",  # UTC, what the dashboard showed then
            "note": "dashboard",
        },
    )

    assert response.status_code == 302
    reading = ProviderUsageReading.objects.get()
    assert (reading.used, reading.limit, reading.origin, reading.entered_by) == (
        120_000,
        500_000,
        "manual",
        user,
    )
    assert reading.at == datetime(2025, 3, 10, 6, 0, tzinfo=UTC)
    entry = LogEntry.objects.get()
    assert entry.action_flag == ADDITION
    assert entry.user == user
    assert entry.content_type.model == "providerusagereading"
    assert entry.object_id == str(reading.pk)
    assert "Entered the provider's figure" in entry.change_message

    html = client.get(QUOTA_URL).content.decode()
    assert "Recorded the provider&#x27;s monthly figure 120,000" in html
    assert 'data-basis="provider"' in html
    # 1,000 metered by then: 119,000 unseen in the 222 h since Mar 1, at
    # 536/h on top of the metered rate for the 515.7 h left.
    assert _figure(html, "ops-used-others") == 119_000
    assert _figure(html, "ops-truth-used") == 120_000
    assert _figure(html, "ops-truth-projected") > 120_000 + 536 * 515
    assert _figure(html, "ops-truth-projected") > metered_projection


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"used": "-5", "kind": "monthly"}, "used", "greater than or equal to 0"),
        ({"used": "lots", "kind": "monthly"}, "used", "Enter a whole number"),
        ({"kind": "monthly"}, "used", "This field is required"),
        ({"used": "10", "kind": "weekly"}, "kind", "Select a valid choice"),
        ({"used": "10", "kind": "monthly", "limit": "0"}, "limit", "greater than"),
        ({"used": "10", "kind": "monthly", "at": "yesterday"}, "at", "valid date"),
        ({"used": "10", "kind": "monthly", "at": "2999-01-01 00:00"}, "at", "future"),
        ({"used": "1" + "0" * 20, "kind": "monthly"}, "used", "less than or equal"),
    ],
)
def test_bad_input_is_a_form_error_never_a_500(
    recorder_user, data, field, message
) -> None:
    _, client = recorder_user
    response = client.post(QUOTA_URL, data)
    assert response.status_code == 200
    errors = response.context["reading_form"].errors
    assert field in errors and message in " ".join(errors[field])
    assert "errorlist" in response.content.decode()
    assert ProviderUsageReading.objects.count() == 0
    assert LogEntry.objects.count() == 0


def test_a_view_only_user_sees_no_form_and_cannot_post(db) -> None:
    viewer = _staff("viewer", "view_commandusage")
    html = viewer.get(QUOTA_URL).content.decode()
    assert 'id="ops-reading-form"' not in html
    response = viewer.post(QUOTA_URL, {"used": "5", "kind": "monthly"})
    assert response.status_code == 403
    assert ProviderUsageReading.objects.count() == 0


def test_provider_figures_are_history_that_the_admin_cannot_edit_or_delete(
    admin_client: Client,
) -> None:
    reading = ProviderUsageReading.objects.create(
        at=NOW, used=7, kind="monthly", origin="manual"
    )
    assert admin_client.get(READINGS_URL).status_code == 200
    assert admin_client.get(READINGS_URL + "add/").status_code == 403
    detail = admin_client.get(f"{READINGS_URL}{reading.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert (
        admin_client.post(
            f"{READINGS_URL}{reading.pk}/change/", {"used": "1"}
        ).status_code
        == 403
    )
    assert admin_client.post(f"{READINGS_URL}{reading.pk}/delete/").status_code == 403
    assert ProviderUsageReading.objects.get().used == 7


@pytest.mark.parametrize("changelist", [USAGE_URL, INCIDENTS_URL])
def test_usage_rows_and_incidents_cannot_be_edited_or_deleted(
    admin_client: Client, changelist
) -> None:
    """Issue 12: history is never edited or deleted from the UI."""
    add(5)
    incidents.note_quota_error("console", Exception("max requests limit exceeded"))
    model = CommandUsage if changelist == USAGE_URL else QuotaIncident
    row = model.objects.get()
    listing = admin_client.get(changelist).content.decode()
    assert "delete_selected" not in listing
    assert admin_client.post(f"{changelist}{row.pk}/delete/").status_code == 403
    # The bulk action is not offered, and asking for it anyway deletes nothing.
    admin_client.post(
        changelist, {"action": "delete_selected", "_selected_action": [row.pk]}
    )
    assert model.objects.filter(pk=row.pk).exists()
    assert admin_client.post(f"{changelist}{row.pk}/change/", {}).status_code == 403


def test_the_server_stats_button_reads_one_info_only_when_asked(
    admin_client: Client, wire, raw_redis
) -> None:
    for i in range(7):
        raw_redis.set(f"other-app-{i}", i)  # another application's commands

    html = admin_client.get(QUOTA_URL).content.decode()
    assert wire.total == 0  # a plain view reads nothing from Redis
    assert 'id="ops-read-server-stats" href="?server_stats=1"' in html

    html = admin_client.get(QUOTA_URL, {"server_stats": "1"}).content.decode()
    assert wire.snapshot() == {"AUTH": 1, "INFO": 1}
    assert 'data-basis="server"' in html
    # No meter saw the other application's commands: all of them are others'.
    assert _figure(html, "ops-used-others") == _figure(html, "ops-server-all")
    assert _figure(html, "ops-used-others") >= 7
