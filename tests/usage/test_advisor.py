"""The mode advisor (ops/usage/advisor.py): rows worked out by hand from the inputs,
benchmark figures until enough drains are recorded, measured figures after,
and the recommendation rules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from ops.models import CommandUsage, DrainRun, ProviderUsageReading
from ops.usage import advisor
from ops.usage.advisor import Costs, Figure

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
MONTH_MIN = 30 * 24 * 60  # 43,200
# Flat costs for round numbers in the recommendation tests: 60 per job and no
# separate per-drain overhead (as when the per-job cost is measured).
BENCH = Costs(
    idle_tick=Figure(1, "benchmark"),
    per_job=Figure(60, "estimate"),
    always_on_idle_per_minute=Figure(4.2, "benchmark"),
    always_on_per_job=Figure(57, "benchmark"),
)


@pytest.fixture(autouse=True)
def _rq_executor_figures(settings):
    """These tests check the advisor's arithmetic with the figures of RQ's
    executor (52 a job); test_the_lean_executors_figures_are_the_default
    checks the lean ones."""
    settings.DRAIN_EXECUTOR = "rq"


@pytest.fixture(autouse=True)
def quota_settings(settings):
    settings.QUOTA_MONTHLY_BUDGET = 500_000
    settings.QUOTA_WARN_THRESHOLDS = [80, 95]
    return settings


def run(
    hours_ago: float,
    *,
    jobs: int = 0,
    commands: int = 1,
    status: str = DrainRun.Status.SUCCEEDED,
) -> DrainRun:
    return DrainRun.objects.create(
        trigger=DrainRun.Trigger.CRON,
        status=status,
        started=NOW - timedelta(hours=hours_ago),
        total_processed=jobs,
        redis_commands=commands,
    )


def rows_by_key(advice: advisor.Advice) -> dict[str, advisor.ModeRow]:
    return {row.key: row for row in advice.rows}


# --- Benchmark figures until there are enough samples ------------------------------


def test_with_few_drains_it_uses_the_benchmark_figures(db):
    # 7 busy drains of 5 jobs (35 jobs < 50) and 3 idle ones (< 20).
    for i in range(7):
        run(i + 1, jobs=5, commands=400)
    for i in range(3):
        run(i + 10, commands=1)

    advice = advisor.advice_now(NOW)

    costs = advice.costs
    # docs/benchmarks.md: 1 per idle tick, 52 per job + 52 per drain with work,
    # and the console's always-on workers: 15.0 an hour idle, 52 per job.
    assert (costs.idle_tick.value, costs.idle_tick.measured) == (1, False)
    assert (costs.per_job.value, costs.per_job.measured) == (52, False)
    assert costs.busy_drain_overhead.value == 52
    assert "docs/benchmarks.md" in costs.per_job.note
    assert "docs/benchmarks.md" in costs.idle_tick.note
    assert costs.always_on_idle_per_minute.value == 0.25
    assert costs.always_on_per_job.value == 52

    jobs_month = 35 * 30 / 7  # 150
    assert advice.jobs_last_7d == 35
    assert advice.jobs_per_month == pytest.approx(jobs_month)
    rows = rows_by_key(advice)
    assert [r.key for r in advice.rows] == [
        "always-on",
        "cron-1",
        "cron-5",
        "cron-15",
        "cron-30",
    ]
    assert rows["always-on"].idle_commands == 10_800  # 0.25 x 43,200
    assert rows["always-on"].job_commands == 150 * 52  # 7,800
    assert rows["always-on"].total == 10_800 + 7_800
    assert rows["always-on"].latency_seconds == 0
    for minutes, ticks in ((1, 43_200), (5, 8_640), (15, 2_880), (30, 1_440)):
        row = rows[f"cron-{minutes}"]
        # 150 jobs spread at random over `ticks` ticks: each tick finds work
        # with probability 1 - e^(-150/ticks), and such a drain pays 52 more.
        busy = ticks * (1 - math.exp(-150 / ticks))
        jobs_cost = round(150 * 52 + busy * 52)
        assert row.idle_commands == ticks
        assert row.job_commands == jobs_cost
        assert row.total == ticks + jobs_cost
        assert row.latency_seconds == minutes * 60
        assert row.percent_of_budget == pytest.approx(100 * row.total / 500_000)
        assert row.fits and row.fits_with_margin
    # Almost every one of 150 jobs a month gets a drain of its own: ~100 each.
    assert rows["cron-5"].job_commands == 15_533
    # With jobs, the fastest mode under the margin: always-on, which is also
    # the cheapest here.
    assert advice.recommended is not None
    assert advice.recommended.key == "always-on"


def test_nineteen_idle_drains_and_49_jobs_are_not_enough_samples(db):
    for i in range(19):
        run(i + 1, commands=3)
    run(30, jobs=49, commands=5_000)
    costs = advisor.measured_costs(NOW)
    assert not costs.idle_tick.measured and costs.idle_tick.value == 1
    assert not costs.per_job.measured and costs.per_job.value == 52


# --- Measured figures --------------------------------------------------------------


def test_with_enough_drains_it_measures_the_idle_tick_and_the_job_cost(db):
    for i in range(20):
        run(i + 1, commands=1)
    for i in range(5):
        run(24 * 10 + i, commands=3)  # ten days ago: in the 30-day window
    for i in range(4):
        run(i + 0.5, jobs=20, commands=1_201)
    # Not samples: too old, failed, skipped, or a deadline run with no jobs.
    run(24 * 31, commands=50)
    run(24 * 31, jobs=100, commands=100)
    run(2, commands=40, status=DrainRun.Status.FAILED)
    run(2, jobs=10, commands=999, status=DrainRun.Status.FAILED)
    run(3, commands=0, status=DrainRun.Status.SKIPPED)

    advice = advisor.advice_now(NOW)

    idle_tick = (20 * 1 + 5 * 3) / 25  # 1.4
    per_job = (4 * 1_201 - 4 * idle_tick) / 80  # 59.985
    costs = advice.costs
    assert costs.idle_tick.value == pytest.approx(idle_tick)
    assert costs.idle_tick.note == "measured here: 25 idle drains"
    assert costs.idle_tick.samples == 25
    assert costs.per_job.value == pytest.approx(per_job)
    assert costs.per_job.note == "measured here: 80 jobs in 4 drains"
    # The measured per-job figure carries the per-drain overhead already.
    assert costs.busy_drain_overhead.value == 0

    # Jobs of the last 7 days: the 4 busy drains and the failed one's 10.
    assert advice.jobs_last_7d == 90
    jobs_month = 90 * 30 / 7
    row = rows_by_key(advice)["cron-5"]
    assert row.idle_commands == round(8_640 * idle_tick)  # 12,096
    assert row.job_commands == round(jobs_month * per_job)
    assert row.total == round(8_640 * idle_tick) + round(jobs_month * per_job)
    # Always-on keeps the benchmark figures: its runs are not drains.
    always_on = rows_by_key(advice)["always-on"]
    assert always_on.job_commands == round(jobs_month * 52)


def test_a_deadline_run_counts_as_work_done(db):
    for i in range(5):
        run(i + 1, jobs=10, commands=611, status=DrainRun.Status.DEADLINE)
    costs = advisor.measured_costs(NOW)
    assert costs.per_job.value == pytest.approx((5 * 611 - 5 * 1) / 50)  # 61.0


def test_with_benchmark_figures_a_busy_drain_pays_its_fixed_part():
    costs = Costs(
        idle_tick=Figure(1, "b"),
        per_job=Figure(52, "b"),
        always_on_idle_per_minute=Figure(4.2, "b"),
        always_on_per_job=Figure(56.52, "b"),
        busy_drain_overhead=Figure(48, "b"),
    )
    advice = advisor.advise(budget=500_000, jobs_per_month=8_640, costs=costs)
    rows = rows_by_key(advice)
    # One job per 5-minute tick on average: 1 - e^-1 of the ticks are busy.
    busy_5 = 8_640 * (1 - math.exp(-1))  # 5,461.6
    assert rows["cron-5"].job_commands == round(8_640 * 52 + busy_5 * 48)
    # Six per 30-minute tick: nearly every tick is busy, but there are fewer.
    busy_30 = 1_440 * (1 - math.exp(-6))  # 1,436.4
    assert rows["cron-30"].job_commands == round(8_640 * 52 + busy_30 * 48)
    assert "5,462 busy drains x 48" in rows["cron-5"].basis
    assert rows["cron-30"].total < rows["cron-5"].total < rows["cron-1"].total
    # No jobs, no busy drains.
    idle = advisor.advise(budget=500_000, jobs_per_month=0, costs=costs)
    assert rows_by_key(idle)["cron-5"].job_commands == 0
    assert advisor.busy_drains(0, 8_640) == 0


def test_other_redis_use_is_added_to_every_row(db):
    CommandUsage.objects.create(
        hour=NOW - timedelta(hours=50), source="console", commands=200
    )
    CommandUsage.objects.create(
        hour=NOW - timedelta(hours=3), source="api", commands=500
    )
    # Mode costs, the application's traffic and old rows are not "other".
    CommandUsage.objects.create(
        hour=NOW - timedelta(hours=2), source="drain-check", commands=9_999
    )
    CommandUsage.objects.create(
        hour=NOW - timedelta(hours=2), source="enqueue", commands=7
    )
    CommandUsage.objects.create(
        hour=NOW - timedelta(days=8), source="console", commands=9_999
    )

    advice = advisor.advice_now(NOW)

    other = round(700 * 30 / 7)  # 3,000
    assert advice.other_per_month == pytest.approx(3_000)
    for row in advice.rows:
        assert row.other_commands == other
        assert row.application_commands == round(7 * 30 / 7)
        assert row.total == (
            row.idle_commands + row.job_commands + other + row.application_commands
        )


# --- The application's traffic ------------------------------------------------------


def test_metered_application_traffic_is_its_own_line_in_every_row(db):
    for source, commands in (("enqueue", 500), ("django-rq", 200), ("app", 100)):
        CommandUsage.objects.create(
            hour=NOW - timedelta(hours=3), source=source, commands=commands
        )
    CommandUsage.objects.create(
        hour=NOW - timedelta(days=8), source="django-rq", commands=9_999
    )

    advice = advisor.advice_now(NOW)

    assert advice.application.value == pytest.approx(800 * 30 / 7)
    assert "metered 800 in the last 7 days" in advice.application.note
    for row in advice.rows:
        assert row.application_commands == round(800 * 30 / 7)  # 3,429
        assert row.as_json()["applicationCommands"] == 3_429
    figures = {what: (value, source) for what, value, source in advice.figures()}
    assert figures["Application traffic"][0] == "3,429 commands/month"
    assert advice.summary_json()["applicationPerMonth"] == pytest.approx(3_428.6)


def test_a_provider_figure_puts_what_no_meter_saw_in_the_month(db):
    """The provider counted 217,000 by Mar 10 00:00, our meters 1,000: 216,000
    unseen in the 216 h since the period began, 1,000 an hour, 720,000 in a
    30-day month, which no mode fits in a 500,000 budget."""
    CommandUsage.objects.create(
        hour=datetime(2025, 3, 9, 10, tzinfo=UTC), source="drain-check", commands=1_000
    )
    ProviderUsageReading.objects.create(
        at=datetime(2025, 3, 10, 0, 0, tzinfo=UTC),
        used=217_000,
        kind="monthly",
        origin="error",
    )

    advice = advisor.advice_now(NOW)

    assert advice.application.value == pytest.approx(720_000)
    assert "216,000 unseen in 216.0 h" in advice.application.note
    for row in advice.rows:
        assert row.application_commands == 720_000
        assert not row.fits
    assert advice.recommended is None


def test_without_measurements_the_assumed_daily_figure_is_used(db, settings):
    settings.QUOTA_APP_COMMANDS_PER_DAY = 4_000  # runbook §2: 500 calls x ~8
    advice = advisor.advice_now(NOW)
    assert advice.application.value == 120_000
    assert "assumed: QUOTA_APP_COMMANDS_PER_DAY=4,000" in advice.application.note
    assert all(row.application_commands == 120_000 for row in advice.rows)


def test_a_measured_application_rate_wins_over_the_assumption(db, settings):
    settings.QUOTA_APP_COMMANDS_PER_DAY = 4_000
    CommandUsage.objects.create(
        hour=NOW - timedelta(hours=1), source="django-rq", commands=70
    )
    advice = advisor.advice_now(NOW)
    assert advice.application.value == pytest.approx(300)
    assert "assumed" not in advice.application.note


def test_with_nothing_measured_or_assumed_the_line_is_zero_and_says_so(db):
    advice = advisor.advice_now(NOW)
    assert advice.application.value == 0
    assert "QUOTA_APP_COMMANDS_PER_DAY" in advice.application.note
    assert all(row.application_commands == 0 for row in advice.rows)


# --- The recommendation ------------------------------------------------------------


def test_free_tier_and_idle_queues_recommend_the_5_minute_cron():
    advice = advisor.advise(budget=500_000, jobs_per_month=0, costs=BENCH)
    # Always-on fits (181,440 = 36 %), but a free tier stays on the cron.
    assert rows_by_key(advice)["always-on"].fits_with_margin
    assert advice.recommended is not None
    assert advice.recommended.key == "cron-5"
    assert [r.key for r in advice.rows if r.recommended] == ["cron-5"]
    assert "a cron drain every 5 min" in advice.reason
    # The reason stands on its own: no document the user does not have.
    assert "runbook" not in advice.reason


def test_with_jobs_the_lowest_latency_mode_under_the_margin_is_recommended():
    # Always-on: 181,440 + 3,000 x 57 = 352,440 <= 80 % of 500,000.
    advice = advisor.advise(budget=500_000, jobs_per_month=3_000, costs=BENCH)
    assert rows_by_key(advice)["always-on"].total == 352_440
    assert advice.recommended.key == "always-on"


def test_when_5_minutes_would_pass_the_margin_a_slower_cron_is_recommended():
    # 6,600 jobs x 60 = 396,000. 5-min: 404,640 > 80 % of 500,000 (400,000);
    # 15-min: 2,880 + 396,000 = 398,880 <= 400,000.
    advice = advisor.advise(budget=500_000, jobs_per_month=6_600, costs=BENCH)
    rows = rows_by_key(advice)
    assert rows["cron-5"].total == 404_640
    assert rows["cron-5"].fits and not rows["cron-5"].fits_with_margin
    assert rows["cron-15"].total == 398_880
    assert advice.recommended.key == "cron-15"


def test_a_paid_budget_with_job_traffic_recommends_always_on():
    advice = advisor.advise(
        budget=10_000_000, jobs_per_month=20_000, jobs_last_7d=4_667, costs=BENCH
    )
    rows = rows_by_key(advice)
    assert rows["always-on"].total == 181_440 + 20_000 * 57  # 1,321,440
    assert advice.recommended.key == "always-on"
    assert advice.recommended.latency_seconds == 0


def test_a_paid_budget_without_jobs_stays_on_the_5_minute_cron():
    advice = advisor.advise(budget=10_000_000, jobs_per_month=0, costs=BENCH)
    assert advice.recommended.key == "cron-5"
    assert "no jobs" in advice.reason


def test_a_paid_budget_too_small_for_always_on_gets_the_fastest_cron_that_fits():
    # Margin: 80 % of 600,000 = 480,000. Always-on: 181,440 + 5,500 x 57 =
    # 494,940 (over); 1-min cron: 43,200 + 5,500 x 60 = 373,200 (under).
    advice = advisor.advise(budget=600_000, jobs_per_month=5_500, costs=BENCH)
    rows = rows_by_key(advice)
    assert rows["always-on"].total == 494_940
    assert not rows["always-on"].fits_with_margin
    assert rows["cron-1"].total == 373_200
    assert advice.recommended.key == "cron-1"


def test_when_nothing_fits_with_margin_the_cheapest_fitting_row_is_recommended():
    # 7,000 x 60 = 420,000: the 30-min cron totals 421,440 (84 %), nothing is
    # under 400,000, the 30-min cron is the cheapest that fits.
    advice = advisor.advise(budget=500_000, jobs_per_month=7_000, costs=BENCH)
    assert not any(r.fits_with_margin for r in advice.rows)
    assert advice.recommended.key == "cron-30"
    assert advice.recommended.total == 421_440
    assert "upgrade" in advice.reason.lower()


def test_when_nothing_fits_there_is_no_recommendation():
    advice = advisor.advise(budget=500_000, jobs_per_month=10_000, costs=BENCH)
    assert not any(r.fits for r in advice.rows)
    assert advice.recommended is None
    assert not any(r.recommended for r in advice.rows)
    assert "pay-as-you-go" in advice.reason


def test_the_margin_is_the_first_warning_threshold(db, quota_settings):
    quota_settings.QUOTA_WARN_THRESHOLDS = [50, 95]
    advice = advisor.advice_now(NOW)
    assert advice.margin_percent == 50
    # Always-on idle: 181,440 = 36.3 % of 500,000, under 50 %.
    assert rows_by_key(advice)["always-on"].fits_with_margin


def test_several_always_on_workers_multiply_the_idle_cost():
    advice = advisor.advise(budget=500_000, jobs_per_month=0, costs=BENCH, workers=3)
    row = rows_by_key(advice)["always-on"]
    assert row.idle_commands == 3 * 181_440  # 544,320: over the budget
    assert not row.fits


def test_reading_the_advice_costs_no_redis_command(db, wire):
    advisor.advice_now(NOW)
    assert wire.total == 0


def test_jobs_run_by_always_on_workers_count_in_the_job_volume(db):
    from ops.models import WorkerProcess

    DrainRun.objects.create(
        trigger="cron",
        status="succeeded",
        started=NOW - timedelta(days=1),
        total_processed=10,
    )
    WorkerProcess.objects.create(
        name="w1",
        role="dedicated",
        host="h",
        pid=1,
        queues=["batch-jobs"],
        started=NOW - timedelta(days=2),
        heartbeat=NOW - timedelta(hours=1),
        processed=25,
    )
    WorkerProcess.objects.create(  # stopped before the window: not counted
        name="w0",
        role="dedicated",
        host="h",
        pid=1,
        queues=["batch-jobs"],
        started=NOW - timedelta(days=20),
        heartbeat=NOW - timedelta(days=9),
        processed=1000,
    )
    assert advisor.jobs_last_7d(NOW) == 35


def test_the_lean_executors_figures_are_the_default(db, settings):
    settings.DRAIN_EXECUTOR = "lean"
    costs = advisor.measured_costs()
    assert (costs.per_job.value, costs.per_job.measured) == (4.08, False)
    assert costs.busy_drain_overhead.value == 19
    assert costs.always_on_per_job.value == 14
    assert costs.always_on_idle_per_minute.value == pytest.approx(13 / 60)
    assert "lean" in costs.per_job.note
