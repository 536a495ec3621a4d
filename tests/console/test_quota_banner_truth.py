"""The quota banner on every page warns on the quota page's larger truth (the
provider's figure when it counts more than the meters), in two queries and no
Redis command."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client, RequestFactory

from ops.console.context_processors import banner_for
from ops.models import CommandUsage, ProviderUsageReading, Source
from ops.usage import provider, quota

NOW = datetime(2025, 3, 10, 12, 20, tzinfo=UTC)  # period Mar 1 - Apr 1
HOUR = NOW.replace(minute=0)
MONTHLY = ProviderUsageReading.Kind.MONTHLY
DAILY = ProviderUsageReading.Kind.DAILY


@pytest.fixture(autouse=True)
def pinned(monkeypatch, settings) -> None:
    monkeypatch.setattr(quota, "current_time", lambda: NOW)
    settings.QUOTA_MONTHLY_BUDGET = 1_000_000
    settings.QUOTA_PERIOD_START_DAY = 1
    settings.QUOTA_WARN_THRESHOLDS = [80, 95]
    settings.QUOTA_SERVER_STATS = False


def add(commands: int, hours_ago: int, source: str = Source.DRAIN_CHECK) -> None:
    CommandUsage.objects.create(
        hour=HOUR - timedelta(hours=hours_ago), source=source, commands=commands
    )


def reading(used: int, kind: str, hours_ago: float) -> None:
    provider.record_manual(
        used=used, kind=kind, by=None, at=NOW - timedelta(hours=hours_ago)
    )


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


SCENARIOS = {
    "meters only": lambda: (add(5_000, 30), add(2_000, 2, Source.APP)),
    "monthly figure": lambda: (
        add(5_000, 30),
        add(2_000, 2, Source.DJANGO_RQ),
        add(700, 0),
        reading(400_000, MONTHLY, hours_ago=1.5),
    ),
    "daily figure": lambda: (
        add(5_000, 30),
        add(3_000, 3),
        add(700, 0),
        reading(60_000, DAILY, hours_ago=1),
    ),
    "a figure without any usage row": lambda: reading(900_000, MONTHLY, 20),
    "monthly beside an older daily": lambda: (
        add(4_000, 10),
        reading(90_000, DAILY, hours_ago=2),
        reading(300_000, MONTHLY, hours_ago=5),
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_glance_is_the_quota_pages_truth(scenario) -> None:
    SCENARIOS[scenario]()
    page = quota.report(NOW).truth
    glance = quota.glance(NOW)
    assert page is not None
    fields = ("used", "projected_total", "others", "application", "console", "basis")
    assert {f: getattr(glance.truth, f) for f in fields} == {
        f: getattr(page, f) for f in fields
    }
    assert glance.truth.per_hour == pytest.approx(page.per_hour)


@pytest.mark.django_db
def test_a_provider_figure_over_the_threshold_turns_the_banner_amber(
    admin_client: Client,
) -> None:
    add(10_000, 30)  # the meters: 1 % of the budget
    reading(850_000, MONTHLY, hours_ago=2)
    html = admin_client.get("/admin/ops/drainrun/").content.decode()
    assert 'id="ops-quota-warning"' in html
    text = _text(html)
    assert "Redis quota: 85.0 % used" in text
    assert "past the 80 % warning threshold" in text
    assert "840,000 of them not sent through the console's meters" in text
    assert re.search(r'id="ops-quota-link"[^>]*>Redis quota 85.0 %<', html)


@pytest.mark.django_db
def test_a_provider_rate_past_the_budget_shows_the_notice(admin_client: Client):
    # 300,000 in the first 9 days: about 1.36 M by the end of the period.
    reading(300_000, MONTHLY, hours_ago=0.5)
    add(100, 1)
    html = admin_client.get("/admin/ops/drainrun/").content.decode()
    assert 'id="ops-quota-warning"' not in html
    assert 'id="ops-quota-notice"' in html
    assert "Redis quota: 30.0 % used, but at the current rate" in _text(html)


@pytest.mark.django_db
def test_the_banner_with_a_provider_figure_costs_two_queries_and_no_redis(
    admin_user, django_assert_num_queries, wire
) -> None:
    add(10_000, 30)
    add(500, 0, Source.APP)
    reading(850_000, MONTHLY, hours_ago=2)
    reading(40_000, DAILY, hours_ago=1)
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    with django_assert_num_queries(2):
        banner = banner_for(request, now=NOW)
    assert banner.level == "amber"
    assert banner.summary is not None and banner.summary.used == 850_500
    assert wire.total == 0
