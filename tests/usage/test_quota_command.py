"""`manage.py quota [--json]`: the quota figures on the command line, computed
as of a pinned moment (--at) from rows built relative to it."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from ops.models import CommandUsage, DrainRun, ProviderUsageReading
from ops.usage import incidents

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
AT = "2025-03-10T12:00:00Z"
PERIOD_START = datetime(2025, 3, 1, tzinfo=UTC)
HOURS = 9 * 24 + 12  # Mar 1 00:00 to Mar 10 12:00: 228 hourly rows per source


@pytest.fixture(autouse=True)
def quota_settings(settings):
    settings.QUOTA_MONTHLY_BUDGET = 100_000
    settings.QUOTA_PERIOD_START_DAY = 1
    settings.QUOTA_WARN_THRESHOLDS = [80, 95]
    return settings


@pytest.fixture
def usage(db, settings) -> None:
    """Every hour since the period began: 100 idle-check and 300 job commands.
    The advisor's benchmark figures are RQ's executor's (52 a job)."""
    settings.DRAIN_EXECUTOR = "rq"
    rows = []
    for h in range(HOURS):
        hour = PERIOD_START + timedelta(hours=h)
        rows.append(CommandUsage(hour=hour, source="drain-check", commands=100))
        rows.append(
            CommandUsage(hour=hour, source="drain-jobs", commands=300, unbilled=1)
        )
    CommandUsage.objects.bulk_create(rows)
    # 7 drains of 5 jobs in the last week: 35 jobs, too few to measure.
    for i in range(7):
        DrainRun.objects.create(
            trigger="cron",
            status="succeeded",
            started=NOW - timedelta(hours=i * 20 + 1),
            total_processed=5,
            redis_commands=300,
        )


def run(*args: str) -> str:
    out = StringIO()
    call_command("quota", *args, stdout=out)
    return out.getvalue()


def test_json_has_the_figures_worked_out_from_the_rows(usage) -> None:
    data = json.loads(run("--json", "--at", AT))

    used = HOURS * 400  # 91,200
    hours_left = 21 * 24 + 12  # to Apr 1 00:00: 516
    assert data["used"] == used == 91_200
    assert data["budget"] == 100_000
    assert data["usedPercent"] == 91.2
    assert data["remaining"] == 8_800
    assert data["unbilled"] == HOURS
    assert data["bySource"] == {"drain-jobs": HOURS * 300, "drain-check": HOURS * 100}
    assert data["periodStart"] == "2025-03-01T00:00:00+00:00"
    assert data["periodEnd"] == "2025-04-01T00:00:00+00:00"
    assert data["rates"] == {
        "last24hPerHour": 400.0,
        "last7dPerHour": 400.0,
        "basis": "7d",
        "dataHours": float(HOURS),
    }
    assert data["projectedPeriodTotal"] == used + 400 * hours_left == 297_600
    # 8,800 left at 400/h: 22 h after Mar 10 12:00.
    assert data["exhaustedOn"] == "2025-03-11"
    assert data["alreadyExhausted"] is False
    assert data["thresholdsCrossed"] == [80]
    assert data["projectedThresholdsCrossed"] == [80, 95]
    assert data["openIncident"] is None
    assert data["headroomJobs"] == 0
    assert data["perJobCommands"] == 52
    assert len(data["byDay"]) == 10
    assert data["byDay"][0] == {"date": "2025-03-01", "commands": 24 * 400}
    assert data["byDay"][-1] == {"date": "2025-03-10", "commands": 12 * 400}


def test_json_advisor_rows(usage) -> None:
    data = json.loads(run("--json", "--at", AT))

    rows = {row["mode"]: row for row in data["advisor"]}
    assert list(rows) == ["always-on", "cron-1", "cron-5", "cron-15", "cron-30"]
    jobs_month = 35 * 30 / 7  # 150

    def cron(ticks: int) -> int:
        # Benchmark figures (too few drains to measure): 1 per tick, 52 per
        # job, 52 more per drain that finds work; 150 jobs at random.
        busy = ticks * (1 - math.exp(-150 / ticks))
        return ticks + round(150 * 52 + busy * 52)

    assert rows["cron-5"]["commandsPerMonth"] == cron(8_640) == 24_173
    assert rows["cron-5"]["latencySeconds"] == 300
    assert rows["cron-30"]["commandsPerMonth"] == cron(1_440)
    assert rows["always-on"]["commandsPerMonth"] == 10_800 + 150 * 52  # 18,600
    assert rows["always-on"]["latencySeconds"] == 0
    # The budget here is 100,000: always-on fits, at 18.6 %.
    assert rows["always-on"]["fitsWithMargin"] is True
    assert rows["cron-1"]["commandsPerMonth"] == cron(43_200)  # 58,188
    assert rows["cron-1"]["fitsWithMargin"] is True  # 58.2 % < 80 %
    assert [m for m, r in rows.items() if r["recommended"]] == ["always-on"]
    summary = data["advisorSummary"]
    assert summary["recommended"] == "always-on"
    assert summary["jobsLast7d"] == 35
    assert summary["jobsPerMonth"] == jobs_month
    sources = {f["what"]: f["source"] for f in summary["figures"]}
    assert "docs/benchmarks.md" in sources["Job on the drain path"]
    assert "docs/benchmarks.md" in sources["Idle drain tick"]


def test_json_reports_an_open_incident(usage) -> None:
    incidents.note_quota_error(
        "drain-check", Exception("max requests limit exceeded. Limit: 100000")
    )
    incident = json.loads(run("--json", "--at", AT))["openIncident"]
    assert incident["count"] == 1
    assert incident["source"] == "drain-check"
    assert incident["lastError"] == "max requests limit exceeded. Limit: 100000"


def test_an_exhausted_budget_gives_the_day_it_was_crossed(usage, settings) -> None:
    settings.QUOTA_MONTHLY_BUDGET = 50_000
    data = json.loads(run("--json", "--at", AT))
    # 9,600 a day: 48,000 after Mar 5, 57,600 after Mar 6.
    assert data["exhaustedOn"] == "2025-03-06"
    assert data["alreadyExhausted"] is True
    assert data["thresholdsCrossed"] == [80, 95]


def test_human_output_starts_with_a_summary_line_then_the_advisor(usage) -> None:
    lines = run("--at", AT).splitlines()

    assert lines[0] == (
        "Redis quota: 91,200 of 100,000 commands used (91.2 %), projected 297,600 "
        "(298 %) by 2025-04-01; runs out on 2025-03-11."
    )
    text = "\n".join(lines)
    for pattern in (
        r"^Period +2025-03-01 to 2025-04-01 \(00:00 UTC\), 516 h left$",
        r"^Used +91,200 \(91.2 %\), unbilled 228$",
        r"^Rate +400.0/h over 24 h, 400.0/h over 7 days \(projection: 7-day rate\)$",
        r"^Runs out +2025-03-11$",
        r"^Thresholds +80 % reached \(of 80, 95 %\)$",
        r"^Incident +none open$",
        r"^  drain-jobs +68,400 \(75.0 %\)$",
        r"^  drain-check +22,800 \(25.0 %\)$",
    ):
        assert re.search(pattern, text, re.M), pattern
    advisor = lines[
        lines.index(next(ln for ln in lines if ln.startswith("Mode advisor"))) :
    ]
    starred = [ln for ln in advisor if ln.startswith("*  ")]
    assert len(starred) == 1 and "Always-on workers" in starred[0]
    assert "18,600" in starred[0]
    assert any(ln.startswith("* recommended: Always-on workers") for ln in advisor)


def test_it_says_when_the_budget_lasts_and_when_an_incident_is_open(db) -> None:
    incidents.note_quota_error("console", Exception("max requests limit exceeded"))
    first = run("--at", AT).splitlines()[0]
    assert first == (
        "Redis quota: 0 of 100,000 commands used (0.0 %), projected 0 (0 %) by "
        "2025-04-01; lasts the period; QUOTA INCIDENT OPEN."
    )


@pytest.mark.parametrize(
    "same_moment",
    ["2025-03-10T00:00:00-12:00", "2025-03-11T02:00:00+14:00", "2025-03-10T12:00:00"],
)
def test_an_at_with_an_offset_is_the_same_moment_in_utc(usage, same_moment) -> None:
    # Budget 100,000: it runs out on Mar 11 10:00 UTC, which is still Mar 10
    # at -12:00. Periods and run-out dates are UTC days, whatever the offset.
    assert json.loads(run("--json", "--at", same_moment)) == json.loads(
        run("--json", "--at", AT)
    )
    assert json.loads(run("--json", "--at", same_moment))["exhaustedOn"] == (
        "2025-03-11"
    )


@pytest.mark.parametrize(
    "bad", ["yesterday", "2025-13-01T00:00:00", "", "9999-12-31T23:00:00-05:00"]
)
def test_a_bad_at_is_refused_naming_the_option(db, bad) -> None:
    with pytest.raises(CommandError, match="--at"):
        run("--at", bad)


def test_it_sends_no_redis_command(usage, wire) -> None:
    run("--json", "--at", AT)
    assert wire.total == 0


def test_it_runs_as_a_fresh_process(usage, manage_py) -> None:
    result = manage_py("quota", "--json", "--at", AT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["used"] == HOURS * 400


def test_json_and_text_carry_the_providers_figure_and_the_application_line(
    usage,
) -> None:
    """The provider counted 150,000 at Mar 10 00:00; the meters 86,800 by
    01:00 (217 hours x 400) and 4,400 since (11 hours x 400)."""
    ProviderUsageReading.objects.create(
        at=datetime(2025, 3, 10, tzinfo=UTC),
        used=150_000,
        kind="monthly",
        origin="error",
    )

    data = json.loads(run("--json", "--at", AT))

    truth = data["truth"]
    assert truth["basis"] == "provider"
    assert truth["usedByConsole"] == 91_200
    assert truth["usedByApplicationMetered"] == 0
    assert truth["usedByOthers"] == 150_000 - 86_800
    assert truth["used"] == 150_000 + 4_400
    assert truth["othersPerHour"] == pytest.approx(63_200 / 216, abs=0.001)
    # The advisor's application line: the unseen rate over a 30-day month.
    app = round(63_200 / 216 * 720)
    assert data["advisorSummary"]["applicationPerMonth"] == pytest.approx(app, abs=1)
    assert {row["applicationCommands"] for row in data["advisor"]} == {app}
    assert all(not row["fits"] for row in data["advisor"])

    text = run("--at", AT)
    assert "with others' use 154,400 used" in text.splitlines()[0]
    assert re.search(
        r"By whom\s+console 91,200, application \(metered\) 0, others 63,200", text
    )
    assert "Application traffic: 210,667 commands/month" in text
