"""The provider's figure (ops/usage/quota_errors.py, ops/usage/provider.py)
and the larger truth the quota page and `manage.py quota` project on
(ops/usage/quota.py): figures worked out by hand from the rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from ops.models import CommandUsage, ProviderUsageReading
from ops.usage import incidents, provider, quota
from ops.usage.quota_errors import DAILY, MONTHLY, ProviderFigure, provider_figure

NOW = datetime(2025, 3, 10, 12, 20, tzinfo=UTC)
HOUR = NOW.replace(minute=0)
PERIOD_START = datetime(2025, 3, 1, tzinfo=UTC)
HOURS_LEFT = (datetime(2025, 4, 1, tzinfo=UTC) - NOW).total_seconds() / 3600


@pytest.fixture(autouse=True)
def quota_settings(settings):
    settings.QUOTA_MONTHLY_BUDGET = 500_000
    settings.QUOTA_PERIOD_START_DAY = 1
    settings.QUOTA_WARN_THRESHOLDS = [80, 95]
    settings.QUOTA_PROBE_COOLDOWN_S = 600
    return settings


def add(hour: datetime, commands: int, source: str) -> None:
    CommandUsage.objects.create(hour=hour, source=source, commands=commands)


def reading(at: datetime, used: int, kind: str = "monthly", origin: str = "manual"):
    return ProviderUsageReading.objects.create(
        at=at, used=used, kind=kind, origin=origin
    )


@pytest.fixture
def metered(db) -> None:
    """1,700 metered this period: 1,000 on Mar 9, 700 on Mar 10 after 05:00."""
    add(HOUR - timedelta(hours=30), 1_000, "drain-check")  # Mar 9 06:00
    add(HOUR - timedelta(hours=2), 500, "django-rq")  # Mar 10 10:00
    add(HOUR, 200, "console")  # Mar 10 12:00


# --- Reading the figure out of the error -------------------------------------------


@pytest.mark.parametrize(
    ("message", "figure"),
    [
        (
            "max requests limit exceeded. Limit: 500000, Usage: 500000. See https://…",
            ProviderFigure(500_000, 500_000, MONTHLY),
        ),
        (
            "ERR max daily request limit exceeded. Limit: 10000, Usage: 10012",
            ProviderFigure(10_012, 10_000, DAILY),
        ),
        (
            "Command # 1 (SET Usage: 7) of pipeline caused error: max requests "
            "limit exceeded. Limit: 1,000,000, Usage: 1,000,001.",
            ProviderFigure(1_000_001, 1_000_000, MONTHLY),
        ),
        ("max requests limit exceeded. Usage: 42", ProviderFigure(42, None, MONTHLY)),
        ("max requests limit exceeded. Limit: 500000", None),
        ("WRONGTYPE Usage: 5", None),
    ],
)
def test_the_usage_figure_is_read_from_both_wordings(message, figure):
    assert provider_figure(redis.ResponseError(message)) == figure


def test_an_exception_that_is_not_redis_carries_no_figure():
    assert provider_figure(ValueError("max requests limit exceeded. Usage: 5")) is None


def test_the_incident_records_the_figure_once_per_cool_down(db):
    error = redis.ResponseError(
        "max requests limit exceeded. Limit: 500000, Usage: 500000."
    )
    incidents.note_quota_error("drain-check", error)
    incidents.note_quota_error("api", error)  # the same figure moments later
    rows = list(ProviderUsageReading.objects.values_list("used", "limit", "origin"))
    assert rows == [(500_000, 500_000, "error")]

    later = ProviderUsageReading.objects.get().at + timedelta(minutes=11)
    provider.record_from_error(error, at=later)
    other_figure = redis.ResponseError("max requests limit exceeded. Usage: 500009")
    provider.record_from_error(other_figure, at=later)
    assert ProviderUsageReading.objects.count() == 3


# --- The larger truth ---------------------------------------------------------------


def test_without_a_figure_the_meters_are_all_we_know(metered):
    rep = quota.report(NOW)
    truth = rep.truth
    assert truth.basis == quota.TRUTH_METERS
    assert (truth.console, truth.application, truth.others) == (1_200, 500, 0)
    assert truth.used == rep.summary.used == 1_700
    assert truth.projected_total == rep.summary.projected_total


def test_a_monthly_figure_adds_what_no_meter_saw_and_its_rate(metered):
    reading(datetime(2025, 3, 10, 4, 0, tzinfo=UTC), 50_000)

    rep = quota.report(NOW)
    truth = rep.truth

    # The meters had 1,000 by the reading's hour: 49,000 unseen in the 220 h
    # since the period began. Since then the meters saw 700 more.
    assert truth.basis == quota.TRUTH_PROVIDER
    assert truth.others == 49_000
    assert truth.others_per_hour == pytest.approx(49_000 / 220)
    assert truth.used == 50_000 + 700
    # Metered rate: 1,700 over the 30 h 20 min since the first row.
    metered_rate = 1_700 / (30 + 20 / 60)
    assert rep.summary.rates.current == pytest.approx(metered_rate)
    expected = 50_700 + round((metered_rate + 49_000 / 220) * HOURS_LEFT)
    assert truth.projected_total == expected  # 194,347
    assert truth.projected_total > rep.summary.projected_total
    # Headroom follows the larger projection.
    assert rep.headroom_jobs == int((500_000 - expected) / rep.per_job_commands)
    assert "minus 1,000 metered by then: 49,000 unseen in 220.0 h" in truth.basis_note


def test_a_daily_figure_counts_that_days_unseen_commands(metered):
    reading(datetime(2025, 3, 10, 6, 0, tzinfo=UTC), 3_000, kind="daily")

    truth = quota.report(NOW).truth

    # Nothing metered on Mar 10 before 07:00: 3,000 unseen in 6 h.
    assert truth.basis == quota.TRUTH_PROVIDER
    assert truth.others == 3_000
    assert truth.others_per_hour == pytest.approx(500)
    assert truth.used == 1_700 + 3_000


def test_the_latest_monthly_figure_of_this_period_wins_over_a_daily_one(metered):
    reading(datetime(2025, 2, 27, tzinfo=UTC), 400_000)  # last period's
    reading(datetime(2025, 3, 10, 4, 0, tzinfo=UTC), 20_000)
    reading(datetime(2025, 3, 10, 8, 0, tzinfo=UTC), 30_000)
    reading(datetime(2025, 3, 10, 9, 0, tzinfo=UTC), 9_999, kind="daily")

    truth = quota.report(NOW).truth

    # The 08:00 figure: 1,000 metered by 09:00, the 500 + 200 after.
    assert truth.unseen.reading.used == 30_000
    assert truth.others == 29_000
    assert truth.used == 30_000 + 700


def test_a_figure_below_the_meters_never_lowers_the_total(metered):
    reading(datetime(2025, 3, 10, 11, 0, tzinfo=UTC), 100)
    truth = quota.report(NOW).truth
    assert truth.others == 0
    assert truth.used == 1_700


def test_the_json_carries_the_same_figures(metered):
    reading(datetime(2025, 3, 10, 4, 0, tzinfo=UTC), 50_000)
    rep = quota.report(NOW)
    data = quota.as_json(rep)["truth"]
    assert data["basis"] == "provider"
    assert data["usedByConsole"] == 1_200
    assert data["usedByApplicationMetered"] == 500
    assert data["usedByOthers"] == 49_000
    assert data["used"] == 50_700
    assert data["projectedPeriodTotal"] == rep.truth.projected_total
    assert data["providerReading"]["used"] == 50_000


def test_the_truth_costs_no_redis_command(metered, wire):
    reading(datetime(2025, 3, 10, 4, 0, tzinfo=UTC), 50_000)
    quota.report(NOW)
    assert wire.total == 0
