"""`manage.py prune` (ops/management/commands/prune.py): the cron endpoint's
prune on the command line, one call or `--all`."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from ops.cron import retention
from ops.models import DrainRun, JobRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def env(settings):
    settings.HISTORY_RETENTION_DAYS = 30


@pytest.fixture
def history() -> None:
    """10 runs of 40 days ago with 2 jobs each, 1 recent run with 1 job."""
    old = timezone.now() - timedelta(days=40)
    runs = DrainRun.objects.bulk_create(
        DrainRun(trigger="cron", status="succeeded", started=old + timedelta(minutes=i))
        for i in range(10)
    )
    recent = DrainRun.objects.create(trigger="cron", status="succeeded")
    JobRecord.objects.bulk_create(
        [
            JobRecord(job_id=f"job-{run.pk}-{i}", queue="q", status="finished", run=run)
            for run in runs
            for i in range(2)
        ]
        + [JobRecord(job_id="new", queue="q", status="finished", run=recent)]
    )


@pytest.fixture
def slow_clock(monkeypatch) -> None:
    """Batches of 2, and a clock that moves one second each time the prune
    looks at it: a 4 s budget lets a call do only a few batches."""
    monkeypatch.setattr(retention, "BATCH", 2)
    monkeypatch.setattr(retention, "JOB_BATCH", 2)
    clock = itertools.count(start=1000.0, step=1.0)
    monkeypatch.setattr(retention.time, "monotonic", lambda: next(clock))


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("prune", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_prunes_the_old_history_and_says_so_in_one_line(history):
    out, _ = run()

    assert out.strip().splitlines() == [
        "pruned 10 drain runs and 20 job records older than 30 days: "
        "nothing older is left"
    ]
    assert DrainRun.objects.count() == 1
    assert JobRecord.objects.get().job_id == "new"


def test_one_call_stopped_by_its_budget_says_what_is_left(history, slow_clock):
    out, _ = run("--budget-s", "4")

    left = DrainRun.objects.count() - 1
    assert 0 < left < 10
    assert out.strip().endswith(f"{left:,} old runs left; run it again, or with --all")


def test_all_calls_again_until_nothing_old_is_left(history, slow_clock):
    out, err = run("--all", "--budget-s", "4")

    assert DrainRun.objects.count() == 1
    assert JobRecord.objects.count() == 1
    progress = err.strip().splitlines()
    assert len(progress) >= 2  # a line for each call that left some
    assert all("old runs left" in line for line in progress)
    summary = out.strip()
    assert summary.startswith("pruned 10 drain runs and 20 job records")
    assert f"in {len(progress) + 1} calls: nothing older is left" in summary


def test_json_prints_each_calls_result(history, slow_clock):
    out, _ = run("--all", "--budget-s", "4", "--json")

    results = [json.loads(line) for line in out.strip().splitlines()]
    assert len(results) >= 3
    assert [r["complete"] for r in results] == [False] * (len(results) - 1) + [True]
    assert sum(r["deleted"]["drainRuns"] for r in results) == 10
    assert sum(r["deleted"]["jobRecords"] for r in results) == 20
    assert results[-1]["remaining"] == {"drainRuns": 0}


@pytest.mark.parametrize("budget", ["abc", "0", "-1", "301", "nan", "inf", ""])
def test_it_rejects_a_bad_budget_and_deletes_nothing(history, budget):
    with pytest.raises(CommandError) as raised:
        run("--budget-s", budget)

    assert raised.value.returncode == 2
    assert str(raised.value).startswith("--budget-s: seconds between 0 and 300")
    assert DrainRun.objects.count() == 11


def test_an_interrupted_prune_keeps_what_it_deleted_and_says_how_to_go_on(
    history, monkeypatch
):
    done = {"calls": 0}
    original = retention._delete_some

    def ctrl_c_on_the_third_delete(rows, batch):
        done["calls"] += 1
        if done["calls"] == 3:
            raise KeyboardInterrupt
        return original(rows, batch)

    monkeypatch.setattr(retention, "BATCH", 2)
    monkeypatch.setattr(retention, "JOB_BATCH", 2)
    monkeypatch.setattr(retention, "_delete_some", ctrl_c_on_the_third_delete)
    with pytest.raises(CommandError) as raised:
        run("--all")

    assert raised.value.returncode == 130
    assert "run it again to go on" in str(raised.value)
    assert JobRecord.objects.count() == 21 - 4  # two batches of 2 job records
    assert DrainRun.objects.count() == 11  # their runs' turn had not come

    monkeypatch.setattr(retention, "_delete_some", original)
    out, _ = run("--all")
    assert out.strip().endswith("nothing older is left")
    assert DrainRun.objects.count() == 1
