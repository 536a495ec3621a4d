"""The quota page in a real headless Chromium (Debian's, never a downloaded
one): log in, follow the header's quota link, read the chart and the advisor,
then see the red banner once a quota incident opens. Screenshots for a person
to look at: /tmp/kaireon-quota.png, /tmp/kaireon-quota-incident.png."""

from __future__ import annotations

import math
import re
from datetime import UTC, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from ops.models import CommandUsage, DrainRun
from ops.usage import incidents

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOT = Path("/tmp/kaireon-quota.png")
INCIDENT_SCREENSHOT = Path("/tmp/kaireon-quota-incident.png")


def _period_start_day_some_days_ago(now, days: range = range(12, 20)) -> int:
    """A start day (1-28) whose period began 12-19 days ago: a chart with some
    history whatever the date the suite runs on."""
    for back in days:
        day = (now - timedelta(days=back)).day
        if day <= 28:
            return day
    raise AssertionError("unreachable: one of eight consecutive days is <= 28")


def _fill_period(now, start_day: int) -> None:
    """Hourly usage from the period start to now, like a 5-minute cron drain
    with a few jobs an hour (more on some days), plus the drains behind it."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = hour.replace(day=start_day, hour=0)
    if first > hour:
        first = (first - timedelta(days=28)).replace(day=start_day)
    rows: list[CommandUsage] = []
    runs: list[DrainRun] = []
    at = first
    while at <= hour:
        day_index = (at - first).days
        jobs = 4 + (3 if day_index % 5 == 2 else 0) + (1 if 9 <= at.hour < 18 else 0)
        rows += [
            CommandUsage(hour=at, source="drain-check", commands=12),
            CommandUsage(hour=at, source="drain-jobs", commands=jobs * 58),
            CommandUsage(hour=at, source="enqueue", commands=jobs * 8, unbilled=2),
            CommandUsage(
                hour=at,
                source="console",
                commands=int(20 + 15 * math.sin(day_index)) if at.hour % 3 == 0 else 0,
            ),
        ]
        if hour - at < timedelta(days=7):
            runs.append(
                DrainRun(
                    trigger="cron",
                    status="succeeded",
                    started=at + timedelta(minutes=5),
                    total_processed=jobs,
                    redis_commands=jobs * 58 + 1,
                )
            )
        at += timedelta(hours=1)
    runs += [
        DrainRun(
            trigger="cron",
            status="succeeded",
            started=now - timedelta(minutes=5 * (i + 1)),
            redis_commands=1,
        )
        for i in range(30)
    ]
    CommandUsage.objects.bulk_create(rows)
    DrainRun.objects.bulk_create(runs)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_superuser_reads_the_quota_page_and_sees_the_incident_banner(
    live_server, settings, browser_page: Page, admin_login
) -> None:
    # The fixture has already failed the test if playwright is missing.
    from playwright.sync_api import expect

    page = browser_page
    now = timezone.now()
    start_day = _period_start_day_some_days_ago(now)
    settings.QUOTA_PERIOD_START_DAY = start_day
    settings.QUOTA_MONTHLY_BUDGET = 500_000
    settings.QUOTA_WARN_THRESHOLDS = [80, 95]
    settings.QUOTA_SERVER_STATS = False
    _fill_period(now, start_day)
    User.objects.create_superuser("boss", password="correct horse battery")
    SCREENSHOT.unlink(missing_ok=True)
    INCIDENT_SCREENSHOT.unlink(missing_ok=True)

    admin_login(
        page, live_server.url, "boss", "correct horse battery", next_path="/admin/"
    )
    expect(page).to_have_url(re.compile(r"/admin/$"))

    # The header links every admin page to the quota page.
    link = page.locator("#ops-quota-link")
    expect(link).to_contain_text(re.compile(r"Redis quota \d+\.\d %"))
    link.click()
    expect(page).to_have_url(re.compile(r"/admin/ops/commandusage/quota/$"))
    expect(page.locator("h1")).to_have_text("Redis quota")

    chart = page.locator('svg[data-chart="usage"]')
    expect(chart).to_be_visible()
    # One bar per day so far (12-19 days plus today), the budget line
    # and the dashed projection to the period end.
    bars = chart.locator("rect.ops-bar")
    assert 13 <= bars.count() <= 21, bars.count()
    expect(chart.locator("line.ops-budget")).to_have_count(1)
    expect(chart.locator("line.ops-projection")).to_have_count(1)
    expect(chart.locator("text.ops-budget-label")).to_have_text("budget 500,000")
    box = chart.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 200

    expect(page.locator("#ops-by-source tbody tr")).to_have_count(4)
    advisor = page.locator("#ops-advisor")
    expect(advisor.locator("tbody tr")).to_have_count(5)
    recommended = advisor.locator("tr[data-recommended=true]")
    expect(recommended).to_have_count(1)
    expect(recommended).to_contain_text("Always-on workers")
    expect(recommended).to_contain_text("recommended")
    # Enough drains here to measure both costs.
    figures = page.locator("#ops-advisor-figures")
    expect(figures).to_contain_text("measured here: 30 idle drains")
    expect(figures).to_contain_text(re.compile(r"measured here: [\d,]+ jobs"))
    expect(page.locator("#ops-redis-cost")).to_contain_text(
        "This page spent 0 Redis commands"
    )
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    incidents.note_quota_error(
        "drain-check",
        Exception(
            "max requests limit exceeded. Limit: 500000, Usage: 500000. "
            "See https://upstash.com/docs/redis/troubleshooting/"
            "max_requests_limit"
        ),
    )
    page.goto(f"{live_server.url}/admin/")
    banner = page.locator("#ops-quota-incident")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Redis quota exhausted")
    expect(banner).to_contain_text("503 redis_quota_exhausted")
    expect(banner.locator("table.ops-quota-paths tbody tr")).to_have_count(4)
    page.screenshot(path=str(INCIDENT_SCREENSHOT), full_page=False)

    assert SCREENSHOT.stat().st_size > 0
    assert INCIDENT_SCREENSHOT.stat().st_size > 0


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_sre_enters_the_providers_figure_in_the_browser(
    live_server, settings, browser_page: Page, admin_login
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    now = timezone.now()
    start_day = _period_start_day_some_days_ago(now)
    settings.QUOTA_PERIOD_START_DAY = start_day
    settings.QUOTA_MONTHLY_BUDGET = 500_000
    settings.QUOTA_SERVER_STATS = False
    _fill_period(now, start_day)
    User.objects.create_superuser("boss", password="correct horse battery")
    quota_path = "/admin/ops/commandusage/quota/"
    admin_login(
        page, live_server.url, "boss", "correct horse battery", next_path=quota_path
    )
    expect(page.locator("#ops-used-others")).to_have_text("unknown")
    expect(page.locator("#ops-blind-spots")).to_contain_text(
        "No provider figure is recorded this period"
    )

    form = page.locator("#ops-reading-form")
    form.locator("#id_used").fill("-5")
    form.locator("#ops-reading-submit").click()
    expect(form.locator(".errorlist")).to_contain_text("greater than or equal to 0")

    form.locator("#id_used").fill("450000")
    form.locator("#ops-reading-submit").click()

    expect(page.locator(".messagelist")).to_contain_text(
        "Recorded the provider's monthly figure 450,000"
    )
    expect(page.locator("#ops-truth")).to_have_attribute("data-basis", "provider")
    expect(page.locator("#ops-truth-used")).to_contain_text("450,000")
    expect(page.locator("#ops-blind-spots")).to_contain_text(
        "(450,000, monthly) is the best total we have"
    )
    expect(page.locator('#ops-readings tr[data-origin="manual"]')).to_contain_text(
        "boss"
    )
    # 450,000 this early in the period projects far past the budget.
    expect(page.locator("#ops-truth")).to_contain_text("over the budget")
