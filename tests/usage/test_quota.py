"""Usage figures (ops/usage/quota.py): billing periods, used, by source and by day,
rates, projection, the date the budget runs out, headroom and thresholds.

Rows are built at explicit hours relative to a fixed `now`; every expected
number is worked out by hand in the test from those rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from datetime import timezone as dt_timezone

import pytest

from ops.models import CommandUsage, DrainRun
from ops.usage import quota

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)  # period (day 1): Mar 1 - Apr 1
PERIOD_START = datetime(2025, 3, 1, tzinfo=UTC)
HOURS_LEFT = 21 * 24 + 12  # Mar 10 12:00 -> Apr 1 00:00 = 516 h


def at(hours_before_now: float, now: datetime = NOW) -> datetime:
    return now - timedelta(hours=hours_before_now)


def add(hour: datetime, commands: int, source: str = "drain-check", unbilled: int = 0):
    return CommandUsage.objects.create(
        hour=hour, source=source, commands=commands, unbilled=unbilled
    )


@pytest.fixture(autouse=True)
def quota_settings(settings):
    settings.QUOTA_MONTHLY_BUDGET = 500_000
    settings.QUOTA_PERIOD_START_DAY = 1
    settings.QUOTA_WARN_THRESHOLDS = [80, 95]
    return settings


@pytest.fixture
def steady_since_period_start(db) -> int:
    """400 commands in every hour from Mar 1 00:00 to Mar 10 11:00 (228 rows)."""
    hours = int((NOW - PERIOD_START) / timedelta(hours=1))
    CommandUsage.objects.bulk_create(
        CommandUsage(
            hour=PERIOD_START + timedelta(hours=h), source="drain-check", commands=400
        )
        for h in range(hours)
    )
    return hours


# --- Billing periods ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "start_day", "start", "end"),
    [
        # Day 1: the calendar month.
        (datetime(2025, 3, 10, 12, tzinfo=UTC), 1, (2025, 3, 1), (2025, 4, 1)),
        (datetime(2025, 3, 1, 0, tzinfo=UTC), 1, (2025, 3, 1), (2025, 4, 1)),
        (
            datetime(2025, 2, 28, 23, 59, 59, tzinfo=UTC),
            1,
            (2025, 2, 1),
            (2025, 3, 1),
        ),
        # Day 15: before the 15th the period began last month.
        (datetime(2025, 3, 10, tzinfo=UTC), 15, (2025, 2, 15), (2025, 3, 15)),
        (
            datetime(2025, 3, 14, 23, 59, 59, tzinfo=UTC),
            15,
            (2025, 2, 15),
            (2025, 3, 15),
        ),
        (datetime(2025, 3, 15, 0, tzinfo=UTC), 15, (2025, 3, 15), (2025, 4, 15)),
        # December -> January, both ways round.
        (datetime(2025, 12, 20, tzinfo=UTC), 15, (2025, 12, 15), (2026, 1, 15)),
        (datetime(2026, 1, 5, tzinfo=UTC), 15, (2025, 12, 15), (2026, 1, 15)),
        (
            datetime(2025, 12, 31, 23, 0, tzinfo=UTC),
            1,
            (2025, 12, 1),
            (2026, 1, 1),
        ),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), 1, (2026, 1, 1), (2026, 2, 1)),
        # Day 28 exists in February.
        (datetime(2025, 2, 28, 6, tzinfo=UTC), 28, (2025, 2, 28), (2025, 3, 28)),
        (datetime(2025, 3, 1, tzinfo=UTC), 28, (2025, 2, 28), (2025, 3, 28)),
    ],
)
def test_the_billing_period_starts_at_midnight_utc_of_the_start_day(
    now, start_day, start, end
):
    period = quota.billing_period(now, start_day)
    assert period.start == datetime(*start, tzinfo=UTC)
    assert period.end == datetime(*end, tzinfo=UTC)


def test_the_billing_period_uses_utc_whatever_the_offset_of_now():
    # 01:00 on March 1 at +02:00 is still February 28 (23:00) in UTC.
    now = datetime(2025, 3, 1, 1, 0, tzinfo=dt_timezone(timedelta(hours=2)))
    period = quota.billing_period(now, 1)
    assert period.start == datetime(2025, 2, 1, tzinfo=UTC)
    assert period.end == datetime(2025, 3, 1, tzinfo=UTC)


def test_the_period_start_day_comes_from_settings(quota_settings):
    quota_settings.QUOTA_PERIOD_START_DAY = 15
    assert quota.billing_period(NOW).start == datetime(2025, 2, 15, tzinfo=UTC)


@pytest.mark.parametrize("day", [0, 29, 31])
def test_a_start_day_every_month_does_not_have_is_refused(day):
    with pytest.raises(ValueError, match=r"1\.\.28"):
        quota.billing_period(NOW, day)


# --- Used, by source, by day -------------------------------------------------------


def test_used_counts_billable_commands_inside_the_period_only(db):
    add(PERIOD_START, 100, "drain-check", unbilled=7)
    add(PERIOD_START + timedelta(hours=5), 50, "console", unbilled=3)
    add(at(1), 250, "drain-jobs")
    add(at(2), 30, "enqueue")
    # Before the period (the last hour of February) and in a previous month.
    add(PERIOD_START - timedelta(hours=1), 9_000, "drain-check")
    add(datetime(2025, 1, 15, tzinfo=UTC), 9_000, "worker")

    report = quota.report(NOW)

    assert report.summary.used == 100 + 50 + 250 + 30
    assert report.unbilled == 7 + 3
    assert [(s.source, s.commands) for s in report.by_source] == [
        ("drain-jobs", 250),
        ("drain-check", 100),
        ("console", 50),
        ("enqueue", 30),
    ]
    assert [round(s.percent, 2) for s in report.by_source] == [
        round(100 * 250 / 430, 2),
        round(100 * 100 / 430, 2),
        round(100 * 50 / 430, 2),
        round(100 * 30 / 430, 2),
    ]
    assert report.by_source[0].label == "Work done while draining"


def test_by_day_lists_every_day_up_to_today_with_a_running_total(db):
    add(PERIOD_START + timedelta(hours=1), 10)  # Mar 1
    add(PERIOD_START + timedelta(hours=23), 5, "console")  # Mar 1
    add(datetime(2025, 3, 3, 7, tzinfo=UTC), 20)  # Mar 3
    add(datetime(2025, 3, 10, 11, tzinfo=UTC), 40)  # today

    by_day = quota.report(NOW).by_day

    assert [d.day for d in by_day] == [date(2025, 3, d) for d in range(1, 11)]
    assert [d.commands for d in by_day] == [15, 0, 20, 0, 0, 0, 0, 0, 0, 40]
    assert [d.cumulative for d in by_day] == [15, 15, 35, 35, 35, 35, 35, 35, 35, 75]


def test_with_no_usage_everything_is_zero_and_the_budget_lasts(db):
    report = quota.report(NOW)
    head = report.summary
    assert (head.used, head.projected_total, head.runs_out_at) == (0, 0, None)
    assert (head.rates.last_24h, head.rates.last_7d) == (0.0, 0.0)
    assert head.rates.data_hours == 0
    assert report.exhausted_on is None
    assert report.by_source == []
    assert head.level == "ok"


# --- Rates and projection ----------------------------------------------------------


def test_rates_divide_each_window_by_the_hours_it_covers(db):
    for h in range(1, 25):  # the last 24 h: 10 an hour
        add(at(h), 10)
    for h in range(25, 49):  # the 24 h before: 30 an hour
        add(at(h), 30)

    rates = quota.summary(NOW).rates

    assert rates.last_24h == pytest.approx(24 * 10 / 24)
    # 7-day window, but data only goes back 48 h: divide by 48, not 168.
    assert rates.last_7d == pytest.approx((24 * 10 + 24 * 30) / 48)
    assert rates.data_hours == pytest.approx(48)
    assert rates.basis == quota.RATE_BASIS_7D


def test_a_full_week_of_data_divides_by_the_whole_week(db):
    for h in range(1, 24 * 9 + 1):  # nine days, 7 an hour
        add(at(h), 7)
    rates = quota.summary(NOW).rates
    assert rates.last_7d == pytest.approx(7.0)
    assert rates.last_24h == pytest.approx(7.0)


def test_under_24_hours_of_data_projects_with_the_24_hour_rate(db):
    for h in (1, 2, 3):
        add(at(h), 100)

    head = quota.summary(NOW)

    assert head.rates.basis == quota.RATE_BASIS_24H
    assert head.rates.data_hours == pytest.approx(3)
    assert head.rates.last_24h == pytest.approx(300 / 3)
    assert head.rates.current == head.rates.last_24h
    assert head.projected_total == 300 + 100 * HOURS_LEFT


def test_the_current_partial_hour_counts_its_commands_and_its_minutes(db):
    now = NOW + timedelta(minutes=30)
    for h in (9, 10, 11):
        add(datetime(2025, 3, 10, h, tzinfo=UTC), 100)
    add(datetime(2025, 3, 10, 12, tzinfo=UTC), 50)  # 12:00-12:30 so far

    rates = quota.summary(now).rates

    assert rates.data_hours == pytest.approx(3.5)
    assert rates.last_24h == pytest.approx(350 / 3.5)


def test_the_projection_uses_the_7_day_rate_once_a_day_of_data_exists(db):
    for h in range(1, 25):
        add(at(h), 10)
    for h in range(25, 49):
        add(at(h), 30)

    head = quota.summary(NOW)

    # Used this period: all 48 rows are after Mar 1 00:00.
    used = 24 * 10 + 24 * 30
    assert head.used == used
    assert head.projected_total == used + round((used / 48) * HOURS_LEFT)


# --- When the budget runs out ------------------------------------------------------


def test_the_budget_runs_out_on_the_date_the_current_rate_reaches_it(
    steady_since_period_start, quota_settings
):
    quota_settings.QUOTA_MONTHLY_BUDGET = 100_000
    used = 400 * steady_since_period_start  # 228 h x 400 = 91,200

    report = quota.report(NOW)
    head = report.summary

    assert head.used == used == 91_200
    assert head.rates.basis == quota.RATE_BASIS_7D
    assert head.rates.current == pytest.approx(400)
    # 8,800 left at 400 an hour: 22 h after Mar 10 12:00 = Mar 11 10:00.
    assert head.runs_out_at == datetime(2025, 3, 11, 10, tzinfo=UTC)
    assert report.exhausted_on == date(2025, 3, 11)
    assert head.projected_total == used + 400 * HOURS_LEFT == 297_600
    assert not head.exhausted


def test_the_budget_that_lasts_the_period_has_no_exhaustion_date(
    steady_since_period_start,
):
    report = quota.report(NOW)
    assert report.summary.projected_total == 297_600  # < 500,000
    assert report.summary.runs_out_at is None
    assert report.exhausted_on is None
    assert report.summary.level == "ok"


def test_a_budget_already_spent_reports_the_day_it_was_crossed(
    steady_since_period_start, quota_settings
):
    quota_settings.QUOTA_MONTHLY_BUDGET = 50_000
    # 9,600 a day: 48,000 after Mar 5, 57,600 after Mar 6.

    report = quota.report(NOW)

    assert report.summary.exhausted
    assert report.summary.remaining == 0
    assert report.summary.runs_out_at is None
    assert report.exhausted_on == date(2025, 3, 6)


def test_a_rate_that_would_run_out_after_the_period_end_gives_no_date(
    db, quota_settings
):
    quota_settings.QUOTA_MONTHLY_BUDGET = 1_000
    now = datetime(2025, 3, 31, 23, 0, tzinfo=UTC)  # one hour left
    add(now - timedelta(hours=30), 500)  # 500 over 30 h of data: 16.7/h
    head = quota.summary(now)
    assert head.used == 500
    # 500 left at 16.7/h takes 30 h: after the period ends.
    assert head.runs_out_at is None
    assert head.projected_total == 500 + round(500 / 30 * 1)


# --- Headroom ----------------------------------------------------------------------


def test_headroom_is_what_the_budget_leaves_over_the_projection_in_jobs(
    steady_since_period_start, settings
):
    settings.DRAIN_EXECUTOR = "rq"  # the figures below are RQ's executor's
    # No drains recorded: the benchmark's 52 commands per job.
    report = quota.report(NOW)
    assert report.per_job_commands == 52
    assert "docs/benchmarks.md" in report.per_job_source
    assert report.headroom_jobs == (500_000 - 297_600) // 52  # 3,892


def test_headroom_uses_the_per_job_cost_measured_here(steady_since_period_start):
    # 50 jobs in 5 drains of 501 commands each; idle tick from the benchmark (1).
    for i in range(5):
        DrainRun.objects.create(
            trigger="cron",
            status=DrainRun.Status.SUCCEEDED,
            started=NOW - timedelta(hours=i + 1),
            total_processed=10,
            redis_commands=501,
        )
    report = quota.report(NOW)
    per_job = (5 * 501 - 5 * 1) / 50  # 50.0
    assert report.per_job_commands == pytest.approx(per_job)
    assert "measured here" in report.per_job_source
    assert report.headroom_jobs == int((500_000 - 297_600) // per_job)


def test_there_is_no_headroom_once_the_projection_passes_the_budget(
    steady_since_period_start, quota_settings
):
    quota_settings.QUOTA_MONTHLY_BUDGET = 200_000
    assert quota.report(NOW).headroom_jobs == 0


# --- Thresholds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "crossed"),
    [
        (790, []),
        (799, []),
        (800, [80]),
        (949, [80]),
        (950, [80, 95]),
        (1_200, [80, 95]),
    ],
)
def test_thresholds_are_reached_by_used_share_of_the_budget(
    db, quota_settings, used, crossed
):
    quota_settings.QUOTA_MONTHLY_BUDGET = 1_000
    # One row nine days ago: outside both rate windows, so the rate is 0 and
    # the projection equals `used`.
    add(PERIOD_START + timedelta(hours=1), used)
    head = quota.summary(NOW)
    assert head.rates.current == 0
    assert head.projected_total == used
    assert head.crossed == crossed
    assert head.level == ("warning" if crossed else "ok")


def test_a_projection_past_the_budget_is_a_notice_not_a_warning(db, quota_settings):
    quota_settings.QUOTA_MONTHLY_BUDGET = 10_000
    for h in range(1, 49):  # 100 an hour for two days: 4,800 used (48 %)
        add(at(h), 100)

    head = quota.summary(NOW)

    assert head.used == 4_800
    assert head.crossed == []
    assert head.projected_total == 4_800 + 100 * HOURS_LEFT  # 56,400: 564 %
    assert head.projected_crossed == [80, 95]
    assert head.projected_over_budget
    assert head.level == "notice"
    # 5,200 left at 100/h: 52 h after now.
    assert head.runs_out_at == NOW + timedelta(hours=52)


def test_thresholds_come_from_settings(db, quota_settings):
    quota_settings.QUOTA_MONTHLY_BUDGET = 1_000
    quota_settings.QUOTA_WARN_THRESHOLDS = [50, 75, 90]
    add(PERIOD_START + timedelta(hours=1), 760)
    assert quota.summary(NOW).crossed == [50, 75]


# --- Cost of reading ---------------------------------------------------------------


def test_the_summary_is_one_database_query(
    steady_since_period_start, django_assert_num_queries
):
    with django_assert_num_queries(1):
        quota.summary(NOW)


def test_the_report_sends_no_redis_command(steady_since_period_start, wire):
    quota.report(NOW)
    assert wire.total == 0
